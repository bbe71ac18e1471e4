"""Per-call cost of the Python package against the same calls from Rust.

    python python/bench.py SAMPLE_DIR [ROUNDS]

SAMPLE_DIR holds `accounts.jsonl` and `transactions.jsonl` (`rulehost gen`).
Each round starts a fresh host (memory ledger, one evaluation thread for the
per-call figures) and decides every line one by one: as `bytes` (parsed in
place), as a `dict` (pre-loaded with `json.loads`, outside the timing; lines
it cannot load go as bytes), then the whole file with `decide_many` on the
default threads. Prints medians as JSON; `scripts/bench-python.sh` puts them
beside `cargo bench --bench host_call`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import rulehost

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "examples" / "ruleset"


def one_by_one(sample: Path, items: list[Any]) -> float:
    with rulehost.Host(rules=RULES, accounts=sample / "accounts.jsonl", threads=1) as h:
        started = time.perf_counter()
        for item in items:
            try:
                h.decide(item)
            except rulehost.InputError:
                pass
        return (time.perf_counter() - started) * 1e6 / len(items)


def many(sample: Path, buffer: bytes, lines: int) -> float:
    with rulehost.Host(rules=RULES, accounts=sample / "accounts.jsonl") as h:
        started = time.perf_counter()
        records = h.decide_many(buffer)
        elapsed = time.perf_counter() - started
    assert len(records) == lines
    return lines / elapsed


def main() -> None:
    sample = Path(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    buffer = (sample / "transactions.jsonl").read_bytes()
    raw = buffer.splitlines()
    dicts: list[Any] = []
    for line in raw:
        try:
            loaded = json.loads(line)
        except ValueError:
            loaded = None
        dicts.append(loaded if isinstance(loaded, dict) else line)
    b, d, m = [], [], []
    for _ in range(rounds):
        b.append(one_by_one(sample, list(raw)))
        d.append(one_by_one(sample, dicts))
        m.append(many(sample, buffer, len(raw)))
    print(json.dumps({
        "lines": len(raw), "rounds": rounds,
        "decide_bytes_us": round(statistics.median(b), 2),
        "decide_dict_us": round(statistics.median(d), 2),
        "decide_many_per_s": round(statistics.median(m)),
    }))


if __name__ == "__main__":
    main()
