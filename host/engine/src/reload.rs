//! Hot reload: the live rule set of a running host, swapped atomically when
//! the rule-set folder changes.
//!
//! A new version goes live only after it loads (manifest, pins, WIT
//! compatibility, declarations, parameters, lists) and passes the rule set's
//! own cases (`cases/`); otherwise it is refused, the previous version keeps
//! serving, and the failure is kept for the status and counted. Each
//! transaction is evaluated wholly against the `Arc<RuleSet>` it took at its
//! start, so in-flight work finishes on its version. Loading runs on the
//! watcher's thread, never on a transaction's path; compiled modules come
//! from the engine's on-disk cache when unchanged (see `SandboxConfig`).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::ruleset::RuleSet;
use crate::testrun::{render, test_loaded};
use rulehost_sandbox::Sandbox;

/// Versions kept for rollback and the status.
pub const HISTORY_VERSIONS_MAX: usize = 8;
/// The folder, inside the rule set, where a watching host publishes its
/// status and takes requests (the watcher ignores it, and every dot-path).
pub const STATE_DIR: &str = ".rulehost";
/// The status a watching host publishes after every change (JSON).
pub const STATUS_FILE: &str = "status.json";
/// Creating this file asks a watching host to roll back one version.
pub const ROLLBACK_FILE: &str = "rollback";
/// Quiet time after the last file event before a reload starts, in ms.
/// Short on purpose: a file still being written fails validation and is
/// refused, so the debounce only saves work, it is not what keeps partial
/// writes out.
pub const DEBOUNCE_MS_DEFAULT: u64 = 10;

/// Where the live rule set comes from: a fixed one, or a [`LiveRules`].
pub trait RuleSource: Send + Sync {
    /// The version to evaluate the next transactions against.
    fn current(&self) -> Arc<RuleSet>;
}

impl RuleSource for Arc<RuleSet> {
    fn current(&self) -> Arc<RuleSet> {
        self.clone()
    }
}

/// A version that was live.
#[derive(Clone, Debug)]
pub struct VersionRecord {
    /// Content hash (short).
    pub version: String,
    /// When it went live.
    pub live_since: SystemTime,
    /// What changed against the version before (rules added, removed, or
    /// with another module).
    pub change: String,
}

/// Why a reload was refused.
#[derive(Clone, Debug)]
pub struct ReloadFailure {
    /// When.
    pub at: SystemTime,
    /// The error, naming the rule and reason.
    pub message: String,
}

/// How a reload ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new version is live.
    Swapped {
        /// The version before.
        from: String,
        /// The version now.
        to: String,
    },
    /// The folder holds the live version already.
    Unchanged,
}

/// Timings of one reload, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReloadTimings {
    /// Loading and compiling (or fetching from the cache).
    pub load_us: u64,
    /// Running the rule set's cases.
    pub validate_us: u64,
    /// The atomic swap.
    pub swap_us: u64,
}

struct State {
    /// Newest last; the live version is the last one.
    history: VecDeque<(VersionRecord, Arc<RuleSet>)>,
    last_error: Option<ReloadFailure>,
    reloads: u64,
    failures: u64,
    last_timings: ReloadTimings,
}

fn rfc3339(t: SystemTime) -> String {
    let nanos = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
    rulehost_core::input::format_timestamp(nanos)
}

/// A snapshot for status displays and metrics.
#[derive(Clone, Debug)]
pub struct Status {
    /// The live version.
    pub version: String,
    /// Versions that were live, oldest first (the live one last).
    pub history: Vec<VersionRecord>,
    /// The last refused reload, if any.
    pub last_error: Option<ReloadFailure>,
    /// Reloads that went live.
    pub reloads: u64,
    /// Reloads refused.
    pub failures: u64,
    /// Timings of the last successful reload.
    pub last_timings: ReloadTimings,
}

/// Called with every version about to go live.
pub type OnSwap = Box<dyn Fn(&RuleSet) + Send + Sync>;

/// Events sent to [`LiveRules::subscribe`]rs that are keeping up.
pub const RELOAD_EVENTS_BUFFERED: usize = 64;

/// What happened to the live rule set.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum ReloadEvent {
    /// A new version went live.
    Swapped {
        /// The version before.
        from: String,
        /// The version now.
        to: String,
    },
    /// A reload was refused; `from` keeps serving.
    Refused {
        /// Why, naming the rule and reason.
        message: String,
    },
    /// An operator rolled back.
    RolledBack {
        /// The version before.
        from: String,
        /// The version now.
        to: String,
    },
}

