//! The native module of the `rulehost` Python package (`rulehost._rulehost`):
//! the embeddable host of `rulehost_server::service`, in-process, for
//! Python services.
//!
//! Every call that evaluates rules or waits on the ledger releases the GIL
//! (`Python::detach`) and runs on the host's own evaluation threads; the
//! `*_async` methods return asyncio awaitables driven by one tokio runtime
//! of this module, so the event loop never blocks on a rule. A `bytes` or
//! `str` transaction is parsed where it lies, without a copy; a `dict` is
//! written to JSON once ([`json::write`]) and parsed like any line, so every
//! input goes through the same checks as `rulehost run`.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use pyo3::exceptions::{PyStopAsyncIteration, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use rulehost_core::decision::{Decision, Record};
use rulehost_core::files::{Line, read_line_bounded};
use rulehost_core::input::{InputError, ParsedTransaction};
use rulehost_engine::reload::{ReloadError, ReloadEvent};
use rulehost_engine::run::{LINE_BYTES_MAX, too_long_error};
use rulehost_server::location::LedgerLocation;
use rulehost_server::service::{self, BuildError, HostBuilder, HostError};

mod convert;
mod json;

use convert::{balance_to_py, event_to_py, hold_to_py, outcome_to_py, ruleset_to_py, transition};

type Parsed = Result<ParsedTransaction, InputError>;

/// The tokio runtime every host of this process runs on (its builds, its
/// durable-commit waits, its reload watcher and the awaitables).
fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// An exception of `rulehost._errors` (the package's one hierarchy).
pub(crate) fn error(py: Python<'_>, class: &str, message: String) -> PyErr {
    let made = py.import("rulehost._errors").and_then(|m| m.getattr(class)).and_then(|c| c.call1((message,)));
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// A `rulehost.InputError` for `e` (raised, or kept in a batch's results).
fn input_error<'py>(py: Python<'py>, e: &InputError) -> PyResult<Bound<'py, PyAny>> {
    py.import("rulehost._errors")?.getattr("InputError")?.call1((
        e.to_string(),
        e.code.as_str(),
        e.field.as_deref(),
        e.line,
        e.id.as_deref(),
        PyBytes::new(py, Record::Error(e.clone()).to_json().as_bytes()),
    ))
}

fn host_error(py: Python<'_>, e: HostError) -> PyErr {
    match e {
        HostError::Ledger(e) => error(py, "LedgerError", e.to_string()),
        HostError::Stopped => error(py, "ClosedError", e.to_string()),
        HostError::Internal(_) => error(py, "Error", e.to_string()),
    }
}

fn build_error(py: Python<'_>, e: BuildError) -> PyErr {
    let class = match &e {
        BuildError::RuleSet { .. } => "RuleSetError",
        BuildError::Ledger(_) => "LedgerError",
        BuildError::Accounts { .. } => "AccountsError",
        BuildError::Other(_) => "Error",
    };
    error(py, class, e.to_string())
}

fn reload_error(py: Python<'_>, e: ReloadError) -> PyErr {
    error(py, "RuleSetError", e.to_string())
}

/// One decision: what `rulehost run` writes for a line, as an object.
#[pyclass(frozen, module = "rulehost", name = "Decision")]
struct PyDecision {
    line: u64,
    decision: Arc<Decision>,
    replayed: bool,
}

#[pymethods]
impl PyDecision {
    /// The 1-based line (or position in a batch) it answers.
    #[getter]
    fn line(&self) -> u64 {
        self.line
    }

    /// The transaction id.
    #[getter]
    fn id(&self) -> &str {
        &self.decision.id
    }

