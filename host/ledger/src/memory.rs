//! The in-memory ledger: the reference implementation of [`Ledger`].

// Input reaches this module (ARCHITECTURE.md, "No input reaches a panic"):
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;

use foldhash::HashMap;

use rust_decimal::Decimal;

use std::sync::Arc;

use super::record::{self, Dictionary, RecordedInput};
use super::{
    Admission, Balances, Commit, Committed, DecisionRecord, Effect, EntryKind, History, Hold, HoldState, JournalEntry,
    LATENESS_SECONDS_DEFAULT, Ledger, LedgerError, Posting, Refusal, Resolution, RulesetArchive, StoredDecision, Usage,
    equity_account, exact_add, exact_sub,
};
use rulehost_core::facts::{HistoryQuery, HistoryStats};
use rulehost_core::model::{Account, Nanos};

struct AccountState {
    account: Account,
    posted: Decimal,
    pending: Decimal,
}

/// A ledger held entirely in memory. Decisions are kept in their compact
/// stored form ([`record`]), so a replay answers the same bytes a durable
/// ledger would.
///
/// The durable ledger puts one in front of its store as its hot state,
/// with `keep_everything` off: then it keeps balances (each account's
/// pending sum among them), the number of pending holds and history only;
/// the holds themselves, the journal and the decisions live in the store
/// alone.
pub struct MemoryLedger {
    accounts: HashMap<String, AccountState>,
    /// Balances of system accounts (equity), which have no static facts.
    system: BTreeMap<String, Decimal>,
    /// Every hold, by id (only when keeping everything: the hot state keeps
    /// each account's pending sum, not its holds).
    holds: HashMap<String, Hold>,
    /// Holds pending now.
    pending_holds: u64,
    /// Encoded decision records, by id (only when keeping everything).
    decisions: HashMap<String, Box<[u8]>>,
    decision_bytes: u64,
    dictionary: Dictionary,
    archives: HashMap<Arc<str>, Arc<RulesetArchive>>,
    journal: Vec<JournalEntry>,
    /// Entries posted and not yet taken by the store (hot state only).
    unstored: Vec<JournalEntry>,
    /// Entries posted so far (the next entry's seq is one more).
    journal_len: u64,
    keep_everything: bool,
    history: History,
    lateness_seconds: u64,
}

