//! A shared ledger's upkeep: every [`LEDGER_UPKEEP_MS`] a serving host lets
//! its ledger take lapsed partitions over, hand adopted ones back and
//! reopen after a failure (`rulehost-ledger-postgres`), and notes the
//! partitions it owns in the metrics.

use std::sync::atomic::Ordering;

use rulehost_engine::pipeline::lock;
use rulehost_ledger::Ledger;

use super::Inner;

/// How often a host runs its ledger's upkeep, in milliseconds: on a ledger
/// several hosts share, taking lapsed partitions over, handing adopted
/// ones back and reopening after a failure (see `rulehost-ledger-postgres`);
/// also when the partition metrics are refreshed.
pub const LEDGER_UPKEEP_MS: u64 = 250;

impl Inner {
    /// Notes in the metrics the partitions `ledger` decides now; whether it
    /// is shared (has partitions at all).
    pub(super) fn note_partitions(&self, ledger: &dyn Ledger) -> bool {
        let owned = ledger.owned_partitions();
        self.metrics.partitions_owned(owned.as_deref());
        owned.is_some()
    }
}

/// Runs the shared ledger's upkeep every [`LEDGER_UPKEEP_MS`] (off the
/// runtime's workers) until the host stops, refreshing the partition metrics.
pub(super) async fn ledger_upkeep(inner: std::sync::Weak<Inner>) {
    let mut every = tokio::time::interval(std::time::Duration::from_millis(LEDGER_UPKEEP_MS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.stopping.load(Ordering::Relaxed) {
            return;
        }
        let done = tokio::task::spawn_blocking(move || {
            let mut ledger = lock(inner.pipeline.ledger());
            let result = ledger.maintain();
            inner.note_partitions(&**ledger);
            result
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::debug!(error = %e, "ledger upkeep");
        }
    }
}
