//! What rules may learn about the world beyond the transaction: account facts
//! and source history. The pipeline answers these natively from the ledger;
//! the sandbox only sees this trait.

use rust_decimal::Decimal;

use crate::model::{AccountStatus, Nanos};

/// Facts about an account as of the transaction being evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountFacts {
    /// Account id.
    pub id: String,
    /// Currency.
    pub currency: String,
    /// Home country.
    pub country: String,
    /// When it was opened.
    pub opened_at: Nanos,
    /// Status.
    pub status: AccountStatus,
    /// Posted balance minus pending holds.
    pub available: Decimal,
}

/// A history question: transactions of `account` as source with timestamp in
/// `(from_exclusive, to_inclusive]` and amount in `[min, max)` when given.
#[derive(Clone, Debug)]
pub struct HistoryQuery<'a> {
    /// The source account.
    pub account: &'a str,
    /// Window start, excluded.
    pub from_exclusive: Nanos,
    /// Window end, included.
    pub to_inclusive: Nanos,
    /// Lower amount bound, included.
    pub min: Option<Decimal>,
    /// Upper amount bound, excluded.
    pub max: Option<Decimal>,
}

/// Count and sum of the matching transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// How many.
    pub count: u64,
    /// Sum of their amounts.
    pub sum: Decimal,
}

/// The read side of the ledger that rule calls consult.
pub trait Facts: Send + Sync {
    /// Facts about an account; `None` when unknown.
    fn account(&self, id: &str) -> Option<AccountFacts>;
    /// Answers a history query.
    fn history(&self, query: &HistoryQuery<'_>) -> HistoryStats;
}
