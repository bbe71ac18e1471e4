//! The durable ledger: a bounded hot state in memory (balances, pending
//! holds, history within retention, a cache of recent decisions and a
//! filter of every id ever decided), an embedded SQLite database behind it
//! holding everything, and a writer thread that makes changes durable in
//! groups.
//!
//! Every change is applied to the hot state (so reads and the next decision
//! see it at once) and queued, in order, for the writer — handed over in
//! chunks of [`HANDOFF_OPS_MAX`], or at once when someone asks for a sync
//! point. The writer takes whatever is queued — closing a group once it
//! holds [`GROUP_COMMIT_OPS_MAX`] changes, waiting at most
//! `group_commit_linger` for more — and writes it in one SQLite transaction
//! (WAL, `synchronous=FULL`: durable when `COMMIT` returns). Then it advances
//! the [`Watermark`]; callers acknowledge a decision only once its
//! [`SyncPoint`] is reached. After a crash the file holds a prefix of the
//! changes, each whole: an acknowledged change is always in it, and an
//! unacknowledged one is there entirely or not at all.
//!
//! Memory does not grow with decisions: the journal, stored decisions and
//! resolved holds live only in the file. An id's decision is looked up in
//! the recent cache (which keeps every decision not yet durable), then in
//! the id filter (a Bloom filter of fixed size: a new id — almost every id
//! — costs no disk read), then in the file by its unique index. Opening
//! reads accounts, pending holds, history within retention and the filter's
//! last snapshot (plus the ids decided after it), never the journal or the
//! decisions.
//!
//! The store enforces the ledger's keys itself: one decision per transaction
//! id (`decisions.id` is unique), at most one transfer and one hold posting
//! per transaction (`journal(reference, kind)` is unique), one hold per id.
//! Journal entries are two-legged (debit, credit, amount), so each balances by
//! construction; balances are written as of the end of each group.
//!
//! One process owns a ledger file at a time (an exclusive advisory lock on
//! the file); a second gets [`OpenError::InUse`]. Readers
//! ([`StoreReader`]) may read it meanwhile.

mod migrate;
mod reconcile;
mod rows;
mod writer;

pub use reconcile::{Report, reconcile};
pub use rows::StoreReader;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use foldhash::HashMap;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use rust_decimal::Decimal;

use rows::{LoadError, load};
use writer::write_loop;

use super::record::DictionaryEntry;
use super::{
    Balances, Commit, Committed, DecisionRecord, Effect, Hold, JournalEntry, LATENESS_SECONDS_DEFAULT, Ledger,
    LedgerError, MemoryLedger, Refusal, Resolution, RulesetArchive, StoredDecision, SyncPoint, Usage, Watermark,
};
use crate::facts::{HistoryQuery, HistoryStats};
use crate::model::{Account, Nanos};

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
/// Version of the database layout this build writes (it migrates 1).
pub const SCHEMA_VERSION: i64 = 2;
/// How long opening waits for another process's lock before reporting it.
pub const OPEN_BUSY_TIMEOUT: Duration = Duration::from_millis(200);
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
/// Hashes per id in the filter.
const ID_FILTER_HASHES: u32 = 7;
/// The filter's seed: fixed, so a snapshot reads back in the next process.
const ID_FILTER_SEED: u128 = 0x7275_6c65_686f_7374_6964_7331;
/// What a snapshot must say to be reused (else the filter is rebuilt from
/// the ids in the file).
const ID_FILTER_FORMAT: &str = "fastbloom-0.17 seed=7275 hashes=7";

/// Tuning: a larger page cache keeps the id indexes in memory; checkpoints
/// run every 16 384 WAL pages, so a page changed by many groups is copied back
/// once.
const PRAGMAS: [(&str, i64); 2] = [("cache_size", -65_536), ("wal_autocheckpoint", 16_384)];

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    currency TEXT NOT NULL,
    country TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    status TEXT NOT NULL,
    overdraft_limit TEXT NOT NULL,
    opening_balance TEXT NOT NULL,
    tags TEXT NOT NULL,
    posted TEXT NOT NULL,
    pending TEXT NOT NULL
) STRICT;
CREATE TABLE system_accounts (id TEXT PRIMARY KEY, posted TEXT NOT NULL) STRICT;
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY,
    reference TEXT NOT NULL,
    kind TEXT NOT NULL,
    debit TEXT NOT NULL,
    credit TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount TEXT NOT NULL,
    UNIQUE (reference, kind)
) STRICT;
CREATE TABLE holds (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    state TEXT NOT NULL
) STRICT;
CREATE TABLE resolutions (
    seq INTEGER PRIMARY KEY,
    hold_id TEXT NOT NULL,
    action TEXT NOT NULL,
    at_unix_ms INTEGER NOT NULL
) STRICT;
";

