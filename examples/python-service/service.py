"""A small asyncio payment-screening service, mid-migration.

It keeps its own I/O (asyncio streams: JSON Lines in, one JSON line out per
transaction) and decides every transaction in-process with rulehost, side by
side with the legacy rule logic it replaces (``python_rules.py`` of
``../shared/legacy``, imported as it is, not copied). Each answer is
rulehost's decision; the service counts where the legacy logic agrees and the
CPU each path used — the seed's migration in miniature.

    python examples/python-service/service.py --replay transactions.jsonl \\
        --rules examples/ruleset --accounts accounts.jsonl

starts the service on a loopback port, streams the file through it as a
client would, and prints the agreement report (JSON). Without ``--replay`` it
serves on ``--port`` until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import rulehost

ROOT = Path(__file__).resolve().parents[2]
LEGACY_DEFAULT = ROOT.parent / "shared" / "legacy" / "python_rules.py"
#: Bytes read from a connection at once; the complete lines among them are decided together.
READ_BYTES_MAX = 64 * 1024


def load_legacy(path: Path) -> ModuleType:
    """Imports the legacy module from where it lives."""
    spec = importlib.util.spec_from_file_location("python_rules", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import the legacy rules from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Legacy:
    """The legacy pipeline, one transaction at a time (its own state: accounts,
    balances, history, decided ids), as the old service ran it."""

    def __init__(self, module: ModuleType, accounts: Path, blocked: Path) -> None:
        self.m = module
        names = {l.strip() for l in blocked.read_text().splitlines() if l.strip()}
        self.accounts: dict[str, Any] = {}
        for text in accounts.read_text().splitlines():
            if text.strip():
                a = module.Account(json.loads(text), names)
                self.accounts[a.id] = a
        self.decided: dict[str, tuple[bytes, Any]] = {}

    def decide(self, raw: bytes) -> dict[str, Any]:
        """The legacy record of one line, as a dict."""
        try:
            tx, t, amount, places = self.m.check_schema(raw)
        except self.m.FieldError as e:
            return {"outcome": "error", "field": e.field}
        prev = self.decided.get(tx["id"])
        if prev is not None:
            if self.m.same_content(prev[0], raw):
                return self.render(prev[1], replayed=True)
            return {"outcome": "error", "code": "IDEMPOTENCY_CONFLICT"}
        d = self.m.decide(tx, t, amount, places, self.accounts)
        self.decided[tx["id"]] = (raw, d)
        return self.render(d, replayed=False)

    @staticmethod
    def render(d: Any, replayed: bool) -> dict[str, Any]:
        outcome, score, reasons, ledger = d
        return {"outcome": outcome, "score": score, "reasons": list(reasons), "ledger": ledger, "replayed": replayed}


def agree(mine: rulehost.Decision | rulehost.InputError, legacy: dict[str, Any]) -> bool:
    """Agreement up to the documented representational differences: legacy
    writes score null for rejects before scoring (rulehost: 0), and flat
    error records (any bad input is an error on both sides)."""
    if isinstance(mine, rulehost.InputError):
        return bool(legacy["outcome"] == "error")
    if legacy["outcome"] == "error":
        return False
    score = 0 if legacy["score"] is None else legacy["score"]
    return (mine.outcome, mine.score, mine.reasons, mine.ledger, mine.replayed) == (
        legacy["outcome"], score, legacy["reasons"], legacy["ledger"], legacy["replayed"])


@dataclass
class Report:
    """What the service saw."""

    lines: int = 0
    agree: int = 0
    cpu_rulehost: float = 0.0
    cpu_legacy: float = 0.0
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "agree": self.agree,
            "disagree": self.lines - self.agree,
            "cpu_seconds": {"rulehost": round(self.cpu_rulehost, 4), "legacy": round(self.cpu_legacy, 4)},
            "legacy_cpu_per_rulehost_cpu": round(self.cpu_legacy / self.cpu_rulehost, 2) if self.cpu_rulehost else None,
            "first_disagreements": self.disagreements[:5],
        }


class Service:
    """The service: its own I/O, rulehost in-process, legacy beside it."""

    def __init__(self, host: rulehost.Host, legacy: Legacy | None) -> None:
        self.host = host
        self.legacy = legacy
        self.report = Report()

    async def decide(self, lines: list[bytes]) -> bytes:
        """Decides the lines that arrived together, in one call (rulehost
        evaluates them in parallel; a hand-off per line would cost more than
        the rules), and beside it the legacy logic line by line."""
        # CPU of the whole process (rulehost's evaluation threads included).
        started = time.process_time()
        mine = await self.host.decide_many_async(lines)
        self.report.cpu_rulehost += time.process_time() - started
        out = []
        for raw, record in zip(lines, mine):
            self.report.lines += 1
            out.append(record.json or b"{}")
            if self.legacy is None:
                continue
            started = time.process_time()
            theirs = self.legacy.decide(raw)
            self.report.cpu_legacy += time.process_time() - started
            if agree(record, theirs):
                self.report.agree += 1
            else:
                self.report.disagreements.append(
                    {"line": self.report.lines, "rulehost": json.loads(record.json or b"{}"), "legacy": theirs})
        return b"\n".join(out) + b"\n"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """JSON Lines in, one answer line per line out, in order. Whatever has
        arrived is decided together (at most READ_BYTES_MAX at a time)."""
        pending = b""
        try:
            while chunk := await reader.read(READ_BYTES_MAX):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                lines = [l.rstrip(b"\r") for l in complete]
                if lines:
                    writer.write(await self.decide(lines))
                    await writer.drain()
            if pending:
                writer.write(await self.decide([pending.rstrip(b"\r")]))
                await writer.drain()
        finally:
            writer.close()


async def client(port: int, transactions: Path) -> None:
    """A client in its own process: streams the file, counts the answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        with transactions.open("rb") as f:
            for raw in f:
                writer.write(raw if raw.endswith(b"\n") else raw + b"\n")
                await writer.drain()
        writer.write_eof()

    sending = asyncio.create_task(send())
    answers = 0
    while await reader.readline():
        answers += 1
    await sending
    writer.close()
    print(answers)


