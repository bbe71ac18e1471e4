//! Values crossing into Python: the dataclasses of `rulehost/_types.py`
//! (money as `decimal.Decimal`) and rollout transitions as dicts.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use rulehost_engine::reload::{ReloadEvent, ReloadOutcome};
use rulehost_engine::ruleset::RuleSet;
use rulehost_ledger::{AccountBalances, Hold};

use crate::error;

/// A dataclass of `rulehost._types`, made from keyword arguments.
pub(crate) fn made<'py>(py: Python<'py>, class: &str, fields: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
    py.import("rulehost._types")?.getattr(class)?.call((), Some(fields))
}

/// The live rule set as a `rulehost.RuleSet`.
pub(crate) fn ruleset_to_py<'py>(py: Python<'py>, set: &RuleSet) -> PyResult<Bound<'py, PyAny>> {
    let rules = set
        .rules
        .iter()
        .map(|r| {
            let f = PyDict::new(py);
            f.set_item("name", &*r.name)?;
            f.set_item("kind", r.kind.as_str())?;
            f.set_item("version", &*r.version)?;
            f.set_item("weight", r.weight)?;
            made(py, "Rule", &f)
        })
        .collect::<PyResult<Vec<_>>>()?;
    let f = PyDict::new(py);
    f.set_item("version", &*set.version)?;
    f.set_item("directory", &set.dir)?;
    f.set_item("review_at", set.review_at)?;
    f.set_item("decline_at", set.decline_at)?;
    f.set_item("rules", pyo3::types::PyTuple::new(py, rules)?)?;
    made(py, "RuleSet", &f)
}

/// A rollout transition as a dict (the JSON the state file keeps), or a
/// `rulehost.RolloutError`.
pub(crate) fn transition<'py>(
    py: Python<'py>,
    t: Result<rulehost_engine::rollout::Transition, rulehost_engine::rollout::RolloutError>,
) -> PyResult<Bound<'py, PyAny>> {
    let t = t.map_err(|e| error(py, "RolloutError", e.to_string()))?;
    let text = serde_json::to_string(&t).map_err(|e| error(py, "Error", e.to_string()))?;
    py.import("json")?.getattr("loads")?.call1((text,))
}

pub(crate) fn balance_to_py<'py>(py: Python<'py>, a: &AccountBalances) -> PyResult<Bound<'py, PyAny>> {
    let f = PyDict::new(py);
    f.set_item("account", &a.id)?;
    f.set_item("currency", &a.currency)?;
    f.set_item("status", a.status.as_str())?;
    f.set_item("overdraft_limit", a.overdraft_limit)?;
    f.set_item("posted", a.posted)?;
    f.set_item("pending", a.pending)?;
    f.set_item("available", a.available)?;
    made(py, "Balance", &f)
}

pub(crate) fn hold_to_py<'py>(py: Python<'py>, h: &Hold, repeated: Option<bool>) -> PyResult<Bound<'py, PyAny>> {
    let f = PyDict::new(py);
    f.set_item("id", &h.id)?;
    f.set_item("source", &h.source)?;
    f.set_item("destination", &h.destination)?;
    f.set_item("amount", h.amount)?;
    f.set_item("currency", &h.currency)?;
    f.set_item("state", h.state.as_str())?;
    match repeated {
        None => made(py, "Hold", &f),
        Some(repeated) => {
            f.set_item("already_done", repeated)?;
            made(py, "Resolved", &f)
        }
    }
}

pub(crate) fn outcome_to_py<'py>(py: Python<'py>, outcome: ReloadOutcome) -> PyResult<Bound<'py, PyAny>> {
    let f = PyDict::new(py);
    match outcome {
        ReloadOutcome::Swapped { from, to } => {
            f.set_item("changed", true)?;
            f.set_item("from_version", from)?;
            f.set_item("to_version", to)?;
        }
        ReloadOutcome::Unchanged => {
            f.set_item("changed", false)?;
        }
    }
    made(py, "ReloadOutcome", &f)
}

pub(crate) fn event_to_py(py: Python<'_>, event: ReloadEvent) -> PyResult<Py<PyAny>> {
    let f = PyDict::new(py);
    match event {
        ReloadEvent::Swapped { from, to } => {
            f.set_item("kind", "swapped")?;
            f.set_item("from_version", from)?;
            f.set_item("to_version", to)?;
        }
        ReloadEvent::Refused { message } => {
            f.set_item("kind", "refused")?;
            f.set_item("message", message)?;
        }
        ReloadEvent::RolledBack { from, to } => {
            f.set_item("kind", "rolled_back")?;
            f.set_item("from_version", from)?;
            f.set_item("to_version", to)?;
        }
    }
    Ok(made(py, "ReloadEvent", &f)?.unbind())
}
