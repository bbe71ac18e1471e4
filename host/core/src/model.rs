//! The host's domain types: transactions, accounts, instants. Amounts are
//! `rust_decimal::Decimal` everywhere; no float ever holds money.

use rust_decimal::Decimal;

/// An instant as nanoseconds since the Unix epoch (UTC). Wide enough for any
/// RFC 3339 timestamp with a 9-digit fraction.
pub type Nanos = i128;

/// Nanoseconds per second.
pub const NANOS_PER_SECOND: Nanos = 1_000_000_000;

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

impl TransactionKind {
    /// Parses the JSON spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "payment" => Self::Payment,
            "transfer" => Self::Transfer,
            "deposit" => Self::Deposit,
            "withdrawal" => Self::Withdrawal,
            _ => return None,
        })
    }
}

/// A parsed, well-formed input transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Unique id (non-empty).
    pub id: String,
    /// The transaction's own time, in nanoseconds since the epoch.
    pub timestamp: Nanos,
    /// Kind of money movement.
    pub kind: TransactionKind,
    /// The account debited.
    pub source: String,
    /// The account credited.
    pub destination: String,
    /// Exact amount as given (its scale is kept).
    pub amount: Decimal,
    /// Currency code as given.
    pub currency: String,
    /// Two upper-case ASCII letters, when present.
    pub country: Option<String>,
    /// Merchant category code, when present.
    pub merchant_category: Option<String>,
    /// Channel, when present.
    pub channel: Option<String>,
    /// Extra string fields, sorted by key.
    pub metadata: Vec<(String, String)>,
}

/// An account's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    /// May send and receive.
    Active,
    /// Temporarily blocked.
    Frozen,
    /// Permanently closed.
    Closed,
}

impl AccountStatus {
    /// Every status, in declaration order.
    pub const ALL: [AccountStatus; 3] = [AccountStatus::Active, AccountStatus::Frozen, AccountStatus::Closed];

    /// The spelling in accounts files, the ledger store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Frozen => "frozen",
            AccountStatus::Closed => "closed",
        }
    }

    /// Reads [`AccountStatus::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A ledger account and its static facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Account id.
    pub id: String,
    /// Currency of the account.
    pub currency: String,
    /// Home country, two upper-case letters.
    pub country: String,
    /// When the account was opened.
    pub opened_at: Nanos,
    /// Whether it may move money.
    pub status: AccountStatus,
    /// How far below zero the balance may go (≥ 0).
    pub overdraft_limit: Decimal,
    /// Posted at import against the currency's equity account.
    pub opening_balance: Decimal,
    /// Extra string tags.
    pub tags: Vec<(String, String)>,
}

/// The prefix of the ledger's own accounts (`equity:USD`, …): account ids
/// that start with it are refused at import.
pub const SYSTEM_ACCOUNT_PREFIX: &str = "equity:";

/// The system equity account of a currency, the counterpart of opening balances.
pub fn equity_account(currency: &str) -> String {
    format!("{SYSTEM_ACCOUNT_PREFIX}{currency}")
}
