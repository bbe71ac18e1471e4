//! The SQLite store's writer: one SQLite transaction per group (WAL,
//! `synchronous=FULL`: durable when `COMMIT` returns).

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::ts_key;
use rulehost_core::input::format_timestamp;
use rulehost_core::model::Nanos;
use rulehost_ledger::durable::{BalanceRow, FilterPart, GroupWriter, ID_FILTER_FORMAT, Op, Queued, legs};
use rulehost_ledger::{HoldState, JournalEntry};

/// The writer's connection.
pub(super) struct SqliteWriter {
    pub(super) conn: Connection,
    /// While an id filter snapshot is being written: the decisions it
    /// covers (those written before its first part).
    pub(super) snapshot_covers: Option<i64>,
}

impl GroupWriter for SqliteWriter {
    fn write_group(&mut self, group: Vec<Queued>) -> Result<(), String> {
        write_group(&mut self.conn, &mut self.snapshot_covers, group).map_err(|e| e.to_string())
    }
}

/// Writes a part of the id filter's snapshot as its own row of
/// `id_filter_parts`, and the snapshot's coverage in the small `id_filter`
/// row with its last part (SQLite rewrites a whole row on update: the
/// filter's bytes are never in the row that changes).
fn write_filter_part(db: &Connection, covers: &mut Option<i64>, part: &FilterPart) -> rusqlite::Result<()> {
    let total = part.total as i64;
    if part.first {
        *covers = Some(db.query_row("SELECT coalesce(max(seq), 0) FROM decisions", [], |r| r.get(0))?);
        let head: Option<(String, i64)> = db
            .query_row("SELECT format, bytes FROM id_filter WHERE key = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if head.as_ref().is_none_or(|(format, bytes)| format != ID_FILTER_FORMAT || *bytes != total) {
            // Another size or format: the new snapshot covers nothing until it is whole.
            db.execute_batch("DELETE FROM id_filter_parts")?;
            db.prepare_cached(
                "INSERT OR REPLACE INTO id_filter (key, covered_seq, format, bytes) VALUES (1, 0, ?1, ?2)",
            )?
            .execute(params![ID_FILTER_FORMAT, total])?;
        }
    }
    db.prepare_cached("INSERT OR REPLACE INTO id_filter_parts (byte_offset, bits) VALUES (?1, ?2)")?
        .execute(params![part.offset as i64, part.bytes])?;
    if part.last
        && let Some(covered) = covers.take()
    {
        db.prepare_cached("UPDATE id_filter SET covered_seq = ?1 WHERE key = 1")?.execute([covered])?;
    }
    Ok(())
}

fn write_group(conn: &mut Connection, covers: &mut Option<i64>, group: Vec<Queued>) -> rusqlite::Result<()> {
    let db = conn.transaction()?;
    let mut balances: HashMap<String, BalanceRow> = HashMap::new();
    // Per source, the newest horizon of the group: history before it is pruned.
    let mut horizons: HashMap<String, Nanos> = HashMap::new();
    {
        let mut insert_decision = db.prepare_cached("INSERT INTO decisions (id, record) VALUES (?1, ?2)")?;
        let mut insert_history =
            db.prepare_cached("INSERT INTO history (source, ts, seq, amount) VALUES (?1, ?2, ?3, ?4)")?;
        let mut insert_entry = db.prepare_cached(
            "INSERT INTO journal (seq, reference, kind, debit, credit, currency, amount) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut insert_hold = db.prepare_cached(
            "INSERT INTO holds (id, source, destination, amount, currency, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut entry = |e: &JournalEntry| -> rusqlite::Result<()> {
            let (debit, credit) = legs(e).map_err(|m| rusqlite::Error::ToSqlConversionFailure(m.into()))?;
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
                            a.status.as_str(),
                            a.overdraft_limit.to_string(),
                            a.opening_balance.to_string(),
                            serde_json::to_string(&a.tags)
                                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                        ])?;
                    }
                    for e in &entries {
                        entry(e)?;
                    }
                    balances.extend(rows.into_iter().map(|r| (r.id.clone(), r)));
                }
                Op::Decision(d) => {
                    insert_decision.execute(params![d.id, &d.record[..]])?;
                    if let Some((source, ts, amount, horizon)) = &d.history {
                        let seq = db.last_insert_rowid();
                        insert_history.execute(params![source, &ts_key(*ts)[..], seq, amount.to_string()])?;
                        let h = horizons.entry(source.clone()).or_insert(*horizon);
                        *h = (*h).max(*horizon);
                    }
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
                Op::Dictionary { id, entry } => {
                    let rules = entry.rules_json();
                    db.prepare_cached(
                        "INSERT INTO ruleset_versions (id, version, rules) VALUES (?1, ?2, ?3)
                         ON CONFLICT (id) DO UPDATE SET rules = excluded.rules",
                    )?
                    .execute(params![i64::from(id), &*entry.version, rules])?;
                }
                Op::Ruleset(archive) => {
                    let mut blob = db.prepare_cached("INSERT OR IGNORE INTO blobs (sha256, bytes) VALUES (?1, ?2)")?;
                    let mut files = Vec::with_capacity(archive.files.len());
                    for f in &archive.files {
                        blob.execute(params![f.sha256, &f.bytes[..]])?;
                        files.push((f.path.as_str(), f.sha256.as_str()));
                    }
                    let files = serde_json::to_string(&files)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    db.prepare_cached("INSERT OR IGNORE INTO rulesets (version, sha256, files) VALUES (?1, ?2, ?3)")?
                        .execute(params![&*archive.version, archive.sha256, files])?;
                }
                Op::IdFilter(part) => write_filter_part(&db, covers, &part)?,
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
            }
        }
        let mut account = db.prepare_cached("UPDATE accounts SET posted = ?2, pending = ?3 WHERE id = ?1")?;
        let mut system = db.prepare_cached(
            "INSERT INTO system_accounts (id, posted) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET posted = excluded.posted",
        )?;
        let mut prune = db.prepare_cached("DELETE FROM history WHERE source = ?1 AND ts < ?2")?;
        for (source, horizon) in &horizons {
            prune.execute(params![source, &ts_key(*horizon)[..]])?;
        }
        for row in balances.values() {
            match row.pending {
                Some(pending) => {
                    let n = account.execute(params![row.id, row.posted.to_string(), pending.to_string()])?;
                    if n != 1 {
                        return Err(rusqlite::Error::ToSqlConversionFailure(
                            format!("balance of unknown account {}", row.id).into(),
                        ));
                    }
                }
                None => {
                    system.execute(params![row.id, row.posted.to_string()])?;
                }
            }
        }
    }
    db.commit()
}
