//! The durable ledger's front, whatever the store behind it: a bounded hot
//! state in memory (balances with pending sums, history within retention, a
//! cache of recent decisions and a filter of every id ever decided), a
//! queue of changes in order, and a writer thread that makes them durable
//! in groups through a [`GroupWriter`] — one store transaction per group.
//!
//! Every change is applied to the hot state (so reads and the next decision
//! see it at once) and queued, in order, for the writer — handed over in
//! chunks of [`HANDOFF_OPS_MAX`], or at once when someone asks for a sync
//! point. The writer takes whatever is queued — closing a group once it
//! holds `group_commit_ops_max` changes, waiting at most
//! `group_commit_linger` for more — and writes it in one transaction. Then
//! it advances the [`Watermark`]; callers acknowledge a decision only once
//! its [`SyncPoint`] is reached. A store that fails a group stops the
//! ledger: nothing after the last durable point is acknowledged.
//!
//! Memory does not grow with decisions: the journal, stored decisions and
//! holds live only in the store, read through a [`StoreRead`]. An id's
//! decision is looked up in the recent cache (which keeps every decision
//! not yet durable), then in the id filter (a Bloom filter of fixed size: a
//! new id — almost every id — costs no read), then in the store. A hold is
//! looked up among the holds whose last change is not yet durable, then in
//! the store; in memory each account keeps only the sum of its pending
//! holds, which is all the funds check reads.
//!
//! The SQLite store (`rulehost-ledger-sqlite`) and the PostgreSQL store
//! (`rulehost-ledger-postgres`) are the two [`GroupWriter`]/[`StoreRead`]
//! pairs; each wraps a [`Durable`] and forwards [`Ledger`] to it
//! ([`forward_ledger!`](crate::forward_ledger)).

mod forward;
mod options;
mod recent;
pub mod reconcile;
mod store;
mod writer;

pub use options::{
    CommitHook, CommitStats, DECISION_CACHE_ENTRIES_DEFAULT, FILTER_PART_BYTES, GROUP_COMMIT_LINGER_DEFAULT,
    GROUP_COMMIT_OPS_MAX, HANDOFF_OPS_MAX, ID_FILTER_BYTES_DEFAULT, ID_FILTER_SNAPSHOT_DECISIONS, LEASE_DEFAULT,
    PartitionClaim, StoreOptions, WRITE_QUEUE_OPS_MAX,
};
pub use recent::{ID_FILTER_FORMAT, empty_filter, filter_from_words};
pub use reconcile::{AccountRow, Report};
pub use store::{
    BalanceRow, DecisionOp, FilterPart, GroupWriter, LedgerReader, Op, Ownership, Queued, StoreRead, legs,
    stored_decimal,
};

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Sender, bounded};
use rust_decimal::Decimal;

use recent::{Recent, Unsettled};

use crate::{
    Balances, Commit, Committed, DecisionRecord, Effect, Hold, JournalEntry, Ledger, LedgerError, MemoryLedger,
    Refusal, Resolution, RulesetArchive, StoredDecision, SyncPoint, Usage, Watermark,
};
use rulehost_core::facts::{HistoryQuery, HistoryStats};
use rulehost_core::model::Account;

/// The durable ledger's front (see the module documentation).
pub struct Durable<R: StoreRead> {
    /// Which sources it decides (all, when `None`).
    ownership: Option<Arc<dyn Ownership>>,
    memory: MemoryLedger,
    recent: Recent,
    /// Holds whose last change may not be durable yet.
    unsettled: Unsettled,
    ids: fastbloom::BloomFilter,
    /// Reads what is not in memory. Closed first at shutdown, before the
    /// writer finishes.
    reader: Mutex<Option<R>>,
    options: StoreOptions,
    queue: Option<Sender<Vec<Queued>>>,
    /// Changes not yet handed to the writer (see `HANDOFF_OPS_MAX`).
    buffer: Mutex<Vec<Queued>>,
    writer: Option<JoinHandle<()>>,
    watermark: Arc<Watermark>,
    stats: Arc<Mutex<CommitStats>>,
    seq: u64,
    decided_since_snapshot: u64,
    /// The next part of the id filter's snapshot to queue, while one is
    /// being written (in bytes from the start).
    snapshot_at: Option<usize>,
    /// The change that queued the snapshot's last part so far: the next
    /// part is queued once it is durable, so one part at most is in memory.
    snapshot_part_seq: u64,
    /// On a shared ledger: per account, the last change of its posted
    /// balance this host queued (what a refresh waits for).
    posted_changed: foldhash::HashMap<String, u64>,
}

