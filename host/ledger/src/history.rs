//! Per-source transaction history for the `history` capability: kept sorted
//! by timestamp, pruned behind the source's newest timestamp by the longest
//! window any loaded rule declares plus a lateness allowance.

// Input reaches this module (ARCHITECTURE.md, "No input reaches a panic"):
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::VecDeque;

use foldhash::HashMap;

use rust_decimal::Decimal;

use rulehost_core::facts::{HistoryQuery, HistoryStats};
use rulehost_core::model::{NANOS_PER_SECOND, Nanos};

/// Default lateness allowance, in seconds (1 day).
pub const LATENESS_SECONDS_DEFAULT: u64 = 86_400;

/// A source's buffer shrinks once it holds a quarter of its capacity or
/// less, and the capacity is above this many entries.
const SHRINK_ABOVE_ENTRIES: usize = 8;

/// Bytes of one kept entry (timestamp and amount).
const ENTRY_BYTES: usize = std::mem::size_of::<(Nanos, Decimal)>();

#[derive(Default)]
struct SourceHistory {
    /// (timestamp, amount), sorted by timestamp; ties keep arrival order.
    entries: VecDeque<(Nanos, Decimal)>,
    newest: Nanos,
}

/// History of every source account.
pub struct History {
    sources: HashMap<String, SourceHistory>,
    retention_nanos: Nanos,
}

impl History {
    /// Keeps at least `window_seconds_max + lateness_seconds` behind each
    /// source's newest timestamp.
    pub fn new(window_seconds_max: u64, lateness_seconds: u64) -> Self {
        History {
            sources: HashMap::default(),
            retention_nanos: i128::from(window_seconds_max.saturating_add(lateness_seconds))
                .saturating_mul(NANOS_PER_SECOND),
        }
    }

    /// Widens retention (a newly loaded rule may ask for a longer window);
    /// entries already pruned stay pruned.
    pub fn retain_at_least(&mut self, window_seconds_max: u64, lateness_seconds: u64) {
        let wanted = i128::from(window_seconds_max.saturating_add(lateness_seconds)).saturating_mul(NANOS_PER_SECOND);
        self.retention_nanos = self.retention_nanos.max(wanted);
    }

    /// Records a transaction of `source`; returns the source's horizon
    /// (entries before it are no longer kept).
    pub fn record(&mut self, source: &str, timestamp: Nanos, amount: Decimal) -> Nanos {
        let h = match self.sources.get_mut(source) {
            Some(h) => h,
            None => self.sources.entry(source.to_owned()).or_default(),
        };
        if h.entries.is_empty() || timestamp > h.newest {
            h.newest = timestamp;
        }
        // Insert after every entry with timestamp ≤ this one (usually at the end).
        let at = h.entries.partition_point(|(t, _)| *t <= timestamp);
        h.entries.insert(at, (timestamp, amount));
        let horizon = h.newest.saturating_sub(self.retention_nanos);
        let before = h.entries.len();
        while h.entries.front().is_some_and(|(t, _)| *t < horizon) {
            h.entries.pop_front();
        }
        // A burst grows a source's buffer; give it back once the burst has
        // left retention, so memory follows what is kept, not the largest
        // burst each source ever had.
        let (len, capacity) = (h.entries.len(), h.entries.capacity());
        if len < before && capacity > SHRINK_ABOVE_ENTRIES && len.saturating_mul(4) <= capacity {
            h.entries.shrink_to(len.saturating_mul(2));
        }
        horizon
    }

    /// Count and sum of the source's entries in `(from, to]` within `[min, max)`.
    pub fn query(&self, q: &HistoryQuery<'_>) -> HistoryStats {
        let Some(h) = self.sources.get(q.account) else {
            return HistoryStats::default();
        };
        let start = h.entries.partition_point(|(t, _)| *t <= q.from_exclusive);
        let end = h.entries.partition_point(|(t, _)| *t <= q.to_inclusive);
        let mut stats = HistoryStats::default();
        for (_, amount) in h.entries.range(start..end.max(start)) {
            if q.min.is_some_and(|m| *amount < m) || q.max.is_some_and(|m| *amount >= m) {
                continue;
            }
            stats.count = stats.count.saturating_add(1);
            // Saturates at the largest decimal (documented in RULES.md's
            // capability table): a sum of 28-digit amounts can exceed it.
            stats.sum = stats.sum.saturating_add(*amount);
        }
        stats
    }

    /// Entries kept for all sources (for tests and metrics).
    pub fn len(&self) -> usize {
        self.sources.values().map(|h| h.entries.len()).sum()
    }

    /// Bytes held: each source's buffer at its capacity, its map slot and
    /// its id (not the allocator's overhead).
    pub fn bytes(&self) -> usize {
        let slot = std::mem::size_of::<(String, SourceHistory)>();
        let buffers: usize = self
            .sources
            .iter()
            .map(|(id, h)| h.entries.capacity().saturating_mul(ENTRY_BYTES).saturating_add(id.len()))
            .fold(0, usize::saturating_add);
        buffers.saturating_add(self.sources.capacity().saturating_mul(slot))
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(account: &str, from: i128, to: i128) -> HistoryQuery<'_> {
        HistoryQuery { account, from_exclusive: from, to_inclusive: to, min: None, max: None }
    }

    #[test]
    fn window_is_half_open_and_range_filters() {
        let mut h = History::new(3600, 0);
        for t in [10, 20, 30] {
            h.record("a", t * NANOS_PER_SECOND, Decimal::from(t));
        }
        assert_eq!(h.query(&q("a", 10 * NANOS_PER_SECOND, 30 * NANOS_PER_SECOND)).count, 2);
        assert_eq!(h.query(&q("a", 0, 20 * NANOS_PER_SECOND)).sum, Decimal::from(30));
        let ranged = HistoryQuery {
            min: Some(Decimal::from(20)),
            max: Some(Decimal::from(30)),
            ..q("a", 0, 100 * NANOS_PER_SECOND)
        };
        assert_eq!(h.query(&ranged).count, 1);
        assert_eq!(h.query(&q("b", 0, 100 * NANOS_PER_SECOND)).count, 0);
    }

    #[test]
    fn a_sources_buffer_shrinks_once_its_burst_leaves_retention() {
        let mut h = History::new(100, 0);
        for t in 0..64 {
            h.record("a", t * NANOS_PER_SECOND, Decimal::ONE);
        }
        let burst = h.bytes();
        assert_eq!(h.len(), 64);
        h.record("a", 1000 * NANOS_PER_SECOND, Decimal::ONE);
        assert_eq!(h.len(), 1);
        assert!(h.bytes() * 4 < burst, "{} bytes after the burst left, {burst} during it", h.bytes());
        assert_eq!(h.query(&q("a", 0, 2000 * NANOS_PER_SECOND)).count, 1);
    }

    #[test]
    fn prunes_behind_newest_and_keeps_late_entries_sorted() {
        let mut h = History::new(100, 10);
        h.record("a", 0, Decimal::ONE);
        h.record("a", 200 * NANOS_PER_SECOND, Decimal::ONE);
        assert_eq!(h.len(), 1, "entry 200 s behind newest is beyond 110 s retention");
        h.record("a", 150 * NANOS_PER_SECOND, Decimal::ONE);
        assert_eq!(h.query(&q("a", 140 * NANOS_PER_SECOND, 160 * NANOS_PER_SECOND)).count, 1);
    }
}
