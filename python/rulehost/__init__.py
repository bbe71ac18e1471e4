"""rulehost in-process: Wasm risk rules and a double-entry ledger.

>>> with rulehost.Host(rules="examples/ruleset", accounts="accounts.jsonl") as host:
...     d = host.decide(b'{"id":"tx-1", ...}')
...     d.outcome, d.score, d.reasons

Every call that runs rules releases the GIL; ``decide_async`` and
``decide_many_async`` are asyncio awaitables that never block the loop.
"""

from __future__ import annotations

from ._errors import AccountsError, ClosedError, Error, InputError, LedgerError, RolloutError, RuleSetError
from ._rulehost import LINE_BYTES_MAX, Decision, Host, ReloadEvents
from ._types import Balance, Hold, ReloadEvent, ReloadOutcome, Resolved, Rule, RuleSet, Transaction

__all__ = [
    "LINE_BYTES_MAX",
    "AccountsError",
    "Balance",
    "ClosedError",
    "Decision",
    "Error",
    "Hold",
    "Host",
    "InputError",
    "LedgerError",
    "ReloadEvent",
    "ReloadEvents",
    "ReloadOutcome",
    "Resolved",
    "RolloutError",
    "Rule",
    "RuleSet",
    "RuleSetError",
    "Transaction",
]