impl<R: StoreRead> Durable<R> {
    /// A durable ledger over `memory` (the hot state as loaded from the
    /// store) and `ids` (every id the store holds), reading through
    /// `reader` and writing through `writer` on a thread of its own.
    pub fn start(
        memory: MemoryLedger,
        ids: fastbloom::BloomFilter,
        reader: R,
        writer: impl GroupWriter,
        options: &StoreOptions,
    ) -> std::io::Result<Self> {
        let watermark = Arc::new(Watermark::default());
        let stats = Arc::new(Mutex::new(CommitStats::default()));
        let (queue, rx) = bounded(WRITE_QUEUE_OPS_MAX / HANDOFF_OPS_MAX);
        let writer = {
            let (watermark, stats, options) = (watermark.clone(), stats.clone(), options.clone());
            std::thread::Builder::new()
                .name("rulehost-ledger".into())
                .spawn(move || writer::write_loop(writer, rx, &watermark, &stats, &options))?
        };
        Ok(Durable {
            ownership: None,
            memory,
            recent: Recent::default(),
            unsettled: Unsettled::default(),
            ids,
            reader: Mutex::new(Some(reader)),
            options: options.clone(),
            queue: Some(queue),
            buffer: Mutex::new(Vec::with_capacity(HANDOFF_OPS_MAX)),
            writer: Some(writer),
            watermark,
            stats,
            seq: 0,
            decided_since_snapshot: 0,
            snapshot_at: None,
            snapshot_part_seq: 0,
            posted_changed: Default::default(),
        })
    }

    /// Decides only the sources `ownership` accepts (a shared ledger's
    /// partitions); a commit for another is [`LedgerError::NotOwner`].
    pub fn with_ownership(mut self, ownership: Arc<dyn Ownership>) -> Self {
        self.ownership = Some(ownership);
        self
    }

    /// The options it runs with (the history window the widest asked for
    /// since).
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Counters and commit latencies so far.
    pub fn stats(&self) -> CommitStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The shared watermark (to observe durability without the ledger lock).
    pub fn watermark(&self) -> Arc<Watermark> {
        self.watermark.clone()
    }

    /// Checks every invariant on the stored state, once every change made
    /// so far is durable.
    pub fn reconcile(&mut self) -> Result<Report, LedgerError> {
        self.sync_point().wait()?;
        self.read(|r| r.reconcile())
    }

    /// Writes everything queued and stops the writer; returns the store's failure, if any.
    pub fn close(&mut self) -> Result<(), LedgerError> {
        self.shutdown();
        self.watermark.wait(self.seq)
    }

    /// Writes everything queued, closes the reader and stops the writer
    /// (also on drop).
    pub fn shutdown(&mut self) {
        if self.queue.is_some() && self.watermark.failure().is_none() {
            if self.snapshot_at.is_none() && self.decided_since_snapshot > 0 {
                self.snapshot_at = Some(0);
            }
            // The remaining parts at once: the writer writes them before it stops.
            while self.snapshot_at.is_some() {
                self.send_filter_part(u64::MAX);
            }
            self.decided_since_snapshot = 0;
        }
        self.hand_off();
        if let Ok(mut reader) = self.reader.lock() {
            reader.take();
        }
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }

    fn send(&mut self, op: Op) {
        self.seq += 1;
        let seq = self.seq;
        let full = match self.buffer.get_mut() {
            Ok(buffer) => {
                buffer.push((seq, Instant::now(), op));
                buffer.len() >= HANDOFF_OPS_MAX
            }
            Err(_) => true,
        };
        if full {
            self.hand_off();
        }
    }

