//! What a durable ledger can be told (its limits, with defaults) and its
//! writer's counters, whatever the store.

use std::sync::Arc;
use std::time::Duration;

use crate::LATENESS_SECONDS_DEFAULT;

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
/// Default decisions between two snapshots of the id filter in the file
/// (what a restart after a crash re-reads at most, besides the snapshot).
pub const ID_FILTER_SNAPSHOT_DECISIONS: u64 = 1_000_000;
/// Bytes of the id filter copied into one part of a snapshot: a part is
/// queued with a change once the part before it is durable, so a snapshot
/// holds at most this much in memory (see `FilterPart`).
pub const FILTER_PART_BYTES: usize = 1 << 20;
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
    /// Decisions between two snapshots of the id filter in the store (what
    /// an open after a crash re-reads at most, besides the snapshot).
    pub id_filter_snapshot_decisions: u64,
    /// Called after every durable commit.
    pub on_commit: Option<CommitHook>,
    /// The partitions this host claims on a shared ledger (PostgreSQL
    /// only); `None`: the host owns the whole ledger.
    pub partitions: Option<PartitionClaim>,
}

/// Default lease of a partition: a host that stops renewing loses its
/// partitions this long after its last renewal.
pub const LEASE_DEFAULT: Duration = Duration::from_secs(10);

/// What a host sharing a ledger claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionClaim {
    /// The host's name, as other hosts and `rulehost partitions` show it
    /// (e.g. the address clients reach it at).
    pub host: String,
    /// The partitions it decides (`rulehost_core::partition`).
    pub partitions: Vec<u16>,
    /// How long a lease lasts without renewal (renewed every third of it).
    pub lease: Duration,
    /// A serving host: takes over the partitions of a host whose lease
    /// lapsed (it died or was cut off), hands them back when that host
    /// claims them again, and after a failure (a lost lease, a group the
    /// database refused) reopens the ledger rather than stays down. `run`
    /// leaves this off: it decides the partitions it was given, or stops.
    pub take_over: bool,
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
            .field("id_filter_snapshot_decisions", &self.id_filter_snapshot_decisions)
            .field("on_commit", &self.on_commit.is_some())
            .field("partitions", &self.partitions)
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
            id_filter_snapshot_decisions: ID_FILTER_SNAPSHOT_DECISIONS,
            on_commit: None,
            partitions: None,
        }
    }
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
