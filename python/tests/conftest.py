"""Shared fixtures: the example rule set, the pipeline fixture, fresh hosts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rulehost

ROOT = Path(__file__).resolve().parents[2]
RULESET = ROOT / "examples" / "ruleset"
PIPELINE = ROOT / "tests" / "fixtures" / "pipeline"
GUESTS = ROOT / "target" / "wasm32-wasip2" / "wasm-release"


def rulehost_bin() -> Path:
    """The `rulehost` binary (`RULEHOST_BIN`, else the debug build the test
    command makes)."""
    path = Path(os.environ.get("RULEHOST_BIN", ROOT / "target" / "debug" / "rulehost"))
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `cargo build -p rulehost-cli` or set RULEHOST_BIN")
    return path


def run_cli(rules: Path, accounts: Path, transactions: Path, out: Path) -> bytes:
    """`rulehost run` on a memory ledger; returns its output (exit code 1
    means some lines were errors, which is what some tests want)."""
    done = subprocess.run(
        [
            str(rulehost_bin()),
            "run",
            "--rules",
            str(rules),
            "--accounts",
            str(accounts),
            "--input",
            str(transactions),
            "--output",
            str(out),
            "--ledger",
            ":memory:",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode in (0, 1), done.stderr
    return out.read_bytes()


def tx(id: str, **fields: Any) -> dict[str, Any]:
    """A payment a1 → a2 of 125.50 USD (the pipeline's accounts), with `fields` over it."""
    base: dict[str, Any] = {
        "id": id,
        "timestamp": "2026-01-05T10:00:00Z",
        "kind": "payment",
        "source": "a1",
        "destination": "a2",
        "amount": "125.50",
        "currency": "USD",
        "country": "US",
        "merchant_category": "5411",
        "channel": "card",
    }
    base.update(fields)
    return base


def line(id: str, **fields: Any) -> bytes:
    return json.dumps(tx(id, **fields), separators=(",", ":")).encode()


@pytest.fixture
def host() -> Iterator[rulehost.Host]:
    """A host on the example rule set, a memory ledger and the pipeline's accounts."""
    with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl", threads=2) as h:
        yield h


@pytest.fixture
def ruleset_copy(tmp_path: Path) -> Path:
    """A private copy of the example rule set, to change."""
    dest = tmp_path / "ruleset"
    shutil.copytree(RULESET, dest)
    return dest
