//! `rulehost ledger reconcile`: every invariant, checked from what a store
//! holds (each store reads its rows; the checks are the same for all).

use std::collections::{HashMap, HashSet};

use rulehost_core::decision::{LedgerEffect, Outcome};
use rulehost_core::model::Account;

use rust_decimal::Decimal;

use crate::record::Dictionary;
use crate::{EntryKind, Hold, HoldState, JournalEntry};

/// A stored account row: its facts and its stored balances.
#[derive(Clone, Debug)]
pub struct AccountRow {
    /// The account.
    pub account: Account,
    /// Stored posted balance.
    pub posted: Decimal,
    /// Stored pending balance.
    pub pending: Decimal,
}

/// Everything a store holds but its decisions (those are streamed).
pub struct Stored {
    /// Accounts, with stored balances.
    pub accounts: Vec<AccountRow>,
    /// The ledger's own accounts and their posted balances.
    pub system: Vec<(String, Decimal)>,
    /// The journal, by sequence.
    pub journal: Vec<JournalEntry>,
    /// Every hold.
    pub holds: Vec<Hold>,
    /// The rule-set dictionary the records refer to.
    pub dictionary: Dictionary,
    /// Whether journal sequence numbers are dense (1, 2, 3, …: one writer)
    /// or only increasing (a shared database's sequence skips the numbers
    /// of rolled-back transactions).
    pub dense_journal: bool,
}

/// Calls its argument with each stored decision's id and encoded record.
pub type EachDecision<'a> = &'a mut dyn FnMut(&mut dyn FnMut(String, &[u8])) -> Result<(), String>;

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
pub fn reconcile(stored: &Stored, each_decision: EachDecision<'_>) -> Result<Report, String> {
    let Stored { accounts, system, journal, holds, dictionary, dense_journal } = stored;
    let dense_journal = *dense_journal;
    let mut found = Found::default();
    let sums = found.journal(journal, accounts, dense_journal);
    let pending = found.holds(holds, &sums.hold_postings);
    found.balances(accounts, system, &sums.by_account, &pending);
    let hold_ids: HashSet<&str> = holds.iter().map(|h| h.id.as_str()).collect();
    let decisions = found.decisions(dictionary, each_decision, &sums.transfers, &hold_ids)?;
    let mut discrepancies = found.0;
    discrepancies.sort();
    discrepancies.dedup();
    Ok(Report {
        accounts: accounts.len() as u64,
        entries: journal.len() as u64,
        holds: holds.len() as u64,
        decisions,
        discrepancies,
    })
}

/// What the journal sums to: per account, and the transfers and hold
/// postings per transaction id.
struct JournalSums<'a> {
    by_account: HashMap<String, Decimal>,
    transfers: HashMap<&'a str, u32>,
    hold_postings: HashMap<&'a str, u32>,
}

/// The discrepancies found so far, each naming what and where.
#[derive(Default)]
struct Found(Vec<String>);

/// Adds `amount` to `*sum`; a sum beyond the decimal range is a
/// discrepancy (a file the ledger wrote never holds one), never a panic.
fn add(sum: &mut Decimal, amount: Decimal) -> bool {
    match sum.checked_add(amount) {
        Some(total) => {
            *sum = total;
            true
        }
        None => false,
    }
}

fn bump(count: &mut u32) {
    *count = count.saturating_add(1);
}

impl Found {
    fn push(&mut self, discrepancy: String) {
        self.0.push(discrepancy);
    }

