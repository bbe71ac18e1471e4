//! The host as a library, for services that embed it in their own tokio
//! runtime: [`HostBuilder`] takes the rule-set folder, the ledger and the
//! options, and gives a [`Host`] — `Send + Sync`, cheap to clone, async.
//!
//! Rule calls are blocking CPU work; they run on the host's own evaluation
//! threads (a fixed pool, one per CPU by default), never on the runtime's
//! workers. A decision is returned only once the ledger has made it durable,
//! and waiting for that does not hold a thread either.
//!
//! ```no_run
//! use rulehost_server::service::HostBuilder;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let host = HostBuilder::new("examples/ruleset")
//!     .ledger_file("rulehost-ledger.sqlite")
//!     .accounts("accounts.jsonl")
//!     .build()
//!     .await?;
//! let record = host
//!     .evaluate(r#"{"id":"tx-1","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"acc-1","destination":"acc-2","amount":"125.50","currency":"USD"}"#)
//!     .await?;
//! println!("{}", record.to_json());
//! let mut events = host.subscribe();
//! tokio::spawn(async move {
//!     while let Ok(event) = events.recv().await {
//!         println!("rule set: {event:?}");
//!     }
//! });
//! # Ok(())
//! # }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::location::LedgerLocation;
use crate::metrics::Metrics;
use rulehost_core::decision::{Decision, Record};
use rulehost_core::input::{ErrorCode, InputError, ParsedTransaction};
use rulehost_engine::pipeline::{Pipeline, SharedLedger, lock};
use rulehost_engine::reload::{ReloadError, ReloadEvent, ReloadOutcome, RuleSource, Status};
use rulehost_engine::rollout::{GuardOverride, RolloutError, Transition};
use rulehost_engine::ruleset::RuleSet;
use rulehost_ledger::durable::StoreOptions;
use rulehost_ledger::{AccountBalances, Hold, LedgerError, Resolution, import_file};
use rulehost_sandbox::{Sandbox, SandboxConfig};

mod rollout;
mod upkeep;

use rollout::{RolloutConfig, Rules};
pub use upkeep::LEDGER_UPKEEP_MS;

/// Builds a [`Host`].
#[derive(Clone, Debug)]
pub struct HostBuilder {
    rules: PathBuf,
    ledger: LedgerLocation,
    accounts: Option<PathBuf>,
    eval_threads: usize,
    window_per_thread: usize,
    watch: bool,
    cache_dir: Option<PathBuf>,
    store: StoreOptions,
    shadow: Option<PathBuf>,
    rollout: RolloutConfig,
}

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The rule set did not load.
    #[error("loading rule set {dir}: {message}")]
    RuleSet {
        /// The folder.
        dir: PathBuf,
        /// Why.
        message: String,
    },
    /// The ledger did not open.
    #[error(transparent)]
    Ledger(#[from] crate::location::LocationError),
    /// The accounts file was unreadable or invalid.
    #[error("accounts {path}: {message}")]
    Accounts {
        /// The file.
        path: PathBuf,
        /// Why, naming line and field.
        message: String,
    },
    /// Anything else (engine, threads, watcher).
    #[error("{0}")]
    Other(String),
}

/// Why a request to the host failed (bad input is not an error: it is an
/// error record).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    /// The ledger could not make the decision durable; it is not acknowledged.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The host's evaluation threads are gone (it is shutting down).
    #[error("the host is shutting down")]
    Stopped,
    /// The work failed inside the host (a host bug, contained: the other
    /// requests go on). Nothing it had not made durable is acknowledged.
    #[error("internal error (a host bug; please report it): {0}")]
    Internal(String),
}

impl HostBuilder {
    /// A host for the rule set in `rules`, with an in-memory ledger, one
    /// evaluation thread per CPU, and the folder watched for changes.
    pub fn new(rules: impl Into<PathBuf>) -> Self {
        HostBuilder {
            rules: rules.into(),
            ledger: LedgerLocation::Memory,
            accounts: None,
            eval_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            window_per_thread: rulehost_engine::run::WINDOW_PER_THREAD_DEFAULT,
            watch: true,
            cache_dir: None,
            store: StoreOptions::default(),
            shadow: None,
            rollout: RolloutConfig::default(),
        }
    }