/// What applying a commit's effect did, for a store to write.
pub struct Applied {
    /// What the commit did.
    pub committed: Committed,
    /// When it counted in history: the source's retention horizon after it
    /// (entries before it are no longer kept).
    pub horizon: Option<Nanos>,
    /// The hold it placed, when it placed one.
    pub hold: Option<Hold>,
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
            pending_holds: 0,
            decisions: HashMap::default(),
            decision_bytes: 0,
            dictionary: Dictionary::default(),
            archives: HashMap::default(),
            journal: Vec::new(),
            unstored: Vec::new(),
            journal_len: 0,
            keep_everything: true,
            history: History::new(0, lateness_seconds),
            lateness_seconds,
        }
    }

    /// The hot state of a durable ledger: balances (with each account's
    /// pending sum) and history, nothing that grows with decisions.
    pub fn hot(lateness_seconds: u64) -> Self {
        MemoryLedger { keep_everything: false, ..Self::new(lateness_seconds) }
    }

    /// Appends a balanced entry and applies it to posted balances; nothing
    /// changes if a balance would leave the range of an exact decimal.
    fn post(&mut self, reference: &str, kind: EntryKind, postings: Vec<Posting>) -> Result<JournalEntry, LedgerError> {
        let mut per_currency: BTreeMap<&str, Decimal> = BTreeMap::new();
        for p in &postings {
            let sum = per_currency.entry(&p.currency).or_default();
            *sum = exact_add(*sum, p.amount).ok_or_else(|| LedgerError::BalanceOverflow(p.account.clone()))?;
        }
        // Invariant: entries are built here as (-a, +a) per currency.
        assert!(per_currency.values().all(Decimal::is_zero), "unbalanced journal entry for {reference}: {postings:?}");
        let after: Vec<Decimal> = self.posted_after(&postings)?;
        for (p, posted) in postings.iter().zip(after) {
            match self.accounts.get_mut(&p.account) {
                Some(a) => a.posted = posted,
                None => {
                    self.system.insert(p.account.clone(), posted);
                }
            }
        }
        self.journal_len = self.journal_len.saturating_add(1);
        let entry = JournalEntry { seq: self.journal_len, reference: reference.to_owned(), kind, postings };
        if self.keep_everything {
            self.journal.push(entry.clone());
        } else {
            self.unstored.push(entry.clone());
        }
        Ok(entry)
    }

    /// The posted balance each posting leaves its account with, in order
    /// (an account posted twice sees its first posting), or the account
    /// whose posted or available balance would leave the range.
    fn posted_after(&self, postings: &[Posting]) -> Result<Vec<Decimal>, LedgerError> {
        let mut out: Vec<Decimal> = Vec::with_capacity(postings.len());
        for (i, p) in postings.iter().enumerate() {
            let earlier = postings.get(..i).unwrap_or_default().iter().rposition(|q| q.account == p.account);
            let current = match earlier.and_then(|j| out.get(j)) {
                Some(posted) => *posted,
                None => self.posted_of(&p.account),
            };
            let overflow = || LedgerError::BalanceOverflow(p.account.clone());
            let posted = exact_add(current, p.amount).ok_or_else(overflow)?;
            if let Some(a) = self.accounts.get(&p.account) {
                exact_sub(posted, a.pending).ok_or_else(overflow)?;
            }
            out.push(posted);
        }
        Ok(out)
    }

    fn posted_of(&self, id: &str) -> Decimal {
        match self.accounts.get(id) {
            Some(a) => a.posted,
            None => self.system_balance(id),
        }
    }

    #[allow(clippy::arithmetic_side_effects, reason = "negating a Decimal is exact and cannot overflow")]
    fn transfer_postings(source: &str, destination: &str, currency: &str, amount: Decimal) -> Vec<Posting> {
        vec![
            Posting { account: source.to_owned(), currency: currency.to_owned(), amount: -amount },
            Posting { account: destination.to_owned(), currency: currency.to_owned(), amount },
        ]
    }

    /// Whether a transfer's posting keeps every balance in range, without
    /// building the entry (the hot path of `admit`).
    fn transfer_fits(&self, source: &AccountState, destination: &str, amount: Decimal) -> bool {
        let fits = |posted: Decimal, pending: Decimal| exact_sub(posted, pending).is_some();
        let Some(src_posted) = exact_sub(source.posted, amount) else { return false };
        if !fits(src_posted, source.pending) {
            return false;
        }
        let dst = match self.accounts.get(destination) {
            Some(d) if d.account.id == source.account.id => (src_posted, d.pending),
            Some(d) => (d.posted, d.pending),
            None => return false,
        };
        exact_add(dst.0, amount).is_some_and(|posted| fits(posted, dst.1))
    }

    fn state(&self, id: &str) -> Result<&AccountState, LedgerError> {
        self.accounts.get(id).ok_or_else(|| LedgerError::UnknownAccount(id.to_owned()))
    }

    /// Balance of a system account (e.g. `equity:USD`).
    pub fn system_balance(&self, id: &str) -> Decimal {
        self.system.get(id).copied().unwrap_or_default()
    }

    /// Restores an account with its stored balances (loading a durable store).
    pub fn restore_account(&mut self, account: Account, posted: Decimal, pending: Decimal) {
        self.accounts.insert(account.id.clone(), AccountState { account, posted, pending });
    }

    /// Restores a system account's stored balance.
    pub fn restore_system(&mut self, id: String, posted: Decimal) {
        self.system.insert(id, posted);
    }

    /// The entries posted since the last call (hot state only): what the
    /// store must write.
    pub fn take_unstored(&mut self) -> Vec<JournalEntry> {
        std::mem::take(&mut self.unstored)
    }

    /// Restores the journal's length (a durable store keeps the entries).
    pub fn restore_journal_len(&mut self, len: u64) {
        self.journal_len = len;
    }

    /// Restores the number of pending holds (a durable store keeps the
    /// holds; the accounts' pending sums come with their balances).
    pub fn restore_pending_holds(&mut self, count: u64) {
        self.pending_holds = count;
    }

    /// Restores a history entry (in commit order per source, so pruning
    /// matches an uninterrupted run).
    pub fn restore_history(&mut self, source: &str, timestamp: Nanos, amount: Decimal) {
        self.history.record(source, timestamp, amount);
    }

    /// The dictionary records are encoded against.
    pub fn dictionary(&self) -> &Dictionary {
        &self.dictionary
    }

    /// The dictionary, to restore or extend.
    pub fn dictionary_mut(&mut self) -> &mut Dictionary {
        &mut self.dictionary
    }

    /// Checks funds for `c.wanted`, makes the decision, applies its effect
    /// and records history — everything of a commit but storing the record.
    pub fn apply(&mut self, c: Commit<'_>) -> Result<(Applied, DecisionRecord), LedgerError> {
        let tx = c.tx;
        let admission = match c.wanted {
            Effect::Nothing => Admission::NotAsked,
            wanted => match self.admit(&tx.source, &tx.destination, tx.amount, wanted) {
                Ok(()) => Admission::Admitted,
                Err(refusal) => Admission::Refused(refusal),
            },
        };
        let effect = if admission == Admission::Admitted { c.wanted } else { Effect::Nothing };
        if effect != Effect::Nothing {
            self.state(&tx.destination)?;
            self.state(&tx.source)?;
        }
        let decision = (c.decide)(admission);
        let mut placed = None;
        match effect {
            Effect::Post => {
                let postings = Self::transfer_postings(&tx.source, &tx.destination, &tx.currency, tx.amount);
                self.post(&tx.id, EntryKind::Transfer, postings)?;
            }
            Effect::Hold => {
                let source =
                    self.accounts.get_mut(&tx.source).ok_or_else(|| LedgerError::UnknownAccount(tx.source.clone()))?;
                source.pending = exact_add(source.pending, tx.amount)
                    .ok_or_else(|| LedgerError::BalanceOverflow(tx.source.clone()))?;
                let hold = Hold {
                    id: tx.id.clone(),
                    source: tx.source.clone(),
                    destination: tx.destination.clone(),
                    amount: tx.amount,
                    currency: tx.currency.clone(),
                    state: HoldState::Pending,
                };
                self.pending_holds = self.pending_holds.saturating_add(1);
                if self.keep_everything {
                    self.holds.insert(tx.id.clone(), hold.clone());
                }
                placed = Some(hold);
            }
            Effect::Nothing => {}
        }
        let horizon = c.count_in_history.then(|| self.history.record(&tx.source, tx.timestamp, tx.amount));
        let record = DecisionRecord {
            fingerprint: c.fingerprint,
            decision: decision.clone(),
            input: Some(RecordedInput {
                tx: tx.clone(),
                extra: c.extra.map(str::to_owned),
                admission,
                counted: c.count_in_history,
                facts: c.facts,
            }),
        };
        Ok((Applied { committed: Committed { decision, effect }, horizon, hold: placed }, record))
    }

    /// Encodes a record against this ledger's dictionary; returns the bytes
    /// and the dictionary entry that changed, if one did.
    pub fn encode(&mut self, r: &DecisionRecord) -> Result<(Vec<u8>, Option<u32>), LedgerError> {
        record::encode(r, &mut self.dictionary).map_err(|e| LedgerError::Storage(e.to_string()))
    }

    /// Decodes a stored record.
    pub fn decode(&self, bytes: &[u8]) -> Result<DecisionRecord, LedgerError> {
        record::decode(bytes, &self.dictionary).map_err(|e| LedgerError::Storage(e.to_string()))
    }

    /// Accounts, holds and history in memory (without decisions and journal).
    pub fn hot_usage(&self) -> Usage {
        let history = self.history.len() as u64;
        // Rough per-entry sizes: an account with its map slot ≈ 200 B, a
        // hold ≈ 160 B; history as allocated (buffers at their capacity).
        let bytes = (self.accounts.len() as u64)
            .saturating_mul(200)
            .saturating_add((self.holds.len() as u64).saturating_mul(160))
            .saturating_add(self.history.bytes() as u64);
        Usage {
            accounts: self.accounts.len() as u64,
            pending_holds: self.pending_holds,
            history_entries: history,
            decisions: 0,
            journal_entries: 0,
            bytes,
        }
    }

    /// Posts (`approve`) or voids `hold`, as the store last recorded it:
    /// the resolution and the hold in its state after it. Done, the source's
    /// pending sum drops and, approved, the transfer posts; a hold already
    /// resolved this way is [`Resolution::AlreadyDone`], the other way an
    /// error, and then nothing changes.
    pub fn resolve_given(&mut self, hold: &Hold, approve: bool) -> Result<(Resolution, Hold), LedgerError> {
        let id = hold.id.as_str();
        match (hold.state, approve) {
            (HoldState::Posted, true) | (HoldState::Voided, false) => {
                return Ok((Resolution::AlreadyDone, hold.clone()));
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
            let without_hold = AccountState {
                account: source.account.clone(),
                posted: source.posted,
                pending: exact_sub(source.pending, hold.amount).unwrap_or(Decimal::ZERO),
            };
            if !covers(&without_hold, hold.amount) {
                return Err(LedgerError::InsufficientFunds(hold.source.clone()));
            }
            self.state(&hold.destination)?;
        }
        let overflow = || LedgerError::BalanceOverflow(hold.source.clone());
        let source =
            self.accounts.get_mut(&hold.source).ok_or_else(|| LedgerError::UnknownAccount(hold.source.clone()))?;
        let reserved = source.pending;
        source.pending = exact_sub(reserved, hold.amount).ok_or_else(overflow)?;
        if approve {
            let postings = Self::transfer_postings(&hold.source, &hold.destination, &hold.currency, hold.amount);
            if let Err(e) = self.post(id, EntryKind::HoldPosted, postings).map(|_| ()) {
                // Nothing changes: the hold keeps its reservation.
                if let Some(source) = self.accounts.get_mut(&hold.source) {
                    source.pending = reserved;
                }
                return Err(e);
            }
        }
        self.pending_holds = self.pending_holds.saturating_sub(1);
        let state = if approve { HoldState::Posted } else { HoldState::Voided };
        Ok((Resolution::Done, Hold { state, ..hold.clone() }))
    }

    /// Keeps an archive in memory; whether it was new.
    pub fn keep_archive(&mut self, archive: &Arc<RulesetArchive>) -> bool {
        if self.archives.contains_key(&archive.version) {
            return false;
        }
        self.archives.insert(archive.version.clone(), archive.clone());
        true
    }

    /// An archive kept in memory.
    pub fn archive(&self, version: &str) -> Option<&Arc<RulesetArchive>> {
        self.archives.get(version)
    }
}