    /// Entries well formed and in sequence, in known accounts of their
    /// currency; every currency sums to zero.
    fn journal<'a>(&mut self, journal: &'a [JournalEntry], accounts: &[AccountRow], dense: bool) -> JournalSums<'a> {
        let currency_of: HashMap<&str, &str> =
            accounts.iter().map(|a| (a.account.id.as_str(), a.account.currency.as_str())).collect();
        let mut sums =
            JournalSums { by_account: HashMap::new(), transfers: HashMap::new(), hold_postings: HashMap::new() };
        let mut per_currency: HashMap<String, Decimal> = HashMap::new();
        let mut previous = 0u64;
        for (i, e) in journal.iter().enumerate() {
            if dense && e.seq != i as u64 + 1 {
                self.push(format!("journal: entry {} out of sequence (expected {})", e.seq, i + 1));
            } else if !dense && e.seq <= previous {
                self.push(format!("journal: entry {} out of sequence (after {previous})", e.seq));
            }
            previous = e.seq;
            let [debit, credit] = &e.postings[..] else {
                self.push(format!("journal entry {}: has {} postings, not 2", e.seq, e.postings.len()));
                continue;
            };
            if credit.amount <= Decimal::ZERO {
                self.push(format!("journal entry {}: amount {} is not positive", e.seq, credit.amount));
            }
            if debit.account == credit.account {
                self.push(format!("journal entry {}: debits and credits the same account", e.seq));
            }
            for p in [debit, credit] {
                match currency_of.get(p.account.as_str()).copied() {
                    Some(c) if c != p.currency => self.push(format!(
                        "journal entry {}: account {} is in {c}, the entry in {}",
                        e.seq, p.account, p.currency
                    )),
                    Some(_) => {}
                    None if p.account == crate::equity_account(&p.currency) => {}
                    None => self.push(format!("journal entry {}: unknown account {:?}", e.seq, p.account)),
                }
                if !add(sums.by_account.entry(p.account.clone()).or_default(), p.amount) {
                    self.push(format!("journal entry {}: account {}'s postings overflow a decimal", e.seq, p.account));
                }
                if !add(per_currency.entry(p.currency.clone()).or_default(), p.amount) {
                    self.push(format!(
                        "journal entry {}: currency {}'s postings overflow a decimal",
                        e.seq, p.currency
                    ));
                }
            }
            match e.kind {
                EntryKind::Transfer => bump(sums.transfers.entry(&e.reference).or_default()),
                EntryKind::HoldPosted => bump(sums.hold_postings.entry(&e.reference).or_default()),
                EntryKind::Opening => {
                    if !currency_of.contains_key(e.reference.as_str()) {
                        self.push(format!("journal entry {}: opening of unknown account {:?}", e.seq, e.reference));
                    }
                }
            }
        }
        for (currency, total) in &per_currency {
            if !total.is_zero() {
                self.push(format!("currency {currency}: postings sum to {total}, not 0"));
            }
        }
        sums
    }

    /// Holds positive, each posted once exactly when it is posted; returns
    /// the pending holds' sum per source account.
    fn holds<'a>(&mut self, holds: &'a [Hold], hold_postings: &HashMap<&str, u32>) -> HashMap<&'a str, Decimal> {
        let mut pending: HashMap<&str, Decimal> = HashMap::new();
        for h in holds {
            if h.state == HoldState::Pending && !add(pending.entry(&h.source).or_default(), h.amount) {
                self.push(format!("account {}: its pending holds overflow a decimal", h.source));
            }
            let posted = hold_postings.get(h.id.as_str()).copied().unwrap_or(0);
            let want = u32::from(h.state == HoldState::Posted);
            if posted != want {
                self.push(format!(
                    "hold {:?} is {} but has {posted} posting(s) in the journal",
                    h.id,
                    h.state.as_str()
                ));
            }
            if h.amount <= Decimal::ZERO {
                self.push(format!("hold {:?}: amount {} is not positive", h.id, h.amount));
            }
        }
        let hold_ids: HashSet<&str> = holds.iter().map(|h| h.id.as_str()).collect();
        for id in hold_postings.keys() {
            if !hold_ids.contains(id) {
                self.push(format!("journal posts hold {id:?}, which does not exist"));
            }
        }
        pending
    }

    /// Stored balances against the journal and the holds; available within
    /// the overdraft limit; no postings without a balance row.
    fn balances(
        &mut self,
        accounts: &[AccountRow],
        system: &[(String, Decimal)],
        sums: &HashMap<String, Decimal>,
        pending: &HashMap<&str, Decimal>,
    ) {
        for a in accounts {
            let id = a.account.id.as_str();
            let from_journal = sums.get(id).copied().unwrap_or_default();
            if a.posted != from_journal {
                self.push(format!("account {id}: posted {} but the journal sums to {from_journal}", a.posted));
            }
            let from_holds = pending.get(id).copied().unwrap_or_default();
            if a.pending != from_holds {
                self.push(format!("account {id}: pending {} but its pending holds sum to {from_holds}", a.pending));
            }
            let available = a.posted.checked_sub(a.pending);
            match available.and_then(|v| v.checked_add(a.account.overdraft_limit)) {
                Some(room) if room >= Decimal::ZERO => {}
                Some(_) => self.push(format!(
                    "account {id}: available {} is beyond its overdraft limit {}",
                    available.unwrap_or_default(),
                    a.account.overdraft_limit
                )),
                None => self.push(format!("account {id}: posted − pending + overdraft limit overflows a decimal")),
            }
        }
        let system_ids: HashMap<&str, Decimal> = system.iter().map(|(id, p)| (id.as_str(), *p)).collect();
        for (id, posted) in &system_ids {
            let from_journal = sums.get(*id).copied().unwrap_or_default();
            if *posted != from_journal {
                self.push(format!("system account {id}: posted {posted} but the journal sums to {from_journal}"));
            }
        }
        let known: HashSet<&str> = accounts.iter().map(|a| a.account.id.as_str()).collect();
        for id in sums.keys() {
            if !known.contains(id.as_str()) && !system_ids.contains_key(id.as_str()) {
                self.push(format!("account {id} has postings but no balance row"));
            }
        }
    }

    /// Decisions against their effects, one to one. Every record is decoded
    /// as a replay would decode it: one it cannot read is a discrepancy
    /// here, never a pass. Returns the decisions checked.
    fn decisions(
        &mut self,
        dictionary: &Dictionary,
        each_decision: EachDecision<'_>,
        transfers: &HashMap<&str, u32>,
        hold_ids: &HashSet<&str>,
    ) -> Result<u64, String> {
        let mut decided: HashSet<String> = HashSet::new();
        let mut count = 0u64;
        each_decision(&mut |id, record| {
            let decoded = match crate::record::decode(record, dictionary) {
                Ok(rec) => {
                    if rec.decision.id != id {
                        self.push(format!("decision {id:?}: its record is the decision of {:?}", rec.decision.id));
                    }
                    Some((rec.decision.outcome, rec.decision.ledger))
                }
                Err(e) => {
                    self.push(format!("decision {id:?}: its record is unreadable ({e}); a replay of it fails"));
                    None
                }
            };
            let posts = transfers.get(id.as_str()).copied().unwrap_or(0);
            let held = hold_ids.contains(id.as_str());
            let ok = match decoded {
                Some((outcome, LedgerEffect::Posted)) => posts == 1 && !held && outcome == Outcome::Approve,
                Some((outcome, LedgerEffect::Held)) => posts == 0 && held && outcome == Outcome::Review,
                Some((_, LedgerEffect::None)) => posts == 0 && !held,
                None => false,
            };
            if !ok {
                let (outcome, ledger) = decoded.map_or(("unreadable", "unreadable"), |(o, l)| (o.as_str(), l.as_str()));
                self.push(format!(
                    "decision {id:?} ({outcome}, ledger {ledger}) has {posts} transfer(s) and {} hold",
                    if held { "a" } else { "no" }
                ));
            }
            count += 1;
            decided.insert(id);
        })?;
        for id in transfers.keys().chain(hold_ids.iter()) {
            if !decided.contains(*id) {
                self.push(format!("transaction {id:?} moves money but has no decision"));
            }
        }
        Ok(count)
    }
}
