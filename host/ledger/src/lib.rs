//! The native double-entry ledger: accounts, posted balances, pending holds,
//! the journal, stored decisions (idempotency and audit) and source history.
//!
//! [`Ledger`] is the storage trait the pipeline talks to; [`MemoryLedger`]
//! is the in-memory implementation; `rulehost-ledger-sqlite`'s `SqliteLedger` puts it in front of an
//! embedded SQLite store with group commit (the durable default). Invariants, asserted on every change:
//! every journal entry balances per currency; an account's posted balance is
//! the sum of its postings; pending equals the sum of its pending holds; an
//! id has at most one decision.
//!
//! Crate boundary: builds on `rulehost-core` alone; never wasmtime, the
//! sandbox or SQLite (the durable store implements [`Ledger`] in its own
//! crate).

mod archive;
pub mod durable;
mod history;
mod memory;
mod reads;
pub mod record;
mod sync;

pub use archive::{ArchiveFile, ExtractError, RulesetArchive};
pub use history::{History, LATENESS_SECONDS_DEFAULT};
pub use memory::{Applied, MemoryLedger};
pub use reads::{Read, RecordedFacts, ReplayFacts};
pub use record::{Admission, DecisionRecord, RecordedInput};
pub use rulehost_core::model::{SYSTEM_ACCOUNT_PREFIX, equity_account};
pub use sync::{SyncPoint, Watermark};

/// What [`forward_ledger!`] names from other crates.
#[doc(hidden)]
pub mod __reexport {
    pub use rulehost_core;
    pub use rust_decimal;
}

use std::sync::Arc;

use rust_decimal::Decimal;

use rulehost_core::decision::Decision;
use rulehost_core::facts::{HistoryQuery, HistoryStats};
use rulehost_core::model::{Account, Transaction};

/// Balances of an account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balances {
    /// Sum of posted journal entries.
    pub posted: Decimal,
    /// Sum of pending holds on the account as source.
    pub pending: Decimal,
    /// `posted − pending`.
    pub available: Decimal,
}

/// An account's facts that matter for money, with its balances: what
/// `rulehost ledger balance` prints and `GET /v1/accounts/{id}` answers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AccountBalances {
    /// Account id.
    pub id: String,
    /// Currency.
    pub currency: String,
    /// `active`, `frozen` or `closed`.
    pub status: rulehost_core::model::AccountStatus,
    /// How far below zero the balance may go.
    pub overdraft_limit: Decimal,
    /// Sum of posted journal entries.
    pub posted: Decimal,
    /// Sum of pending holds.
    pub pending: Decimal,
    /// Posted − pending.
    pub available: Decimal,
}

impl AccountBalances {
    /// `account`'s facts with `balances`.
    pub fn new(account: &Account, balances: Balances) -> Self {
        AccountBalances {
            id: account.id.clone(),
            currency: account.currency.clone(),
            status: account.status,
            overdraft_limit: account.overdraft_limit,
            posted: balances.posted,
            pending: balances.pending,
            available: balances.available,
        }
    }
}

/// One leg of a journal entry: `amount` is positive for a credit, negative
/// for a debit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posting {
    /// The account.
    pub account: String,
    /// The currency.
    pub currency: String,
    /// Signed amount.
    pub amount: Decimal,
}

/// Why a journal entry exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// An account's opening balance against the currency's equity account.
    Opening,
    /// An approved transaction.
    Transfer,
    /// A hold approved by an operator.
    HoldPosted,
}

impl EntryKind {
    /// The spelling in the store and in `rulehost ledger journal`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Opening => "opening",
            EntryKind::Transfer => "transfer",
            EntryKind::HoldPosted => "hold-posted",
        }
    }
}

/// An immutable, balanced journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// Position in the journal, from 1.
    pub seq: u64,
    /// The transaction (or account, for openings) it belongs to.
    pub reference: String,
    /// Why.
    pub kind: EntryKind,
    /// Its legs; they sum to zero per currency.
    pub postings: Vec<Posting>,
}

/// The state of a hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldState {
    /// Reserves funds on the source.
    Pending,
    /// Approved by an operator and posted.
    Posted,
    /// Declined by an operator.
    Voided,
}

impl HoldState {
    /// The spelling in the store, the commands and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Pending => "pending",
            HoldState::Posted => "posted",
            HoldState::Voided => "voided",
        }
    }
}

