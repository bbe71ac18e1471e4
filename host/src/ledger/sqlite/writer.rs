//! The writer thread: groups queued changes into one durable SQLite
//! transaction each, and advances the watermark.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use rusqlite::{Connection, params};

use super::{BalanceRow, CommitStats, Op, Queued, StoreOptions};
use crate::input::format_timestamp;
use crate::ledger::{HoldState, JournalEntry, Posting, Watermark};

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
                        d.decision.ledger.as_str(),
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