/// `available + overdraft_limit ≥ amount`, without overflowing: a sum
/// beyond the largest decimal covers any amount.
fn covers(a: &AccountState, amount: Decimal) -> bool {
    match exact_sub(a.posted, a.pending).and_then(|available| exact_add(available, a.account.overdraft_limit)) {
        Some(reach) => reach >= amount,
        None => a.posted > a.pending,
    }
}

impl Ledger for MemoryLedger {
    fn import_accounts(&mut self, accounts: &[Account]) -> Result<usize, LedgerError> {
        let mut seen = std::collections::HashSet::new();
        let mut fresh = Vec::with_capacity(accounts.len());
        for a in accounts {
            if a.id.starts_with(super::SYSTEM_ACCOUNT_PREFIX) {
                return Err(LedgerError::ReservedAccount(a.id.clone()));
            }
            if !seen.insert(&a.id) {
                return Err(LedgerError::DuplicateAccount(a.id.clone()));
            }
            match self.accounts.get(&a.id) {
                Some(existing) if existing.account == *a => {}
                Some(_) => return Err(LedgerError::AccountChanged(a.id.clone())),
                None => fresh.push(a),
            }
        }
        // All or nothing: the equity accounts must hold every opening balance.
        let mut equity: BTreeMap<String, Decimal> = BTreeMap::new();
        for a in fresh.iter().copied() {
            let id = equity_account(&a.currency);
            let balance = match equity.get(&id) {
                Some(b) => *b,
                None => self.system_balance(&id),
            };
            let after = exact_sub(balance, a.opening_balance)
                .ok_or_else(|| LedgerError::BalanceOverflow(format!("{id} (opening balance of {})", a.id)))?;
            equity.insert(id, after);
        }
        for a in fresh.iter().copied() {
            self.accounts.insert(
                a.id.clone(),
                AccountState { account: a.clone(), posted: Decimal::ZERO, pending: Decimal::ZERO },
            );
            if !a.opening_balance.is_zero() {
                // The debit leg first, as the durable store keeps it: an
                // account opening below zero credits equity.
                let equity = equity_account(&a.currency);
                let (from, to) = if a.opening_balance.is_sign_negative() { (&a.id, &equity) } else { (&equity, &a.id) };
                let postings = Self::transfer_postings(from, to, &a.currency, a.opening_balance.abs());
                self.post(&a.id, EntryKind::Opening, postings)?;
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
            // In range: every change keeps `posted - pending` representable.
            available: a.posted.saturating_sub(a.pending),
        })
    }

