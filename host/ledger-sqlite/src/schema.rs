//! The file's layout: the schema this build writes, the connections it
//! opens, and checking or migrating what it finds.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::OpenError;
use super::migrate;
use super::rows::LoadError;
use rulehost_core::model::Nanos;

/// Version of the database layout this build writes (it migrates 1 and 2).
pub const SCHEMA_VERSION: i64 = 3;
/// How long opening waits for another process's lock before reporting it.
pub const OPEN_BUSY_TIMEOUT: Duration = Duration::from_millis(200);
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
pub(super) const SCHEMA_2: &str = "
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

/// Schema 3 beyond schema 2: the pending holds, indexed (opening counts
/// them; the holds themselves are read only when resolved or listed); the
/// id filter's snapshot in parts of their own rows, keyed by byte offset
/// (written a part at a time, so no row that changes holds the whole
/// filter), its head (`covered_seq`, `format`, `bytes`) in `id_filter`.
/// On a schema 2 file the snapshot's single blob is split into the parts.
pub(super) fn schema_3() -> String {
    let part = rulehost_ledger::durable::FILTER_PART_BYTES;
    format!(
        "CREATE INDEX holds_pending ON holds (id) WHERE state = 'pending';
         CREATE TABLE id_filter_parts (byte_offset INTEGER PRIMARY KEY, bits BLOB NOT NULL) STRICT;
         WITH RECURSIVE part(byte_offset) AS (
             SELECT 0 FROM id_filter WHERE length(bits) > 0
             UNION ALL
             SELECT byte_offset + {part} FROM part, id_filter WHERE byte_offset + {part} < length(bits)
         )
         INSERT INTO id_filter_parts (byte_offset, bits) SELECT byte_offset, substr(bits, byte_offset + 1, {part}) FROM part, id_filter;
         ALTER TABLE id_filter ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
         UPDATE id_filter SET bytes = length(bits);
         ALTER TABLE id_filter DROP COLUMN bits;"
    )
}

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

pub(super) fn sql_err(path: &Path, e: rusqlite::Error) -> OpenError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked) => OpenError::InUse(path.to_owned()),
        Some(C::NotADatabase) => OpenError::NotALedger { path: path.to_owned(), why: "not a SQLite database".into() },
        _ => OpenError::Unopenable { path: path.to_owned(), why: super::options::sqlite_reason(&e) },
    }
}

/// Opens a read-write connection: WAL, full sync, and this process's
/// exclusive claim on the file (`None` when another process holds it).
pub(super) fn connect(path: &Path) -> Result<(Connection, Option<std::fs::File>), OpenError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    crate::alloc::use_mimalloc();
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
        return Err(OpenError::NotALedger { path: path.to_owned(), why: format!("journal mode {mode} (WAL needed)") });
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sql_err(path, e))?;
    for (pragma, value) in PRAGMAS {
        conn.pragma_update(None, pragma, value).map_err(|e| sql_err(path, e))?;
    }
    Ok((conn, Some(owner)))
}

/// Opens a read-only connection.
pub(super) fn connect_read_only(path: &Path) -> Result<Connection, OpenError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    crate::alloc::use_mimalloc();
    let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_err(path, e))?;
    conn.busy_timeout(OPEN_BUSY_TIMEOUT).map_err(|e| sql_err(path, e))?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())).map_err(|e| sql_err(path, e))?;
    Ok(conn)
}

/// Creates the schema in an empty file, checks it otherwise, and — when
/// `migrate` — brings a ledger of schema 1 or 2 to this version. Without
/// `migrate` (a reader), schema 2 reads as it is (what 3 changed, the index
/// of pending holds and the id filter's snapshot, no reader reads);
/// schema 1 needs migrating.
pub(super) fn prepare_schema(conn: &Connection, path: &Path, migrate: bool) -> Result<(), OpenError> {
    let not_ours = |why: String| OpenError::NotALedger { path: path.to_owned(), why };
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table'", [], |r| r.get(0))
        .map_err(|e| sql_err(path, e))?;
    if tables == 0 {
        if !migrate {
            return Err(not_ours("it has no tables".into()));
        }
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA} {SCHEMA_2} {} INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}'); PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
            schema_3()
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
        1 | 2 if migrate => migrate::run(conn, version).map_err(|e| match e {
            LoadError::Sql(e) => sql_err(path, e),
            LoadError::Bad(why) => OpenError::Damaged { path: path.to_owned(), why },
        }),
        2 => Ok(()),
        1 => Err(OpenError::NeedsMigration { path: path.to_owned(), found: 1 }),
        v if v > SCHEMA_VERSION => Err(not_ours(format!(
            "schema version {v} was written by a later release; this build reads 1 to {SCHEMA_VERSION}"
        ))),
        v => Err(not_ours(format!("schema version {v}, this build reads 1 to {SCHEMA_VERSION}"))),
    }
}
