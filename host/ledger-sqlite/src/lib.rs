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

mod alloc;
mod migrate;
mod options;
mod rows;
mod schema;
mod writer;

pub use options::OpenError;
pub use rows::{ReadError, StoreReader};
pub use rulehost_ledger::durable::{
    CommitHook, CommitStats, DECISION_CACHE_ENTRIES_DEFAULT, GROUP_COMMIT_LINGER_DEFAULT, GROUP_COMMIT_OPS_MAX,
    HANDOFF_OPS_MAX, ID_FILTER_BYTES_DEFAULT, ID_FILTER_SNAPSHOT_DECISIONS, Report, StoreOptions, WRITE_QUEUE_OPS_MAX,
};
pub use schema::{OPEN_BUSY_TIMEOUT, SCHEMA_VERSION};

/// Bytes SQLite itself holds on the heap in this process, over every
/// connection (page caches, prepared statements, schemas): its own counter,
/// `sqlite3_memory_used`.
pub fn sqlite_heap_bytes() -> u64 {
    // SAFETY: takes no arguments and only reads SQLite's memory counter,
    // which is safe from any thread (SQLite is built thread-safe).
    let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    u64::try_from(used).unwrap_or(0)
}

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use rows::{LoadError, load};
use schema::{sql_err, ts_key, ts_of_key};
use writer::SqliteWriter;

use rulehost_ledger::durable::{Durable, StoreRead};
use rulehost_ledger::{Hold, JournalEntry, Ledger, MemoryLedger, RulesetArchive};

/// The durable ledger on a SQLite file (see the module documentation).
pub struct SqliteLedger {
    /// The front; dropped (writer finished) before the lock below.
    durable: Durable<SqliteRead>,
    path: PathBuf,
    /// The advisory lock that makes this process the file's owner; dropped
    /// last, after both connections closed.
    _owner: std::fs::File,
}

rulehost_ledger::forward_ledger!(SqliteLedger, durable);

/// The reader's connection. Closed first at shutdown, so the writer's
/// connection is the last and SQLite checkpoints and removes the WAL (a
/// read-only one cannot).
struct SqliteRead(Connection);

impl StoreRead for SqliteRead {
    fn record(&mut self, id: &str) -> Result<Option<Vec<u8>>, String> {
        rows::read_record(&self.0, id).map_err(rows::load_message)
    }
    fn hold(&mut self, id: &str) -> Result<Option<Hold>, String> {
        rows::read_hold(&self.0, id).map_err(rows::load_message)
    }
    fn holds(&mut self) -> Result<Vec<Hold>, String> {
        rows::read_holds(&self.0).map_err(rows::load_message)
    }
    fn pending_holds(&mut self) -> Result<Vec<Hold>, String> {
        rows::read_pending_holds(&self.0).map_err(rows::load_message)
    }
    fn journal(&mut self, account: Option<&str>) -> Result<Vec<JournalEntry>, String> {
        rows::read_journal(&self.0, account).map_err(rows::load_message)
    }
    fn ruleset(&mut self, version: &str) -> Result<Option<RulesetArchive>, String> {
        rows::read_ruleset(&self.0, version).map_err(rows::load_message)
    }
    fn reconcile(&mut self) -> Result<Report, String> {
        rows::reconcile(&self.0)
    }
}

pub(crate) use rulehost_ledger::durable::stored_decimal as decimal;

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
        let durable =
            Durable::start(memory, ids, SqliteRead(reader), SqliteWriter { conn, snapshot_covers: None }, options)
                .map_err(|e| damaged(format!("cannot start the ledger writer: {e}")))?;
        Ok(SqliteLedger { durable, path: path.to_owned(), _owner: owner })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
