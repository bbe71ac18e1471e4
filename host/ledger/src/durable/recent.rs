//! What the durable ledger remembers of decisions and holds in memory: the
//! most recent decisions, a filter of every id ever decided, and the holds
//! whose last change is on its way to the store.

use std::collections::VecDeque;
use std::sync::Arc;

use foldhash::HashMap;

use crate::Hold;

/// Hashes per id in the filter.
const ID_FILTER_HASHES: u32 = 7;
/// The filter's seed: fixed, so a snapshot reads back in the next process.
const ID_FILTER_SEED: u128 = 0x7275_6c65_686f_7374_6964_7331;
/// What a snapshot must say to be reused (else the filter is rebuilt from
/// the ids in the file).
pub const ID_FILTER_FORMAT: &str = "fastbloom-0.17 seed=7275 hashes=7";

/// A filter of `bytes` bytes (at least one word).
pub fn empty_filter(bytes: usize) -> fastbloom::BloomFilter {
    filter_from_words(vec![0u64; (bytes / 8).max(1)])
}

/// The filter a snapshot's words describe (see [`ID_FILTER_FORMAT`]).
pub fn filter_from_words(words: Vec<u64>) -> fastbloom::BloomFilter {
    fastbloom::BloomFilter::from_vec(words).seed(&ID_FILTER_SEED).hashes(ID_FILTER_HASHES)
}

/// Decisions kept in memory: every decision not yet durable, and the most
/// recent ones up to the cache size.
#[derive(Default)]
pub(super) struct Recent {
    pub(super) records: HashMap<String, (u64, Arc<[u8]>)>,
    order: VecDeque<(u64, String)>,
    pub(super) bytes: u64,
}

impl Recent {
    pub(super) fn insert(&mut self, id: String, seq: u64, record: Arc<[u8]>) {
        self.bytes = self.bytes.saturating_add((record.len() + 2 * id.len() + 48) as u64);
        self.order.push_back((seq, id.clone()));
        self.records.insert(id, (seq, record));
    }

    /// Drops the oldest decisions beyond `keep`, never one after `durable`.
    pub(super) fn evict(&mut self, keep: usize, durable: u64) {
        while self.order.len() > keep {
            let Some((seq, _)) = self.order.front() else { break };
            if *seq > durable {
                break;
            }
            if let Some((_, id)) = self.order.pop_front()
                && let Some((_, record)) = self.records.remove(&id)
            {
                self.bytes = self.bytes.saturating_sub((record.len() + 2 * id.len() + 48) as u64);
            }
        }
    }
}

/// Holds whose last change (placed, posted or voided) may not be durable
/// yet: a resolution or a read finds them here, and everything else in the
/// store. At most what the write queue holds; the rest of the holds live
/// only in the store.
#[derive(Default)]
pub(super) struct Unsettled {
    holds: HashMap<String, (u64, Hold)>,
    order: VecDeque<(u64, String)>,
}

impl Unsettled {
    /// Records `hold` as changed by change `seq`.
    pub(super) fn insert(&mut self, seq: u64, hold: Hold) {
        self.order.push_back((seq, hold.id.clone()));
        self.holds.insert(hold.id.clone(), (seq, hold));
    }

    /// The hold's latest state, if it changed lately.
    pub(super) fn get(&self, id: &str) -> Option<&Hold> {
        self.holds.get(id).map(|(_, hold)| hold)
    }

    /// Forgets the holds whose last change is durable (the store answers for them).
    pub(super) fn settle(&mut self, durable: u64) {
        while let Some((seq, _)) = self.order.front()
            && *seq <= durable
        {
            if let Some((seq, id)) = self.order.pop_front()
                && self.holds.get(&id).is_some_and(|(last, _)| *last == seq)
            {
                self.holds.remove(&id);
            }
        }
    }

    /// An estimate of the bytes of the holds remembered.
    pub(super) fn bytes(&self) -> u64 {
        let bytes = self.holds.values().map(|(_, h)| {
            let strings = 2 * h.id.len() + h.source.len() + h.destination.len() + h.currency.len();
            (strings + 160) as u64
        });
        bytes.sum()
    }
}