/// A hold placed by a `review` decision.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Hold {
    /// The transaction id.
    pub id: String,
    /// Source account.
    pub source: String,
    /// Destination account.
    pub destination: String,
    /// Amount reserved.
    pub amount: Decimal,
    /// Currency.
    pub currency: String,
    /// State.
    pub state: HoldState,
}

/// A decision as kept for idempotency: the fingerprint of its transaction's
/// content and the decision (its JSON is the stored bytes again).
#[derive(Clone, Debug)]
pub struct StoredDecision {
    /// Fingerprint of the transaction's content.
    pub fingerprint: [u8; 32],
    /// The decision.
    pub decision: Arc<Decision>,
}

/// What the ledger does for a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Post the transfer.
    Post,
    /// Place a hold.
    Hold,
    /// Touch no balance.
    Nothing,
}

/// Everything the ledger records for one decided transaction, atomically:
/// the ledger runs the funds and range check for `wanted`, hands its answer
/// to `decide` for the decision, applies the effect and stores the record —
/// one step, so no other commit can come between the check and the posting.
pub struct Commit<'a> {
    /// The transaction.
    pub tx: &'a Transaction,
    /// Its content fingerprint.
    pub fingerprint: [u8; 32],
    /// Its top-level fields beyond the known ones (JSON object), if any.
    pub extra: Option<&'a str>,
    /// Post, hold or nothing, as the rules' outcome asks.
    pub wanted: Effect,
    /// Whether it counts in source history (it reached risk scoring).
    pub count_in_history: bool,
    /// What its rules read (stored so it can be replayed).
    pub facts: RecordedFacts,
    /// Makes the decision from the funds check's answer (called once).
    pub decide: Box<dyn FnOnce(Admission) -> Arc<Decision> + 'a>,
}

impl std::fmt::Debug for Commit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commit").field("tx", &self.tx.id).field("wanted", &self.wanted).finish()
    }
}

/// What a commit did.
#[derive(Clone, Debug)]
pub struct Committed {
    /// The decision as stored.
    pub decision: Arc<Decision>,
    /// The effect applied.
    pub effect: Effect,
}

/// The ledger's own accounting of what it keeps in memory (what the
/// bounded-memory test and `/metrics` watch): entries, and an estimate of
/// their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Accounts (with their balances).
    pub accounts: u64,
    /// Pending holds.
    pub pending_holds: u64,
    /// Source-history entries within retention.
    pub history_entries: u64,
    /// Decisions kept in memory (all of them for a memory ledger; the
    /// recent-decision cache for a durable one).
    pub decisions: u64,
    /// Journal entries kept in memory (none for a durable ledger).
    pub journal_entries: u64,
    /// Estimated bytes of the above (ids, records and entries; not the
    /// allocator's overhead).
    pub bytes: u64,
}

/// Ledger errors: operating errors a caller can act on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LedgerError {
    /// No such account.
    #[error("account {0:?} does not exist")]
    UnknownAccount(String),
    /// The same account id twice in one import.
    #[error("account {0:?} appears twice")]
    DuplicateAccount(String),
    /// The account exists with other facts (an identical import is a no-op).
    #[error("account {0:?} already exists with different facts")]
    AccountChanged(String),
    /// The id already has a decision.
    #[error("transaction {0:?} already has a decision")]
    DuplicateDecision(String),
    /// No such hold.
    #[error("no hold for transaction {0:?}")]
    UnknownHold(String),
    /// The hold was already resolved the other way.
    #[error("hold {id:?} is already {state}")]
    HoldResolved {
        /// Hold id.
        id: String,
        /// `posted` or `voided`.
        state: &'static str,
    },
    /// Funds no longer cover the hold.
    #[error("insufficient funds on {0:?} to post the hold")]
    InsufficientFunds(String),
    /// A posting would take a balance outside what an exact decimal holds
    /// (±79 228 162 514 264 337 593 543 950 335); nothing was changed.
    #[error("the balance of {0:?} would leave the range of an exact decimal (±7.9 × 10^28); nothing was posted")]
    BalanceOverflow(String),
    /// An account id in the ledger's reserved namespace.
    #[error("account id {0:?} is reserved: ids starting with `equity:` belong to the ledger's own accounts")]
    ReservedAccount(String),
    /// Another writer changed what this commit read (a shared store); the
    /// caller may decide again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The source's partition is not this host's (several hosts share the
    /// ledger); nothing was decided.
    #[error("partition {partition} (of source {account:?}) is not this host's{}", owner.as_ref().map(|o| format!(": {o} owns it")).unwrap_or_default())]
    NotOwner {
        /// The source account.
        account: String,
        /// Its partition.
        partition: u16,
        /// The owner as last seen, if any.
        owner: Option<String>,
    },
    /// The durable store failed; nothing after the last durable point is
    /// acknowledged.
    #[error("ledger store: {0}")]
    Storage(String),
}

