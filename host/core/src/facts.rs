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

/// [`AccountFacts`] borrowed from wherever they are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountView<'a> {
    /// Account id.
    pub id: &'a str,
    /// Currency.
    pub currency: &'a str,
    /// Home country.
    pub country: &'a str,
    /// When it was opened.
    pub opened_at: Nanos,
    /// Status.
    pub status: AccountStatus,
    /// Posted balance minus pending holds.
    pub available: Decimal,
}

impl AccountFacts {
    /// An account's static facts with its available balance.
    pub fn of(a: &crate::model::Account, available: Decimal) -> Self {
        AccountFacts {
            id: a.id.clone(),
            currency: a.currency.clone(),
            country: a.country.clone(),
            opened_at: a.opened_at,
            status: a.status,
            available,
        }
    }

    /// The facts, borrowed.
    pub fn view(&self) -> AccountView<'_> {
        AccountView {
            id: &self.id,
            currency: &self.currency,
            country: &self.country,
            opened_at: self.opened_at,
            status: self.status,
            available: self.available,
        }
    }
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
    /// The same facts handed to `f` borrowed, with no copy made (the rule
    /// path's form). `f` must not block: implementations may hold a lock
    /// while it runs.
    fn with_account(&self, id: &str, f: &mut dyn FnMut(Option<AccountView<'_>>)) {
        f(self.account(id).as_ref().map(AccountFacts::view))
    }
    /// Answers a history query.
    fn history(&self, query: &HistoryQuery<'_>) -> HistoryStats;
}