/// Schema 2 beyond schema 1's tables: compact decisions, history within
/// retention, the rule-set dictionary and archives, the id filter.
const SCHEMA_2: &str = "
CREATE TABLE decisions (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, record BLOB NOT NULL) STRICT;
CREATE TABLE history (
    source TEXT NOT NULL,
    ts BLOB NOT NULL,
    seq INTEGER NOT NULL,
    amount TEXT NOT NULL,
    PRIMARY KEY (source, ts, seq)
) STRICT, WITHOUT ROWID;
CREATE TABLE ruleset_versions (id INTEGER PRIMARY KEY, version TEXT NOT NULL UNIQUE, rules TEXT NOT NULL) STRICT;
CREATE TABLE rulesets (version TEXT PRIMARY KEY, sha256 TEXT NOT NULL, files TEXT NOT NULL) STRICT;
CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, bytes BLOB NOT NULL) STRICT;
CREATE TABLE id_filter (
    key INTEGER PRIMARY KEY CHECK (key = 1),
    covered_seq INTEGER NOT NULL,
    format TEXT NOT NULL,
    bits BLOB NOT NULL
) STRICT;
";

/// A timestamp as 16 bytes that sort as the instants do (big-endian, sign
/// bit flipped).
pub(super) fn ts_key(t: Nanos) -> [u8; 16] {
    ((t as u128) ^ (1u128 << 127)).to_be_bytes()
}

/// Reads back [`ts_key`].
pub(super) fn ts_of_key(bytes: &[u8]) -> Option<Nanos> {
    let b: [u8; 16] = bytes.try_into().ok()?;
    Some((u128::from_be_bytes(b) ^ (1u128 << 127)) as i128)
}

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
fn sqlite_reason(e: &rusqlite::Error) -> String {
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
    #[error("cannot open ledger {path}: {}", sqlite_reason(source))]
    Unopenable {
        /// The path.
        path: PathBuf,
        /// SQLite's reason.
        source: rusqlite::Error,
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

/// A change with its place in the sequence and when it was queued.
pub(super) type Queued = (u64, Instant, Op);

/// One change, as the writer records it.
pub(super) enum Op {
    Accounts {
        accounts: Vec<Account>,
        entries: Vec<JournalEntry>,
        balances: Vec<BalanceRow>,
    },
    Decision(Box<DecisionOp>),
    Resolve {
        hold: Hold,
        entry: Option<JournalEntry>,
        balances: Vec<BalanceRow>,
        at_unix_ms: i64,
    },
    /// A rule-set version's dictionary entry, new or grown.
    Dictionary {
        id: u32,
        entry: DictionaryEntry,
    },
    /// A rule-set version's files.
    Ruleset(Arc<RulesetArchive>),
    /// A snapshot of the id filter, covering every decision written before it.
    IdFilter(Vec<u64>),
}

pub(super) struct DecisionOp {
    id: String,
    record: Arc<[u8]>,
    /// (source, timestamp, amount, the source's horizon after it).
    history: Option<(String, Nanos, Decimal, Nanos)>,
    entry: Option<JournalEntry>,
    hold: Option<Hold>,
    balances: Vec<BalanceRow>,
}

/// An account's balances after a change.
pub(super) struct BalanceRow {
    id: String,
    posted: Decimal,
    /// `None` for a system account.
    pending: Option<Decimal>,
}

/// Decisions kept in memory: every decision not yet durable, and the most
/// recent ones up to the cache size.
#[derive(Default)]
struct Recent {
    records: HashMap<String, (u64, Arc<[u8]>)>,
    order: VecDeque<(u64, String)>,
    bytes: u64,
}

impl Recent {
    fn insert(&mut self, id: String, seq: u64, record: Arc<[u8]>) {
        self.bytes = self.bytes.saturating_add((record.len() + 2 * id.len() + 48) as u64);
        self.order.push_back((seq, id.clone()));
        self.records.insert(id, (seq, record));
    }

    /// Drops the oldest decisions beyond `keep`, never one after `durable`.
    fn evict(&mut self, keep: usize, durable: u64) {
        while self.order.len() > keep {
            let Some((seq, _)) = self.order.front() else { break };
            if *seq > durable {
                break;
            }
            if let Some((_, id)) = self.order.pop_front()
                && let Some((_, record)) = self.records.remove(&id)
            {
                self.bytes = self.bytes.saturating_sub((record.len() + 2 * id.len() + 48) as u64);
            }
        }
    }
}

/// The durable ledger (see the module documentation).
pub struct SqliteLedger {
    memory: MemoryLedger,
    recent: Recent,
    ids: fastbloom::BloomFilter,
    /// Reads what is not in memory (decisions, journal, resolved holds).
    reader: Mutex<Connection>,
    options: StoreOptions,
    path: PathBuf,
    queue: Option<Sender<Vec<Queued>>>,
    /// Changes not yet handed to the writer (see `HANDOFF_OPS_MAX`).
    buffer: Mutex<Vec<Queued>>,
    writer: Option<JoinHandle<()>>,
    watermark: Arc<Watermark>,
    stats: Arc<Mutex<CommitStats>>,
    seq: u64,
    decided_since_snapshot: u64,
    /// The advisory lock that makes this process the file's owner; dropped
    /// last, after both connections closed.
    _owner: std::fs::File,
}

fn sql_err(path: &Path, e: rusqlite::Error) -> OpenError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked) => OpenError::InUse(path.to_owned()),
        Some(C::NotADatabase) => OpenError::NotALedger { path: path.to_owned(), why: "not a SQLite database".into() },
        _ => OpenError::Unopenable { path: path.to_owned(), source: e },
    }
}

