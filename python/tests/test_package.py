"""The package surface: exceptions in one hierarchy, metrics, typing marker."""

from __future__ import annotations

import pickle
from importlib import resources

import rulehost
from conftest import line


def test_one_exception_hierarchy() -> None:
    for cls in (rulehost.InputError, rulehost.RuleSetError, rulehost.LedgerError,
                rulehost.AccountsError, rulehost.ClosedError):
        assert issubclass(cls, rulehost.Error)
    e = rulehost.InputError("line 3: INVALID_FIELD amount: bad", "INVALID_FIELD", "amount", 3, "t-1")
    back = pickle.loads(pickle.dumps(e))
    assert (back.code, back.field, back.line, back.id, str(back)) == ("INVALID_FIELD", "amount", 3, "t-1", str(e))


def test_metrics_count_decisions_and_bad_input(host: rulehost.Host) -> None:
    host.decide(line("m-1"))
    try:
        host.decide(b"{")
    except rulehost.InputError:
        pass
    text = host.metrics()
    assert "rulehost_" in text and "# TYPE" in text
    counts = {l.split(" ")[0]: l.split(" ")[1] for l in text.splitlines() if l.startswith("rulehost_decisions_total{")}
    assert counts['rulehost_decisions_total{outcome="error"}'] == "1", text
    assert counts['rulehost_decisions_total{outcome="approve"}'] == "1", text


def test_typed_package() -> None:
    assert resources.files("rulehost").joinpath("py.typed").is_file()
    assert resources.files("rulehost").joinpath("_rulehost.pyi").is_file()
