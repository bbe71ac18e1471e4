"""decide(): the three input types, the Decision object, replay and idempotency."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

import rulehost
from conftest import PIPELINE, RULESET, line, tx


def fresh() -> rulehost.Host:
    return rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl", threads=1)


def test_bytes_str_and_dict_decide_alike() -> None:
    decisions = []
    for given in (line("t-1"), line("t-1").decode(), tx("t-1")):
        with fresh() as h:
            decisions.append(h.decide(given))
    assert decisions[0].json == decisions[1].json == decisions[2].json
    assert decisions[0] == decisions[2]


def test_the_decision_object(host: rulehost.Host) -> None:
    d = host.decide(line("t-approve"))
    assert (d.outcome, d.score, d.reasons, d.ledger, d.replayed) == ("approve", 0, [], "posted", False)
    assert d.id == "t-approve" and d.line == 1
    assert d.ruleset == host.ruleset.version
    record = json.loads(d.json)
    assert d.to_dict() == record
    assert record["outcome"] == "approve" and record["line"] == 1
    # Every rule ran and is in the trace, in manifest order, with its fuel.
    assert [r["rule"] for r in d.rules] == [r.name for r in host.ruleset.rules]
    assert all(r["fuel"] > 0 for r in d.rules)
    assert "t-approve" in repr(d)


def test_review_and_decline_carry_reasons(host: rulehost.Host) -> None:
    review = host.decide(tx("t-review", country="RU", merchant_category="7995", amount="50.00"))
    assert review.outcome == "review" and review.ledger == "held"
    assert "HIGH_RISK_MCC" in review.reasons and review.score >= host.ruleset.review_at


def test_a_repeat_is_replayed_and_a_conflict_is_refused(host: rulehost.Host) -> None:
    first = host.decide(line("t-twice"))
    again = host.decide(tx("t-twice"))  # the same content, written differently
    assert again.replayed and not first.replayed
    assert again.outcome == first.outcome and again.rules == first.rules
    with pytest.raises(rulehost.InputError) as e:
        host.decide(tx("t-twice", amount="999.00"))
    assert e.value.code == "IDEMPOTENCY_CONFLICT" and e.value.id == "t-twice"


def test_decimal_amounts_are_exact_and_floats_are_refused(host: rulehost.Host) -> None:
    d = host.decide(tx("t-dec", amount=Decimal("0.10")))
    assert d.outcome == "approve"
    assert host.balance("a2") is not None
    with pytest.raises(rulehost.InputError) as e:
        host.decide(tx("t-float", amount=0.1))
    assert e.value.code == "INVALID_FIELD" and e.value.field == "amount"
    with pytest.raises(rulehost.InputError) as e:
        host.decide(tx("t-sci", amount=Decimal("1E+3")))
    assert e.value.field == "amount"


def test_other_types_are_a_type_error(host: rulehost.Host) -> None:
    with pytest.raises(TypeError, match="dict, str or bytes"):
        host.decide(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metadata"):
        host.decide(tx("t-obj", metadata={"when": object()}))


def test_decide_many_keeps_order_and_lines(host: rulehost.Host) -> None:
    items: list[rulehost.Transaction] = [line("m-1"), tx("m-2"), "{", line("m-3")]
    out = host.decide_many(items)
    assert [type(o).__name__ for o in out] == ["Decision", "Decision", "InputError", "Decision"]
    assert [o.line for o in out] == [1, 2, 3, 4]
    bad = out[2]
    assert isinstance(bad, rulehost.InputError) and bad.code == "MALFORMED_JSON"
    assert host.decide_many([]) == []
