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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, bounded};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use rust_decimal::Decimal;

use super::{
    Balances, Commit, EntryKind, Hold, HoldState, JournalEntry, LATENESS_SECONDS_DEFAULT, Ledger, LedgerError,
    MemoryLedger, Posting, Resolution, StoredDecision, SyncPoint, Watermark,
};
use crate::decision::Decision;
use crate::facts::{HistoryQuery, HistoryStats};
use crate::input::{format_timestamp, parse_timestamp};
use crate::model::{Account, AccountStatus, Nanos};

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

/// Why a ledger file could not be opened. Opening never changes a file it
/// refuses.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The path cannot be opened or created.
    #[error("cannot open ledger {path}: {source}")]
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
type Queued = (u64, Instant, Op);

/// One change, as the writer records it.
enum Op {
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

struct DecisionOp {
    decision: Arc<Decision>,
    fingerprint: [u8; 32],
    history: Option<(String, Nanos, Decimal)>,
    entry: Option<JournalEntry>,
    hold: Option<Hold>,
    balances: Vec<BalanceRow>,
}

/// An account's balances after a change.
struct BalanceRow {
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

fn decimal(text: &str, what: &str) -> Result<Decimal, String> {
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

    fn has_funds(&self, source: &str, amount: Decimal) -> bool {
        self.memory.has_funds(source, amount)
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

// ---------------------------------------------------------------- writer

fn write_loop(
    mut conn: Connection,
    rx: Receiver<Vec<Queued>>,
    watermark: &Watermark,
    stats: &std::sync::Mutex<CommitStats>,
    options: &StoreOptions,
) {
    /// Marks the store failed if the writer ends other than by its queue closing.
    struct Guard<'a>(&'a Watermark, bool);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.fail("the ledger writer stopped unexpectedly".into());
            }
        }
    }
    let mut guard = Guard(watermark, false);
    let ops_max = options.group_commit_ops_max.max(1);
    while let Ok(mut group) = rx.recv() {
        let Some(started) = group.first().map(|q| q.1) else { continue };
        let linger_until = Instant::now() + options.group_commit_linger;
        while group.len() < ops_max {
            match rx.try_recv() {
                Ok(ops) => group.extend(ops),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => match rx.recv_deadline(linger_until) {
                    Ok(ops) => group.extend(ops),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            }
        }
        let last = group.last().expect("non-empty").0;
        let count = group.len() as u64;
        let mut inspections = Vec::new();
        let writing = Instant::now();
        match write_group(&mut conn, group, &mut inspections) {
            Ok(()) => {
                let commit_us = writing.elapsed().as_micros() as u64;
                watermark.advance(last);
                let mut s = stats.lock().expect("stats lock");
                s.commits += 1;
                s.ops += count;
                s.latency_us.saturating_record(started.elapsed().as_micros() as u64);
                s.commit_us.saturating_record(commit_us);
                drop(s);
                if let Some(hook) = &options.on_commit {
                    hook(Duration::from_micros(commit_us), count as usize);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger commit failed; nothing after the last durable point is acknowledged");
                watermark.fail(format!("commit failed: {e}"));
                return;
            }
        }
        for inspect in inspections {
            inspect(&conn);
        }
    }
    guard.1 = true;
}

type Inspection = Box<dyn FnOnce(&Connection) + Send>;

fn write_group(conn: &mut Connection, group: Vec<Queued>, inspections: &mut Vec<Inspection>) -> rusqlite::Result<()> {
    let db = conn.transaction()?;
    let mut balances: HashMap<String, BalanceRow> = HashMap::new();
    {
        let mut insert_decision = db.prepare_cached(
            "INSERT INTO decisions (id, fingerprint, outcome, ledger, history_source, history_ts, history_amount, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut insert_entry = db.prepare_cached(
            "INSERT INTO journal (seq, reference, kind, debit, credit, currency, amount) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut insert_hold = db.prepare_cached(
            "INSERT INTO holds (id, source, destination, amount, currency, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut entry = |e: &JournalEntry| -> rusqlite::Result<()> {
            let (debit, credit) = legs(e);
            insert_entry.execute(params![
                e.seq as i64,
                e.reference,
                e.kind.as_str(),
                debit.account,
                credit.account,
                credit.currency,
                credit.amount.to_string()
            ])?;
            Ok(())
        };
        for (_, _, op) in group {
            match op {
                Op::Accounts { accounts, entries, balances: rows } => {
                    let mut insert = db.prepare_cached(
                        "INSERT INTO accounts (id, currency, country, opened_at, status, overdraft_limit, opening_balance, tags, posted, pending)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '0', '0')",
                    )?;
                    for a in &accounts {
                        insert.execute(params![
                            a.id,
                            a.currency,
                            a.country,
                            format_timestamp(a.opened_at),
                            status_str(a.status),
                            a.overdraft_limit.to_string(),
                            a.opening_balance.to_string(),
                            serde_json::to_string(&a.tags).expect("tags serialize"),
                        ])?;
                    }
                    for e in &entries {
                        entry(e)?;
                    }
                    balances.extend(rows.into_iter().map(|r| (r.id.clone(), r)));
                }
                Op::Decision(d) => {
                    let (source, ts, amount) = match &d.history {
                        Some((s, t, a)) => (Some(s.as_str()), Some(format_timestamp(*t)), Some(a.to_string())),
                        None => (None, None, None),
                    };
                    insert_decision.execute(params![
                        d.decision.id,
                        &d.fingerprint[..],
                        d.decision.outcome.as_str(),
                        ledger_str(d.decision.ledger),
                        source,
                        ts,
                        amount,
                        d.decision.json(),
                    ])?;
                    if let Some(e) = &d.entry {
                        entry(e)?;
                    }
                    if let Some(h) = &d.hold {
                        insert_hold.execute(params![
                            h.id,
                            h.source,
                            h.destination,
                            h.amount.to_string(),
                            h.currency,
                            h.state.as_str()
                        ])?;
                    }
                    balances.extend(d.balances.into_iter().map(|r| (r.id.clone(), r)));
                }
                Op::Resolve { hold, entry: e, balances: rows, at_unix_ms } => {
                    db.prepare_cached("UPDATE holds SET state = ?2 WHERE id = ?1")?
                        .execute(params![hold.id, hold.state.as_str()])?;
                    db.prepare_cached("INSERT INTO resolutions (hold_id, action, at_unix_ms) VALUES (?1, ?2, ?3)")?
                        .execute(params![
                            hold.id,
                            if hold.state == HoldState::Posted { "approve" } else { "decline" },
                            at_unix_ms
                        ])?;
                    if let Some(e) = &e {
                        entry(e)?;
                    }
                    balances.extend(rows.into_iter().map(|r| (r.id.clone(), r)));
                }
                Op::Inspect(f) => inspections.push(f),
            }
        }
        let mut account = db.prepare_cached("UPDATE accounts SET posted = ?2, pending = ?3 WHERE id = ?1")?;
        let mut system = db.prepare_cached(
            "INSERT INTO system_accounts (id, posted) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET posted = excluded.posted",
        )?;
        for row in balances.values() {
            match row.pending {
                Some(pending) => {
                    let n = account.execute(params![row.id, row.posted.to_string(), pending.to_string()])?;
                    assert_eq!(n, 1, "balance of unknown account {}", row.id);
                }
                None => {
                    system.execute(params![row.id, row.posted.to_string()])?;
                }
            }
        }
    }
    db.commit()
}

/// The debit (negative) and credit (positive) legs of a two-legged entry.
fn legs(e: &JournalEntry) -> (&Posting, &Posting) {
    match e.postings.as_slice() {
        [d, c] if d.amount.is_sign_negative() && d.amount == -c.amount && d.currency == c.currency => (d, c),
        _ => panic!("journal entry {} is not a two-legged balanced entry: {:?}", e.seq, e.postings),
    }
}

fn kind_parse(s: &str) -> Option<EntryKind> {
    [EntryKind::Opening, EntryKind::Transfer, EntryKind::HoldPosted].into_iter().find(|k| k.as_str() == s)
}

fn status_str(s: AccountStatus) -> &'static str {
    match s {
        AccountStatus::Active => "active",
        AccountStatus::Frozen => "frozen",
        AccountStatus::Closed => "closed",
    }
}

fn status_parse(s: &str) -> Option<AccountStatus> {
    Some(match s {
        "active" => AccountStatus::Active,
        "frozen" => AccountStatus::Frozen,
        "closed" => AccountStatus::Closed,
        _ => return None,
    })
}

fn ledger_str(l: crate::decision::LedgerEffect) -> &'static str {
    match l {
        crate::decision::LedgerEffect::Posted => "posted",
        crate::decision::LedgerEffect::Held => "held",
        crate::decision::LedgerEffect::None => "none",
    }
}