    /// Keeps the ledger in a durable SQLite file (created when absent).
    pub fn ledger_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ledger = LedgerLocation::File(path.into());
        self
    }

    /// Keeps the ledger in memory only.
    pub fn memory_ledger(mut self) -> Self {
        self.ledger = LedgerLocation::Memory;
        self
    }

    /// Where the ledger lives.
    pub fn ledger(mut self, location: LedgerLocation) -> Self {
        self.ledger = location;
        self
    }

    /// Imports accounts (JSON Lines) at start; accounts already present with
    /// the same facts are skipped.
    pub fn accounts(mut self, path: impl Into<PathBuf>) -> Self {
        self.accounts = Some(path.into());
        self
    }

    /// Threads evaluating rules (at least 1).
    pub fn eval_threads(mut self, threads: usize) -> Self {
        self.eval_threads = threads.clamp(1, rulehost_engine::run::THREADS_MAX);
        self
    }

    /// Whether to watch the folder and swap in new versions (default: yes).
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// Keeps compiled modules in `dir` across restarts.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Shadow mode: evaluate the rule set in `dir` beside every live
    /// decision (it decides nothing; see `Pipeline::with_shadow`). Loaded
    /// once, at build.
    pub fn shadow(mut self, dir: impl Into<PathBuf>) -> Self {
        self.shadow = Some(dir.into());
        self
    }

    /// A canary rollout of the rule set in `dir`: it decides for `share`
    /// percent of source accounts (by a stable hash; see
    /// [`rulehost_engine::rollout`]). With a rollout state file, a restart resumes the
    /// rollout where it was, and this folder starts a new canary only if the
    /// saved rollout has not seen it.
    pub fn canary(mut self, dir: impl Into<PathBuf>, share: u8) -> Self {
        self.rollout.canary = Some(dir.into());
        self.rollout.share = share.min(rulehost_engine::rollout::BUCKETS);
        self
    }

    /// Where the rollout state is kept (default: beside a durable ledger,
    /// `<ledger>.rollout.json`; none for a memory ledger).
    pub fn rollout_state(mut self, file: impl Into<PathBuf>) -> Self {
        self.rollout.state_file = Some(file.into());
        self
    }

    /// Guard settings of the canary, over the candidate manifest's `[rollout]`.
    pub fn canary_guard(mut self, guard: GuardOverride) -> Self {
        self.rollout.guard = guard;
        self
    }

    /// Group commit settings of a durable ledger.
    pub fn store_options(mut self, options: StoreOptions) -> Self {
        self.store = options;
        self
    }

    /// Loads the rule set, opens the ledger, imports accounts and starts the
    /// evaluation threads (and the watcher). Loading runs off the runtime's
    /// workers. Call within a tokio runtime.
    pub async fn build(self) -> Result<Host, BuildError> {
        let events_runtime = tokio::runtime::Handle::current();
        let host = tokio::task::spawn_blocking(move || self.build_blocking(events_runtime))
            .await
            .map_err(|e| BuildError::Other(e.to_string()))??;
        if host.inner.note_partitions(&**lock(host.inner.pipeline.ledger())) {
            tokio::spawn(upkeep::ledger_upkeep(Arc::downgrade(&host.inner)));
        }
        Ok(host)
    }

    fn build_blocking(self, runtime: tokio::runtime::Handle) -> Result<Host, BuildError> {
        let other = |e: String| BuildError::Other(e);
        let metrics = Arc::new(Metrics::new());
        let store = StoreOptions { on_commit: Some(metrics.commit_hook()), ..self.store.clone() };
        let sandbox_config = SandboxConfig { cache_dir: self.cache_dir.clone(), ..SandboxConfig::default() };
        let Setup { sandbox, ruleset, ledger } =
            Setup::open(&self.rules, &sandbox_config, &self.ledger, store, self.accounts.as_deref())?;
        let mut rollout = self.rollout.clone();
        if rollout.state_file.is_none()
            && let LedgerLocation::File(path) = &self.ledger
        {
            rollout.state_file = Some(rollout::default_state_file(path));
        }
        let first = (self.rules.clone(), ruleset);
        let rules =
            Rules::open(sandbox.clone(), ledger.clone(), self.watch, runtime, metrics.clone(), first, &rollout)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.eval_threads)
            .thread_name(|i| format!("rulehost-eval-{i}"))
            .panic_handler(
                |panic| tracing::error!(panic = %rulehost_engine::panic_message(&*panic), "evaluation thread panicked"),
            )
            .build()
            .map_err(|e| other(e.to_string()))?;
        let mut pipeline = Pipeline::new(sandbox.clone(), ledger).with_observer(metrics.clone());
        if let Some(r) = rules.rollout() {
            pipeline = pipeline.with_rollout(r.clone());
        }
        if let Some(dir) = &self.shadow {
            let candidate = RuleSet::load(&sandbox, dir)
                .map_err(|e| BuildError::RuleSet { dir: dir.clone(), message: e.to_string() })?;
            lock(pipeline.ledger()).retain_history(candidate.history_window_seconds_max);
            pipeline = pipeline.with_shadow(Arc::new(Arc::new(candidate)));
        }
        Ok(Host {
            inner: Arc::new(Inner {
                pipeline,
                rules,
                pool,
                metrics,
                window: self.eval_threads
                    * self.window_per_thread.clamp(1, rulehost_engine::run::WINDOW_PER_THREAD_MAX),
                stopping: AtomicBool::new(false),
            }),
        })
    }
}

