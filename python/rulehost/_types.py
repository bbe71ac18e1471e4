"""The plain values rulehost returns. Money is always ``decimal.Decimal``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

#: One transaction: a dict, or the JSON text of one object as str or bytes.
Transaction = Mapping[str, Any] | str | bytes


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's facts and balances."""

    account: str
    currency: str
    status: Literal["active", "frozen", "closed"]
    overdraft_limit: Decimal
    #: Sum of posted journal entries.
    posted: Decimal
    #: Sum of pending holds.
    pending: Decimal
    #: ``posted - pending``.
    available: Decimal


@dataclass(frozen=True, slots=True)
class Hold:
    """A transaction held for review, and its state."""

    id: str
    source: str
    destination: str
    amount: Decimal
    currency: str
    state: Literal["pending", "posted", "voided"]


@dataclass(frozen=True, slots=True)
class Resolved(Hold):
    """A hold after ``Host.resolve``; ``already_done`` when it had been
    resolved this way before (the call changed nothing)."""

    already_done: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a rule set."""

    name: str
    kind: Literal["validation", "risk"]
    #: The module's content hash.
    version: str
    weight: Decimal


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The live rule set."""

    #: Content hash of the whole set.
    version: str
    directory: Path
    review_at: int
    decline_at: int
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What ``Host.reload`` or ``Host.rollback`` did."""

    changed: bool
    from_version: str | None = None
    to_version: str | None = None


@dataclass(frozen=True, slots=True)
class ReloadEvent:
    """A reload that went live, one refused, or a rollback."""

    kind: Literal["swapped", "refused", "rolled_back"]
    from_version: str | None = None
    to_version: str | None = None
    #: Why a reload was refused, naming the rule and reason.
    message: str | None = None
