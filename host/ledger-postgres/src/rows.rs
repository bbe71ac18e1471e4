//! Reading the database: loading the hot state at open, and the reads the
//! ledger and the `ledger` commands make. Money is read as `numeric::text`
//! and parsed exactly; a value that is not a decimal the ledger can hold
//! names its row.

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use rust_decimal::Decimal;

use crate::client::reason;
use rulehost_core::input::parse_timestamp;
use rulehost_core::model::{Account, AccountStatus, Nanos};
use rulehost_ledger::durable::reconcile::{Stored, reconcile as check};
use rulehost_ledger::durable::{AccountRow, Report, empty_filter};
use rulehost_ledger::record::{Dictionary, DictionaryEntry};
use rulehost_ledger::{ArchiveFile, EntryKind, Hold, HoldState, JournalEntry, MemoryLedger, Posting, RulesetArchive};

use rulehost_ledger::durable::stored_decimal as decimal;

fn db(e: postgres::Error) -> String {
    reason(&e)
}

/// A timestamp as 16 bytes that sort as the instants do (big-endian, sign
/// bit flipped): `bytea` compares bytewise.
pub(crate) fn ts_key(t: Nanos) -> [u8; 16] {
    ((t as u128) ^ (1u128 << 127)).to_be_bytes()
}

fn ts_of_key(bytes: &[u8]) -> Option<Nanos> {
    let b: [u8; 16] = bytes.try_into().ok()?;
    Some((u128::from_be_bytes(b) ^ (1u128 << 127)) as i128)
}

pub(crate) fn read_accounts(client: &mut Client, only: Option<&str>) -> Result<Vec<AccountRow>, String> {
    let rows = client
        .query(
            "SELECT id, currency, country, opened_at, status, overdraft_limit::text, opening_balance::text, tags,
                    posted::text, pending::text
             FROM rulehost.accounts WHERE $1::text IS NULL OR id = $1 ORDER BY id",
            &[&only],
        )
        .map_err(db)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let get = |i: usize| r.try_get::<_, String>(i).map_err(db);
        let id = get(0)?;
        let what = |f: &str| format!("account {id:?} {f}");
        let status = get(4)?;
        let account = Account {
            currency: get(1)?,
            country: get(2)?,
            opened_at: parse_timestamp(&get(3)?).map_err(|e| what(&format!("opened_at: {e}")))?,
            status: AccountStatus::parse(&status).ok_or_else(|| what(&format!("status {status:?}")))?,
            overdraft_limit: decimal(&get(5)?, &what("overdraft_limit"))?,
            opening_balance: decimal(&get(6)?, &what("opening_balance"))?,
            tags: serde_json::from_str(&get(7)?).map_err(|e| what(&format!("tags: {e}")))?,
            id: id.clone(),
        };
        let posted = decimal(&get(8)?, &what("posted"))?;
        let pending = decimal(&get(9)?, &what("pending"))?;
        out.push(AccountRow { account, posted, pending });
    }
    Ok(out)
}

pub(crate) fn read_system(client: &mut Client) -> Result<Vec<(String, Decimal)>, String> {
    let rows = client.query("SELECT id, posted::text FROM rulehost.system_accounts ORDER BY id", &[]).map_err(db)?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get(0).map_err(db)?;
            let posted = decimal(&r.try_get::<_, String>(1).map_err(db)?, &format!("system account {id:?} posted"))?;
            Ok((id, posted))
        })
        .collect()
}