async def replay(service: Service, transactions: Path) -> int:
    """Serves on a loopback port and streams `transactions` through it from a
    client process (so the client's work is not counted as the service's);
    returns how many answers the client got."""
    server = await asyncio.start_server(service.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", str(port), str(transactions), stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the client failed ({proc.returncode})")
    return int(out.decode().strip() or 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rules", type=Path, default=ROOT / "examples" / "ruleset")
    p.add_argument("--accounts", type=Path)
    p.add_argument("--blocked", type=Path, default=ROOT / "examples" / "ruleset" / "lists" / "blocked-accounts.txt")
    p.add_argument("--legacy", type=Path, default=LEGACY_DEFAULT, help="python_rules.py (default: %(default)s)")
    p.add_argument("--no-legacy", action="store_true", help="rulehost only (the migration's last step)")
    p.add_argument("--replay", type=Path, help="stream this JSON Lines file through the service and report")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--threads", type=int, help="rulehost's evaluation threads (default: one per CPU)")
    if argv is None and sys.argv[1:2] == ["--client"]:
        asyncio.run(client(int(sys.argv[2]), Path(sys.argv[3])))
        return 0
    args = p.parse_args(argv)
    if args.accounts is None:
        p.error("--accounts is required")
    legacy = None if args.no_legacy else Legacy(load_legacy(args.legacy), args.accounts, args.blocked)
    with rulehost.Host(rules=args.rules, accounts=args.accounts, threads=args.threads) as host:
        service = Service(host, legacy)
        if args.replay is None:
            async def serve() -> None:
                server = await asyncio.start_server(service.handle, "127.0.0.1", args.port)
                async with server:
                    await server.serve_forever()
            try:
                asyncio.run(serve())
            except KeyboardInterrupt:
                pass
        else:
            answers = asyncio.run(replay(service, args.replay))
            if answers != service.report.lines:
                print(f"sent {service.report.lines} lines, got {answers} answers", file=sys.stderr)
                return 1
    json.dump(service.report.to_dict(), sys.stdout, indent=2)
    print()
    return 0 if legacy is None or service.report.agree == service.report.lines else 1


if __name__ == "__main__":
    sys.exit(main())
