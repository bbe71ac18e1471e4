//! Durability progress: the [`Watermark`] the writer advances and the
//! [`SyncPoint`] a caller waits on before acknowledging a change.

use std::sync::Arc;

use crate::LedgerError;

/// Progress of the durable store: the last change sequence made durable, or
/// the failure that stopped it. Shared by the writer and every waiter.
pub struct Watermark {
    state: std::sync::Mutex<WatermarkState>,
    changed: std::sync::Condvar,
    /// The same progress for async waiters: (durable, failed).
    progress: tokio::sync::watch::Sender<(u64, bool)>,
}

impl Default for Watermark {
    fn default() -> Self {
        Watermark {
            state: Default::default(),
            changed: Default::default(),
            progress: tokio::sync::watch::Sender::new((0, false)),
        }
    }
}

#[derive(Default)]
struct WatermarkState {
    durable: u64,
    failed: Option<String>,
}

impl Watermark {
    /// Records that every change up to `seq` is durable.
    pub fn advance(&self, seq: u64) {
        let mut s = self.state.lock().expect("watermark lock");
        s.durable = s.durable.max(seq);
        self.changed.notify_all();
        self.progress.send_replace((s.durable, s.failed.is_some()));
    }

    /// Records that the store failed; waiters past the durable point get `why`.
    pub fn fail(&self, why: String) {
        let mut s = self.state.lock().expect("watermark lock");
        s.failed.get_or_insert(why);
        self.changed.notify_all();
        self.progress.send_replace((s.durable, true));
    }

    /// Why the store failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.state.lock().expect("watermark lock").failed.clone()
    }

    /// The last durable change.
    pub fn durable(&self) -> u64 {
        self.state.lock().expect("watermark lock").durable
    }

    /// Blocks until change `seq` is durable (or the store failed).
    pub fn wait(&self, seq: u64) -> Result<(), LedgerError> {
        let mut s = self.state.lock().expect("watermark lock");
        loop {
            if s.durable >= seq {
                return Ok(());
            }
            if let Some(why) = &s.failed {
                return Err(LedgerError::Storage(why.clone()));
            }
            s = self.changed.wait(s).expect("watermark lock");
        }
    }
}

/// A point in the ledger's change sequence to wait for (see [`Ledger::sync_point`]).
#[derive(Clone)]
pub struct SyncPoint {
    seq: u64,
    watermark: Option<Arc<Watermark>>,
}

impl SyncPoint {
    /// A point already reached.
    pub fn reached() -> Self {
        SyncPoint { seq: 0, watermark: None }
    }

    /// The point `seq` of `watermark`.
    pub fn new(seq: u64, watermark: Arc<Watermark>) -> Self {
        SyncPoint { seq, watermark: Some(watermark) }
    }

    /// Blocks until every change up to this point is durable, or the store failed.
    pub fn wait(&self) -> Result<(), LedgerError> {
        match &self.watermark {
            Some(w) => w.wait(self.seq),
            None => Ok(()),
        }
    }

    /// Why the store failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.watermark.as_ref().and_then(|w| w.failure())
    }

    /// Waits, without blocking a thread, until every change up to this
    /// point is durable, or the store failed.
    pub async fn wait_async(&self) -> Result<(), LedgerError> {
        let Some(w) = &self.watermark else { return Ok(()) };
        let mut progress = w.progress.subscribe();
        let seq = self.seq;
        let _ = progress.wait_for(|(durable, failed)| *durable >= seq || *failed).await;
        w.wait(seq)
    }
}
