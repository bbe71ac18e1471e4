//! Reading the store: loading it into the memory ledger at open, and
//! read-only access for the ledger commands.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use rust_decimal::Decimal;

use super::{OpenError, Report, decimal, ts_of_key};
use rulehost_core::input::parse_timestamp;
use rulehost_core::model::{Account, AccountStatus};
use rulehost_ledger::ArchiveFile;
use rulehost_ledger::durable::reconcile::Stored;
use rulehost_ledger::durable::{ID_FILTER_FORMAT, empty_filter, filter_from_words};
use rulehost_ledger::record::{Dictionary, DictionaryEntry};
use rulehost_ledger::{
    AccountBalances, Balances, DecisionRecord, EntryKind, Hold, HoldState, JournalEntry, MemoryLedger, Posting,
    RulesetArchive,
};

fn kind_parse(s: &str) -> Option<EntryKind> {
    [EntryKind::Opening, EntryKind::Transfer, EntryKind::HoldPosted].into_iter().find(|k| k.as_str() == s)
}

fn hold_state_parse(s: &str) -> Option<HoldState> {
    [HoldState::Pending, HoldState::Posted, HoldState::Voided].into_iter().find(|h| h.as_str() == s)
}

pub(super) enum LoadError {
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

pub(super) use rulehost_ledger::durable::AccountRow;

pub(super) fn read_accounts(conn: &Connection) -> Result<Vec<AccountRow>, LoadError> {
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
            status: AccountStatus::parse(&status).ok_or_else(|| what(&format!("status {status:?}")))?,
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

pub(super) fn read_system(conn: &Connection) -> Result<Vec<(String, Decimal)>, LoadError> {
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

pub(super) fn read_journal(conn: &Connection, account: Option<&str>) -> Result<Vec<JournalEntry>, LoadError> {
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

pub(super) fn read_holds(conn: &Connection) -> Result<Vec<Hold>, LoadError> {
    read_holds_where(conn, "1", [])
}

/// The pending holds, by the partial index `holds_pending` (a reader of a
/// schema 2 file, which has none, scans).
pub(super) fn read_pending_holds(conn: &Connection) -> Result<Vec<Hold>, LoadError> {
    read_holds_where(conn, "state = 'pending'", [])
}

pub(super) fn read_hold(conn: &Connection, id: &str) -> Result<Option<Hold>, LoadError> {
    Ok(read_holds_where(conn, "id = ?1", [id])?.pop())
}

fn read_holds_where<P: rusqlite::Params>(conn: &Connection, filter: &str, params: P) -> Result<Vec<Hold>, LoadError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, source, destination, amount, currency, state FROM holds WHERE {filter} ORDER BY id"
    ))?;
    let mut rows = stmt.query(params)?;
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

/// The id filter's last snapshot: the decisions it covers and its bits.
pub(super) type FilterSnapshot = Option<(i64, Vec<u64>)>;

/// Loads the hot state: accounts with their balances and pending sums,
/// system balances, the number of pending holds, the journal's length,
/// history within retention, the rule-set dictionary. Returns the id
/// filter's snapshot when it is usable.
pub(super) fn load(conn: &Connection, memory: &mut MemoryLedger) -> Result<FilterSnapshot, LoadError> {
    for row in read_accounts(conn)? {
        memory.restore_account(row.account, row.posted, row.pending);
    }
    for (id, posted) in read_system(conn)? {
        memory.restore_system(id, posted);
    }
    let journal_len: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM journal", [], |r| r.get(0))?;
    memory.restore_journal_len(journal_len as u64);
    // The holds stay in the file (the partial index `holds_pending` counts
    // them); the accounts' pending sums came with the accounts.
    let pending: i64 = conn.query_row("SELECT count(*) FROM holds WHERE state = 'pending'", [], |r| r.get(0))?;
    memory.restore_pending_holds(u64::try_from(pending).unwrap_or(0));
    *memory.dictionary_mut() = read_dictionary(conn)?;
    let mut stmt = conn.prepare("SELECT source, ts, amount FROM history ORDER BY source, ts, seq")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let source: String = r.get(0)?;
        let ts: Vec<u8> = r.get(1)?;
        let ts = ts_of_key(&ts).ok_or_else(|| format!("history of {source:?}: a timestamp is not 16 bytes"))?;
        let amount = decimal(&r.get::<_, String>(2)?, &format!("history of {source:?} amount"))?;
        memory.restore_history(&source, ts, amount);
    }
    let head: Option<(i64, String, i64)> = conn
        .query_row("SELECT covered_seq, format, bytes FROM id_filter WHERE key = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((covered, _, bytes)) = head.filter(|(_, format, _)| format == ID_FILTER_FORMAT) else {
        return Ok(None);
    };
    // The parts, straight into the words (the filter is never held twice);
    // parts that do not tile the filter exactly are not a snapshot.
    let mut words = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0) / 8);
    let mut stmt = conn.prepare("SELECT byte_offset, bits FROM id_filter_parts ORDER BY byte_offset")?;
    let mut rows = stmt.query([])?;
    let mut at = 0i64;
    while let Some(r) = rows.next()? {
        let offset: i64 = r.get(0)?;
        let bits = r.get_ref(1)?.as_blob().map_err(|e| format!("id filter part at {offset}: {e}"))?;
        if offset != at || bits.len() % 8 != 0 {
            return Ok(None);
        }
        words.extend(bits.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))));
        at = at.saturating_add(bits.len() as i64);
    }
    Ok((at == bytes).then_some((covered, words)))
}

