"""The live rule set from Python: what it is, reloads (watched and asked
for), refusals, rollbacks and their events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import rulehost
from conftest import PIPELINE, RULESET, line


def test_the_live_rule_set(host: rulehost.Host) -> None:
    rs = host.ruleset
    assert rs.directory == RULESET
    assert (rs.review_at, rs.decline_at) == (400, 700)
    assert len(rs.rules) == 9 and rs.rules[0].name == "amount-format"
    assert {r.kind for r in rs.rules} == {"validation", "risk"}
    assert host.status()["version"] == rs.version


def lower_review_threshold(folder: Path) -> None:
    manifest = folder / "manifest.toml"
    manifest.write_text(manifest.read_text().replace("review_at = 400", "review_at = 350", 1))


def test_reload_refusal_and_rollback(ruleset_copy: Path) -> None:
    with rulehost.Host(rules=ruleset_copy, accounts=PIPELINE / "accounts.jsonl") as h:
        first = h.ruleset.version
        assert h.reload() == rulehost.ReloadOutcome(changed=False)
        lower_review_threshold(ruleset_copy)
        outcome = h.reload()
        assert outcome.changed and outcome.from_version == first and outcome.to_version == h.ruleset.version
        assert h.ruleset.review_at == 350
        assert h.decide(line("r-1")).ruleset == outcome.to_version
        # A broken folder is refused; the live version keeps serving.
        (ruleset_copy / "manifest.toml").write_text("this is not toml = = =")
        with pytest.raises(rulehost.RuleSetError, match="manifest"):
            h.reload()
        assert h.ruleset.version == outcome.to_version
        back = h.rollback()
        assert back.changed and back.to_version == first == h.ruleset.version


def test_a_watched_folder_reloads_and_python_sees_it(ruleset_copy: Path) -> None:
    async def main() -> tuple[rulehost.ReloadEvent, str, str]:
        with rulehost.Host(rules=ruleset_copy, accounts=PIPELINE / "accounts.jsonl", watch=True) as h:
            events = h.reload_events()
            before = h.ruleset.version
            lower_review_threshold(ruleset_copy)
            event = await asyncio.wait_for(events.__anext__(), timeout=60)
            return event, before, h.ruleset.version

    event, before, after = asyncio.run(main())
    assert event.kind == "swapped"
    assert event.from_version == before and event.to_version == after != before


def test_a_bad_rule_set_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(rulehost.RuleSetError, match="manifest"):
        rulehost.Host(rules=tmp_path)
    bad = tmp_path / "accounts.jsonl"
    bad.write_text('{"id": "x"}\n')
    with pytest.raises(rulehost.AccountsError, match="line 1"):
        rulehost.Host(rules=RULESET, accounts=bad)
    with pytest.raises(ValueError, match="threads"):
        rulehost.Host(rules=RULESET, threads=0)
