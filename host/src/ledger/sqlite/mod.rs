//! The durable ledger: the in-memory ledger in front, an embedded SQLite
//! database behind it, and a writer thread that makes changes durable in
//! groups.
//!
//! Every change is applied to memory (so reads and the next decision see it
//! at once) and queued, in order, for the writer — handed over in chunks of
//! [`HANDOFF_OPS_MAX`], or at once when someone asks for a sync point. The
//! writer takes whatever is queued — closing a group once it holds
//! [`GROUP_COMMIT_OPS_MAX`] changes, waiting at most `group_commit_linger`
//! for more — and writes it in one SQLite transaction
//! (WAL, `synchronous=FULL`: durable when `COMMIT` returns). Then it advances
//! the [`Watermark`]; callers acknowledge a decision only once its
//! [`SyncPoint`] is reached. After a crash the file holds a prefix of the
//! changes, each whole: an acknowledged change is always in it, and an
//! unacknowledged one is there entirely or not at all.
//!
//! The store enforces the ledger's keys itself: one decision per transaction
//! id (`decisions.id` is unique), at most one transfer and one hold posting
//! per transaction (`journal(reference, kind)` is unique), one hold per id.
//! Journal entries are two-legged (debit, credit, amount), so each balances by
//! construction; balances are written as of the end of each group.
//!
//! One process owns a ledger file at a time (SQLite's exclusive locking mode);
//! a second gets [`OpenError::InUse`].

mod reconcile;
mod rows;
mod writer;

pub use reconcile::{Report, reconcile};
pub use rows::StoreReader;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use rust_decimal::Decimal;

use rows::{LoadError, load};
use writer::write_loop;

use super::{
    Balances, Commit, Effect, Hold, JournalEntry, LATENESS_SECONDS_DEFAULT, Ledger, LedgerError, MemoryLedger, Refusal,
    Resolution, StoredDecision, SyncPoint, Watermark,
};
use crate::decision::Decision;
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
/// Version of the database layout this build reads and writes.
pub const SCHEMA_VERSION: i64 = 1;
/// How long opening waits for another process's lock before reporting it.
pub const OPEN_BUSY_TIMEOUT: Duration = Duration::from_millis(200);

/// Tuning: a larger page cache keeps the id indexes in memory; checkpoints
/// run every 16 384 WAL pages, so a page changed by many groups is copied back
/// once.
const PRAGMAS: [(&str, i64); 2] = [("cache_size", -131_072), ("wal_autocheckpoint", 16_384)];

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
CREATE TABLE decisions (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    fingerprint BLOB NOT NULL,
    outcome TEXT NOT NULL,
    ledger TEXT NOT NULL,
    history_source TEXT,
    history_ts TEXT,
    history_amount TEXT,
    record TEXT NOT NULL
) STRICT;
";

/// Called after every durable commit with its duration (write + fsync) and
/// the number of changes it made durable (e.g. to feed a metrics histogram).
pub type CommitHook = Arc<dyn Fn(Duration, usize) + Send + Sync>;

/// How the durable ledger commits and what history it keeps.
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
    /// Runs on the writer's connection after every change queued before it.
    Inspect(Box<dyn FnOnce(&Connection) + Send>),
}