/// The id filter: the snapshot (when it has the configured size) plus every
/// id decided after it, or — without one — every id in the file.
pub(super) fn load_ids(
    conn: &Connection,
    snapshot: FilterSnapshot,
    bytes: usize,
) -> Result<fastbloom::BloomFilter, LoadError> {
    let words = (bytes / 8).max(1);
    let (mut filter, after) = match snapshot {
        Some((covered, bits)) if bits.len() == words => (filter_from_words(bits), covered),
        _ => (empty_filter(bytes), 0),
    };
    let mut stmt = conn.prepare("SELECT id FROM decisions WHERE seq > ?1")?;
    let mut rows = stmt.query([after])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        filter.insert(id.as_str());
    }
    Ok(filter)
}

pub(super) fn read_dictionary(conn: &Connection) -> Result<Dictionary, LoadError> {
    let mut dictionary = Dictionary::default();
    let mut stmt = conn.prepare("SELECT id, version, rules FROM ruleset_versions ORDER BY id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let version: String = r.get(1)?;
        let rules: String = r.get(2)?;
        let entry = DictionaryEntry::from_stored(version, &rules)?;
        let id = u32::try_from(id).map_err(|_| format!("rule-set version number {id}"))?;
        dictionary.restore(id, entry).map_err(|e| e.0)?;
    }
    Ok(dictionary)
}

pub(super) fn read_record(conn: &Connection, id: &str) -> Result<Option<Vec<u8>>, LoadError> {
    Ok(conn
        .prepare_cached("SELECT record FROM decisions WHERE id = ?1")?
        .query_row([id], |r| r.get::<_, Vec<u8>>(0))
        .optional()?)
}

pub(super) fn read_ruleset(conn: &Connection, version: &str) -> Result<Option<RulesetArchive>, LoadError> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT sha256, files FROM rulesets WHERE version = ?1")?
        .query_row([version], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((sha256, files)) = row else { return Ok(None) };
    let files: Vec<(String, String)> =
        serde_json::from_str(&files).map_err(|e| format!("rule-set version {version:?}: files: {e}"))?;
    let mut out = Vec::with_capacity(files.len());
    for (path, hash) in files {
        let bytes: Vec<u8> = conn
            .prepare_cached("SELECT bytes FROM blobs WHERE sha256 = ?1")?
            .query_row([&hash], |r| r.get(0))
            .optional()?
            .ok_or_else(|| format!("rule-set version {version:?}: file {path:?} ({hash}) is missing"))?;
        out.push(ArchiveFile { path, sha256: hash, bytes: bytes.into() });
    }
    Ok(Some(RulesetArchive { version: version.into(), sha256, files: out }))
}

// ---------------------------------------------------------------- reading a closed store

/// Read-only access to a ledger file no process is writing (the `ledger`
/// and `review list` commands).
pub struct StoreReader {
    conn: Connection,
    dictionary: Dictionary,
}