/// The live rule set of a host.
pub struct LiveRules {
    sandbox: Arc<Sandbox>,
    dir: PathBuf,
    current: ArcSwap<RuleSet>,
    /// The bookkeeping, held only for moments (status reads never wait on a reload).
    state: Mutex<State>,
    /// Serialises reloads and rollbacks; held for a whole load-and-validate.
    reloading: Mutex<()>,
    on_swap: Option<OnSwap>,
    events: tokio::sync::broadcast::Sender<ReloadEvent>,
}

impl Status {
    /// The status as JSON (what `rulehost ruleset status` prints).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "reloads": self.reloads,
            "failures": self.failures,
            "last_reload_us": { "load": self.last_timings.load_us, "validate": self.last_timings.validate_us, "swap": self.last_timings.swap_us },
            "last_error": self.last_error.as_ref().map(|e| serde_json::json!({ "at": rfc3339(e.at), "message": e.message })),
            "history": self.history.iter().map(|r| serde_json::json!({ "version": r.version, "live_since": rfc3339(r.live_since), "change": r.change })).collect::<Vec<_>>(),
            "as_of": rfc3339(SystemTime::now()),
        })
    }
}

impl RuleSource for LiveRules {
    fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }
}

fn describe_change(old: Option<&RuleSet>, new: &RuleSet) -> String {
    let Some(old) = old else {
        return format!("initial: {} rules", new.rules.len());
    };
    let mut parts = Vec::new();
    for r in &new.rules {
        match old.rules.iter().find(|o| o.name == r.name) {
            None => parts.push(format!("+{}", r.name)),
            Some(o) if o.sha256 != r.sha256 => parts.push(format!("~{} {}→{}", r.name, o.version, r.version)),
            Some(_) => {}
        }
    }
    for o in &old.rules {
        if !new.rules.iter().any(|r| r.name == o.name) {
            parts.push(format!("-{}", o.name));
        }
    }
    if parts.is_empty() { "manifest, parameters or lists".into() } else { parts.join(", ") }
}

impl LiveRules {
    /// Loads the folder's rule set as the first live version. `on_swap` runs
    /// with every version about to go live (e.g. to widen history retention).
    pub fn load(sandbox: Arc<Sandbox>, dir: &Path, on_swap: Option<OnSwap>) -> Result<LiveRules, ReloadError> {
        let dir =
            dir.canonicalize().map_err(|e| ReloadError::Folder { dir: dir.to_owned(), message: e.to_string() })?;
        let ruleset = contained(|| RuleSet::load(&sandbox, &dir).map_err(|e| ReloadError::Load(e.to_string())))?;
        LiveRules::with_loaded(sandbox, &dir, ruleset, on_swap)
    }

    /// [`LiveRules::load`] with the folder's rule set already loaded (by
    /// the caller, from `dir`), so that starting a host loads it once.
    pub fn with_loaded(
        sandbox: Arc<Sandbox>,
        dir: &Path,
        ruleset: RuleSet,
        on_swap: Option<OnSwap>,
    ) -> Result<LiveRules, ReloadError> {
        // One absolute path from here on: the watcher's events and the
        // rollback request are compared with it.
        let dir =
            dir.canonicalize().map_err(|e| ReloadError::Folder { dir: dir.to_owned(), message: e.to_string() })?;
        let dir = dir.as_path();
        let ruleset = Arc::new(ruleset);
        if let Some(f) = &on_swap {
            f(&ruleset);
        }
        let record = VersionRecord {
            version: ruleset.version.to_string(),
            live_since: SystemTime::now(),
            change: describe_change(None, &ruleset),
        };
        let state = State {
            history: VecDeque::from([(record, ruleset.clone())]),
            last_error: None,
            reloads: 0,
            failures: 0,
            last_timings: ReloadTimings::default(),
        };
        Ok(LiveRules {
            sandbox,
            dir: dir.to_owned(),
            current: ArcSwap::new(ruleset),
            state: Mutex::new(state),
            reloading: Mutex::new(()),
            on_swap,
            events: tokio::sync::broadcast::Sender::new(RELOAD_EVENTS_BUFFERED),
        })
    }