pub(crate) fn read_journal(client: &mut Client, account: Option<&str>) -> Result<Vec<JournalEntry>, String> {
    let rows = client
        .query(
            "SELECT seq, reference, kind, debit, credit, currency, amount::text FROM rulehost.journal
             WHERE $1::text IS NULL OR debit = $1 OR credit = $1 ORDER BY seq",
            &[&account],
        )
        .map_err(db)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let seq: i64 = r.try_get(0).map_err(db)?;
        let kind: String = r.try_get(2).map_err(db)?;
        let currency: String = r.try_get(5).map_err(db)?;
        let amount = decimal(&r.try_get::<_, String>(6).map_err(db)?, &format!("journal entry {seq} amount"))?;
        let kind = [EntryKind::Opening, EntryKind::Transfer, EntryKind::HoldPosted]
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| format!("journal entry {seq}: unknown kind {kind:?}"))?;
        out.push(JournalEntry {
            seq: u64::try_from(seq).map_err(|_| format!("journal entry {seq}: negative sequence"))?,
            reference: r.try_get(1).map_err(db)?,
            kind,
            postings: vec![
                Posting { account: r.try_get(3).map_err(db)?, currency: currency.clone(), amount: -amount },
                Posting { account: r.try_get(4).map_err(db)?, currency, amount },
            ],
        });
    }
    Ok(out)
}

/// Holds: one (`id`), the pending ones, or all; sorted by id.
pub(crate) enum Holds<'a> {
    One(&'a str),
    Pending,
    All,
}

pub(crate) fn read_holds(client: &mut Client, which: Holds<'_>) -> Result<Vec<Hold>, String> {
    const COLUMNS: &str = "SELECT id, source, destination, amount::text, currency, state FROM rulehost.holds";
    let rows = match which {
        Holds::One(id) => client.query(&format!("{COLUMNS} WHERE id = $1"), &[&id]),
        Holds::Pending => client.query(&format!("{COLUMNS} WHERE state = 'pending' ORDER BY id"), &[]),
        Holds::All => client.query(&format!("{COLUMNS} ORDER BY id"), &[]),
    }
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get(0).map_err(db)?;
            let state: String = r.try_get(5).map_err(db)?;
            Ok(Hold {
                source: r.try_get(1).map_err(db)?,
                destination: r.try_get(2).map_err(db)?,
                amount: decimal(&r.try_get::<_, String>(3).map_err(db)?, &format!("hold {id:?} amount"))?,
                currency: r.try_get(4).map_err(db)?,
                state: [HoldState::Pending, HoldState::Posted, HoldState::Voided]
                    .into_iter()
                    .find(|h| h.as_str() == state)
                    .ok_or_else(|| format!("hold {id:?}: unknown state {state:?}"))?,
                id,
            })
        })
        .collect()
}

pub(crate) fn read_dictionary(client: &mut Client) -> Result<Dictionary, String> {
    let mut dictionary = Dictionary::default();
    let rows = client.query("SELECT id, version, rules FROM rulehost.ruleset_versions ORDER BY id", &[]).map_err(db)?;
    for r in rows {
        let id: i32 = r.try_get(0).map_err(db)?;
        let version: String = r.try_get(1).map_err(db)?;
        let rules: String = r.try_get(2).map_err(db)?;
        let entry = DictionaryEntry::from_stored(version, &rules)?;
        let id = u32::try_from(id).map_err(|_| format!("rule-set version number {id}"))?;
        dictionary.restore(id, entry).map_err(|e| e.0)?;
    }
    Ok(dictionary)
}

pub(crate) fn read_record(client: &mut Client, id: &str) -> Result<Option<Vec<u8>>, String> {
    let row = client.query_opt("SELECT record FROM rulehost.decisions WHERE id = $1", &[&id]).map_err(db)?;
    row.map(|r| r.try_get::<_, Vec<u8>>(0).map_err(db)).transpose()
}

pub(crate) fn read_ruleset(client: &mut Client, version: &str) -> Result<Option<RulesetArchive>, String> {
    let row =
        client.query_opt("SELECT sha256, files FROM rulehost.rulesets WHERE version = $1", &[&version]).map_err(db)?;
    let Some(row) = row else { return Ok(None) };
    let sha256: String = row.try_get(0).map_err(db)?;
    let files: String = row.try_get(1).map_err(db)?;
    let files: Vec<(String, String)> =
        serde_json::from_str(&files).map_err(|e| format!("rule-set version {version:?}: files: {e}"))?;
    let mut out = Vec::with_capacity(files.len());
    for (path, hash) in files {
        let bytes: Vec<u8> = client
            .query_opt("SELECT bytes FROM rulehost.blobs WHERE sha256 = $1", &[&hash])
            .map_err(db)?
            .ok_or_else(|| format!("rule-set version {version:?}: file {path:?} ({hash}) is missing"))?
            .try_get(0)
            .map_err(db)?;
        out.push(ArchiveFile { path, sha256: hash, bytes: bytes.into() });
    }
    Ok(Some(RulesetArchive { version: version.into(), sha256, files: out }))
}