fn hold_state_parse(s: &str) -> Option<HoldState> {
    [HoldState::Pending, HoldState::Posted, HoldState::Voided].into_iter().find(|h| h.as_str() == s)
}

// ---------------------------------------------------------------- loading

enum LoadError {
    Sql(rusqlite::Error),
    Bad(String),
}

impl From<rusqlite::Error> for LoadError {
    fn from(e: rusqlite::Error) -> Self {
        LoadError::Sql(e)
    }
}

impl From<String> for LoadError {
    fn from(e: String) -> Self {
        LoadError::Bad(e)
    }
}

/// A stored account row.
struct AccountRow {
    account: Account,
    posted: Decimal,
    pending: Decimal,
}

fn read_accounts(conn: &Connection) -> Result<Vec<AccountRow>, LoadError> {
    let mut stmt = conn.prepare(
        "SELECT id, currency, country, opened_at, status, overdraft_limit, opening_balance, tags, posted, pending
         FROM accounts ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let what = |f: &str| format!("account {id:?} {f}");
        let opened_at: String = r.get(3)?;
        let status: String = r.get(4)?;
        let tags: String = r.get(7)?;
        let account = Account {
            currency: r.get(1)?,
            country: r.get(2)?,
            opened_at: parse_timestamp(&opened_at).map_err(|e| what(&format!("opened_at: {e}")))?,
            status: status_parse(&status).ok_or_else(|| what(&format!("status {status:?}")))?,
            overdraft_limit: decimal(&r.get::<_, String>(5)?, &what("overdraft_limit"))?,
            opening_balance: decimal(&r.get::<_, String>(6)?, &what("opening_balance"))?,
            tags: serde_json::from_str(&tags).map_err(|e| what(&format!("tags: {e}")))?,
            id: id.clone(),
        };
        let posted = decimal(&r.get::<_, String>(8)?, &what("posted"))?;
        let pending = decimal(&r.get::<_, String>(9)?, &what("pending"))?;
        out.push(AccountRow { account, posted, pending });
    }
    Ok(out)
}

