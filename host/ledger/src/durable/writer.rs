//! The writer thread: groups queued changes into one durable store
//! transaction each, and advances the watermark.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::{CommitStats, GroupWriter, Queued, StoreOptions};
use crate::Watermark;

pub(super) fn write_loop(
    mut store: impl GroupWriter,
    rx: Receiver<Vec<Queued>>,
    watermark: &Watermark,
    stats: &std::sync::Mutex<CommitStats>,
    options: &StoreOptions,
) {
    /// Marks the store failed if the writer ends other than by its queue closing.
    struct Guard<'a>(&'a Watermark, bool);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.fail("the ledger writer stopped unexpectedly".into());
            }
        }
    }
    let mut guard = Guard(watermark, false);
    let ops_max = options.group_commit_ops_max.max(1);
    let mut failed = false;
    while let Ok(mut group) = rx.recv() {
        let Some(started) = group.first().map(|q| q.1) else { continue };
        let linger_until = Instant::now() + options.group_commit_linger;
        while group.len() < ops_max {
            match rx.try_recv() {
                Ok(ops) => group.extend(ops),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => match rx.recv_deadline(linger_until) {
                    Ok(ops) => group.extend(ops),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            }
        }
        let Some(last) = group.last().map(|q| q.0) else { continue };
        let count = group.len() as u64;
        let writing = Instant::now();
        if failed {
            continue;
        }
        match store.write_group(group) {
            Ok(()) => {
                let commit_us = writing.elapsed().as_micros() as u64;
                watermark.advance(last);
                if let Ok(mut s) = stats.lock() {
                    s.commits += 1;
                    s.ops += count;
                    s.latency_us.saturating_record(started.elapsed().as_micros() as u64);
                    s.commit_us.saturating_record(commit_us);
                }
                if let Some(hook) = &options.on_commit {
                    hook(Duration::from_micros(commit_us), count as usize);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger commit failed; nothing after the last durable point is acknowledged");
                watermark.fail(format!("commit failed: {e}"));
                // Keep draining, so committing callers never block on a full queue.
                failed = true;
            }
        }
    }
    guard.1 = !failed;
}