    /// Queues the next part of the id filter's snapshot, if one is being
    /// written and the part before it is durable (changes up to `durable` are).
    fn send_filter_part(&mut self, durable: u64) {
        let Some(offset) = self.snapshot_at else { return };
        if self.snapshot_part_seq > durable {
            return;
        }
        let words = self.ids.as_slice();
        let total = words.len().saturating_mul(8);
        let start = offset / 8;
        let end = start.saturating_add(FILTER_PART_BYTES / 8).min(words.len());
        let bytes: Vec<u8> = words.get(start..end).unwrap_or_default().iter().flat_map(|w| w.to_le_bytes()).collect();
        let next = end.saturating_mul(8);
        let last = next >= total;
        self.snapshot_at = if last { None } else { Some(next) };
        self.send(Op::IdFilter(FilterPart { offset, bytes, total, first: offset == 0, last }));
        self.snapshot_part_seq = self.seq;
    }

    /// Hands the buffered changes to the writer.
    fn hand_off(&self) {
        let ops = {
            let Ok(mut buffer) = self.buffer.lock() else { return };
            if buffer.is_empty() {
                return;
            }
            std::mem::replace(&mut *buffer, Vec::with_capacity(HANDOFF_OPS_MAX))
        };
        if let Some(queue) = &self.queue {
            // A failed writer has recorded why; waiters on later points get that error.
            let _ = queue.send(ops);
        }
    }

    fn balance_row(&self, id: &str) -> BalanceRow {
        match self.memory.balances(id) {
            Some(b) => BalanceRow { id: id.to_owned(), posted: b.posted, pending: Some(b.pending) },
            None => BalanceRow { id: id.to_owned(), posted: self.memory.system_balance(id), pending: None },
        }
    }

    /// Runs `f` on the store's reader.
    pub fn read<T>(&self, f: impl FnOnce(&mut R) -> Result<T, String>) -> Result<T, LedgerError> {
        let mut reader = self.reader.lock().map_err(|_| LedgerError::Storage("reader lock poisoned".into()))?;
        let r = reader.as_mut().ok_or_else(|| LedgerError::Storage("the ledger is closed".into()))?;
        f(r).map_err(LedgerError::Storage)
    }

    /// The encoded record of `id`: recent cache, then filter, then store.
    fn stored_record(&self, id: &str) -> Result<Option<Arc<[u8]>>, LedgerError> {
        if let Some((_, record)) = self.recent.records.get(id) {
            return Ok(Some(record.clone()));
        }
        if !self.ids.contains(id) {
            return Ok(None);
        }
        self.read(|r| r.record(id)).map(|r| r.map(Arc::from))
    }

    /// On a shared ledger other hosts credit this host's accounts, so its
    /// cached posted balance can only lag below the store's. A funds check
    /// that would fail on the cache first waits until this host's own
    /// changes to that account are durable and takes its posted balance from the
    /// store (pending holds are this host's alone: only the owner places and
    /// resolves them), so a refusal is never caused by a credit that landed.
    fn refresh_before_refusal(
        &mut self,
        tx: &rulehost_core::model::Transaction,
        wanted: Effect,
    ) -> Result<(), LedgerError> {
        if wanted == Effect::Nothing
            || self.memory.admit(&tx.source, &tx.destination, tx.amount, wanted) != Err(Refusal::InsufficientFunds)
        {
            return Ok(());
        }
        let Some(account) = self.memory.account(&tx.source).cloned() else { return Ok(()) };
        let Some(cached) = self.memory.balances(&tx.source) else { return Ok(()) };
        // Only this account's own last change need be durable (usually it
        // already is: then this costs one read, no wait).
        if let Some(&seq) = self.posted_changed.get(&tx.source)
            && seq > self.watermark.durable()
        {
            self.hand_off();
            SyncPoint::new(seq, self.watermark.clone()).wait()?;
        }
        if let Some(posted) = self.read(|r| r.posted(&tx.source))?
            && posted > cached.posted
        {
            self.memory.restore_account(account, posted, cached.pending);
        }
        Ok(())
    }

    /// A store that failed takes no more changes: nothing after its last
    /// durable point is acknowledged, so nothing more is applied either (and
    /// what waits for the store in memory stops growing). A shared ledger
    /// heals by reopening, with a new front.
    fn refuse_if_failed(&self) -> Result<(), LedgerError> {
        match self.watermark.failure() {
            Some(why) => Err(LedgerError::Storage(why)),
            None => Ok(()),
        }
    }

