"""Generated streams over accounts of their own, for the concurrency tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

START = datetime(2026, 1, 5, 10, 0, 0)


def accounts(path: Path, groups: int) -> Path:
    """Accounts s0..s{groups-1} (rich) and d0..d{groups-1}, one pair a group."""
    lines = []
    for g in range(groups):
        for name, balance in ((f"s{g}", "1000000.00"), (f"d{g}", "0.00")):
            lines.append(json.dumps({
                "id": name, "currency": "USD", "country": "US", "opened_at": "2025-01-01T00:00:00Z",
                "status": "active", "overdraft_limit": "0.00", "opening_balance": balance,
            }))
    path.write_text("\n".join(lines) + "\n")
    return path


def stream(group: int, n: int) -> list[bytes]:
    """`n` payments s{group} → d{group}, a minute apart, amounts that trip the
    velocity and large-amount rules now and then."""
    out = []
    for i in range(n):
        amount = ("12000.00" if i % 17 == 0 else f"{10 + i % 90}.{i % 100:02d}")
        out.append(json.dumps({
            "id": f"g{group}-{i}", "timestamp": (START + timedelta(seconds=30 * i)).isoformat() + "Z",
            "kind": "payment", "source": f"s{group}", "destination": f"d{group}", "amount": amount,
            "currency": "USD", "country": "US" if i % 23 else "FR", "merchant_category": "5411",
        }, separators=(",", ":")).encode())
    return out