fn read_system(conn: &Connection) -> Result<Vec<(String, Decimal)>, LoadError> {
    let mut stmt = conn.prepare("SELECT id, posted FROM system_accounts ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let posted = decimal(&r.get::<_, String>(1)?, &format!("system account {id:?} posted"))?;
        out.push((id, posted));
    }
    Ok(out)
}

fn read_journal(conn: &Connection, account: Option<&str>) -> Result<Vec<JournalEntry>, LoadError> {
    let mut stmt = conn.prepare(
        "SELECT seq, reference, kind, debit, credit, currency, amount FROM journal
         WHERE ?1 IS NULL OR debit = ?1 OR credit = ?1 ORDER BY seq",
    )?;
    let mut rows = stmt.query([account])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let kind: String = r.get(2)?;
        let currency: String = r.get(5)?;
        let amount = decimal(&r.get::<_, String>(6)?, &format!("journal entry {seq} amount"))?;
        out.push(JournalEntry {
            seq: seq as u64,
            reference: r.get(1)?,
            kind: kind_parse(&kind).ok_or_else(|| format!("journal entry {seq}: unknown kind {kind:?}"))?,
            postings: vec![
                Posting { account: r.get(3)?, currency: currency.clone(), amount: -amount },
                Posting { account: r.get(4)?, currency, amount },
            ],
        });
    }
    Ok(out)
}