pub(super) fn decimal(text: &str, what: &str) -> Result<Decimal, String> {
    text.parse::<Decimal>().map_err(|e| format!("{what}: {text:?} is not a decimal: {e}"))
}

/// A filter of `bytes` bytes (at least one word).
fn empty_filter(bytes: usize) -> fastbloom::BloomFilter {
    let words = (bytes / 8).max(1);
    fastbloom::BloomFilter::from_vec(vec![0u64; words]).seed(&ID_FILTER_SEED).hashes(ID_FILTER_HASHES)
}

impl SqliteLedger {
    /// Opens (or creates) the ledger at `path` and loads its hot state;
    /// a ledger of schema 1 is migrated first.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<SqliteLedger, OpenError> {
        let (conn, owner) = Self::connect(path)?;
        let owner = owner.ok_or_else(|| OpenError::InUse(path.to_owned()))?;
        Self::prepare_schema(&conn, path, true)?;
        let damaged = |why: String| OpenError::Damaged { path: path.to_owned(), why };
        let mut memory = MemoryLedger::hot(options.lateness_seconds);
        memory.retain_history(options.history_window_seconds_max);
        let filter = load(&conn, &mut memory).map_err(|e| match e {
            LoadError::Sql(e) => sql_err(path, e),
            LoadError::Bad(why) => damaged(why),
        })?;
        let ids = rows::load_ids(&conn, filter, options.id_filter_bytes).map_err(|e| match e {
            LoadError::Sql(e) => sql_err(path, e),
            LoadError::Bad(why) => damaged(why),
        })?;
        let reader =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| sql_err(path, e))?;
        reader.busy_timeout(OPEN_BUSY_TIMEOUT).map_err(|e| sql_err(path, e))?;
        let watermark = Arc::new(Watermark::default());
        let stats = Arc::new(Mutex::new(CommitStats::default()));
        let (queue, rx) = bounded(WRITE_QUEUE_OPS_MAX / HANDOFF_OPS_MAX);
        let writer = {
            let (watermark, stats, options) = (watermark.clone(), stats.clone(), options.clone());
            std::thread::Builder::new()
                .name("rulehost-ledger".into())
                .spawn(move || write_loop(conn, rx, &watermark, &stats, &options))
                .map_err(|e| damaged(format!("cannot start the ledger writer: {e}")))?
        };
        Ok(SqliteLedger {
            memory,
            recent: Recent::default(),
            ids,
            reader: Mutex::new(reader),
            options: options.clone(),
            path: path.to_owned(),
            queue: Some(queue),
            buffer: Mutex::new(Vec::with_capacity(HANDOFF_OPS_MAX)),
            writer: Some(writer),
            watermark,
            stats,
            seq: 0,
            decided_since_snapshot: 0,
            _owner: owner,
        })
    }

    /// Opens a read-write connection: WAL, full sync, and this process's
    /// exclusive claim on the file (`None` when another process holds it).
    fn connect(path: &Path) -> Result<(Connection, Option<std::fs::File>), OpenError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_err(path, e))?;
        conn.busy_timeout(OPEN_BUSY_TIMEOUT).map_err(|e| sql_err(path, e))?;
        // Reading the header first tells a foreign file from ours before any pragma writes.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())).map_err(|e| sql_err(path, e))?;
        // The claim comes before any write, so a second process changes nothing.
        let owner = std::fs::File::open(path).map_err(|e| OpenError::NotALedger {
            path: path.to_owned(),
            why: format!("cannot open it to take ownership: {e}"),
        })?;
        // Another process may be closing it: wait up to OPEN_BUSY_TIMEOUT.
        let deadline = Instant::now() + OPEN_BUSY_TIMEOUT;
        loop {
            match owner.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::fs::TryLockError::WouldBlock) => return Ok((conn, None)),
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(OpenError::NotALedger { path: path.to_owned(), why: format!("cannot lock it: {e}") });
                }
            }
        }
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| sql_err(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::NotALedger {
                path: path.to_owned(),
                why: format!("journal mode {mode} (WAL needed)"),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sql_err(path, e))?;
        for (pragma, value) in PRAGMAS {
            conn.pragma_update(None, pragma, value).map_err(|e| sql_err(path, e))?;
        }
        Ok((conn, Some(owner)))
    }

    /// Opens a read-only connection.
    fn connect_read_only(path: &Path) -> Result<Connection, OpenError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_err(path, e))?;
        conn.busy_timeout(OPEN_BUSY_TIMEOUT).map_err(|e| sql_err(path, e))?;
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())).map_err(|e| sql_err(path, e))?;
        Ok(conn)
    }

    /// Creates the schema in an empty file, checks it otherwise, and — when
    /// `migrate` — brings a schema 1 ledger to this version.
    fn prepare_schema(conn: &Connection, path: &Path, migrate: bool) -> Result<(), OpenError> {
        let not_ours = |why: String| OpenError::NotALedger { path: path.to_owned(), why };
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table'", [], |r| r.get(0))
            .map_err(|e| sql_err(path, e))?;
        if tables == 0 {
            if !migrate {
                return Err(not_ours("it has no tables".into()));
            }
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA} {SCHEMA_2} INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}'); PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(|e| sql_err(path, e))?;
            return Ok(());
        }
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .optional()
            .map_err(|_| not_ours("it has tables but no rulehost `meta` table".into()))?;
        let version = match version {
            Some(v) => v.parse::<i64>().map_err(|_| not_ours(format!("schema version {v:?}")))?,
            None => return Err(not_ours("no schema version".into())),
        };
        match version {
            SCHEMA_VERSION => Ok(()),
            1 if migrate => migrate::from_1(conn).map_err(|e| match e {
                LoadError::Sql(e) => sql_err(path, e),
                LoadError::Bad(why) => OpenError::Damaged { path: path.to_owned(), why },
            }),
            1 => Err(OpenError::NeedsMigration { path: path.to_owned(), found: 1 }),
            v if v > SCHEMA_VERSION => Err(not_ours(format!(
                "schema version {v} was written by a later release; this build reads 1 to {SCHEMA_VERSION}"
            ))),
            v => Err(not_ours(format!("schema version {v}, this build reads 1 to {SCHEMA_VERSION}"))),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters and commit latencies so far.
    pub fn stats(&self) -> CommitStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The shared watermark (to observe durability without the ledger lock).
    pub fn watermark(&self) -> Arc<Watermark> {
        self.watermark.clone()
    }

    /// Checks every invariant on the stored state (see [`reconcile`]), once
    /// every change made so far is durable.
    pub fn reconcile(&mut self) -> Result<Report, LedgerError> {
        self.sync_point().wait()?;
        let reader = self.reader.lock().map_err(|_| LedgerError::Storage("reader lock poisoned".into()))?;
        reconcile(&reader).map_err(LedgerError::Storage)
    }

    /// Writes everything queued and stops the writer; returns the store's failure, if any.
    pub fn close(mut self) -> Result<(), LedgerError> {
        self.shutdown();
        self.watermark.wait(self.seq)
    }

    fn shutdown(&mut self) {
        if self.queue.is_some() && self.watermark.failure().is_none() && self.decided_since_snapshot > 0 {
            self.send(Op::IdFilter(self.ids.as_slice().to_vec()));
            self.decided_since_snapshot = 0;
        }
        self.hand_off();
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }

    fn send(&mut self, op: Op) {
        self.seq += 1;
        let seq = self.seq;
        let full = match self.buffer.get_mut() {
            Ok(buffer) => {
                buffer.push((seq, Instant::now(), op));
                buffer.len() >= HANDOFF_OPS_MAX
            }
            Err(_) => true,
        };
        if full {
            self.hand_off();
        }
    }

    /// Hands the buffered changes to the writer.
    fn hand_off(&self) {
        let ops = {
            let Ok(mut buffer) = self.buffer.lock() else { return };
            if buffer.is_empty() {
                return;
            }
            std::mem::replace(&mut *buffer, Vec::with_capacity(HANDOFF_OPS_MAX))
        };
        if let Some(queue) = &self.queue {
            // A failed writer has recorded why; waiters on later points get that error.
            let _ = queue.send(ops);
        }
    }

    fn balance_row(&self, id: &str) -> BalanceRow {
        match self.memory.balances(id) {
            Some(b) => BalanceRow { id: id.to_owned(), posted: b.posted, pending: Some(b.pending) },
            None => BalanceRow { id: id.to_owned(), posted: self.memory.system_balance(id), pending: None },
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, LoadError>) -> Result<T, LedgerError> {
        let reader = self.reader.lock().map_err(|_| LedgerError::Storage("reader lock poisoned".into()))?;
        f(&reader).map_err(|e| LedgerError::Storage(rows::load_message(e)))
    }

    /// The encoded record of `id`: recent cache, then filter, then file.
    fn stored_record(&self, id: &str) -> Result<Option<Arc<[u8]>>, LedgerError> {
        if let Some((_, record)) = self.recent.records.get(id) {
            return Ok(Some(record.clone()));
        }
        if !self.ids.contains(id) {
            return Ok(None);
        }
        self.read(|conn| rows::read_record(conn, id)).map(|r| r.map(Arc::from))
    }

    /// The storage failed mid-change: nothing after it is acknowledged.
    fn fail(&self, e: LedgerError) -> LedgerError {
        self.watermark.fail(format!("a change could not be stored: {e}"));
        e
    }
}

impl Drop for SqliteLedger {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Ledger for SqliteLedger {
    fn import_accounts(&mut self, accounts: &[Account]) -> Result<usize, LedgerError> {
        let known: std::collections::HashSet<&str> =
            accounts.iter().filter(|a| self.memory.account(&a.id).is_some()).map(|a| a.id.as_str()).collect();
        let fresh: Vec<Account> = accounts.iter().filter(|a| !known.contains(a.id.as_str())).cloned().collect();
        let added = self.memory.import_accounts(accounts)?;
        let entries = self.memory.take_unstored();
        if added == 0 {
            return Ok(0);
        }
        let mut touched: Vec<&str> = fresh.iter().map(|a| a.id.as_str()).collect();
        touched.extend(entries.iter().flat_map(|e| e.postings.iter().map(|p| p.account.as_str())));
        touched.sort_unstable();
        touched.dedup();
        let balances = touched.iter().map(|id| self.balance_row(id)).collect();
        self.send(Op::Accounts { accounts: fresh, entries, balances });
        Ok(added)
    }

    fn account(&self, id: &str) -> Option<&Account> {
        self.memory.account(id)
    }

    fn account_ids(&self) -> Vec<String> {
        self.memory.account_ids()
    }

    fn balances(&self, id: &str) -> Option<Balances> {
        self.memory.balances(id)
    }

    fn admit(&self, source: &str, destination: &str, amount: Decimal, effect: Effect) -> Result<(), Refusal> {
        self.memory.admit(source, destination, amount, effect)
    }

    fn decision(&self, id: &str) -> Result<Option<StoredDecision>, LedgerError> {
        Ok(self.record(id)?.map(|r| StoredDecision { fingerprint: r.fingerprint, decision: r.decision }))
    }

    fn record(&self, id: &str) -> Result<Option<DecisionRecord>, LedgerError> {
        self.stored_record(id)?.map(|bytes| self.memory.decode(&bytes)).transpose()
    }

    fn history(&self, query: &HistoryQuery<'_>) -> HistoryStats {
        self.memory.history(query)
    }

    fn retain_history(&mut self, window_seconds_max: u64) {
        self.memory.retain_history(window_seconds_max);
    }

    fn commit(&mut self, c: Commit<'_>) -> Result<Committed, LedgerError> {
        let tx = c.tx;
        if self.stored_record(&tx.id)?.is_some() {
            return Err(LedgerError::DuplicateDecision(tx.id.clone()));
        }
        let (applied, record) = self.memory.apply(c)?;
        let entry = self.memory.take_unstored().into_iter().next();
        let (bytes, changed) = self.memory.encode(&record).map_err(|e| self.fail(e))?;
        if let Some(id) = changed
            && let Some(entry) = self.memory.dictionary().entry(id).cloned()
        {
            self.send(Op::Dictionary { id, entry });
        }
        let effect = applied.committed.effect;
        let (hold, balances) = match effect {
            Effect::Post => (None, vec![self.balance_row(&tx.source), self.balance_row(&tx.destination)]),
            Effect::Hold => (self.memory.hold(&tx.id)?, vec![self.balance_row(&tx.source)]),
            Effect::Nothing => (None, Vec::new()),
        };
        let history = applied.horizon.map(|h| (tx.source.clone(), tx.timestamp, tx.amount, h));
        let bytes: Arc<[u8]> = bytes.into();
        self.send(Op::Decision(Box::new(DecisionOp {
            id: tx.id.clone(),
            record: bytes.clone(),
            history,
            entry,
            hold,
            balances,
        })));
        self.ids.insert(tx.id.as_str());
        self.recent.insert(tx.id.clone(), self.seq, bytes);
        self.recent.evict(self.options.decision_cache_entries, self.watermark.durable());
        self.decided_since_snapshot = self.decided_since_snapshot.saturating_add(1);
        if self.decided_since_snapshot >= ID_FILTER_SNAPSHOT_DECISIONS {
            self.send(Op::IdFilter(self.ids.as_slice().to_vec()));
            self.decided_since_snapshot = 0;
        }
        Ok(applied.committed)
    }

    fn resolve_hold(&mut self, id: &str, approve: bool) -> Result<Resolution, LedgerError> {
        // A resolved hold lives in the file only: bring it back to answer
        // an idempotent repeat (or refuse the other way), then forget it.
        let restored = if self.memory.hold(id)?.is_none() {
            match self.read(|conn| rows::read_hold(conn, id))? {
                Some(h) => {
                    self.memory.restore_hold(h);
                    true
                }
                None => false,
            }
        } else {
            false
        };
        let result = self.memory.resolve_hold(id, approve);
        let entry = self.memory.take_unstored().into_iter().next();
        if restored || !matches!(result, Ok(Resolution::Done)) {
            if restored {
                self.memory.forget_hold(id);
            }
            return result;
        }
        let hold = self.memory.hold(id)?.ok_or_else(|| LedgerError::UnknownHold(id.to_owned()))?;
        self.memory.forget_hold(id);
        let mut balances = vec![self.balance_row(&hold.source)];
        if approve {
            balances.push(self.balance_row(&hold.destination));
        }
        let at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.send(Op::Resolve { hold, entry, balances, at_unix_ms });
        result
    }

    fn hold(&self, id: &str) -> Result<Option<Hold>, LedgerError> {
        match self.memory.hold(id)? {
            Some(h) => Ok(Some(h)),
            None => {
                self.sync_point().wait()?;
                self.read(|conn| rows::read_hold(conn, id))
            }
        }
    }

    fn holds(&self) -> Result<Vec<Hold>, LedgerError> {
        self.sync_point().wait()?;
        self.read(rows::read_holds)
    }

    fn journal(&self, account: Option<&str>) -> Result<Vec<JournalEntry>, LedgerError> {
        self.sync_point().wait()?;
        self.read(|conn| rows::read_journal(conn, account))
    }

    fn keep_ruleset(&mut self, archive: &Arc<RulesetArchive>) -> Result<(), LedgerError> {
        if self.memory.keep_archive(archive) {
            self.send(Op::Ruleset(archive.clone()));
        }
        Ok(())
    }

    fn ruleset(&self, version: &str) -> Result<Option<RulesetArchive>, LedgerError> {
        if let Some(a) = self.memory.archive(version) {
            return Ok(Some((**a).clone()));
        }
        self.read(|conn| rows::read_ruleset(conn, version))
    }

    fn usage(&self) -> Usage {
        let hot = self.memory.hot_usage();
        let filter = (self.ids.num_bits() / 8) as u64;
        Usage {
            decisions: self.recent.records.len() as u64,
            bytes: hot.bytes.saturating_add(self.recent.bytes).saturating_add(filter),
            ..hot
        }
    }

    fn sync_point(&self) -> SyncPoint {
        self.hand_off();
        SyncPoint::new(self.seq, self.watermark.clone())
    }
}
