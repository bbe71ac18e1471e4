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
//!
//! Crate boundary: the only crate of the host that depends on SQLite
//! (`rusqlite`), and no SQLite type appears in its API (errors carry
//! SQLite's reason as text). It builds on `rulehost-ledger` and
//! `rulehost-core`: never wasmtime, the sandbox or the engine.

mod migrate;
mod options;
mod recent;
mod reconcile;
mod rows;
mod schema;
mod writer;

pub use options::{
    CommitHook, CommitStats, DECISION_CACHE_ENTRIES_DEFAULT, GROUP_COMMIT_LINGER_DEFAULT, GROUP_COMMIT_OPS_MAX,
    HANDOFF_OPS_MAX, ID_FILTER_BYTES_DEFAULT, ID_FILTER_SNAPSHOT_DECISIONS, OpenError, StoreOptions,
    WRITE_QUEUE_OPS_MAX,
};
pub use reconcile::Report;
use reconcile::reconcile;
pub use rows::{ReadError, StoreReader};
pub use schema::{OPEN_BUSY_TIMEOUT, SCHEMA_VERSION};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Sender, bounded};
use rusqlite::{Connection, OpenFlags};
use rust_decimal::Decimal;

use recent::{ID_FILTER_FORMAT, Recent, empty_filter};
use rows::{LoadError, load};
use schema::{sql_err, ts_key, ts_of_key};
use writer::write_loop;

use rulehost_core::facts::{HistoryQuery, HistoryStats};
use rulehost_core::model::{Account, Nanos};
use rulehost_ledger::record::DictionaryEntry;
use rulehost_ledger::{
    Balances, Commit, Committed, DecisionRecord, Effect, Hold, JournalEntry, Ledger, LedgerError, MemoryLedger,
    Refusal, Resolution, RulesetArchive, StoredDecision, SyncPoint, Usage, Watermark,
};

/// A change with its place in the sequence and when it was queued.
pub(crate) type Queued = (u64, Instant, Op);

/// One change, as the writer records it.
pub(crate) enum Op {
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

pub(crate) struct DecisionOp {
    id: String,
    record: Arc<[u8]>,
    /// (source, timestamp, amount, the source's horizon after it).
    history: Option<(String, Nanos, Decimal, Nanos)>,
    entry: Option<JournalEntry>,
    hold: Option<Hold>,
    balances: Vec<BalanceRow>,
}

/// An account's balances after a change.
pub(crate) struct BalanceRow {
    id: String,
    posted: Decimal,
    /// `None` for a system account.
    pending: Option<Decimal>,
}

/// The durable ledger (see the module documentation).
pub struct SqliteLedger {
    memory: MemoryLedger,
    recent: Recent,
    ids: fastbloom::BloomFilter,
    /// Reads what is not in memory (decisions, journal, resolved holds).
    /// Closed first at shutdown, so the writer's connection is the last
    /// and SQLite checkpoints and removes the WAL (a read-only one cannot).
    reader: Mutex<Option<Connection>>,
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

pub(crate) fn decimal(text: &str, what: &str) -> Result<Decimal, String> {
    text.parse::<Decimal>().map_err(|e| format!("{what}: {text:?} is not a decimal: {e}"))
}

impl SqliteLedger {
    /// Opens (or creates) the ledger at `path` and loads its hot state;
    /// a ledger of schema 1 is migrated first.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<SqliteLedger, OpenError> {
        let (conn, owner) = schema::connect(path)?;
        let owner = owner.ok_or_else(|| OpenError::InUse(path.to_owned()))?;
        schema::prepare_schema(&conn, path, true)?;
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
            reader: Mutex::new(Some(reader)),
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
        self.read(|conn| reconcile(conn).map_err(LoadError::Bad))
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
        if let Ok(mut reader) = self.reader.lock() {
            reader.take();
        }
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
        let conn = reader.as_ref().ok_or_else(|| LedgerError::Storage("the ledger is closed".into()))?;
        f(conn).map_err(|e| LedgerError::Storage(rows::load_message(e)))
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
            // Not in memory: resolved (or never held). Its last resolution
            // may still be on its way to the file: read it once it is there,
            // or a repeat would find it pending and resolve it twice.
            self.sync_point().wait()?;
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

/// `--ledger` value for a ledger kept in memory only.
pub const MEMORY_LEDGER: &str = ":memory:";

/// Where a ledger lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerLocation {
    /// In this process's memory only.
    Memory,
    /// A durable SQLite file (created when absent).
    File(std::path::PathBuf),
}

impl LedgerLocation {
    /// [`MEMORY_LEDGER`] is memory; anything else a file.
    pub fn from_arg(path: &std::path::Path) -> Self {
        if path == std::path::Path::new(MEMORY_LEDGER) {
            LedgerLocation::Memory
        } else {
            LedgerLocation::File(path.to_owned())
        }
    }

    /// Opens the ledger, keeping the history `options` asks for.
    pub fn open(&self, options: &StoreOptions) -> Result<Box<dyn Ledger>, OpenError> {
        Ok(match self {
            LedgerLocation::Memory => {
                let mut ledger = MemoryLedger::new(options.lateness_seconds);
                ledger.retain_history(options.history_window_seconds_max);
                Box::new(ledger)
            }
            LedgerLocation::File(path) => Box::new(SqliteLedger::open(path, options)?),
        })
    }
}
