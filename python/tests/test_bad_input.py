"""Bad input: each kind raises InputError naming code, field and line — the
same code and field as `rulehost run` writes for the same line — and the host
goes on deciding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rulehost
from conftest import PIPELINE, RULESET, line, run_cli, tx


def drop(field: str) -> bytes:
    t = tx("t-drop")
    del t[field]
    return json.dumps(t).encode()


CASES: list[tuple[str, bytes, str, str | None]] = [
    ("not json", b"{", "MALFORMED_JSON", None),
    ("not an object", b"[1,2]", "MALFORMED_JSON", None),
    ("not utf-8", b'{"id":"\xff"}', "MALFORMED_JSON", None),
    ("missing amount", drop("amount"), "MISSING_FIELD", "amount"),
    ("missing source", drop("source"), "MISSING_FIELD", "source"),
    ("null currency", line("t-null", currency=None), "MISSING_FIELD", "currency"),
    ("bad timestamp", line("t-ts", timestamp="yesterday"), "INVALID_FIELD", "timestamp"),
    ("bad amount", line("t-amt", amount="12,50"), "INVALID_FIELD", "amount"),
    ("numeric amount", b'{"id":"t-num","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a1",'
     b'"destination":"a2","amount":12.5,"currency":"USD"}', "INVALID_FIELD", "amount"),
    ("bad kind", line("t-kind", kind="gift"), "INVALID_FIELD", "kind"),
    ("empty id", line("", amount="1.00"), "INVALID_FIELD", "id"),
    ("duplicate key", b'{"id":"t-dup","id":"t-dup2","timestamp":"2026-01-05T10:00:00Z","kind":"payment",'
     b'"source":"a1","destination":"a2","amount":"1.00","currency":"USD"}', "INVALID_FIELD", "id"),
]


@pytest.mark.parametrize(("name", "text", "code", "field"), CASES, ids=[c[0] for c in CASES])
def test_each_kind_names_code_and_field(host: rulehost.Host, name: str, text: bytes, code: str, field: str | None) -> None:
    with pytest.raises(rulehost.InputError) as e:
        host.decide(text)
    assert (e.value.code, e.value.field, e.value.line) == (code, field, 1), str(e.value)
    assert isinstance(e.value, rulehost.Error) and isinstance(e.value, ValueError)
    assert code in str(e.value)
    # The host is unharmed: the next transaction decides.
    assert host.decide(line(f"after-{name}")).outcome == "approve"


def test_codes_and_fields_are_those_of_rulehost_run(tmp_path: Path) -> None:
    lines = [text for _, text, _, _ in CASES]
    source = tmp_path / "bad.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    cli = run_cli(RULESET, PIPELINE / "accounts.jsonl", source, tmp_path / "out.jsonl").splitlines()
    with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl") as h:
        mine = h.decide_many(source.read_bytes())
    assert len(mine) == len(cli)
    for record, theirs in zip(mine, cli):
        assert isinstance(record, rulehost.InputError)
        assert record.json == theirs
        assert record.code in theirs.decode()


def test_a_line_over_the_limit(host: rulehost.Host) -> None:
    huge = line("t-huge", note="x" * rulehost.LINE_BYTES_MAX)
    with pytest.raises(rulehost.InputError) as e:
        host.decide(huge)
    assert e.value.code == "MALFORMED_JSON" and "exceeds the limit" in str(e.value)


def test_a_dict_with_a_non_str_key(host: rulehost.Host) -> None:
    bad = tx("t-key")
    bad["metadata"] = {1: "x"}
    with pytest.raises(rulehost.InputError) as e:
        host.decide(bad)
    assert e.value.field == "metadata" and "key must be a str" in str(e.value)