    /// `approve`, `review`, `decline` or `reject`.
    #[getter]
    fn outcome(&self) -> &'static str {
        self.decision.outcome.as_str()
    }

    /// The aggregated risk score, 0..=1000.
    #[getter]
    fn score(&self) -> u32 {
        self.decision.score
    }

    /// Reason codes, in manifest order.
    #[getter]
    fn reasons(&self) -> Vec<String> {
        self.decision.reasons.clone()
    }

    /// What the ledger did: `posted`, `held` or `none`.
    #[getter]
    fn ledger(&self) -> &'static str {
        self.decision.ledger.as_str()
    }

    /// The rule-set version (content hash) that decided.
    #[getter]
    fn ruleset(&self) -> &str {
        &self.decision.ruleset
    }

    /// True when an identical transaction was decided before (this is its
    /// stored decision).
    #[getter]
    fn replayed(&self) -> bool {
        self.replayed
    }

    /// The exact bytes of the JSON record, as `rulehost run` writes the line
    /// (without the newline).
    #[getter]
    fn json<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.record_json().as_bytes())
    }

    /// The per-rule trace: one dict per rule, in the order they ran.
    #[getter]
    fn rules<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.to_dict(py)?.get_item("rules")
    }

    /// The record as a dict (`json.loads` of [`PyDecision::json`]).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?.getattr("loads")?.call1((self.record_json(),))
    }

    fn __repr__(&self) -> String {
        format!(
            "Decision(line={}, id={:?}, outcome={:?}, score={}, reasons={:?}, ledger={:?})",
            self.line,
            self.decision.id,
            self.decision.outcome.as_str(),
            self.decision.score,
            self.decision.reasons,
            self.decision.ledger.as_str()
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyDecision>().is_ok_and(|o| o.get().record_json() == self.record_json())
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.record_json().hash(&mut h);
        h.finish()
    }
}

impl PyDecision {
    fn record_json(&self) -> String {
        Record::Decision { line: self.line, decision: self.decision.clone(), replayed: self.replayed }.to_json()
    }
}

/// A record as Python sees it: a `Decision`, or for bad input an
/// `InputError` — raised (`raise_errors`) or returned in its place.
fn record_to_py(py: Python<'_>, record: Record, raise_errors: bool) -> PyResult<Py<PyAny>> {
    match record {
        Record::Decision { line, decision, replayed } => {
            Ok(Py::new(py, PyDecision { line, decision, replayed })?.into_any())
        }
        Record::Error(e) if raise_errors => Err(PyErr::from_value(input_error(py, &e)?)),
        Record::Error(e) => Ok(input_error(py, &e)?.unbind()),
    }
}

fn records_to_py(py: Python<'_>, records: Vec<Record>) -> PyResult<Py<PyAny>> {
    let items = records.into_iter().map(|r| record_to_py(py, r, false)).collect::<PyResult<Vec<_>>>()?;
    Ok(PyList::new(py, items)?.into_any().unbind())
}

/// The JSON bytes of one transaction given as `bytes`, `str` (both borrowed
/// where they lie) or a mapping (written to JSON once).
fn transaction_bytes<'a>(tx: &'a Bound<'_, PyAny>, line: u64) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = tx.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(s) = tx.cast::<PyString>() {
        return Ok(Cow::Borrowed(s.to_str()?.as_bytes()));
    }
    if tx.cast::<PyDict>().is_ok() {
        let mut out = Vec::with_capacity(256);
        json::write(tx, &mut out, &mut json::Path::default()).map_err(|e| e.into_py(tx.py(), line))?;
        return Ok(Cow::Owned(out));
    }
    Err(PyTypeError::new_err(format!(
        "a transaction is a dict, str or bytes of one JSON object, not {}",
        tx.get_type().name()?
    )))
}

/// Splits a JSON Lines buffer as `rulehost run` reads a file (same line
/// numbers, same limit on a line) and parses each line.
fn parse_buffer(host: &service::Host, buffer: &[u8]) -> std::io::Result<Vec<(u64, Parsed)>> {
    let mut input = buffer;
    let mut line = Vec::new();
    let mut parsed = Vec::new();
    let mut line_no = 0u64;
    loop {
        let read = read_line_bounded(&mut input, &mut line, LINE_BYTES_MAX)?;
        line_no = line_no.saturating_add(1);
        match read {
            Line::End => break,
            Line::Whole => parsed.push((line_no, host.parse(line_no, &line))),
            Line::TooLong { bytes } => parsed.push((line_no, Err(too_long_error(line_no, bytes)))),
        }
    }
    Ok(parsed)
}