    /// The storage failed mid-change: nothing after it is acknowledged.
    fn fail(&self, e: LedgerError) -> LedgerError {
        self.watermark.fail(format!("a change could not be stored: {e}"));
        e
    }
}

impl<R: StoreRead> Drop for Durable<R> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl<R: StoreRead> Ledger for Durable<R> {
    fn import_accounts(&mut self, accounts: &[Account]) -> Result<usize, LedgerError> {
        self.refuse_if_failed()?;
        let known: std::collections::HashSet<&str> =
            accounts.iter().filter(|a| self.memory.account(&a.id).is_some()).map(|a| a.id.as_str()).collect();
        let fresh: Vec<Account> = accounts.iter().filter(|a| !known.contains(a.id.as_str())).cloned().collect();
        let added = self.memory.import_accounts(accounts)?;
        let entries = self.memory.take_unstored();
        if added == 0 {
            return Ok(0);
        }
        let mut touched: Vec<&str> = fresh.iter().map(|a| a.id.as_str()).collect();
        touched.extend(entries.iter().flat_map(|e| e.postings.iter().map(|p| p.account.as_str())));
        touched.sort_unstable();
        touched.dedup();
        let balances = touched.iter().map(|id| self.balance_row(id)).collect();
        self.send(Op::Accounts { accounts: fresh, entries, balances });
        Ok(added)
    }

    fn account(&self, id: &str) -> Option<&Account> {
        self.memory.account(id)
    }

    fn account_ids(&self) -> Vec<String> {
        self.memory.account_ids()
    }

    fn balances(&self, id: &str) -> Option<Balances> {
        self.memory.balances(id)
    }

    fn admit(&self, source: &str, destination: &str, amount: Decimal, effect: Effect) -> Result<(), Refusal> {
        self.memory.admit(source, destination, amount, effect)
    }

    fn decision(&self, id: &str) -> Result<Option<StoredDecision>, LedgerError> {
        Ok(self.record(id)?.map(|r| StoredDecision { fingerprint: r.fingerprint, decision: r.decision }))
    }

    fn record(&self, id: &str) -> Result<Option<DecisionRecord>, LedgerError> {
        self.stored_record(id)?.map(|bytes| self.memory.decode(&bytes)).transpose()
    }

    fn history(&self, query: &HistoryQuery<'_>) -> HistoryStats {
        self.memory.history(query)
    }

    fn retain_history(&mut self, window_seconds_max: u64) {
        self.memory.retain_history(window_seconds_max);
        // Kept for a store that reopens (a shared ledger taking partitions over).
        let kept = &mut self.options.history_window_seconds_max;
        *kept = (*kept).max(window_seconds_max);
    }

    fn commit(&mut self, c: Commit<'_>) -> Result<Committed, LedgerError> {
        self.refuse_if_failed()?;
        let tx = c.tx;
        if let Some(ownership) = &self.ownership {
            ownership.check(&tx.source)?;
        }
        if self.stored_record(&tx.id)?.is_some() {
            return Err(LedgerError::DuplicateDecision(tx.id.clone()));
        }
        if self.ownership.is_some() {
            self.refresh_before_refusal(tx, c.wanted)?;
        }
        let (applied, record) = self.memory.apply(c)?;
        let entry = self.memory.take_unstored().into_iter().next();
        let (bytes, changed) = self.memory.encode(&record).map_err(|e| self.fail(e))?;
        if let Some(id) = changed
            && let Some(entry) = self.memory.dictionary().entry(id).cloned()
        {
            self.send(Op::Dictionary { id, entry });
        }
        let effect = applied.committed.effect;
        let balances = match effect {
            Effect::Post => vec![self.balance_row(&tx.source), self.balance_row(&tx.destination)],
            Effect::Hold => vec![self.balance_row(&tx.source)],
            Effect::Nothing => Vec::new(),
        };
        let hold = applied.hold;
        let history = applied.horizon.map(|h| (tx.source.clone(), tx.timestamp, tx.amount, h));
        let bytes: Arc<[u8]> = bytes.into();
        self.send(Op::Decision(Box::new(DecisionOp {
            id: tx.id.clone(),
            record: bytes.clone(),
            history,
            entry,
            hold: hold.clone(),
            balances,
        })));
        if let Some(hold) = hold {
            self.unsettled.insert(self.seq, hold);
        }
        // What waits in memory for the store: let go of what is durable.
        let durable = self.watermark.durable();
        self.unsettled.settle(durable);
        if self.ownership.is_some() && effect == Effect::Post {
            self.posted_changed.insert(tx.source.clone(), self.seq);
            self.posted_changed.insert(tx.destination.clone(), self.seq);
        }
        self.ids.insert(tx.id.as_str());
        self.recent.insert(tx.id.clone(), self.seq, bytes);
        self.recent.evict(self.options.decision_cache_entries, durable);
        self.decided_since_snapshot = self.decided_since_snapshot.saturating_add(1);
        if self.snapshot_at.is_none() && self.decided_since_snapshot >= self.options.id_filter_snapshot_decisions.max(1)
        {
            self.snapshot_at = Some(0);
            self.decided_since_snapshot = 0;
        }
        self.send_filter_part(durable);
        Ok(applied.committed)
    }

