//! What the durable ledger can be told (its limits, with defaults), how it
//! reports a file it cannot open, and its writer's counters.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::SCHEMA_VERSION;
use rulehost_ledger::LATENESS_SECONDS_DEFAULT;

/// Most changes written in one durable commit.
pub const GROUP_COMMIT_OPS_MAX: usize = 4096;
/// Default longest time the writer waits for more changes before committing
/// a group that is not full: none (a group is whatever queued while the
/// previous commit ran).
pub const GROUP_COMMIT_LINGER_DEFAULT: Duration = Duration::ZERO;
/// Changes queued ahead of the disk before committing callers wait.
pub const WRITE_QUEUE_OPS_MAX: usize = 65_536;
/// Changes handed to the writer together (fewer wake-ups on the serial
/// commit path); a sync point hands over whatever is buffered at once.
pub const HANDOFF_OPS_MAX: usize = 256;
/// Default size of the recent-decision cache, in decisions. Decisions not
/// yet durable are kept beyond it (at most the write queue's worth).
pub const DECISION_CACHE_ENTRIES_DEFAULT: usize = 65_536;
/// Default size of the filter of decided ids, in bytes (16 MiB: about one
/// false "maybe" in 300 at 10 million ids, one in 6 at 50 million; a
/// "maybe" costs one indexed read).
pub const ID_FILTER_BYTES_DEFAULT: usize = 16 << 20;
/// Decisions between two snapshots of the id filter in the file (what a
/// restart after a crash re-reads at most, besides the snapshot).
pub const ID_FILTER_SNAPSHOT_DECISIONS: u64 = 1_000_000;
/// Called after every durable commit with its duration (write + fsync) and
/// the number of changes it made durable (e.g. to feed a metrics histogram).
pub type CommitHook = Arc<dyn Fn(Duration, usize) + Send + Sync>;

/// How the durable ledger commits, what history it keeps and how much it
/// keeps in memory.
#[derive(Clone)]
pub struct StoreOptions {
    /// Most changes per durable commit.
    pub group_commit_ops_max: usize,
    /// Longest wait for more changes before committing a group that is not full.
    pub group_commit_linger: Duration,
    /// History lateness allowance, in seconds.
    pub lateness_seconds: u64,
    /// Longest history window of the rule set that will run (history older
    /// than this plus lateness is not loaded).
    pub history_window_seconds_max: u64,
    /// Recent decisions kept in memory, in decisions.
    pub decision_cache_entries: usize,
    /// Size of the filter of decided ids, in bytes.
    pub id_filter_bytes: usize,
    /// Called after every durable commit.
    pub on_commit: Option<CommitHook>,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("group_commit_ops_max", &self.group_commit_ops_max)
            .field("group_commit_linger", &self.group_commit_linger)
            .field("lateness_seconds", &self.lateness_seconds)
            .field("history_window_seconds_max", &self.history_window_seconds_max)
            .field("decision_cache_entries", &self.decision_cache_entries)
            .field("id_filter_bytes", &self.id_filter_bytes)
            .field("on_commit", &self.on_commit.is_some())
            .finish()
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            group_commit_ops_max: GROUP_COMMIT_OPS_MAX,
            group_commit_linger: GROUP_COMMIT_LINGER_DEFAULT,
            lateness_seconds: LATENESS_SECONDS_DEFAULT,
            history_window_seconds_max: 0,
            decision_cache_entries: DECISION_CACHE_ENTRIES_DEFAULT,
            id_filter_bytes: ID_FILTER_BYTES_DEFAULT,
            on_commit: None,
        }
    }
}

/// SQLite's reason once (rusqlite's own text repeats it), with what to do
/// about the common ones.
pub(crate) fn sqlite_reason(e: &rusqlite::Error) -> String {
    let (code, text) = match e {
        rusqlite::Error::SqliteFailure(f, Some(m)) => (Some(f.code), m.clone()),
        rusqlite::Error::SqliteFailure(f, None) => (Some(f.code), f.to_string()),
        other => (None, other.to_string()),
    };
    match code {
        Some(
            rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied,
        ) => {
            format!("{text} (the file and its folder must be writable by this user: check their permissions)")
        }
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            format!("{text} (not a ledger, or damaged: restore it from a backup or give another path)")
        }
        _ => text,
    }
}

/// Why a ledger file could not be opened. Opening never changes a file it
/// refuses.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The path cannot be opened or created.
    #[error("cannot open ledger {path}: {why}")]
    Unopenable {
        /// The path.
        path: PathBuf,
        /// SQLite's reason, with what to do about it.
        why: String,
    },
    /// Another process holds the ledger.
    #[error("ledger {0} is in use by another process (one process owns a ledger file at a time)")]
    InUse(PathBuf),
    /// The file is not a SQLite database, or not a rulehost ledger.
    #[error("{path} is not a rulehost ledger: {why}")]
    NotALedger {
        /// The path.
        path: PathBuf,
        /// What was found.
        why: String,
    },
    /// The ledger was written with an older layout and this handle cannot
    /// migrate it (it only reads).
    #[error(
        "ledger {path} has schema version {found}; this build reads {SCHEMA_VERSION}: migrate it with `rulehost ledger migrate --ledger {path}` (or open it once with `rulehost run` or `serve`)"
    )]
    NeedsMigration {
        /// The path.
        path: PathBuf,
        /// Its schema version.
        found: i64,
    },
    /// The ledger's content is inconsistent (run `rulehost ledger reconcile`).
    #[error("ledger {path} is damaged: {why} (run `rulehost ledger reconcile --ledger {path}` for a full report)")]
    Damaged {
        /// The path.
        path: PathBuf,
        /// The first problem found.
        why: String,
    },
}

/// Counters of the writer, for benchmarks and metrics.
#[derive(Clone, Debug)]
pub struct CommitStats {
    /// Durable commits made.
    pub commits: u64,
    /// Changes written.
    pub ops: u64,
    /// Latency of commits (first change queued → durable), microseconds.
    pub latency_us: hdrhistogram::Histogram<u64>,
    /// Duration of commits themselves (write + fsync), microseconds.
    pub commit_us: hdrhistogram::Histogram<u64>,
}

impl Default for CommitStats {
    fn default() -> Self {
        // 1 µs … 1 h, 3 significant figures (fixed bounds: saturating_record clamps to them).
        let histogram = || hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        CommitStats { commits: 0, ops: 0, latency_us: histogram(), commit_us: histogram() }
    }
}
