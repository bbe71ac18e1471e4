//! The writer thread: groups queued changes into one durable SQLite
//! transaction each, and advances the watermark.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use rusqlite::{Connection, params};

use super::{BalanceRow, CommitStats, ID_FILTER_FORMAT, Op, Queued, StoreOptions, ts_key};
use rulehost_core::input::format_timestamp;
use rulehost_core::model::Nanos;
use rulehost_ledger::{HoldState, JournalEntry, Posting, Watermark};

pub(super) fn write_loop(
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
    let mut failed = false;
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
        let Some(last) = group.last().map(|q| q.0) else { continue };
        let count = group.len() as u64;
        let writing = Instant::now();
        if failed {
            continue;
        }
        match write_group(&mut conn, group) {
            Ok(()) => {
                let commit_us = writing.elapsed().as_micros() as u64;
                watermark.advance(last);
                if let Ok(mut s) = stats.lock() {
                    s.commits += 1;
                    s.ops += count;
                    s.latency_us.saturating_record(started.elapsed().as_micros() as u64);
                    s.commit_us.saturating_record(commit_us);
                }
                if let Some(hook) = &options.on_commit {
                    hook(Duration::from_micros(commit_us), count as usize);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger commit failed; nothing after the last durable point is acknowledged");
                watermark.fail(format!("commit failed: {e}"));
                // Keep draining, so committing callers never block on a full queue.
                failed = true;
            }
        }
    }
    guard.1 = !failed;
}

fn write_group(conn: &mut Connection, group: Vec<Queued>) -> rusqlite::Result<()> {
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
                    let rules: Vec<(&str, &str)> = entry.rules.iter().map(|(r, v)| (&**r, &**v)).collect();
                    let rules = serde_json::to_string(&rules)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
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
                Op::IdFilter(words) => {
                    let bits: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                    db.prepare_cached(
                        "INSERT OR REPLACE INTO id_filter (key, covered_seq, format, bits)
                         VALUES (1, (SELECT coalesce(max(seq), 0) FROM decisions), ?1, ?2)",
                    )?
                    .execute(params![ID_FILTER_FORMAT, bits])?;
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

/// The debit (negative) and credit (positive) legs of a two-legged entry,
/// whichever order they come in. The store keeps entries in this form; an
/// entry that is not one is refused (the writer reports a storage error,
/// and nothing after it is acknowledged).
fn legs(e: &JournalEntry) -> Result<(&Posting, &Posting), String> {
    match e.postings.as_slice() {
        [a, b] if a.amount == -b.amount && a.currency == b.currency => {
            Ok(if b.amount.is_sign_negative() && !b.amount.is_zero() { (b, a) } else { (a, b) })
        }
        _ => Err(format!("journal entry {} is not a two-legged balanced entry: {:?}", e.seq, e.postings)),
    }
}
