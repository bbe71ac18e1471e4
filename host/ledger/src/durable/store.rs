//! What a store implements for the durable front (a [`GroupWriter`] and a
//! [`StoreRead`]), the changes it is handed ([`Op`]), and the read-only and
//! ownership views the commands and shared ledgers use.

use std::sync::Arc;
use std::time::Instant;

use rust_decimal::Decimal;

use super::Report;
use crate::record::DictionaryEntry;
use crate::{DecisionRecord, Hold, HoldState, JournalEntry, LedgerError, Posting, RulesetArchive};
use rulehost_core::model::{Account, Nanos};

/// A change with its place in the sequence and when it was queued.
pub type Queued = (u64, Instant, Op);

/// One change, as a store records it.
pub enum Op {
    /// New accounts and their opening entries.
    Accounts {
        /// The accounts.
        accounts: Vec<Account>,
        /// Their opening entries.
        entries: Vec<JournalEntry>,
        /// Balances after the import (a store may instead apply the entries
        /// as increments).
        balances: Vec<BalanceRow>,
    },
    /// A decided transaction.
    Decision(Box<DecisionOp>),
    /// A hold posted or voided.
    Resolve {
        /// The hold, in its new state.
        hold: Hold,
        /// Its posting, when approved.
        entry: Option<JournalEntry>,
        /// Balances after it.
        balances: Vec<BalanceRow>,
        /// When (wall clock, for the audit trail).
        at_unix_ms: i64,
    },
    /// A rule-set version's dictionary entry, new or grown.
    Dictionary {
        /// Its number in the dictionary.
        id: u32,
        /// The entry.
        entry: DictionaryEntry,
    },
    /// A rule-set version's files.
    Ruleset(Arc<RulesetArchive>),
    /// A part of a snapshot of the id filter (see [`FilterPart`]).
    IdFilter(FilterPart),
}

/// A part of a snapshot of the id filter: a snapshot goes to the store in
/// parts of at most [`FILTER_PART_BYTES`](super::FILTER_PART_BYTES), each
/// queued with a change once the part before it is durable, so it never
/// needs more than one part copied at a time. A filter only gains bits, so
/// each part, copied later than the first, still covers every decision
/// written before the first: the snapshot, complete with its last part,
/// covers those. Until then the store keeps the previous snapshot's
/// coverage (a mix of older and newer parts covers at least that).
pub struct FilterPart {
    /// Where the part starts in the filter, in bytes.
    pub offset: usize,
    /// The filter's bytes there (its words, little-endian).
    pub bytes: Vec<u8>,
    /// The whole filter's size, in bytes.
    pub total: usize,
    /// The first part: the snapshot covers the decisions written before it.
    pub first: bool,
    /// The last part: the snapshot is complete.
    pub last: bool,
}

/// A decided transaction, as a store records it.
pub struct DecisionOp {
    /// The transaction id.
    pub id: String,
    /// The encoded decision record.
    pub record: Arc<[u8]>,
    /// (source, timestamp, amount, the source's horizon after it), when it
    /// counts in history.
    pub history: Option<(String, Nanos, Decimal, Nanos)>,
    /// Its transfer, when posted.
    pub entry: Option<JournalEntry>,
    /// Its hold, when held.
    pub hold: Option<Hold>,
    /// Balances after it.
    pub balances: Vec<BalanceRow>,
}

/// An account's balances after a change.
pub struct BalanceRow {
    /// The account.
    pub id: String,
    /// Posted balance.
    pub posted: Decimal,
    /// Pending balance; `None` for a system account.
    pub pending: Option<Decimal>,
}

/// The writer's half of a store: makes one group of changes durable in one
/// transaction (all or nothing), or says why not.
pub trait GroupWriter: Send + 'static {
    /// Writes `group` in one durable transaction.
    fn write_group(&mut self, group: Vec<Queued>) -> Result<(), String>;
}