impl StoreReader {
    /// Opens an existing ledger file for reading.
    pub fn open(path: &Path) -> Result<StoreReader, OpenError> {
        if !path.exists() {
            return Err(OpenError::NotALedger { path: path.to_owned(), why: "no such file".into() });
        }
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return Err(OpenError::NotALedger {
                path: path.to_owned(),
                why: "it is empty (0 bytes); a ledger is made by `rulehost run` or `rulehost ledger import`".into(),
            });
        }
        let conn = super::schema::connect_read_only(path)?;
        super::schema::prepare_schema(&conn, path, false)?;
        let dictionary =
            read_dictionary(&conn).map_err(|e| OpenError::Damaged { path: path.to_owned(), why: load_message(e) })?;
        Ok(StoreReader { conn, dictionary })
    }

    /// The stored decision of `id`, with its input and facts.
    pub fn record(&self, id: &str) -> Result<Option<DecisionRecord>, ReadError> {
        let Some(bytes) = read_record(&self.conn, id)? else { return Ok(None) };
        rulehost_ledger::record::decode(&bytes, &self.dictionary)
            .map(Some)
            .map_err(|e| ReadError::Damaged(e.to_string()))
    }

    /// The id of every stored decision, in the order they were decided.
    pub fn decision_ids(&self) -> Result<Vec<String>, ReadError> {
        let mut stmt = self.conn.prepare("SELECT id FROM decisions ORDER BY seq").map_err(LoadError::Sql)?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(LoadError::Sql)?;
        Ok(ids.collect::<Result<Vec<_>, _>>().map_err(LoadError::Sql)?)
    }

    /// A kept rule-set version.
    pub fn ruleset(&self, version: &str) -> Result<Option<RulesetArchive>, ReadError> {
        Ok(read_ruleset(&self.conn, version)?)
    }

    /// An account's static facts.
    pub fn account(&self, id: &str) -> Result<Option<Account>, ReadError> {
        Ok(read_accounts(&self.conn)?.into_iter().find(|a| a.account.id == id).map(|a| a.account))
    }

    /// Every account with its stored balances, sorted by id.
    pub fn accounts(&self) -> Result<Vec<AccountBalances>, ReadError> {
        let rows = read_accounts(&self.conn)?;
        rows.iter()
            .map(|r| {
                let available = rulehost_ledger::exact_sub(r.posted, r.pending).ok_or_else(|| {
                    ReadError::Damaged(format!("account {:?}: posted − pending is out of range", r.account.id))
                })?;
                let balances = Balances { posted: r.posted, pending: r.pending, available };
                Ok(AccountBalances::new(&r.account, balances))
            })
            .collect()
    }

    /// The journal, optionally only entries touching `account`.
    pub fn journal(&self, account: Option<&str>) -> Result<Vec<JournalEntry>, ReadError> {
        Ok(read_journal(&self.conn, account)?)
    }

    /// Every hold, sorted by id.
    pub fn holds(&self) -> Result<Vec<Hold>, ReadError> {
        Ok(read_holds(&self.conn)?)
    }

    /// Checks every invariant.
    pub fn reconcile(&self) -> Result<Report, ReadError> {
        reconcile(&self.conn).map_err(ReadError::Sql)
    }
}

impl rulehost_ledger::durable::LedgerReader for StoreReader {
    fn record(&self, id: &str) -> Result<Option<DecisionRecord>, String> {
        StoreReader::record(self, id).map_err(|e| e.to_string())
    }
    fn decision_ids(&self) -> Result<Vec<String>, String> {
        StoreReader::decision_ids(self).map_err(|e| e.to_string())
    }
    fn ruleset(&self, version: &str) -> Result<Option<RulesetArchive>, String> {
        StoreReader::ruleset(self, version).map_err(|e| e.to_string())
    }
    fn account(&self, id: &str) -> Result<Option<Account>, String> {
        StoreReader::account(self, id).map_err(|e| e.to_string())
    }
    fn accounts(&self) -> Result<Vec<AccountBalances>, String> {
        StoreReader::accounts(self).map_err(|e| e.to_string())
    }
    fn journal(&self, account: Option<&str>) -> Result<Vec<JournalEntry>, String> {
        StoreReader::journal(self, account).map_err(|e| e.to_string())
    }
    fn holds(&self) -> Result<Vec<Hold>, String> {
        StoreReader::holds(self).map_err(|e| e.to_string())
    }
    fn pending_holds(&self) -> Result<Vec<Hold>, String> {
        read_pending_holds(&self.conn).map_err(load_message)
    }
    fn reconcile(&self) -> Result<Report, String> {
        StoreReader::reconcile(self).map_err(|e| e.to_string())
    }
}

/// Why a [`StoreReader`] could not answer: the file could not be read, or
/// what it holds is not what the ledger writes.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// SQLite could not read the file.
    #[error("{0}")]
    Sql(String),
    /// A row does not decode (the message names it).
    #[error("{0}")]
    Damaged(String),
}

impl From<LoadError> for ReadError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Sql(e) => ReadError::Sql(e.to_string()),
            LoadError::Bad(s) => ReadError::Damaged(s),
        }
    }
}

/// Every invariant of the file (see `rulehost_ledger::durable::reconcile`).
pub(super) fn reconcile(conn: &Connection) -> Result<Report, String> {
    let stored = Stored {
        accounts: read_accounts(conn).map_err(load_message)?,
        system: read_system(conn).map_err(load_message)?,
        journal: read_journal(conn, None).map_err(load_message)?,
        holds: read_holds(conn).map_err(load_message)?,
        dictionary: read_dictionary(conn).map_err(load_message)?,
        dense_journal: true,
    };
    rulehost_ledger::durable::reconcile::reconcile(&stored, &mut |each| {
        let mut stmt = conn.prepare("SELECT id, record FROM decisions ORDER BY seq").map_err(|e| e.to_string())?;
        let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
        while let Some(r) = rows.next().map_err(|e| e.to_string())? {
            let id: String = r.get(0).map_err(|e| e.to_string())?;
            let record: Vec<u8> = r.get(1).map_err(|e| e.to_string())?;
            each(id, &record);
        }
        Ok(())
    })
}

pub(super) fn load_message(e: LoadError) -> String {
    match e {
        LoadError::Sql(e) => e.to_string(),
        LoadError::Bad(s) => s,
    }
}
