//! Reading the store: loading it into the memory ledger at open, and
//! read-only access for the ledger commands.

use std::path::Path;

use rusqlite::Connection;
use rust_decimal::Decimal;

use super::{OpenError, Report, SqliteLedger, decimal, reconcile};
use crate::decision::Decision;
use crate::input::parse_timestamp;
use crate::ledger::{
    AccountBalances, Balances, EntryKind, Hold, HoldState, JournalEntry, MemoryLedger, Posting, StoredDecision,
};
use crate::model::{Account, AccountStatus};

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

/// A stored account row.
pub(super) struct AccountRow {
    pub(super) account: Account,
    pub(super) posted: Decimal,
    pub(super) pending: Decimal,
}

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

pub(super) fn load(conn: &Connection, memory: &mut MemoryLedger) -> Result<(), LoadError> {
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
        // Every record is parsed at open, so a corrupt one is found now,
        // not when an old id is replayed.
        Decision::from_json(&record).map_err(|e| format!("decision {id:?}: {e}"))?;
        let history = match (&source, ts, amount) {
            (Some(s), Some(t), Some(a)) => Some((
                s.as_str(),
                parse_timestamp(&t).map_err(|e| format!("decision {id:?} history timestamp: {e}"))?,
                decimal(&a, &format!("decision {id:?} history amount"))?,
            )),
            (None, None, None) => None,
            _ => return Err(LoadError::Bad(format!("decision {id:?}: partial history columns"))),
        };
        memory.restore_decision(id, StoredDecision { fingerprint, json: record.into() }, history);
    }
    Ok(())
}

// ---------------------------------------------------------------- reading a closed store

/// Read-only access to a ledger file no process is writing (the `ledger`
/// and `review list` commands).
pub struct StoreReader {
    conn: Connection,
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
        let conn = SqliteLedger::connect(path, true)?;
        SqliteLedger::prepare_schema(&conn, path)?;
        Ok(StoreReader { conn })
    }

    /// Every account with its stored balances, sorted by id.
    pub fn accounts(&self) -> Result<Vec<AccountBalances>, String> {
        let rows = read_accounts(&self.conn).map_err(load_message)?;
        Ok(rows
            .iter()
            .map(|r| {
                let balances = Balances { posted: r.posted, pending: r.pending, available: r.posted - r.pending };
                AccountBalances::new(&r.account, balances)
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

pub(super) fn load_message(e: LoadError) -> String {
    match e {
        LoadError::Sql(e) => e.to_string(),
        LoadError::Bad(s) => s,
    }
}
