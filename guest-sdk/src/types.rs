//! The plain Rust types a rule works with: transactions, accounts, history.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use rust_decimal::Decimal;

/// An instant: seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z (negative before).
    pub seconds: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Timestamp {
    /// Nanoseconds per second.
    pub const NANOS_PER_SECOND: i128 = 1_000_000_000;

    /// An instant from whole seconds since the epoch.
    pub const fn from_seconds(seconds: i64) -> Self {
        Timestamp { seconds, nanos: 0 }
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> i128 {
        self.seconds as i128 * Self::NANOS_PER_SECOND + self.nanos as i128
    }

    /// Exact nanoseconds from `earlier` to `self` (negative when `earlier`
    /// is later).
    pub const fn nanos_since(self, earlier: Timestamp) -> i128 {
        self.as_nanos() - earlier.as_nanos()
    }
}

/// The kind of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionKind {
    /// A card or merchant payment.
    Payment,
    /// A transfer between accounts.
    Transfer,
    /// Money coming in.
    Deposit,
    /// Money going out.
    Withdrawal,
}

/// The transaction being evaluated, with every field of the JSON input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Unique transaction id.
    pub id: String,
    /// The transaction's own time. Rules never read a clock; time windows
    /// are measured against this field.
    pub timestamp: Timestamp,
    /// What kind of money movement this is.
    pub kind: TransactionKind,
    /// The account money leaves.
    pub source: String,
    /// The account money arrives at.
    pub destination: String,
    /// The exact amount, in `currency`.
    pub amount: Decimal,
    /// ISO 4217 code as given in the input.
    pub currency: String,
    /// Two upper-case ASCII letters, when present.
    pub country: Option<String>,
    /// ISO 18245 merchant category code, when present.
    pub merchant_category: Option<String>,
    /// Channel (`card`, `web`, …), when present.
    pub channel: Option<String>,
    /// Extra string fields, in input order.
    pub metadata: Vec<(String, String)>,
}

impl Transaction {
    /// A payment of `amount` `currency` from `source` to `destination` at
    /// `timestamp`, with no optional fields: a starting point for tests.
    pub fn payment(
        id: &str,
        timestamp: Timestamp,
        source: &str,
        destination: &str,
        amount: Decimal,
        currency: &str,
    ) -> Self {
        Transaction {
            id: id.to_owned(),
            timestamp,
            kind: TransactionKind::Payment,
            source: source.to_owned(),
            destination: destination.to_owned(),
            amount,
            currency: currency.to_owned(),
            country: None,
            merchant_category: None,
            channel: None,
            metadata: Vec::new(),
        }
    }
}

/// An account's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountStatus {
    /// May send and receive.
    Active,
    /// Temporarily blocked.
    Frozen,
    /// Permanently closed.
    Closed,
}

/// Facts about an account, as of the current transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Account id.
    pub id: String,
    /// The account's currency.
    pub currency: String,
    /// The account's home country (two upper-case letters).
    pub country: String,
    /// When the account was opened.
    pub opened_at: Timestamp,
    /// Whether it may move money.
    pub status: AccountStatus,
    /// Posted balance minus pending holds.
    pub available: Decimal,
}

/// Count and sum of earlier transactions in a history window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HistoryStats {
    /// How many transactions matched.
    pub count: u64,
    /// The sum of their amounts.
    pub sum: Decimal,
}

/// The level of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Finest detail.
    Trace,
    /// Diagnostic detail.
    Debug,
    /// Normal information.
    Info,
    /// Something unexpected but handled.
    Warn,
    /// Something wrong.
    Error,
}

/// A parameter value as the host hands it over (a whole scalar or list
/// parameter, or one entry of a map parameter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamValue {
    /// A string.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A decimal.
    Decimal(Decimal),
    /// A list of strings.
    TextList(Vec<String>),
}
