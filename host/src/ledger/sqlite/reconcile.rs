//! `rulehost ledger reconcile`: every invariant, checked from the file.

use std::collections::HashMap;

use rusqlite::Connection;
use rust_decimal::Decimal;

use super::rows::{load_message, read_accounts, read_dictionary, read_holds, read_journal, read_system};
use crate::ledger::{EntryKind, HoldState};

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
                None if p.account == crate::ledger::equity_account(&p.currency) => {}
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

    // Decisions against their effects. Every record is decoded as a replay
    // would decode it: one it cannot read is a discrepancy here, never a pass.
    let dictionary = read_dictionary(conn).map_err(load_message)?;
    let mut stmt = conn.prepare("SELECT id, record FROM decisions ORDER BY seq").map_err(|e| e.to_string())?;
    let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
    let mut decided: std::collections::HashSet<String> = std::collections::HashSet::new();
    while let Some(r) = rows.next().map_err(|e| e.to_string())? {
        let id: String = r.get(0).map_err(|e| e.to_string())?;
        let record: Vec<u8> = r.get(1).map_err(|e| e.to_string())?;
        let (outcome, ledger) = match crate::ledger::record::decode(&record, &dictionary) {
            Ok(rec) if rec.decision.id == id => (rec.decision.outcome.as_str(), rec.decision.ledger.as_str()),
            Ok(rec) => {
                discrepancies.push(format!("decision {id:?}: its record is the decision of {:?}", rec.decision.id));
                (rec.decision.outcome.as_str(), rec.decision.ledger.as_str())
            }
            Err(e) => {
                discrepancies.push(format!("decision {id:?}: its record is unreadable ({e}); a replay of it fails"));
                ("unreadable", "unreadable")
            }
        };
        let posts = transfers.get(id.as_str()).copied().unwrap_or(0);
        let held = hold_ids.contains(id.as_str());
        let ok = match ledger {
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