    fn resolve_hold(&mut self, id: &str, approve: bool) -> Result<Resolution, LedgerError> {
        self.refuse_if_failed()?;
        // The hold as last changed: in memory while that change is on its
        // way to the store, else in the store (no wait: it is durable).
        let hold = self.hold(id)?.ok_or_else(|| LedgerError::UnknownHold(id.to_owned()))?;
        // On a shared ledger only the owner of the hold's source resolves it
        // (its pending sum lives in that host's memory).
        if let Some(ownership) = &self.ownership {
            ownership.check(&hold.source)?;
        }
        let (resolution, hold) = self.memory.resolve_given(&hold, approve)?;
        let entry = self.memory.take_unstored().into_iter().next();
        if resolution != Resolution::Done {
            return Ok(resolution);
        }
        let mut balances = vec![self.balance_row(&hold.source)];
        if approve {
            balances.push(self.balance_row(&hold.destination));
        }
        let at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let (source, destination) = (hold.source.clone(), hold.destination.clone());
        self.send(Op::Resolve { hold: hold.clone(), entry, balances, at_unix_ms });
        self.unsettled.insert(self.seq, hold);
        self.unsettled.settle(self.watermark.durable());
        if self.ownership.is_some() && approve {
            self.posted_changed.insert(source, self.seq);
            self.posted_changed.insert(destination, self.seq);
        }
        Ok(resolution)
    }

    fn hold(&self, id: &str) -> Result<Option<Hold>, LedgerError> {
        match self.unsettled.get(id) {
            Some(h) => Ok(Some(h.clone())),
            None => self.read(|r| r.hold(id)),
        }
    }

    fn holds(&self) -> Result<Vec<Hold>, LedgerError> {
        self.sync_point().wait()?;
        self.read(|r| r.holds())
    }

    fn pending_holds(&self) -> Result<Vec<Hold>, LedgerError> {
        self.sync_point().wait()?;
        self.read(|r| r.pending_holds())
    }

    fn journal(&self, account: Option<&str>) -> Result<Vec<JournalEntry>, LedgerError> {
        self.sync_point().wait()?;
        self.read(|r| r.journal(account))
    }

    fn keep_ruleset(&mut self, archive: &Arc<RulesetArchive>) -> Result<(), LedgerError> {
        if self.memory.keep_archive(archive) {
            self.send(Op::Ruleset(archive.clone()));
        }
        Ok(())
    }

    fn ruleset(&self, version: &str) -> Result<Option<RulesetArchive>, LedgerError> {
        if let Some(a) = self.memory.archive(version) {
            return Ok(Some((**a).clone()));
        }
        self.read(|r| r.ruleset(version))
    }

    fn usage(&self) -> Usage {
        let hot = self.memory.hot_usage();
        let filter = (self.ids.num_bits() / 8) as u64;
        Usage {
            decisions: self.recent.records.len() as u64,
            bytes: hot
                .bytes
                .saturating_add(self.recent.bytes)
                .saturating_add(filter)
                .saturating_add(self.unsettled.bytes()),
            ..hot
        }
    }

    fn sync_point(&self) -> SyncPoint {
        self.hand_off();
        SyncPoint::new(self.seq, self.watermark.clone())
    }

    fn owned_partitions(&self) -> Option<Vec<u16>> {
        self.ownership.as_ref().map(|o| o.owned())
    }
}
