"""Balances, holds and reviews from Python; money is Decimal; a durable
ledger keeps everything across a restart."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

import rulehost
from conftest import PIPELINE, RULESET, line, tx


def test_balances_are_exact_decimals(host: rulehost.Host) -> None:
    before = host.balance("a2")
    assert before is not None and isinstance(before.posted, Decimal)
    assert (before.account, before.currency, before.status) == ("a2", "USD", "active")
    host.decide(tx("b-1", amount="0.10"))
    host.decide(tx("b-2", amount="0.20"))
    after = host.balance("a2")
    assert after is not None
    assert after.posted - before.posted == Decimal("0.30")
    assert after.available == after.posted - after.pending
    assert host.balance("nobody") is None


def test_holds_and_reviews(host: rulehost.Host) -> None:
    d = host.decide(tx("h-1", country="RU", merchant_category="7995", amount="50.00"))
    assert d.ledger == "held"
    pending = host.pending_holds()
    assert [(h.id, h.amount, h.state) for h in pending] == [("h-1", Decimal("50.00"), "pending")]
    source = host.balance("a1")
    assert source is not None and source.pending == Decimal("50.00")
    resolved = host.resolve("h-1", approve=True)
    assert (resolved.state, resolved.already_done) == ("posted", False)
    again = host.resolve("h-1", approve=True)
    assert again.already_done
    assert host.pending_holds() == []
    with pytest.raises(rulehost.LedgerError):
        host.resolve("h-1", approve=False)  # posted already: cannot void
    with pytest.raises(rulehost.LedgerError):
        host.resolve("no-such-hold")


def test_a_durable_ledger_survives_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "ledger.sqlite"
    with rulehost.Host(rules=RULESET, ledger=store, accounts=PIPELINE / "accounts.jsonl") as h:
        first = h.decide(line("d-1"))
        posted = h.balance("a2")
    with rulehost.Host(rules=RULESET, ledger=store) as h:
        again = h.decide(line("d-1"))
        assert again.replayed and again.outcome == first.outcome
        assert h.balance("a2") == posted


def test_a_closed_host_refuses_calls(tmp_path: Path) -> None:
    h = rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl")
    assert not h.closed
    h.close()
    h.close()
    assert h.closed
    with pytest.raises(rulehost.ClosedError):
        h.decide(line("c-1"))
    with pytest.raises(rulehost.ClosedError):
        h.balance("a1")


def test_cache_dir_and_flush(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for _ in range(2):  # the second start reads the compiled modules back
        with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl", cache_dir=cache) as h:
            h.decide(line("k-1"))
            h.flush()
    assert any(cache.rglob("*")), "nothing was cached"


def test_shadow_decides_nothing(tmp_path: Path) -> None:
    with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl", shadow=RULESET) as h:
        d = h.decide(line("sh-1"))
    with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl") as h:
        assert h.decide(line("sh-1")).json == d.json
