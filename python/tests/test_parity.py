"""decide_many gives the very bytes `rulehost run` writes, for any thread count."""

from __future__ import annotations

from pathlib import Path

import pytest

import rulehost
from conftest import PIPELINE, RULESET, run_cli


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_pipeline_fixture_byte_identical_to_run(tmp_path: Path, threads: int) -> None:
    transactions = PIPELINE / "transactions.jsonl"
    expected = run_cli(RULESET, PIPELINE / "accounts.jsonl", transactions, tmp_path / "out.jsonl")
    with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl", threads=threads) as h:
        records = h.decide_many(transactions.read_bytes())
    got = b"".join(r.json + b"\n" for r in records if r.json is not None)
    assert len(records) == expected.count(b"\n")
    assert got == expected


def test_one_by_one_equals_run(tmp_path: Path) -> None:
    transactions = PIPELINE / "transactions.jsonl"
    expected = run_cli(RULESET, PIPELINE / "accounts.jsonl", transactions, tmp_path / "out.jsonl").splitlines()
    with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl") as h:
        for number, (text, theirs) in enumerate(zip(transactions.read_bytes().splitlines(), expected), 1):
            try:
                record: rulehost.Decision | rulehost.InputError = h.decide(text)
            except rulehost.InputError as e:
                record = e
            # Numbered 1 as a single call; the record is otherwise the line's.
            assert record.json is not None
            assert record.json.replace(b'{"line":1,', f'{{"line":{number},'.encode(), 1) == theirs