pub(super) struct DecisionOp {
    decision: Arc<Decision>,
    fingerprint: [u8; 32],
    history: Option<(String, Nanos, Decimal)>,
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

/// The durable ledger (see the module documentation).
pub struct SqliteLedger {
    memory: MemoryLedger,
    path: PathBuf,
    queue: Option<Sender<Vec<Queued>>>,
    /// Changes not yet handed to the writer (see `HANDOFF_OPS_MAX`).
    buffer: std::sync::Mutex<Vec<Queued>>,
    writer: Option<JoinHandle<()>>,
    watermark: Arc<Watermark>,
    stats: Arc<std::sync::Mutex<CommitStats>>,
    seq: u64,
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

impl SqliteLedger {
    /// Opens (or creates) the ledger at `path` and loads it.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<SqliteLedger, OpenError> {
        let conn = Self::connect(path, false)?;
        Self::prepare_schema(&conn, path)?;
        let damaged = |why: String| OpenError::Damaged { path: path.to_owned(), why };
        let mut memory = MemoryLedger::new(options.lateness_seconds);
        memory.retain_history(options.history_window_seconds_max);
        load(&conn, &mut memory).map_err(|e| match e {
            LoadError::Sql(e) => sql_err(path, e),
            LoadError::Bad(why) => damaged(why),
        })?;
        let watermark = Arc::new(Watermark::default());
        let stats = Arc::new(std::sync::Mutex::new(CommitStats::default()));
        let (queue, rx) = bounded(WRITE_QUEUE_OPS_MAX / HANDOFF_OPS_MAX);
        let writer = {
            let (watermark, stats, options) = (watermark.clone(), stats.clone(), options.clone());
            std::thread::Builder::new()
                .name("rulehost-ledger".into())
                .spawn(move || write_loop(conn, rx, &watermark, &stats, &options))
                .expect("spawning the ledger writer")
        };
        Ok(SqliteLedger {
            memory,
            path: path.to_owned(),
            queue: Some(queue),
            buffer: std::sync::Mutex::new(Vec::with_capacity(HANDOFF_OPS_MAX)),
            writer: Some(writer),
            watermark,
            stats,
            seq: 0,
        })
    }