    /// Every later reload, refusal and rollback, as events. A subscriber that
    /// falls more than `RELOAD_EVENTS_BUFFERED` behind is told how many it missed.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ReloadEvent> {
        self.events.subscribe()
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bookkeeping. Only whole updates are made under this lock, so a
    /// panic elsewhere cannot leave it half-written: a poisoned lock is
    /// taken as it is.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn serialised(&self) -> std::sync::MutexGuard<'_, ()> {
        self.reloading.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the status to `STATE_DIR/STATUS_FILE` in the rule set (best
    /// effort: a read-only folder only loses the published copy).
    pub fn publish_status(&self) {
        let dir = self.dir.join(STATE_DIR);
        let text = serde_json::to_string_pretty(&self.status().to_json()).unwrap_or_default();
        let tmp = dir.join(format!("{STATUS_FILE}.tmp"));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&tmp, text))
            .and_then(|_| std::fs::rename(&tmp, dir.join(STATUS_FILE)));
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not publish the rule-set status");
        }
    }

    /// Loads, validates and (if it passes) swaps in the folder's rule set.
    /// Serialised: one reload at a time.
    pub fn reload(&self) -> Result<ReloadOutcome, ReloadError> {
        let span = tracing::info_span!("reload", dir = %self.dir.display());
        let _enter = span.enter();
        let _one_at_a_time = self.serialised();
        let started = Instant::now();
        let result =
            contained(|| RuleSet::load(&self.sandbox, &self.dir).map_err(|e| ReloadError::Load(e.to_string())));
        let load_us = micros(started);
        let ruleset = match result {
            Ok(r) => Arc::new(r),
            Err(message) => return Err(self.refuse(message)),
        };
        let live = self.current.load_full();
        if ruleset.sha256 == live.sha256 {
            return Ok(ReloadOutcome::Unchanged);
        }
        let started = Instant::now();
        let tested = contained(|| match test_loaded(&self.sandbox, &ruleset) {
            Ok(report) if report.counts().1 == 0 => Ok(()),
            Ok(report) => Err(ReloadError::CasesFail(render(&report))),
            Err(e) => Err(ReloadError::CasesUnrunnable(e.to_string())),
        });
        if let Err(message) = tested {
            return Err(self.refuse(message));
        }
        let validate_us = micros(started);
        if let Some(f) = &self.on_swap {
            f(&ruleset);
        }
        let started = Instant::now();
        self.current.store(ruleset.clone());
        let swap_us = micros(started);
        let mut state = self.state();
        let record = VersionRecord {
            version: ruleset.version.to_string(),
            live_since: SystemTime::now(),
            change: describe_change(Some(&live), &ruleset),
        };
        state.history.push_back((record, ruleset.clone()));
        while state.history.len() > HISTORY_VERSIONS_MAX {
            state.history.pop_front();
        }
        state.reloads += 1;
        state.last_timings = ReloadTimings { load_us, validate_us, swap_us };
        tracing::info!(from = %live.version, to = %ruleset.version, load_us, validate_us, swap_us, "rule set live");
        let _ =
            self.events.send(ReloadEvent::Swapped { from: live.version.to_string(), to: ruleset.version.to_string() });
        Ok(ReloadOutcome::Swapped { from: live.version.to_string(), to: ruleset.version.to_string() })
    }

    fn refuse(&self, error: ReloadError) -> ReloadError {
        let message = error.to_string();
        tracing::warn!(error = %message, "rule set refused; the previous version keeps serving");
        let mut state = self.state();
        state.failures += 1;
        state.last_error = Some(ReloadFailure { at: SystemTime::now(), message: message.clone() });
        let _ = self.events.send(ReloadEvent::Refused { message });
        error
    }

    /// Makes the version before the live one live again.
    pub fn rollback(&self) -> Result<ReloadOutcome, ReloadError> {
        let _one_at_a_time = self.serialised();
        let mut state = self.state();
        let n = state.history.len();
        let (Some((_, live)), Some((record, previous))) =
            (state.history.get(n.wrapping_sub(1)).cloned(), state.history.get(n.wrapping_sub(2)).cloned())
        else {
            return Err(ReloadError::NothingToRollBack);
        };
        if let Some(f) = &self.on_swap {
            f(&previous);
        }
        self.current.store(previous.clone());
        state.history.pop_back();
        if let Some(back) = state.history.back_mut() {
            back.0 = VersionRecord {
                version: record.version.clone(),
                live_since: SystemTime::now(),
                change: format!("rollback from {}", live.version),
            };
        }
        tracing::info!(from = %live.version, to = %previous.version, "rolled back");
        let _ = self
            .events
            .send(ReloadEvent::RolledBack { from: live.version.to_string(), to: previous.version.to_string() });
        Ok(ReloadOutcome::Swapped { from: live.version.to_string(), to: previous.version.to_string() })
    }

    /// The status.
    pub fn status(&self) -> Status {
        let state = self.state();
        Status {
            version: self.current.load().version.to_string(),
            history: state.history.iter().map(|(r, _)| r.clone()).collect(),
            last_error: state.last_error.clone(),
            reloads: state.reloads,
            failures: state.failures,
            last_timings: state.last_timings,
        }
    }
}