    fn admit(&self, source: &str, destination: &str, amount: Decimal, effect: Effect) -> Result<(), Refusal> {
        if effect == Effect::Nothing {
            return Ok(());
        }
        if amount.is_sign_negative() || amount.is_zero() {
            return Err(Refusal::AmountNotPositive);
        }
        let src = self.accounts.get(source).ok_or(Refusal::InsufficientFunds)?;
        if !covers(src, amount) {
            return Err(Refusal::InsufficientFunds);
        }
        let fits = match effect {
            Effect::Post => self.transfer_fits(src, destination, amount),
            Effect::Hold => exact_add(src.pending, amount).is_some_and(|p| exact_sub(src.posted, p).is_some()),
            Effect::Nothing => true,
        };
        if fits { Ok(()) } else { Err(Refusal::BalanceOverflow) }
    }

    fn decision(&self, id: &str) -> Result<Option<StoredDecision>, LedgerError> {
        Ok(self.record(id)?.map(|r| StoredDecision { fingerprint: r.fingerprint, decision: r.decision }))
    }

    fn record(&self, id: &str) -> Result<Option<DecisionRecord>, LedgerError> {
        self.decisions.get(id).map(|bytes| self.decode(bytes)).transpose()
    }

    fn history(&self, query: &HistoryQuery<'_>) -> HistoryStats {
        self.history.query(query)
    }

