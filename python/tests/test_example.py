"""The example migration (examples/python-service): an asyncio service that
decides in-process with rulehost beside the legacy logic, on the same input."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import ROOT, rulehost_bin

SERVICE = ROOT / "examples" / "python-service" / "service.py"
LEGACY = Path(os.environ.get("RULEHOST_LEGACY", ROOT.parent / "shared" / "legacy" / "python_rules.py"))


def service() -> ModuleType:
    spec = importlib.util.spec_from_file_location("service", SERVICE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def generate(tmp_path: Path, transactions: int) -> Path:
    out = tmp_path / "sample"
    subprocess.run([str(rulehost_bin()), "gen", "--out", str(out), "--accounts", "300",
                    "--transactions", str(transactions)], check=True, capture_output=True)
    return out


def report(argv: list[str]) -> tuple[int, dict[str, object]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = service().main(argv)
    return code, json.loads(out.getvalue())


def test_the_service_agrees_with_the_legacy_logic(tmp_path: Path) -> None:
    if not LEGACY.exists():
        pytest.skip(f"no legacy system at {LEGACY} (it lives beside the checkout; set RULEHOST_LEGACY)")
    sample = generate(tmp_path, 3000)
    code, r = report(["--replay", str(sample / "transactions.jsonl"), "--accounts", str(sample / "accounts.jsonl"),
                      "--legacy", str(LEGACY)])
    assert r["lines"] == 3000
    assert r["disagree"] == 0, r["first_disagreements"]
    assert code == 0
    cpu = r["cpu_seconds"]
    assert isinstance(cpu, dict) and cpu["rulehost"] > 0 and cpu["legacy"] > 0


def test_the_service_without_legacy_answers_every_line(tmp_path: Path) -> None:
    sample = generate(tmp_path, 500)
    code, r = report(["--replay", str(sample / "transactions.jsonl"), "--accounts", str(sample / "accounts.jsonl"),
                      "--no-legacy"])
    assert code == 0 and r["lines"] == 500
