"""A canary rollout driven from Python: share, promote, roll back, refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

import rulehost
from conftest import PIPELINE, RULESET, line


def test_a_canary_from_python(ruleset_copy: Path) -> None:
    manifest = ruleset_copy / "manifest.toml"
    manifest.write_text(manifest.read_text().replace("review_at = 400", "review_at = 350", 1))
    with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl", canary=ruleset_copy, canary_share=100) as h:
        live = h.ruleset.version
        assert h.rollout_status() is not None
        d = h.decide(line("c-1")).to_dict()
        assert d["rollout"]["arm"] == "candidate" and d["ruleset"] != live
        t = h.set_canary_share(0)
        assert (t["from_share"], t["to_share"]) == (100, 0)
        assert h.decide(line("c-2")).to_dict()["ruleset"] == live
        with pytest.raises(rulehost.RolloutError, match="101"):
            h.set_canary_share(101)
        promoted = h.promote_canary()
        assert h.ruleset.version == promoted["live"] != live
        assert h.ruleset.review_at == 350
        h.rollback_promotion()
        assert h.ruleset.version == live
    with rulehost.Host(rules=RULESET) as h:
        assert h.rollout_status() is None
        with pytest.raises(rulehost.RolloutError):
            h.promote_canary()
    with pytest.raises(ValueError, match="canary"):
        rulehost.Host(rules=RULESET, canary_share=5)
    with pytest.raises(ValueError, match="0..=100"):
        rulehost.Host(rules=RULESET, canary=ruleset_copy, canary_share=101)
