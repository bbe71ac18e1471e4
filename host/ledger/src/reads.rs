//! The facts a decision's rules read, recorded with their answers, and
//! the [`Facts`] a replay answers from them.

// Input reaches this module (ARCHITECTURE.md, "No input reaches a panic"):
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use rust_decimal::Decimal;

use rulehost_core::facts::{AccountFacts, Facts, HistoryQuery, HistoryStats};
use rulehost_core::model::{Account, Nanos};

/// One fact a rule read while deciding, with the answer it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// An account's facts: `None` when the account is unknown, else its
    /// available balance then (its static facts never change).
    Account {
        /// The account.
        id: String,
        /// Available balance, when the account exists.
        available: Option<Decimal>,
    },
    /// A history question and its answer.
    History {
        /// The source account.
        account: String,
        /// Window start, excluded.
        from_exclusive: Nanos,
        /// Window end, included.
        to_inclusive: Nanos,
        /// Lower amount bound.
        min: Option<Decimal>,
        /// Upper amount bound.
        max: Option<Decimal>,
        /// The answer.
        stats: HistoryStats,
    },
}

/// The facts one decision's rules read, in a canonical order (sorted, each
/// once), so the same decision records the same bytes whatever order
/// concurrent rule calls read in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedFacts {
    reads: Vec<Read>,
}

fn read_key(r: &Read) -> (u8, &str, Nanos, Nanos, Option<Decimal>, Option<Decimal>) {
    match r {
        Read::Account { id, .. } => (0, id, 0, 0, None, None),
        Read::History { account, from_exclusive, to_inclusive, min, max, .. } => {
            (1, account, *from_exclusive, *to_inclusive, *min, *max)
        }
    }
}

impl RecordedFacts {
    /// Records from reads in any order (duplicates are answered alike: a
    /// committed evaluation saw one state of the ledger).
    pub fn new(mut reads: Vec<Read>) -> Self {
        reads.sort_by(|a, b| read_key(a).cmp(&read_key(b)));
        reads.dedup_by(|a, b| read_key(a) == read_key(b));
        RecordedFacts { reads }
    }

    /// The reads, in canonical order.
    pub fn reads(&self) -> &[Read] {
        &self.reads
    }

    fn find(&self, key: (u8, &str, Nanos, Nanos, Option<Decimal>, Option<Decimal>)) -> Option<&Read> {
        self.reads.binary_search_by(|r| read_key(r).cmp(&key)).ok().and_then(|i| self.reads.get(i))
    }
}

/// Answers a replayed evaluation's reads from what the original one read,
/// with the accounts' static facts from the ledger. A read the original did
/// not make is answered as unknown and counted (a replay that diverges says
/// so).
pub struct ReplayFacts {
    recorded: RecordedFacts,
    accounts: Vec<Account>,
    missed: std::sync::atomic::AtomicU64,
}

impl ReplayFacts {
    /// Facts for a replay: the recorded reads and the accounts they name.
    pub fn new(recorded: RecordedFacts, accounts: Vec<Account>) -> Self {
        ReplayFacts { recorded, accounts, missed: Default::default() }
    }

    /// Reads the replay made that the original did not.
    pub fn missed(&self) -> u64 {
        self.missed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn miss(&self) {
        self.missed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Facts for ReplayFacts {
    fn account(&self, id: &str) -> Option<AccountFacts> {
        let Some(Read::Account { available, .. }) = self.recorded.find((0, id, 0, 0, None, None)) else {
            self.miss();
            return None;
        };
        let available = (*available)?;
        let Some(a) = self.accounts.iter().find(|a| a.id == id) else {
            self.miss();
            return None;
        };
        Some(AccountFacts::of(a, available))
    }

    fn history(&self, q: &HistoryQuery<'_>) -> HistoryStats {
        match self.recorded.find((1, q.account, q.from_exclusive, q.to_inclusive, q.min, q.max)) {
            Some(Read::History { stats, .. }) => *stats,
            _ => {
                self.miss();
                HistoryStats::default()
            }
        }
    }
}
