"""A rule that traps, loops or hoards memory fails by its on_error and the
host goes on serving from Python."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import rulehost
from conftest import GUESTS, PIPELINE, RULESET, tx

MANIFEST = """
[[rule]]
name = "hostile"
kind = "risk"
module = "modules/hostile.wasm"
on_error = "review"
[rule.params]
mode = "ok"

[[rule]]
name = "merchant-category"
kind = "risk"
module = "modules/merchant-category.wasm"
[rule.params]
high_risk_mcc = ["7995"]
"""


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    folder = tmp_path / "hostile-set"
    (folder / "modules").mkdir(parents=True)
    module = GUESTS / "guest_hostile.wasm"
    if not module.exists():
        pytest.fail(f"{module} is missing: run scripts/build-rules.sh")
    shutil.copy(module, folder / "modules" / "hostile.wasm")
    shutil.copy(RULESET / "modules" / "merchant-category.wasm", folder / "modules")
    (folder / "manifest.toml").write_text(MANIFEST)
    return folder


@pytest.mark.parametrize(("mode", "failure"), [("panic", "trap"), ("loop", "fuel"), ("memory", "memory")])
def test_a_failing_rule_is_contained(hostile: Path, mode: str, failure: str) -> None:
    with rulehost.Host(rules=hostile, accounts=PIPELINE / "accounts.jsonl") as h:
        d = h.decide(tx("bad-1", metadata={"mode": mode}, merchant_category="7995"))
        assert d.outcome == "review" and d.reasons == ["RULE_FAILED", "HIGH_RISK_MCC"]
        assert d.rules[0]["result"] == "failed" and d.rules[0]["failure"] == failure
        ok = h.decide(tx("good-1", metadata={"mode": "ok"}))
        assert ok.rules[0]["result"] == "score" and "HOSTILE_OK" in ok.reasons