    /// Opens a connection: WAL, full sync, exclusive to this process.
    fn connect(path: &Path, read_only: bool) -> Result<Connection, OpenError> {
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_err(path, e))?;
        conn.busy_timeout(OPEN_BUSY_TIMEOUT).map_err(|e| sql_err(path, e))?;
        // Reading the header first tells a foreign file from ours before any pragma writes.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())).map_err(|e| sql_err(path, e))?;
        if !read_only {
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(|e| sql_err(path, e))?;
            let mode: String =
                conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| sql_err(path, e))?;
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
            // Take the exclusive lock now, so a second process fails at open, not mid-run.
            conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;").map_err(|e| sql_err(path, e))?;
        }
        Ok(conn)
    }

    fn prepare_schema(conn: &Connection, path: &Path) -> Result<(), OpenError> {
        let not_ours = |why: String| OpenError::NotALedger { path: path.to_owned(), why };
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table'", [], |r| r.get(0))
            .map_err(|e| sql_err(path, e))?;
        if tables == 0 {
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA} INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
            ))
            .map_err(|e| sql_err(path, e))?;
            return Ok(());
        }
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .optional()
            .map_err(|_| not_ours("it has tables but no rulehost `meta` table".into()))?;
        match version {
            Some(v) if v == SCHEMA_VERSION.to_string() => Ok(()),
            Some(v) => Err(not_ours(format!("schema version {v}, this build reads {SCHEMA_VERSION}"))),
            None => Err(not_ours("no schema version".into())),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters and commit latencies so far.
    pub fn stats(&self) -> CommitStats {
        self.stats.lock().expect("stats lock").clone()
    }

    /// The shared watermark (to observe durability without the ledger lock).
    pub fn watermark(&self) -> Arc<Watermark> {
        self.watermark.clone()
    }

    /// Runs `f` on the store's connection once every change made so far is
    /// written, and returns its result.
    pub fn inspect<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> Result<T, LedgerError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Op::Inspect(Box::new(move |conn| {
            let _ = tx.send(f(conn));
        })));
        self.hand_off();
        rx.recv().map_err(|_| self.failure())
    }

    /// Checks every invariant on the stored state (see [`reconcile`]).
    pub fn reconcile(&mut self) -> Result<Report, LedgerError> {
        self.inspect(|conn| reconcile(conn).map_err(|e| e.to_string()))?.map_err(LedgerError::Storage)
    }

    /// Writes everything queued and stops the writer; returns the store's failure, if any.
    pub fn close(mut self) -> Result<(), LedgerError> {
        self.shutdown();
        match self.watermark.wait(self.seq) {
            Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn shutdown(&mut self) {
        self.hand_off();
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }

    fn failure(&self) -> LedgerError {
        LedgerError::Storage(self.watermark.failure().unwrap_or_else(|| "the ledger writer stopped".into()))
    }

    fn send(&mut self, op: Op) {
        self.seq += 1;
        let buffer = self.buffer.get_mut().expect("buffer lock");
        buffer.push((self.seq, Instant::now(), op));
        if buffer.len() >= HANDOFF_OPS_MAX {
            self.hand_off();
        }
    }

    /// Hands the buffered changes to the writer.
    fn hand_off(&self) {
        let ops = {
            let mut buffer = self.buffer.lock().expect("buffer lock");
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
}

impl Drop for SqliteLedger {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Ledger for SqliteLedger {
    fn import_accounts(&mut self, accounts: &[Account]) -> Result<usize, LedgerError> {
        let before = self.memory.journal().len();
        let known: std::collections::HashSet<&str> =
            accounts.iter().filter(|a| self.memory.account(&a.id).is_some()).map(|a| a.id.as_str()).collect();
        let fresh: Vec<Account> = accounts.iter().filter(|a| !known.contains(a.id.as_str())).cloned().collect();
        let added = self.memory.import_accounts(accounts)?;
        if added == 0 {
            return Ok(0);
        }
        let entries = self.memory.journal()[before..].to_vec();
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

    fn decision(&self, id: &str) -> Option<&StoredDecision> {
        self.memory.decision(id)
    }

    fn history(&self, query: &HistoryQuery<'_>) -> HistoryStats {
        self.memory.history(query)
    }

    fn retain_history(&mut self, window_seconds_max: u64) {
        self.memory.retain_history(window_seconds_max);
    }

    fn commit(&mut self, c: Commit<'_>) -> Result<(), LedgerError> {
        let before = self.memory.journal().len();
        let tx = c.tx;
        let history = c.count_in_history.then(|| (tx.source.clone(), tx.timestamp, tx.amount));
        let (decision, fingerprint, effect) = (c.decision.clone(), c.fingerprint, c.effect);
        self.memory.commit(c)?;
        let entry = self.memory.journal()[before..].first().cloned();
        let (hold, balances) = match effect {
            super::Effect::Post => (None, vec![self.balance_row(&tx.source), self.balance_row(&tx.destination)]),
            super::Effect::Hold => (self.memory.hold(&tx.id), vec![self.balance_row(&tx.source)]),
            super::Effect::Nothing => (None, Vec::new()),
        };
        self.send(Op::Decision(Box::new(DecisionOp { decision, fingerprint, history, entry, hold, balances })));
        Ok(())
    }

    fn resolve_hold(&mut self, id: &str, approve: bool) -> Result<Resolution, LedgerError> {
        let before = self.memory.journal().len();
        let resolution = self.memory.resolve_hold(id, approve)?;
        if resolution == Resolution::AlreadyDone {
            return Ok(resolution);
        }
        let hold = self.memory.hold(id).expect("a resolved hold exists");
        let entry = self.memory.journal()[before..].first().cloned();
        let mut balances = vec![self.balance_row(&hold.source)];
        if approve {
            balances.push(self.balance_row(&hold.destination));
        }
        let at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.send(Op::Resolve { hold, entry, balances, at_unix_ms });
        Ok(resolution)
    }

    fn hold(&self, id: &str) -> Option<Hold> {
        self.memory.hold(id)
    }

    fn holds(&self) -> Vec<Hold> {
        self.memory.holds()
    }

    fn journal(&self) -> &[JournalEntry] {
        self.memory.journal()
    }

    fn sync_point(&self) -> SyncPoint {
        self.hand_off();
        SyncPoint::new(self.seq, self.watermark.clone())
    }
}