/// The reader's half of a store: what is not kept in memory. Errors are the
/// store's reason as text.
pub trait StoreRead: Send + 'static {
    /// The encoded record of `id`'s decision.
    fn record(&mut self, id: &str) -> Result<Option<Vec<u8>>, String>;
    /// The hold of `id`, in any state.
    fn hold(&mut self, id: &str) -> Result<Option<Hold>, String>;
    /// Every hold, sorted by id.
    fn holds(&mut self) -> Result<Vec<Hold>, String>;
    /// The pending holds, sorted by id.
    fn pending_holds(&mut self) -> Result<Vec<Hold>, String> {
        Ok(self.holds()?.into_iter().filter(|h| h.state == HoldState::Pending).collect())
    }
    /// The journal in order, optionally only entries touching `account`.
    fn journal(&mut self, account: Option<&str>) -> Result<Vec<JournalEntry>, String>;
    /// A kept rule-set version.
    fn ruleset(&mut self, version: &str) -> Result<Option<RulesetArchive>, String>;
    /// Every invariant of what the store holds.
    fn reconcile(&mut self) -> Result<Report, String>;
    /// An account's stored posted balance (a shared store: other hosts'
    /// credits included). `None` when the store cannot say; the default.
    fn posted(&mut self, _account: &str) -> Result<Option<Decimal>, String> {
        Ok(None)
    }
}

/// Read-only access to a stored ledger, whoever writes it (the `ledger`
/// and `review list` commands read a SQLite file or a PostgreSQL database
/// through it).
pub trait LedgerReader {
    /// The stored decision of `id`, with its input and facts.
    fn record(&self, id: &str) -> Result<Option<DecisionRecord>, String>;
    /// The id of every stored decision, in the order they were stored.
    fn decision_ids(&self) -> Result<Vec<String>, String>;
    /// A kept rule-set version.
    fn ruleset(&self, version: &str) -> Result<Option<RulesetArchive>, String>;
    /// An account's static facts.
    fn account(&self, id: &str) -> Result<Option<Account>, String>;
    /// Every account with its stored balances, sorted by id.
    fn accounts(&self) -> Result<Vec<crate::AccountBalances>, String>;
    /// The journal, optionally only entries touching `account`.
    fn journal(&self, account: Option<&str>) -> Result<Vec<JournalEntry>, String>;
    /// Every hold, sorted by id.
    fn holds(&self) -> Result<Vec<Hold>, String>;
    /// The pending holds, sorted by id.
    fn pending_holds(&self) -> Result<Vec<Hold>, String> {
        Ok(self.holds()?.into_iter().filter(|h| h.state == HoldState::Pending).collect())
    }
    /// Checks every invariant.
    fn reconcile(&self) -> Result<Report, String>;
}

/// Which sources this host decides, on a ledger several hosts share.
pub trait Ownership: Send + Sync + 'static {
    /// `Ok` when this host decides transactions from `source` now;
    /// [`LedgerError::NotOwner`] naming the owner otherwise.
    fn check(&self, source: &str) -> Result<(), LedgerError>;
    /// The partitions this host decides now, sorted (none once its leases
    /// are lost).
    fn owned(&self) -> Vec<u16>;
}

/// The debit (negative) and credit (positive) legs of a two-legged entry,
/// whichever order they come in. The store keeps entries in this form; an
/// entry that is not one is refused (the writer reports a storage error,
/// and nothing after it is acknowledged).
pub fn legs(e: &JournalEntry) -> Result<(&Posting, &Posting), String> {
    match e.postings.as_slice() {
        [a, b] if a.amount == -b.amount && a.currency == b.currency => {
            Ok(if b.amount.is_sign_negative() && !b.amount.is_zero() { (b, a) } else { (a, b) })
        }
        _ => Err(format!("journal entry {} is not a two-legged balanced entry: {:?}", e.seq, e.postings)),
    }
}

/// A decimal a store kept as text (`what` names the row and column in the
/// error).
pub fn stored_decimal(text: &str, what: &str) -> Result<Decimal, String> {
    text.parse::<Decimal>().map_err(|e| format!("{what}: {text:?} is not a decimal the ledger holds: {e}"))
}