/// What `decide_many` was given: one JSON Lines buffer, or transactions.
enum Batch<'a> {
    Buffer(Cow<'a, [u8]>),
    Items(Vec<Cow<'a, [u8]>>),
}

impl Batch<'_> {
    fn parse(&self, host: &service::Host) -> std::io::Result<Vec<(u64, Parsed)>> {
        match self {
            Batch::Buffer(buffer) => parse_buffer(host, buffer),
            Batch::Items(items) => {
                Ok(items.iter().zip(1u64..).map(|(item, line)| (line, host.parse(line, item))).collect())
            }
        }
    }

    fn into_owned(self) -> Batch<'static> {
        match self {
            Batch::Buffer(b) => Batch::Buffer(Cow::Owned(b.into_owned())),
            Batch::Items(items) => Batch::Items(items.into_iter().map(|i| Cow::Owned(i.into_owned())).collect()),
        }
    }
}

/// Reads `decide_many`'s argument: `bytes` or `str` is a JSON Lines buffer;
/// anything else an iterable of transactions (each a dict, str or bytes).
fn batch<'a, 'py>(lines: &'a Bound<'py, PyAny>, items: &'a mut Vec<Bound<'py, PyAny>>) -> PyResult<Batch<'a>> {
    if let Ok(b) = lines.cast::<PyBytes>() {
        return Ok(Batch::Buffer(Cow::Borrowed(b.as_bytes())));
    }
    if let Ok(s) = lines.cast::<PyString>() {
        return Ok(Batch::Buffer(Cow::Borrowed(s.to_str()?.as_bytes())));
    }
    for item in lines.try_iter()? {
        items.push(item?);
    }
    let items: &'a Vec<Bound<'py, PyAny>> = items;
    let texts = items.iter().zip(1u64..).map(|(item, line)| transaction_bytes(item, line)).collect::<PyResult<_>>()?;
    Ok(Batch::Items(texts))
}

/// A running host (see the package documentation and `rulehost/_rulehost.pyi`).
#[pyclass(frozen, module = "rulehost", name = "Host")]
struct PyHost {
    host: RwLock<Option<service::Host>>,
}

impl PyHost {
    fn get(&self, py: Python<'_>) -> PyResult<service::Host> {
        match self.host.read() {
            Ok(guard) => guard.clone().ok_or_else(|| error(py, "ClosedError", "the host is closed".into())),
            Err(_) => Err(error(py, "Error", "the host's lock was poisoned by a panic".into())),
        }
    }
}