/// Microseconds since `started`, saturating.
fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Runs a load or validation step so that a panic in it — a host bug a
/// strange rule set provokes — refuses the rule set instead of taking the
/// reload thread (and its locks) down with it.
fn contained<T>(step: impl FnOnce() -> Result<T, ReloadError>) -> Result<T, ReloadError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)) {
        Ok(result) => result,
        Err(panic) => Err(ReloadError::HostFailed(crate::panic_message(&*panic))),
    }
}

/// Why a rule-set version was not made live (or a folder not watched).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The folder cannot be resolved.
    #[error("{}: {message}", dir.display())]
    Folder {
        /// The folder as given.
        dir: PathBuf,
        /// Why.
        message: String,
    },
    /// The rule set does not load (manifest, pins, modules, declarations,
    /// parameters, lists: the message names what and where).
    #[error("{0}")]
    Load(String),
    /// It loads, but its own cases (`cases/`) fail; the report says which.
    #[error("its own cases fail:\n{0}")]
    CasesFail(String),
    /// Its cases could not be run.
    #[error("its cases could not run: {0}")]
    CasesUnrunnable(String),
    /// The host panicked while loading it (a host bug).
    #[error("the host failed while loading it (a host bug; please report it): {0}")]
    HostFailed(String),
    /// A rollback with no earlier version kept.
    #[error("no earlier version to roll back to")]
    NothingToRollBack,
    /// The folder cannot be watched.
    #[error("watching {}: {message}", dir.display())]
    Watch {
        /// The folder.
        dir: PathBuf,
        /// Why.
        message: String,
    },
}

/// Watches a rule-set folder and reloads on changes, debounced. Dropping it
/// stops watching.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a path (inside `dir`) is an editor's or copier's temporary file,
/// or under a dot-folder such as `STATE_DIR`: never a reason to reload (a
/// rename onto the real name produces the event that counts).
fn is_ignored(dir: &Path, path: &Path) -> bool {
    let relative = path.strip_prefix(dir).unwrap_or(path);
    let dotted = relative.components().any(|c| c.as_os_str().to_str().is_some_and(|s| s.starts_with('.')));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    dotted || name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".tmp") || name.ends_with(".part")
}

impl Watcher {
    /// Starts watching `live`'s folder. A burst of events is one reload,
    /// started `debounce` after the last event of the burst.
    pub fn start(live: Arc<LiveRules>, debounce: Duration) -> Result<Watcher, ReloadError> {
        use notify::Watcher as _;
        let (tx, rx) = crossbeam_channel::unbounded::<bool>();
        let watched = live.dir.clone();
        let rollback_request = live.dir.join(STATE_DIR).join(ROLLBACK_FILE);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            if event.paths.contains(&rollback_request) {
                let _ = tx.send(true);
            } else if event.paths.iter().any(|p| !is_ignored(&watched, p)) {
                let _ = tx.send(false);
            }
        })
        .map_err(|e| ReloadError::Watch { dir: live.dir.clone(), message: e.to_string() })?;
        watcher
            .watch(&live.dir, notify::RecursiveMode::Recursive)
            .map_err(|e| ReloadError::Watch { dir: live.dir.clone(), message: e.to_string() })?;
        live.publish_status();
        let watched_dir = live.dir.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rulehost-reload".into())
            .spawn(move || {
                let request = live.dir.join(STATE_DIR).join(ROLLBACK_FILE);
                while !stop_flag.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(first) = rx.recv_timeout(Duration::from_millis(100)) else {
                        continue;
                    };
                    // Debounce: wait until the folder has been quiet,
                    // remembering whether files changed and whether a
                    // rollback was asked for.
                    let (mut rollback, mut changed) = (first, !first);
                    while let Ok(r) = rx.recv_timeout(debounce) {
                        rollback |= r;
                        changed |= !r;
                    }
                    if rollback && request.exists() {
                        let _ = std::fs::remove_file(&request);
                        if let Err(e) = live.rollback() {
                            tracing::warn!(error = %e, "rollback refused");
                        }
                    }
                    if changed {
                        let _ = live.reload();
                    }
                    live.publish_status();
                }
            })
            .map_err(|e| ReloadError::Watch {
                dir: watched_dir,
                message: format!("starting the reload thread: {e}"),
            })?;
        Ok(Watcher { _watcher: watcher, stop, thread: Some(thread) })
    }
}
