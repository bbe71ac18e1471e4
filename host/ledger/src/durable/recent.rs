//! What the durable ledger remembers of decisions in memory: the most
//! recent ones, and a filter of every id ever decided.

use std::collections::VecDeque;
use std::sync::Arc;

use foldhash::HashMap;

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
