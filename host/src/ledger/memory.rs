//! The in-memory ledger: the reference implementation of [`Ledger`].

use std::collections::BTreeMap;

use foldhash::HashMap;

use rust_decimal::Decimal;

use super::{
    Balances, Commit, Effect, EntryKind, History, Hold, HoldState, JournalEntry, LATENESS_SECONDS_DEFAULT, Ledger,
    LedgerError, Posting, Resolution, StoredDecision, equity_account,
};
use crate::facts::{HistoryQuery, HistoryStats};
use crate::model::{Account, Nanos};

struct AccountState {
    account: Account,
    posted: Decimal,
    pending: Decimal,
}

/// A ledger held entirely in memory.
pub struct MemoryLedger {
    accounts: HashMap<String, AccountState>,
    /// Balances of system accounts (equity), which have no static facts.
    system: BTreeMap<String, Decimal>,
    holds: HashMap<String, Hold>,
    decisions: HashMap<String, StoredDecision>,
    journal: Vec<JournalEntry>,
    history: History,
    lateness_seconds: u64,
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new(LATENESS_SECONDS_DEFAULT)
    }
}

impl MemoryLedger {
    /// An empty ledger with the given history lateness allowance.
    pub fn new(lateness_seconds: u64) -> Self {
        MemoryLedger {
            accounts: HashMap::default(),
            system: BTreeMap::new(),
            holds: HashMap::default(),
            decisions: HashMap::default(),
            journal: Vec::new(),
            history: History::new(0, lateness_seconds),
            lateness_seconds,
        }
    }

    /// Appends a balanced entry and applies it to posted balances.
    fn post(&mut self, reference: &str, kind: EntryKind, postings: Vec<Posting>) {
        let mut per_currency: BTreeMap<&str, Decimal> = BTreeMap::new();
        for p in &postings {
            *per_currency.entry(&p.currency).or_default() += p.amount;
        }
        assert!(per_currency.values().all(Decimal::is_zero), "unbalanced journal entry for {reference}: {postings:?}");
        for p in &postings {
            match self.accounts.get_mut(&p.account) {
                Some(a) => a.posted += p.amount,
                None => *self.system.entry(p.account.clone()).or_default() += p.amount,
            }
        }
        let seq = self.journal.len() as u64 + 1;
        self.journal.push(JournalEntry { seq, reference: reference.to_owned(), kind, postings });
    }

    fn transfer_postings(source: &str, destination: &str, currency: &str, amount: Decimal) -> Vec<Posting> {
        vec![
            Posting { account: source.to_owned(), currency: currency.to_owned(), amount: -amount },
            Posting { account: destination.to_owned(), currency: currency.to_owned(), amount },
        ]
    }

    fn state(&self, id: &str) -> Result<&AccountState, LedgerError> {
        self.accounts.get(id).ok_or_else(|| LedgerError::UnknownAccount(id.to_owned()))
    }

    /// Balance of a system account (e.g. `equity:USD`).
    pub fn system_balance(&self, id: &str) -> Decimal {
        self.system.get(id).copied().unwrap_or_default()
    }

    /// Restores an account with its stored balances (loading a durable store).
    pub(super) fn restore_account(&mut self, account: Account, posted: Decimal, pending: Decimal) {
        self.accounts.insert(account.id.clone(), AccountState { account, posted, pending });
    }

    /// Restores a system account's stored balance.
    pub(super) fn restore_system(&mut self, id: String, posted: Decimal) {
        self.system.insert(id, posted);
    }

    /// Restores a journal entry as stored; balances are restored separately.
    pub(super) fn restore_entry(&mut self, entry: JournalEntry) {
        assert_eq!(entry.seq, self.journal.len() as u64 + 1, "journal restored out of order");
        self.journal.push(entry);
    }

    /// Restores a hold as stored.
    pub(super) fn restore_hold(&mut self, hold: Hold) {
        self.holds.insert(hold.id.clone(), hold);
    }

    /// Restores a stored decision and, when it counted, its history entry
    /// (in commit order, so pruning matches an uninterrupted run).
    pub(super) fn restore_decision(
        &mut self,
        id: String,
        stored: StoredDecision,
        counted: Option<(&str, Nanos, Decimal)>,
    ) {
        if let Some((source, timestamp, amount)) = counted {
            self.history.record(source, timestamp, amount);
        }
        self.decisions.insert(id, stored);
    }
}

impl Ledger for MemoryLedger {
    fn import_accounts(&mut self, accounts: &[Account]) -> Result<usize, LedgerError> {
        let mut seen = std::collections::HashSet::new();
        let mut fresh = Vec::with_capacity(accounts.len());
        for a in accounts {
            if !seen.insert(&a.id) {
                return Err(LedgerError::DuplicateAccount(a.id.clone()));
            }
            match self.accounts.get(&a.id) {
                Some(existing) if existing.account == *a => {}
                Some(_) => return Err(LedgerError::AccountChanged(a.id.clone())),
                None => fresh.push(a),
            }
        }
        for a in fresh.iter().copied() {
            self.accounts.insert(
                a.id.clone(),
                AccountState { account: a.clone(), posted: Decimal::ZERO, pending: Decimal::ZERO },
            );
            if !a.opening_balance.is_zero() {
                let postings =
                    Self::transfer_postings(&equity_account(&a.currency), &a.id, &a.currency, a.opening_balance);
                self.post(&a.id, EntryKind::Opening, postings);
            }
        }
        Ok(fresh.len())
    }

    fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.get(id).map(|a| &a.account)
    }

    fn account_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.accounts.keys().cloned().collect();
        ids.sort();
        ids
    }

    fn balances(&self, id: &str) -> Option<Balances> {
        self.accounts.get(id).map(|a| Balances {
            posted: a.posted,
            pending: a.pending,
            available: a.posted - a.pending,
        })
    }

    fn has_funds(&self, source: &str, amount: Decimal) -> bool {
        self.accounts.get(source).is_some_and(|a| a.posted - a.pending + a.account.overdraft_limit >= amount)
    }

    fn decision(&self, id: &str) -> Option<&StoredDecision> {
        self.decisions.get(id)
    }

    fn history(&self, query: &HistoryQuery<'_>) -> HistoryStats {
        self.history.query(query)
    }

    fn retain_history(&mut self, window_seconds_max: u64) {
        self.history.retain_at_least(window_seconds_max, self.lateness_seconds);
    }

    fn commit(&mut self, c: Commit<'_>) -> Result<(), LedgerError> {
        let tx = c.tx;
        if self.decisions.contains_key(&tx.id) {
            return Err(LedgerError::DuplicateDecision(tx.id.clone()));
        }
        if c.effect != Effect::Nothing {
            // Programmer errors: the pipeline checked existence and funds under the same lock.
            self.state(&tx.destination)?;
            let source = self.state(&tx.source)?;
            assert!(
                source.posted - source.pending + source.account.overdraft_limit >= tx.amount,
                "commit of {} without funds",
                tx.id
            );
        }
        match c.effect {
            Effect::Post => {
                let postings = Self::transfer_postings(&tx.source, &tx.destination, &tx.currency, tx.amount);
                self.post(&tx.id, EntryKind::Transfer, postings);
            }
            Effect::Hold => {
                self.accounts.get_mut(&tx.source).expect("checked above").pending += tx.amount;
                self.holds.insert(
                    tx.id.clone(),
                    Hold {
                        id: tx.id.clone(),
                        source: tx.source.clone(),
                        destination: tx.destination.clone(),
                        amount: tx.amount,
                        currency: tx.currency.clone(),
                        state: HoldState::Pending,
                    },
                );
            }
            Effect::Nothing => {}
        }
        if c.count_in_history {
            self.history.record(&tx.source, tx.timestamp, tx.amount);
        }
        self.decisions.insert(tx.id.clone(), StoredDecision::of(c.fingerprint, &c.decision));
        Ok(())
    }

    fn resolve_hold(&mut self, id: &str, approve: bool) -> Result<Resolution, LedgerError> {
        let hold = self.holds.get(id).ok_or_else(|| LedgerError::UnknownHold(id.to_owned()))?.clone();
        match (hold.state, approve) {
            (HoldState::Posted, true) | (HoldState::Voided, false) => {
                return Ok(Resolution::AlreadyDone);
            }
            (HoldState::Posted, false) => {
                return Err(LedgerError::HoldResolved { id: id.to_owned(), state: "posted" });
            }
            (HoldState::Voided, true) => {
                return Err(LedgerError::HoldResolved { id: id.to_owned(), state: "voided" });
            }
            (HoldState::Pending, _) => {}
        }
        if approve {
            // Re-check funds without this hold's own reservation.
            let source = self.state(&hold.source)?;
            let available = source.posted - (source.pending - hold.amount);
            if available + source.account.overdraft_limit < hold.amount {
                return Err(LedgerError::InsufficientFunds(hold.source.clone()));
            }
            self.state(&hold.destination)?;
        }
        self.accounts.get_mut(&hold.source).expect("hold source exists").pending -= hold.amount;
        if approve {
            let postings = Self::transfer_postings(&hold.source, &hold.destination, &hold.currency, hold.amount);
            self.post(id, EntryKind::HoldPosted, postings);
        }
        self.holds.get_mut(id).expect("present").state = if approve { HoldState::Posted } else { HoldState::Voided };
        Ok(Resolution::Done)
    }

    fn hold(&self, id: &str) -> Option<Hold> {
        self.holds.get(id).cloned()
    }

    fn holds(&self) -> Vec<Hold> {
        let mut holds: Vec<Hold> = self.holds.values().cloned().collect();
        holds.sort_by(|a, b| a.id.cmp(&b.id));
        holds
    }

    fn journal(&self) -> &[JournalEntry] {
        &self.journal
    }
}