fn read_holds(conn: &Connection) -> Result<Vec<Hold>, LoadError> {
    let mut stmt = conn.prepare("SELECT id, source, destination, amount, currency, state FROM holds ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let state: String = r.get(5)?;
        out.push(Hold {
            source: r.get(1)?,
            destination: r.get(2)?,
            amount: decimal(&r.get::<_, String>(3)?, &format!("hold {id:?} amount"))?,
            currency: r.get(4)?,
            state: hold_state_parse(&state).ok_or_else(|| format!("hold {id:?}: unknown state {state:?}"))?,
            id,
        });
    }
    Ok(out)
}

fn load(conn: &Connection, memory: &mut MemoryLedger) -> Result<(), LoadError> {
    for row in read_accounts(conn)? {
        memory.restore_account(row.account, row.posted, row.pending);
    }
    for (id, posted) in read_system(conn)? {
        memory.restore_system(id, posted);
    }
    let journal = read_journal(conn, None)?;
    for (i, e) in journal.into_iter().enumerate() {
        if e.seq != i as u64 + 1 {
            return Err(LoadError::Bad(format!("journal has a gap before entry {}", e.seq)));
        }
        memory.restore_entry(e);
    }
    for h in read_holds(conn)? {
        memory.restore_hold(h);
    }
    let mut stmt = conn.prepare(
        "SELECT id, fingerprint, history_source, history_ts, history_amount, record FROM decisions ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let fingerprint: Vec<u8> = r.get(1)?;
        let fingerprint: [u8; 32] =
            fingerprint.try_into().map_err(|_| format!("decision {id:?}: fingerprint is not 32 bytes"))?;
        let source: Option<String> = r.get(2)?;
        let ts: Option<String> = r.get(3)?;
        let amount: Option<String> = r.get(4)?;
        let record: String = r.get(5)?;
        let decision = Decision::from_json(&record).map_err(|e| format!("decision {id:?}: {e}"))?;
        let history = match (&source, ts, amount) {
            (Some(s), Some(t), Some(a)) => Some((
                s.as_str(),
                parse_timestamp(&t).map_err(|e| format!("decision {id:?} history timestamp: {e}"))?,
                decimal(&a, &format!("decision {id:?} history amount"))?,
            )),
            (None, None, None) => None,
            _ => return Err(LoadError::Bad(format!("decision {id:?}: partial history columns"))),
        };
        memory.restore_decision(id, StoredDecision { fingerprint, decision: Arc::new(decision) }, history);
    }
    Ok(())
}

// ---------------------------------------------------------------- reading a closed store

/// Read-only access to a ledger file no process is writing (the `ledger`
/// and `review list` commands).
pub struct StoreReader {
    conn: Connection,
}

/// One account with its balances, as the ledger commands print it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AccountBalances {
    /// Account id.
    pub id: String,
    /// Currency.
    pub currency: String,
    /// Status.
    pub status: &'static str,
    /// Overdraft limit.
    pub overdraft_limit: Decimal,
    /// Posted balance.
    pub posted: Decimal,
    /// Pending holds.
    pub pending: Decimal,
    /// Posted − pending.
    pub available: Decimal,
}

impl StoreReader {
    /// Opens an existing ledger file for reading.
    pub fn open(path: &Path) -> Result<StoreReader, OpenError> {
        if !path.exists() {
            return Err(OpenError::NotALedger { path: path.to_owned(), why: "no such file".into() });
        }
        let conn = SqliteLedger::connect(path, true)?;
        SqliteLedger::prepare_schema(&conn, path)?;
        Ok(StoreReader { conn })
    }

    /// Every account with its stored balances, sorted by id.
    pub fn accounts(&self) -> Result<Vec<AccountBalances>, String> {
        let rows = read_accounts(&self.conn).map_err(load_message)?;
        Ok(rows
            .into_iter()
            .map(|r| AccountBalances {
                currency: r.account.currency.clone(),
                status: status_str(r.account.status),
                overdraft_limit: r.account.overdraft_limit,
                posted: r.posted,
                pending: r.pending,
                available: r.posted - r.pending,
                id: r.account.id,
            })
            .collect())
    }

