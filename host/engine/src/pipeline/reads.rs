//! What a speculative evaluation read, and what commits changed since: the
//! bookkeeping that lets `Pipeline::decide_many` evaluate ahead of its turn
//! and redo exactly the evaluations a commit made stale.

use std::sync::Mutex;

use foldhash::HashMap;

use super::{SharedLedger, lock};
use rulehost_core::facts::{AccountFacts, AccountView, Facts, HistoryQuery, HistoryStats};
use rulehost_core::model::Transaction;
use rulehost_ledger::Effect;
use rulehost_ledger::Read;

/// What a speculative evaluation read from the ledger: accounts (their
/// `available` balance can change) and source histories, each by a hash of
/// its id. Checked against [`Versions`] when the transaction commits; two
/// ids with the same hash only make a speculation look stale, and it is
/// evaluated again.
#[derive(Default)]
pub(super) struct ReadSet {
    accounts: Vec<u64>,
    histories: Vec<u64>,
    /// Each read with its answer, stored with the decision for replay.
    pub(super) recorded: Vec<Read>,
}

/// The hash an id is tracked by in [`ReadSet`] and [`Versions`].
fn key(id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x5eed).hash_one(id)
}

/// Answers one transaction's rule calls from the shared ledger, recording
/// what they read.
pub(super) struct RecordingFacts {
    pub(super) ledger: SharedLedger,
    pub(super) reads: Mutex<ReadSet>,
}

impl RecordingFacts {
    pub(super) fn reads(&self) -> std::sync::MutexGuard<'_, ReadSet> {
        self.reads.lock().expect("read set lock")
    }
}

impl Facts for RecordingFacts {
    fn account(&self, id: &str) -> Option<AccountFacts> {
        let ledger = lock(&self.ledger);
        let found = ledger.account(id).zip(ledger.balances(id));
        {
            let mut reads = self.reads();
            reads.accounts.push(key(id));
            reads.recorded.push(Read::Account { id: id.to_owned(), available: found.map(|(_, b)| b.available) });
        }
        let (a, balances) = found?;
        Some(AccountFacts::of(a, balances.available))
    }

    fn with_account(&self, id: &str, f: &mut dyn FnMut(Option<AccountView<'_>>)) {
        let ledger = lock(&self.ledger);
        let view = ledger.account(id).zip(ledger.balances(id)).map(|(a, balances)| AccountView {
            id: &a.id,
            currency: &a.currency,
            country: &a.country,
            opened_at: a.opened_at,
            status: a.status,
            available: balances.available,
        });
        {
            let mut reads = self.reads();
            reads.accounts.push(key(id));
            reads.recorded.push(Read::Account { id: id.to_owned(), available: view.map(|v| v.available) });
        }
        f(view)
    }

    fn history(&self, query: &HistoryQuery<'_>) -> HistoryStats {
        let stats = lock(&self.ledger).history(query);
        let mut reads = self.reads();
        reads.histories.push(key(query.account));
        reads.recorded.push(Read::History {
            account: query.account.to_owned(),
            from_exclusive: query.from_exclusive,
            to_inclusive: query.to_inclusive,
            min: query.min,
            max: query.max,
            stats,
        });
        stats
    }
}

/// The commit sequence number of the last write to each account balance and
/// each source history. Updated by every commit, under the ledger lock.
#[derive(Default)]
pub(super) struct Versions {
    /// Commits so far.
    pub(super) seq: u64,
    accounts: HashMap<u64, u64>,
    histories: HashMap<u64, u64>,
}

impl Versions {
    /// Whether nothing `reads` saw was written after commit `start`.
    pub(super) fn unchanged_since(&self, start: u64, reads: &ReadSet) -> bool {
        let after = |m: &HashMap<u64, u64>, k: &u64| m.get(k).is_some_and(|&v| v > start);
        !reads.accounts.iter().any(|k| after(&self.accounts, k))
            && !reads.histories.iter().any(|k| after(&self.histories, k))
    }

    pub(super) fn record(&mut self, tx: &Transaction, effect: Effect, counted: bool) {
        self.seq += 1;
        let seq = self.seq;
        match effect {
            Effect::Post => {
                self.accounts.insert(key(&tx.source), seq);
                self.accounts.insert(key(&tx.destination), seq);
            }
            Effect::Hold => {
                self.accounts.insert(key(&tx.source), seq);
            }
            Effect::Nothing => {}
        }
        if counted {
            self.histories.insert(key(&tx.source), seq);
        }
    }
}