/// How a hold resolution ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Done now.
    Done,
    /// It was already resolved this way (idempotent repeat).
    AlreadyDone,
}

impl Resolution {
    /// The answer of `rulehost review` and the API: the hold, with
    /// `"result": "done" | "already-done"`.
    pub fn answer(self, hold: &Hold) -> serde_json::Value {
        let mut json = serde_json::to_value(hold).expect("a hold serializes");
        json["result"] = (if self == Resolution::Done { "done" } else { "already-done" }).into();
        json
    }
}

/// The storage trait of the ledger. Reads that may go to a store return
/// owned data and a typed error; the hot-path reads (accounts, balances,
/// history) are answered from what every backend keeps in memory, bounded
/// by accounts and retention.
pub trait Ledger: Send {
    /// Adds accounts, posting opening balances against the per-currency
    /// equity account. All or nothing; an account identical to one already
    /// present is skipped (so importing the same file again is a no-op).
    /// Returns how many accounts were new.
    fn import_accounts(&mut self, accounts: &[Account]) -> Result<usize, LedgerError>;
    /// An account's static facts.
    fn account(&self, id: &str) -> Option<&Account>;
    /// Ids of all accounts, sorted.
    fn account_ids(&self) -> Vec<String>;
    /// An account's balances.
    fn balances(&self, id: &str) -> Option<Balances>;
    /// What the funds and range check would answer now for `effect`
    /// (`Post` or `Hold`) of `amount` from `source` to `destination`:
    /// available + overdraft ≥ amount, then that no balance would leave the
    /// range of an exact decimal. [`Ledger::commit`] runs the same check
    /// atomically with the posting.
    fn admit(&self, source: &str, destination: &str, amount: Decimal, effect: Effect) -> Result<(), Refusal>;
    /// The stored decision for an id, however long ago it was decided.
    fn decision(&self, id: &str) -> Result<Option<StoredDecision>, LedgerError>;
    /// The full stored record of an id's decision (input, facts, trace).
    fn record(&self, id: &str) -> Result<Option<DecisionRecord>, LedgerError>;
    /// Answers a history query.
    fn history(&self, query: &HistoryQuery<'_>) -> HistoryStats;
    /// Widens history retention for a rule set's longest window.
    fn retain_history(&mut self, window_seconds_max: u64);
    /// Checks funds, makes the decision, applies its effect and stores it,
    /// atomically (see [`Commit`]). An id already decided is
    /// [`LedgerError::DuplicateDecision`] and changes nothing.
    fn commit(&mut self, commit: Commit<'_>) -> Result<Committed, LedgerError>;
    /// Posts (`approve`) or voids a pending hold; idempotent.
    fn resolve_hold(&mut self, id: &str, approve: bool) -> Result<Resolution, LedgerError>;
    /// The hold of a transaction.
    fn hold(&self, id: &str) -> Result<Option<Hold>, LedgerError>;
    /// All holds, sorted by id.
    fn holds(&self) -> Result<Vec<Hold>, LedgerError>;
    /// The pending holds, sorted by id (a durable store reads them by an
    /// index, not every hold it ever kept).
    fn pending_holds(&self) -> Result<Vec<Hold>, LedgerError> {
        Ok(self.holds()?.into_iter().filter(|h| h.state == HoldState::Pending).collect())
    }
    /// The journal in order, optionally only entries touching `account`.
    fn journal(&self, account: Option<&str>) -> Result<Vec<JournalEntry>, LedgerError>;
    /// Keeps a rule-set version's files (by content hash), so its decisions
    /// can be re-evaluated later; a version already kept is a no-op.
    fn keep_ruleset(&mut self, archive: &Arc<RulesetArchive>) -> Result<(), LedgerError>;
    /// A kept rule-set version, by its version string.
    fn ruleset(&self, version: &str) -> Result<Option<RulesetArchive>, LedgerError>;
    /// What it keeps in memory.
    fn usage(&self) -> Usage;
    /// A point covering every change made so far: waiting on it returns once
    /// they are all durable (at once for a memory-only ledger).
    fn sync_point(&self) -> SyncPoint {
        SyncPoint::reached()
    }
    /// Upkeep between changes, called by a server every so often (a shared
    /// ledger also runs it before each change): a shared ledger of a serving
    /// host takes over lapsed partitions, hands adopted ones back, and
    /// reopens after a failure. Nothing to do for the others.
    fn maintain(&mut self) -> Result<(), LedgerError> {
        Ok(())
    }
    /// The partitions this host decides on a shared ledger, sorted (`None`:
    /// every source, the ledger is not shared).
    fn owned_partitions(&self) -> Option<Vec<u16>> {
        None
    }
}

/// Why [`import_file`] imported nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read (not a regular file, too large, unreadable).
    #[error("{0}")]
    Read(String),
    /// A line is not an account (the error names line and field).
    #[error("{0}")]
    Parse(#[from] rulehost_core::input::InputError),
    /// The ledger refused the accounts (one differs from the stored one) or
    /// could not make them durable.
    #[error("{0}")]
    Ledger(#[from] LedgerError),
}

/// Imports an accounts file (all or nothing) and waits until it is durable.
/// Returns (new, already present); the error names line and field, or the
/// account that differs (not the file: callers name it).
pub fn import_file(ledger: &mut dyn Ledger, path: &std::path::Path) -> Result<(usize, usize), ImportError> {
    let text = rulehost_core::files::read_text_bounded(
        path,
        None,
        rulehost_core::files::ACCOUNTS_BYTES_MAX,
        "an accounts file",
    )
    .map_err(|e| ImportError::Read(e.reason()))?;
    let accounts = rulehost_core::input::parse_accounts(&text)?;
    let added = ledger.import_accounts(&accounts)?;
    ledger.sync_point().wait()?;
    Ok((added, accounts.len().saturating_sub(added)))
}

/// `a + b` when it is exact (a sum's scale is its operands' largest unless
/// it was rounded): `rust_decimal` rounds a sum that needs more
/// than 96 bits at the operands' scale (cents would vanish near the range's
/// end), and refuses one beyond the range; both are `None` here.
pub fn exact_add(a: Decimal, b: Decimal) -> Option<Decimal> {
    // With a zero operand `rust_decimal` returns the other one as it is
    // (its scale unaligned); that is exact.
    if a.is_zero() || b.is_zero() {
        return a.checked_add(b);
    }
    a.checked_add(b).filter(|c| c.scale() >= a.scale().max(b.scale()))
}

/// `a - b` when it is exact (see [`exact_add`]).
pub fn exact_sub(a: Decimal, b: Decimal) -> Option<Decimal> {
    exact_add(a, -b)
}

/// Why the ledger step refuses to move money for an approved or reviewed
/// transaction (RULES.md step 5 and "Settled details").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `available + overdraft_limit < amount`: `INSUFFICIENT_FUNDS`.
    InsufficientFunds,
    /// A balance would leave what `rust_decimal` holds: `BALANCE_OVERFLOW`.
    BalanceOverflow,
    /// The amount is zero or negative (only a rule set without an amount
    /// check lets one through): `AMOUNT_INVALID`, nothing moves backwards.
    AmountNotPositive,
}

impl Refusal {
    /// The reason code the decision carries.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Refusal::BalanceOverflow => "BALANCE_OVERFLOW",
            Refusal::AmountNotPositive => "AMOUNT_INVALID",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_arithmetic_refuses_rounding_and_overflow() {
        let d = |s: &str| Decimal::from_str_exact(s).unwrap();
        assert_eq!(exact_add(d("1.10"), d("0.90")), Some(d("2.00")));
        assert_eq!(exact_sub(d("-5"), d("0.0")), Some(d("-5")));
        assert_eq!(exact_add(d("0"), d("0.25")), Some(d("0.25")));
        // 29 significant digits do not fit: rust_decimal would round the cents away.
        assert_eq!(exact_add(d("9999999999999999999999999999"), d("0.08")), None);
        assert!(d("9999999999999999999999999999").checked_add(d("0.08")).is_some(), "rust_decimal rounds");
        assert_eq!(exact_add(d("79228162514264337593543950335"), d("1")), None);
        assert_eq!(exact_sub(d("-79228162514264337593543950335"), d("1")), None);
    }
}