/// Calls `each` with every decision's id and record, in the order they were
/// stored, streaming (never all in memory).
pub(crate) fn each_decision(client: &mut Client, each: &mut dyn FnMut(String, &[u8])) -> Result<(), String> {
    let mut rows = client
        .query_raw("SELECT id, record FROM rulehost.decisions ORDER BY seq", std::iter::empty::<&str>())
        .map_err(db)?;
    while let Some(r) = rows.next().map_err(db)? {
        let id: String = r.try_get(0).map_err(db)?;
        let record: &[u8] = r.try_get(1).map_err(db)?;
        each(id, record);
    }
    Ok(())
}

/// Loads the hot state into `memory` (accounts with their balances and
/// pending sums, system balances, the number of pending holds, the rule-set
/// dictionary, history within retention) and returns
/// the filter of every decided id (rebuilt from the ids: the database keeps
/// no snapshot of it).
pub(crate) fn load(
    client: &mut Client,
    memory: &mut MemoryLedger,
    filter_bytes: usize,
) -> Result<fastbloom::BloomFilter, String> {
    for row in read_accounts(client, None)? {
        memory.restore_account(row.account, row.posted, row.pending);
    }
    for (id, posted) in read_system(client)? {
        memory.restore_system(id, posted);
    }
    let journal_len: i64 = client
        .query_one("SELECT coalesce(max(seq), 0) FROM rulehost.journal", &[])
        .and_then(|r| r.try_get(0))
        .map_err(db)?;
    memory.restore_journal_len(u64::try_from(journal_len).unwrap_or(0));
    // The holds stay in the database; the accounts' pending sums came with them.
    let pending: i64 = client
        .query_one("SELECT count(*) FROM rulehost.holds WHERE state = 'pending'", &[])
        .and_then(|r| r.try_get(0))
        .map_err(db)?;
    memory.restore_pending_holds(u64::try_from(pending).unwrap_or(0));
    *memory.dictionary_mut() = read_dictionary(client)?;
    let mut rows = client
        .query_raw(
            "SELECT source, ts, amount::text FROM rulehost.history ORDER BY source, ts, seq",
            std::iter::empty::<&str>(),
        )
        .map_err(db)?;
    while let Some(r) = rows.next().map_err(db)? {
        let source: String = r.try_get(0).map_err(db)?;
        let ts: &[u8] = r.try_get(1).map_err(db)?;
        let ts = ts_of_key(ts).ok_or_else(|| format!("history of {source:?}: a timestamp is not 16 bytes"))?;
        let amount = decimal(&r.try_get::<_, String>(2).map_err(db)?, &format!("history of {source:?} amount"))?;
        memory.restore_history(&source, ts, amount);
    }
    drop(rows);
    let mut filter = empty_filter(filter_bytes);
    let mut rows = client.query_raw("SELECT id FROM rulehost.decisions", std::iter::empty::<&str>()).map_err(db)?;
    while let Some(r) = rows.next().map_err(db)? {
        let id: &str = r.try_get(0).map_err(db)?;
        filter.insert(id);
    }
    Ok(filter)
}

/// Every invariant of what the database holds (journal sequence numbers
/// only increase: the identity skips those of rolled-back transactions).
pub(crate) fn reconcile(client: &mut Client) -> Result<Report, String> {
    // One snapshot for every read: a ledger being written stays consistent.
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").map_err(db)?;
    let result = (|| {
        let stored = Stored {
            accounts: read_accounts(client, None)?,
            system: read_system(client)?,
            journal: read_journal(client, None)?,
            holds: read_holds(client, Holds::All)?,
            dictionary: read_dictionary(client)?,
            dense_journal: false,
        };
        check(&stored, &mut |each| each_decision(client, each))
    })();
    let _ = client.batch_execute("COMMIT");
    result
}