    /// The journal, optionally only entries touching `account`.
    pub fn journal(&self, account: Option<&str>) -> Result<Vec<JournalEntry>, String> {
        read_journal(&self.conn, account).map_err(load_message)
    }

    /// Every hold, sorted by id.
    pub fn holds(&self) -> Result<Vec<Hold>, String> {
        read_holds(&self.conn).map_err(load_message)
    }

    /// Checks every invariant.
    pub fn reconcile(&self) -> Result<Report, String> {
        reconcile(&self.conn).map_err(|e| e.to_string())
    }

    /// The connection (for inspection in tests).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn load_message(e: LoadError) -> String {
    match e {
        LoadError::Sql(e) => e.to_string(),
        LoadError::Bad(s) => s,
    }
}

// ---------------------------------------------------------------- reconcile

/// What `reconcile` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Accounts checked.
    pub accounts: u64,
    /// Journal entries checked.
    pub entries: u64,
    /// Holds checked.
    pub holds: u64,
    /// Decisions checked.
    pub decisions: u64,
    /// Every discrepancy, each naming what and where.
    pub discrepancies: Vec<String>,
}

impl Report {
    /// Whether every invariant holds.
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty()
    }
}

/// Recomputes every balance from the journal and checks every invariant of
/// the stored state: entries are well formed (positive amount, two distinct
/// known accounts of the entry's currency); posted balances equal journal
/// sums; pending equals the account's pending holds; available stays within
/// the overdraft limit; every currency sums to zero; holds and transfers match
/// their decisions one to one (no orphan decision, posting or hold).
pub fn reconcile(conn: &Connection) -> Result<Report, String> {
    let mut report = Report::default();
    let accounts = read_accounts(conn).map_err(load_message)?;
    let system = read_system(conn).map_err(load_message)?;
    let journal = read_journal(conn, None).map_err(load_message)?;
    let holds = read_holds(conn).map_err(load_message)?;
    let mut discrepancies = Vec::new();

    let currency_of: HashMap<&str, &str> =
        accounts.iter().map(|a| (a.account.id.as_str(), a.account.currency.as_str())).collect();
    let system_ids: HashMap<&str, Decimal> = system.iter().map(|(id, p)| (id.as_str(), *p)).collect();
    let mut sums: HashMap<String, Decimal> = HashMap::new();
    let mut per_currency: HashMap<String, Decimal> = HashMap::new();
    let mut transfers: HashMap<&str, u32> = HashMap::new();
    let mut hold_postings: HashMap<&str, u32> = HashMap::new();
    for (i, e) in journal.iter().enumerate() {
        if e.seq != i as u64 + 1 {
            discrepancies.push(format!("journal: entry {} out of sequence (expected {})", e.seq, i + 1));
        }
        let (debit, credit) = (&e.postings[0], &e.postings[1]);
        if credit.amount <= Decimal::ZERO {
            discrepancies.push(format!("journal entry {}: amount {} is not positive", e.seq, credit.amount));
        }
        if debit.account == credit.account {
            discrepancies.push(format!("journal entry {}: debits and credits the same account", e.seq));
        }
        for p in [debit, credit] {
            let known = currency_of.get(p.account.as_str()).copied();
            match known {
                Some(c) if c != p.currency => discrepancies.push(format!(
                    "journal entry {}: account {} is in {c}, the entry in {}",
                    e.seq, p.account, p.currency
                )),
                Some(_) => {}
                None if p.account == super::equity_account(&p.currency) => {}
                None => discrepancies.push(format!("journal entry {}: unknown account {:?}", e.seq, p.account)),
            }
            *sums.entry(p.account.clone()).or_default() += p.amount;
            *per_currency.entry(p.currency.clone()).or_default() += p.amount;
        }
        match e.kind {
            EntryKind::Transfer => *transfers.entry(&e.reference).or_default() += 1,
            EntryKind::HoldPosted => *hold_postings.entry(&e.reference).or_default() += 1,
            EntryKind::Opening => {
                if !currency_of.contains_key(e.reference.as_str()) {
                    discrepancies
                        .push(format!("journal entry {}: opening of unknown account {:?}", e.seq, e.reference));
                }
            }
        }
    }
    for (currency, total) in &per_currency {
        if !total.is_zero() {
            discrepancies.push(format!("currency {currency}: postings sum to {total}, not 0"));
        }
    }

    let mut pending: HashMap<&str, Decimal> = HashMap::new();
    for h in &holds {
        if h.state == HoldState::Pending {
            *pending.entry(&h.source).or_default() += h.amount;
        }
        let posted = hold_postings.get(h.id.as_str()).copied().unwrap_or(0);
        let want = u32::from(h.state == HoldState::Posted);
        if posted != want {
            discrepancies.push(format!(
                "hold {:?} is {} but has {posted} posting(s) in the journal",
                h.id,
                h.state.as_str()
            ));
        }
        if h.amount <= Decimal::ZERO {
            discrepancies.push(format!("hold {:?}: amount {} is not positive", h.id, h.amount));
        }
    }
    let hold_ids: std::collections::HashSet<&str> = holds.iter().map(|h| h.id.as_str()).collect();
    for id in hold_postings.keys() {
        if !hold_ids.contains(id) {
            discrepancies.push(format!("journal posts hold {id:?}, which does not exist"));
        }
    }

    for a in &accounts {
        let id = a.account.id.as_str();
        let from_journal = sums.get(id).copied().unwrap_or_default();
        if a.posted != from_journal {
            discrepancies.push(format!("account {id}: posted {} but the journal sums to {from_journal}", a.posted));
        }
        let from_holds = pending.get(id).copied().unwrap_or_default();
        if a.pending != from_holds {
            discrepancies
                .push(format!("account {id}: pending {} but its pending holds sum to {from_holds}", a.pending));
        }
        if a.posted - a.pending + a.account.overdraft_limit < Decimal::ZERO {
            discrepancies.push(format!(
                "account {id}: available {} is beyond its overdraft limit {}",
                a.posted - a.pending,
                a.account.overdraft_limit
            ));
        }
    }
    for (id, posted) in &system_ids {
        let from_journal = sums.get(*id).copied().unwrap_or_default();
        if *posted != from_journal {
            discrepancies.push(format!("system account {id}: posted {posted} but the journal sums to {from_journal}"));
        }
    }
    for id in sums.keys() {
        if !currency_of.contains_key(id.as_str()) && !system_ids.contains_key(id.as_str()) {
            discrepancies.push(format!("account {id} has postings but no balance row"));
        }
    }

    // Decisions against their effects.
    let mut stmt = conn.prepare("SELECT id, outcome, ledger FROM decisions ORDER BY seq").map_err(|e| e.to_string())?;
    let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
    let mut decided: std::collections::HashSet<String> = std::collections::HashSet::new();
    while let Some(r) = rows.next().map_err(|e| e.to_string())? {
        let id: String = r.get(0).map_err(|e| e.to_string())?;
        let outcome: String = r.get(1).map_err(|e| e.to_string())?;
        let ledger: String = r.get(2).map_err(|e| e.to_string())?;
        let posts = transfers.get(id.as_str()).copied().unwrap_or(0);
        let held = hold_ids.contains(id.as_str());
        let ok = match ledger.as_str() {
            "posted" => posts == 1 && !held && outcome == "approve",
            "held" => posts == 0 && held && outcome == "review",
            "none" => posts == 0 && !held,
            _ => false,
        };
        if !ok {
            discrepancies.push(format!(
                "decision {id:?} ({outcome}, ledger {ledger}) has {posts} transfer(s) and {} hold",
                if held { "a" } else { "no" }
            ));
        }
        report.decisions += 1;
        decided.insert(id);
    }
    for id in transfers.keys().chain(hold_ids.iter()) {
        if !decided.contains(*id) {
            discrepancies.push(format!("transaction {id:?} moves money but has no decision"));
        }
    }

    report.accounts = accounts.len() as u64;
    report.entries = journal.len() as u64;
    report.holds = holds.len() as u64;
    discrepancies.sort();
    discrepancies.dedup();
    report.discrepancies = discrepancies;
    Ok(report)
}
