"""rulehost's exceptions: one hierarchy under :class:`Error`."""

from __future__ import annotations


class Error(Exception):
    """Anything rulehost refuses or fails at."""


class InputError(Error, ValueError):
    """A transaction that could not be decided as given.

    ``code`` is the error record's code (``MALFORMED_JSON``, ``MISSING_FIELD``,
    ``INVALID_FIELD``, ``IDEMPOTENCY_CONFLICT``, ``LEDGER_UNAVAILABLE`` or
    ``PARTITION_NOT_OWNED``),
    ``field`` the offending field (a path such as ``metadata.channel``) when
    there is one, ``line`` the 1-based line or position in a batch, and
    ``id`` the transaction id when it could be read, and ``json`` the exact
    bytes of the error record ``rulehost run`` writes for it.
    """

    code: str
    field: str | None
    line: int
    id: str | None
    json: bytes | None

    def __init__(
        self,
        message: str,
        code: str = "MALFORMED_JSON",
        field: str | None = None,
        line: int = 1,
        id: str | None = None,
        json: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.line = line
        self.id = id
        self.json = json

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.code, self.field, self.line, self.id, self.json))


class RuleSetError(Error):
    """A rule set that did not load, or a reload or rollback that was refused
    (the live version keeps serving)."""


class LedgerError(Error):
    """The ledger could not open, or could not make a change durable (it is
    not acknowledged; the transaction may be sent again)."""


class AccountsError(Error):
    """The accounts file was unreadable or invalid (naming line and field)."""


class ClosedError(Error):
    """The host is closed (or shutting down)."""


class RolloutError(Error):
    """A canary request that cannot be done (no candidate, nothing to roll
    back, a share outside 0..=100, or the rollout state file failed)."""