#[pymethods]
impl PyHost {
    #[new]
    #[pyo3(signature = (
        rules, ledger=None, accounts=None, watch=false, threads=None, cache_dir=None, shadow=None,
        canary=None, canary_share=0, rollout_state=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        rules: PathBuf,
        ledger: Option<PathBuf>,
        accounts: Option<PathBuf>,
        watch: bool,
        threads: Option<usize>,
        cache_dir: Option<PathBuf>,
        shadow: Option<PathBuf>,
        canary: Option<PathBuf>,
        canary_share: u64,
        rollout_state: Option<PathBuf>,
    ) -> PyResult<Self> {
        let mut builder = HostBuilder::new(rules).watch(watch);
        if let Some(path) = ledger {
            builder = builder.ledger(LedgerLocation::from_arg(&path));
        }
        if let Some(path) = accounts {
            builder = builder.accounts(path);
        }
        match threads {
            Some(0) => return Err(PyValueError::new_err("threads must be at least 1")),
            Some(n) if n > rulehost_engine::run::THREADS_MAX => {
                return Err(PyValueError::new_err(format!(
                    "threads must be at most {}",
                    rulehost_engine::run::THREADS_MAX
                )));
            }
            Some(n) => builder = builder.eval_threads(n),
            None => {}
        }
        if let Some(dir) = cache_dir {
            builder = builder.cache_dir(dir);
        }
        if let Some(dir) = shadow {
            builder = builder.shadow(dir);
        }
        let share =
            u8::try_from(canary_share).ok().filter(|s| *s <= rulehost_engine::rollout::BUCKETS).ok_or_else(|| {
                PyValueError::new_err(format!("canary_share must be 0..=100 (percent), not {canary_share}"))
            })?;
        if let Some(dir) = canary {
            builder = builder.canary(dir, share);
        } else if share > 0 {
            return Err(PyValueError::new_err("canary_share needs a canary rule-set folder"));
        }
        if let Some(file) = rollout_state {
            builder = builder.rollout_state(file);
        }
        let host = py.detach(|| runtime().block_on(builder.build())).map_err(|e| build_error(py, e))?;
        Ok(PyHost { host: RwLock::new(Some(host)) })
    }

    /// Decides one transaction; raises `InputError` for bad input.
    fn decide(&self, py: Python<'_>, tx: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let host = self.get(py)?;
        let text = transaction_bytes(tx, 1)?;
        let record = py
            .detach(|| {
                let parsed = host.parse(1, &text);
                runtime().block_on(host.evaluate_parsed(1, parsed))
            })
            .map_err(|e| host_error(py, e))?;
        record_to_py(py, record, true)
    }

    /// Decides many transactions in order, evaluated in parallel like
    /// `rulehost run`; bad input is an `InputError` in its place.
    fn decide_many(&self, py: Python<'_>, lines: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let host = self.get(py)?;
        let mut items = Vec::new();
        let batch = batch(lines, &mut items)?;
        let records = py
            .detach(|| {
                let parsed = batch.parse(&host).map_err(|e| HostError::Internal(e.to_string()))?;
                runtime().block_on(host.evaluate_parsed_batch(parsed))
            })
            .map_err(|e| host_error(py, e))?;
        records_to_py(py, records)
    }

    /// `decide`, as an awaitable that never blocks the event loop.
    fn decide_async<'py>(&self, py: Python<'py>, tx: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let host = self.get(py)?;
        let parsed = host.parse(1, &transaction_bytes(tx, 1)?);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let record = host.evaluate_parsed(1, parsed).await;
            Python::attach(|py| record_to_py(py, record.map_err(|e| host_error(py, e))?, true))
        })
    }

    /// `decide_many`, as an awaitable that never blocks the event loop (the
    /// input is copied once, then parsed off the loop).
    fn decide_many_async<'py>(&self, py: Python<'py>, lines: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let host = self.get(py)?;
        let mut items = Vec::new();
        let batch = batch(lines, &mut items)?.into_owned();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let parser = host.clone();
            let parsed = tokio::task::spawn_blocking(move || batch.parse(&parser)).await;
            let records = match parsed {
                Ok(Ok(parsed)) => host.evaluate_parsed_batch(parsed).await,
                Ok(Err(e)) => Err(HostError::Internal(e.to_string())),
                Err(e) => Err(HostError::Internal(e.to_string())),
            };
            Python::attach(|py| records_to_py(py, records.map_err(|e| host_error(py, e))?))
        })
    }

    /// An account's facts and balances (`None` for an unknown account).
    fn balance<'py>(&self, py: Python<'py>, account: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let host = self.get(py)?;
        host.account(account).map(|a| balance_to_py(py, &a)).transpose()
    }

    /// Holds waiting for an operator.
    fn pending_holds<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let host = self.get(py)?;
        let holds = py.detach(|| host.pending_holds()).map_err(|e| host_error(py, e))?;
        holds.iter().map(|h| hold_to_py(py, h, None)).collect()
    }

    /// Posts (`approve=True`) or voids a held transaction; idempotent.
    #[pyo3(signature = (hold_id, approve=true))]
    fn resolve<'py>(&self, py: Python<'py>, hold_id: &str, approve: bool) -> PyResult<Bound<'py, PyAny>> {
        let host = self.get(py)?;
        let (resolution, hold) =
            py.detach(|| runtime().block_on(host.resolve_hold(hold_id, approve))).map_err(|e| host_error(py, e))?;
        let repeated = resolution == rulehost_ledger::Resolution::AlreadyDone;
        hold_to_py(py, &hold, Some(repeated))
    }

    /// The live rule set.
    #[getter]
    fn ruleset<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        ruleset_to_py(py, &self.get(py)?.ruleset())
    }

    /// Loads the folder now; raises `RuleSetError` if it is refused (the live
    /// version keeps serving).
    fn reload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let host = self.get(py)?;
        let outcome = py.detach(|| runtime().block_on(host.reload())).map_err(|e| reload_error(py, e))?;
        outcome_to_py(py, outcome)
    }

    /// Serves the previous version again.
    fn rollback<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let host = self.get(py)?;
        let outcome = py.detach(|| runtime().block_on(host.rollback())).map_err(|e| reload_error(py, e))?;
        outcome_to_py(py, outcome)
    }

    /// Reload status (as `rulehost ruleset status` prints it), as a dict.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let status = self.get(py)?.status().to_json().to_string();
        py.import("json")?.getattr("loads")?.call1((status,))
    }

    /// Every later reload, refusal and rollback, as an async iterator.
    fn reload_events(&self, py: Python<'_>) -> PyResult<ReloadEvents> {
        let receiver = self.get(py)?.subscribe();
        Ok(ReloadEvents { receiver: Arc::new(tokio::sync::Mutex::new(receiver)) })
    }

    /// The canary rollout's state and counts, as a dict (`None` without a canary).
    fn rollout_status<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.get(py)?.rollout_status() {
            Some(status) => Ok(Some(py.import("json")?.getattr("loads")?.call1((status.to_string(),))?)),
            None => Ok(None),
        }
    }

    /// Sets the canary candidate's share of source accounts, in percent.
    fn set_canary_share<'py>(&self, py: Python<'py>, percent: u64) -> PyResult<Bound<'py, PyAny>> {
        let host = self.get(py)?;
        transition(py, py.detach(|| runtime().block_on(host.set_canary_share(percent))))
    }

    /// Aborts the canary (share 0, the candidate kept).
    fn abort_canary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let host = self.get(py)?;
        transition(py, py.detach(|| runtime().block_on(host.abort_canary())))
    }

    /// Promotes the candidate: it becomes live.
    fn promote_canary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let host = self.get(py)?;
        transition(py, py.detach(|| runtime().block_on(host.promote_canary())))
    }

    /// Rolls back the last promotion.
    fn rollback_promotion<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let host = self.get(py)?;
        transition(py, py.detach(|| runtime().block_on(host.rollback_promotion())))
    }

    /// The host's metrics in the Prometheus text format.
    fn metrics(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.get(py)?.metrics().encode())
    }

    /// Waits until everything decided so far is durable.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let host = self.get(py)?;
        py.detach(|| runtime().block_on(host.flush())).map_err(|e| host_error(py, e))
    }

    /// Flushes and closes; later calls raise `ClosedError`. Closing twice is
    /// harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = match self.host.write() {
            Ok(mut guard) => guard.take(),
            Err(_) => return Err(error(py, "Error", "the host's lock was poisoned by a panic".into())),
        };
        let Some(host) = taken else { return Ok(()) };
        host.begin_shutdown();
        py.detach(|| {
            let flushed = runtime().block_on(host.flush());
            drop(host);
            flushed
        })
        .map_err(|e| host_error(py, e))
    }

    /// Whether the host is open.
    #[getter]
    fn closed(&self) -> bool {
        self.host.read().map(|g| g.is_none()).unwrap_or(true)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

/// The reload events of one host, from when it was asked for.
#[pyclass(frozen, module = "rulehost", name = "ReloadEvents")]
struct ReloadEvents {
    receiver: Arc<tokio::sync::Mutex<tokio::sync::broadcast::Receiver<ReloadEvent>>>,
}

#[pymethods]
impl ReloadEvents {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let receiver = self.receiver.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut receiver = receiver.lock().await;
            loop {
                match receiver.recv().await {
                    Ok(event) => return Python::attach(|py| event_to_py(py, event)),
                    // Fell behind: the oldest events were dropped; go on with the rest.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err(PyStopAsyncIteration::new_err("the host is closed"));
                    }
                }
            }
        })
    }
}

/// The module `rulehost._rulehost`.
#[pymodule]
fn _rulehost(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyHost>()?;
    m.add_class::<PyDecision>()?;
    m.add_class::<ReloadEvents>()?;
    m.add("LINE_BYTES_MAX", LINE_BYTES_MAX)?;
    Ok(())
}