    fn retain_history(&mut self, window_seconds_max: u64) {
        self.history.retain_at_least(window_seconds_max, self.lateness_seconds);
    }

    fn commit(&mut self, c: Commit<'_>) -> Result<Committed, LedgerError> {
        let id = c.tx.id.clone();
        if self.decisions.contains_key(&id) {
            return Err(LedgerError::DuplicateDecision(id));
        }
        let (applied, record) = self.apply(c)?;
        let (bytes, _) = self.encode(&record)?;
        self.decision_bytes = self.decision_bytes.saturating_add(bytes.len() as u64).saturating_add(id.len() as u64);
        self.decisions.insert(id, bytes.into_boxed_slice());
        Ok(applied.committed)
    }

    fn resolve_hold(&mut self, id: &str, approve: bool) -> Result<Resolution, LedgerError> {
        let hold = self.holds.get(id).ok_or_else(|| LedgerError::UnknownHold(id.to_owned()))?.clone();
        let (resolution, after) = self.resolve_given(&hold, approve)?;
        self.holds.insert(after.id.clone(), after);
        Ok(resolution)
    }

    fn hold(&self, id: &str) -> Result<Option<Hold>, LedgerError> {
        Ok(self.holds.get(id).cloned())
    }

    fn holds(&self) -> Result<Vec<Hold>, LedgerError> {
        let mut holds: Vec<Hold> = self.holds.values().cloned().collect();
        holds.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(holds)
    }

    fn journal(&self, account: Option<&str>) -> Result<Vec<JournalEntry>, LedgerError> {
        Ok(match account {
            None => self.journal.clone(),
            Some(a) => self.journal.iter().filter(|e| e.postings.iter().any(|p| p.account == a)).cloned().collect(),
        })
    }

    fn keep_ruleset(&mut self, archive: &Arc<RulesetArchive>) -> Result<(), LedgerError> {
        self.keep_archive(archive);
        Ok(())
    }

    fn ruleset(&self, version: &str) -> Result<Option<RulesetArchive>, LedgerError> {
        Ok(self.archive(version).map(|a| (**a).clone()))
    }

    fn usage(&self) -> Usage {
        let hot = self.hot_usage();
        let journal = self.journal.len() as u64;
        Usage {
            decisions: self.decisions.len() as u64,
            journal_entries: journal,
            bytes: hot.bytes.saturating_add(self.decision_bytes).saturating_add(journal.saturating_mul(120)),
            ..hot
        }
    }
}
