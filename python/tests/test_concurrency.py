"""The GIL is released while rules run, asyncio never blocks, and Python
threads deciding at once get what one-by-one gets."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import rulehost
from conftest import PIPELINE, RULESET, line
from gen import accounts, stream

TICK = 0.002


def ticks_inside(ticks: list[float], start: float, end: float) -> int:
    """Ticks strictly inside the call, away from its edges."""
    margin = min(0.02, (end - start) / 4)
    return sum(1 for t in ticks if start + margin < t < end - margin)


def long_batch(tmp_path: Path, n: int = 4000) -> tuple[Path, bytes]:
    acc = accounts(tmp_path / "accounts.jsonl", 4)
    lines = [tx for g in range(4) for tx in stream(g, n // 4)]
    return acc, b"\n".join(lines) + b"\n"


def test_the_gil_is_released_during_decide_many(tmp_path: Path) -> None:
    acc, batch = long_batch(tmp_path)
    ticks: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(TICK)

    with rulehost.Host(rules=RULESET, accounts=acc, threads=2) as h:
        t = threading.Thread(target=ticker)
        t.start()
        try:
            start = time.monotonic()
            records = h.decide_many(batch)
            end = time.monotonic()
        finally:
            stop.set()
            t.join()
    assert len(records) == 4000
    # Holding the GIL for the call would leave the ticker no tick inside it.
    assert end - start > 0.05, "the batch was too quick to tell"
    assert ticks_inside(ticks, start, end) >= 3, (end - start, len(ticks))


def test_decide_many_async_does_not_block_the_loop(tmp_path: Path) -> None:
    acc, batch = long_batch(tmp_path)

    async def main() -> tuple[int, float, int]:
        loop = asyncio.get_running_loop()
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(loop.time())
                await asyncio.sleep(TICK)

        with rulehost.Host(rules=RULESET, accounts=acc, threads=2) as h:
            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            start = loop.time()
            records = await h.decide_many_async(batch)
            end = loop.time()
            task.cancel()
        return len(records), end - start, ticks_inside(ticks, start, end)

    n, elapsed, inside = asyncio.run(main())
    assert n == 4000
    assert elapsed > 0.05, "the batch was too quick to tell"
    assert inside >= 3, (elapsed, inside)


def test_decide_async_equals_decide() -> None:
    async def main() -> list[bytes]:
        with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl") as h:
            ds = await asyncio.gather(*(h.decide_async(line(f"a-{i}", source=src))
                                        for i, src in enumerate(["a1", "a2", "a1", "a2"])))
            return [d.json for d in ds]

    got = asyncio.run(main())
    with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl") as h:
        one = h.decide(line("a-0", source="a1"))
    assert got[0] == one.json
    assert len(set(got)) == 4


def test_decide_async_raises_input_error() -> None:
    async def main() -> str:
        with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl") as h:
            try:
                await h.decide_async(b"{")
            except rulehost.InputError as e:
                return e.code
        return "no error"

    assert asyncio.run(main()) == "MALFORMED_JSON"


def decide_groups(h: rulehost.Host, groups: list[list[bytes]], run: Callable[[Callable[[], None]], None]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    lock = threading.Lock()

    def worker(items: list[bytes]) -> Callable[[], None]:
        def go() -> None:
            for item in items:
                d = h.decide(item)
                with lock:
                    out[d.id] = d.json
        return go

    for items in groups:
        run(worker(items))
    return out


def test_threads_deciding_at_once_equal_one_by_one(tmp_path: Path) -> None:
    acc = accounts(tmp_path / "accounts.jsonl", 4)
    groups = [stream(g, 150) for g in range(4)]

    with rulehost.Host(rules=RULESET, accounts=acc, threads=1) as h:
        sequential = decide_groups(h, groups, lambda f: f())

    threads: list[threading.Thread] = []
    with rulehost.Host(rules=RULESET, accounts=acc, threads=2) as h:
        concurrent = decide_groups(h, groups, lambda f: threads.append(threading.Thread(target=f)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        balances = [h.balance(f"d{g}") for g in range(4)]
    assert len(sequential) == 600
    assert concurrent == sequential
    assert all(b is not None and b.posted > 0 for b in balances)


def test_decide_many_async_takes_an_iterable_of_dicts() -> None:
    items = [line(f"it-{i}") for i in range(5)]

    async def main() -> list[bytes]:
        with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl") as h:
            out = await h.decide_many_async([json.loads(i) for i in items] + [b"{"])
            return [r.json or b"" for r in out]

    got = asyncio.run(main())
    with rulehost.Host(rules=RULESET, accounts=PIPELINE / "accounts.jsonl") as h:
        want = [r.json or b"" for r in h.decide_many(items + [b"{"])]
    assert got == want and len(got) == 6
    assert b"MALFORMED_JSON" in got[5]