/// What a host and a `rulehost run` both start from: the sandbox, the rule
/// set of the given folder, and the ledger opened to keep that rule set's
/// history window, with the accounts file (if any) imported and durable.
pub struct Setup {
    /// The sandbox every rule runs in.
    pub sandbox: Arc<Sandbox>,
    /// The rule set, loaded once.
    pub ruleset: RuleSet,
    /// The ledger, shared by the pipeline and the rule sets' history windows.
    pub ledger: SharedLedger,
}

impl Setup {
    /// Starts the sandbox, loads `rules`, opens `ledger` with `store` (its
    /// history window set to the rule set's) and imports `accounts`.
    pub fn open(
        rules: &std::path::Path,
        sandbox: &SandboxConfig,
        ledger: &LedgerLocation,
        store: StoreOptions,
        accounts: Option<&std::path::Path>,
    ) -> Result<Setup, BuildError> {
        let sandbox = Arc::new(Sandbox::new(sandbox).map_err(|e| BuildError::Other(e.to_string()))?);
        let ruleset = RuleSet::load(&sandbox, rules)
            .map_err(|e| BuildError::RuleSet { dir: rules.to_owned(), message: e.to_string() })?;
        let options = StoreOptions { history_window_seconds_max: ruleset.history_window_seconds_max, ..store };
        let mut opened = ledger.open(&options)?;
        if let Some(path) = accounts {
            import_file(&mut *opened, path)
                .map_err(|e| BuildError::Accounts { path: path.to_owned(), message: e.to_string() })?;
        }
        Ok(Setup { sandbox, ruleset, ledger: Arc::new(std::sync::Mutex::new(opened)) })
    }
}

impl Inner {
    /// Parses one transaction, counting bad input in the metrics.
    fn parse(&self, line: u64, json: &[u8]) -> Result<ParsedTransaction, InputError> {
        // The grammar and the LINE_BYTES_MAX limit of a line of `rulehost run`.
        let parsed = rulehost_engine::run::parse_bytes(line, json);
        if parsed.is_err() {
            self.metrics.bad_input();
        }
        parsed
    }
}

struct Inner {
    pipeline: Pipeline,
    rules: Rules,
    pool: rayon::ThreadPool,
    metrics: Arc<Metrics>,
    window: usize,
    stopping: AtomicBool,
}

/// A running host: cheap to clone, shareable across tasks.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

impl Host {
    /// Runs `f` on an evaluation thread and awaits its result.
    async fn on_pool<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> T + Send + 'static) -> Result<T, HostError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inner = self.inner.clone();
        self.inner.pool.spawn(move || {
            // A panic must not reach rayon, which aborts the process on one.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&inner)));
            let _ = tx.send(result.map_err(|panic| rulehost_engine::panic_message(&*panic)));
        });
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(HostError::Internal(message)),
            Err(_) => Err(HostError::Stopped),
        }
    }

    /// Decides one transaction (a JSON object, as in the input files).
    /// Returns its decision — new or replayed — once it is durable, or the
    /// error record naming the field for bad input.
    pub async fn evaluate(&self, json: &str) -> Result<Record, HostError> {
        self.evaluate_line(1, json.to_owned()).await
    }

    /// Runs `work` on an evaluation thread; returns its result once every
    /// ledger change it made is durable.
    async fn durably<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> T + Send + 'static,
    ) -> Result<T, HostError> {
        let (value, durable) = self
            .on_pool(move |inner| {
                let value = work(inner);
                (value, lock(inner.pipeline.ledger()).sync_point())
            })
            .await?;
        durable.wait_async().await?;
        Ok(value)
    }

    /// As [`Host::evaluate`], numbering the record `line`.
    pub async fn evaluate_line(&self, line: u64, json: String) -> Result<Record, HostError> {
        self.evaluate_parsed(line, self.parse(line, json.as_bytes())).await
    }

    /// Parses one transaction as the host does (bad input is counted in the
    /// metrics), so a caller holding borrowed bytes can parse them in place
    /// and hand the host only the owned result (see [`Host::evaluate_parsed`]).
    pub fn parse(&self, line: u64, json: &[u8]) -> Result<ParsedTransaction, InputError> {
        self.inner.parse(line, json)
    }

    /// Decides a transaction [`Host::parse`] parsed; bad input is answered
    /// with its error record at once.
    pub async fn evaluate_parsed(
        &self,
        line: u64,
        parsed: Result<ParsedTransaction, InputError>,
    ) -> Result<Record, HostError> {
        match parsed {
            Ok(parsed) => {
                self.durably(move |inner| inner.pipeline.decide(&inner.rules.live().current(), line, &parsed)).await
            }
            Err(e) => Ok(Record::Error(e)),
        }
    }

    /// Decides many transactions, in order (as `rulehost run` would, one
    /// after another), all against the rule set live at the start; returns
    /// their records once all are durable.
    pub async fn evaluate_batch(&self, lines: Vec<String>) -> Result<Vec<Record>, HostError> {
        self.durably(move |inner| {
            let parsed: Vec<_> =
                lines.iter().zip(1..).map(|(l, line)| (line, inner.parse(line, l.as_bytes()))).collect();
            inner.pipeline.decide_many(&inner.rules.live().current(), &parsed, &inner.pool, inner.window)
        })
        .await
    }

    /// As [`Host::evaluate_batch`], for transactions [`Host::parse`] parsed
    /// (each numbered by its line).
    pub async fn evaluate_parsed_batch(
        &self,
        parsed: Vec<(u64, Result<ParsedTransaction, InputError>)>,
    ) -> Result<Vec<Record>, HostError> {
        self.durably(move |inner| {
            inner.pipeline.decide_many(&inner.rules.live().current(), &parsed, &inner.pool, inner.window)
        })
        .await
    }

    /// The recorded decision of a transaction, however long ago it was made.
    pub fn decision(&self, id: &str) -> Result<Option<Arc<Decision>>, HostError> {
        Ok(lock(self.inner.pipeline.ledger()).decision(id)?.map(|d| d.decision))
    }

    /// An account's facts and balances.
    pub fn account(&self, id: &str) -> Option<AccountBalances> {
        let ledger = lock(self.inner.pipeline.ledger());
        Some(AccountBalances::new(ledger.account(id)?, ledger.balances(id)?))
    }

    /// Posts (`approve`) or voids a held transaction; idempotent. Returns the
    /// hold once the resolution is durable.
    pub async fn resolve_hold(&self, id: &str, approve: bool) -> Result<(Resolution, Hold), HostError> {
        let id = id.to_owned();
        let resolved = self
            .durably(move |inner| {
                let mut ledger = lock(inner.pipeline.ledger());
                let resolution = ledger.resolve_hold(&id, approve)?;
                let hold = ledger.hold(&id)?.ok_or_else(|| LedgerError::UnknownHold(id.clone()))?;
                Ok::<_, LedgerError>((resolution, hold))
            })
            .await?;
        Ok(resolved?)
    }

    /// Pending holds.
    pub fn pending_holds(&self) -> Result<Vec<Hold>, HostError> {
        Ok(lock(self.inner.pipeline.ledger()).pending_holds()?)
    }

    /// The live rule set.
    pub fn ruleset(&self) -> Arc<RuleSet> {
        self.inner.rules.live().current()
    }

    /// The live rule-set version (content hash).
    pub fn version(&self) -> Arc<str> {
        self.inner.rules.live().current().version.clone()
    }

    /// The shadow candidate's agreement report so far (`None` without one).
    pub fn shadow_report(&self) -> Option<rulehost_engine::backtest::Report> {
        self.inner.pipeline.shadow_report()
    }

    /// Reload status: version, history, last refused reload, counts.
    pub fn status(&self) -> Status {
        self.inner.rules.live().status()
    }

    /// Every later reload, refusal and rollback.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ReloadEvent> {
        self.inner.rules.subscribe()
    }

    /// Loads the folder now; a version that fails validation is refused and
    /// the live one keeps serving.
    pub async fn reload(&self) -> Result<ReloadOutcome, ReloadError> {
        let live = self.inner.rules.live();
        tokio::task::spawn_blocking(move || live.reload()).await.map_err(|e| ReloadError::HostFailed(e.to_string()))?
    }

    /// Serves the previous version again.
    pub async fn rollback(&self) -> Result<ReloadOutcome, ReloadError> {
        let live = self.inner.rules.live();
        tokio::task::spawn_blocking(move || live.rollback())
            .await
            .map_err(|e| ReloadError::HostFailed(e.to_string()))?
    }

    /// The canary rollout's state and counts (`None` without a rollout).
    pub fn rollout_status(&self) -> Option<serde_json::Value> {
        self.inner.rules.status()
    }

    /// Sets the canary candidate's share, in percent (0..=100).
    pub async fn set_canary_share(&self, percent: u64) -> Result<Transition, RolloutError> {
        self.rollout_request(move |r| r.set_share(percent)).await
    }

    /// Aborts the canary (share 0, the candidate kept).
    pub async fn abort_canary(&self) -> Result<Transition, RolloutError> {
        self.rollout_request(Rules::abort).await
    }

    /// Promotes the candidate: it becomes live, the live rule set is kept
    /// for [`Host::rollback_promotion`].
    pub async fn promote_canary(&self) -> Result<Transition, RolloutError> {
        self.rollout_request(Rules::promote).await
    }

    /// Rolls back the last promotion.
    pub async fn rollback_promotion(&self) -> Result<Transition, RolloutError> {
        self.rollout_request(Rules::rollback).await
    }

    /// Runs a rollout request off the runtime's workers (it writes the state file).
    async fn rollout_request(
        &self,
        f: impl FnOnce(&Rules) -> Result<Transition, RolloutError> + Send + 'static,
    ) -> Result<Transition, RolloutError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner.rules))
            .await
            .map_err(|e| RolloutError::State { path: PathBuf::new(), message: e.to_string() })?
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The metrics in the Prometheus text format, with the partitions this
    /// host owns read afresh from a shared ledger (it may have taken some
    /// over or handed some back since the last upkeep tick). Off the
    /// runtime's workers: the ledger may be busy reopening.
    pub async fn metrics_text(&self) -> String {
        let inner = self.inner.clone();
        let encoded = tokio::task::spawn_blocking(move || {
            if inner.metrics.is_partitioned() {
                inner.note_partitions(&**lock(inner.pipeline.ledger()));
            }
            inner.metrics.encode()
        })
        .await;
        encoded.unwrap_or_else(|_| self.inner.metrics.encode())
    }

    /// Whether the host serves: not stopping, and the ledger store has not failed.
    pub fn is_ready(&self) -> bool {
        if self.inner.stopping.load(Ordering::Relaxed) {
            return false;
        }
        // A memory ledger's point is always reached; a failed store's never.
        let point = lock(self.inner.pipeline.ledger()).sync_point();
        point.failure().is_none()
    }

    /// Marks the host as stopping (readiness turns false).
    pub fn begin_shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
    }

    /// Waits until everything decided so far is durable.
    pub async fn flush(&self) -> Result<(), HostError> {
        let point = lock(self.inner.pipeline.ledger()).sync_point();
        point.wait_async().await?;
        Ok(())
    }
}

/// The error record of bad input that never reached the pipeline (kept for
/// HTTP bodies that are not JSON at all).
pub fn malformed(line: u64, message: String) -> Record {
    Record::Error(InputError { line, id: None, code: ErrorCode::MalformedJson, field: None, message })
}
