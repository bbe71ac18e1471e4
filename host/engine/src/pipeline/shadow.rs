//! Shadow mode: a candidate rule set evaluated beside every live decision
//! (see [`Shadow`]); the pipeline's speculation and commit carry it.

use std::sync::{Arc, Mutex};

use rust_decimal::Decimal;

use super::Pipeline;
use crate::backtest::Seen;
use rulehost_core::decision::Decision;

/// Shadow mode: a candidate rule set evaluated on every transaction beside
/// the live one, against the same ledger state; only the live decision acts.
/// The candidate's decisions (its own trace, its funds check, nothing
/// posted) are kept beside the live ones, by input line.
pub struct Shadow {
    pub(super) candidate: Arc<dyn crate::reload::RuleSource>,
    /// The first `keep` pairs (for a shadow log; none unless asked for).
    decisions: Mutex<Vec<ShadowPair>>,
    keep: usize,
    /// The agreement report over every pair, kept as they come.
    report: Mutex<crate::backtest::Report>,
}

/// Most pairs of live and shadow decisions `Pipeline::keep_shadow_pairs`
/// keeps for `shadow_decisions` (the running report counts every one).
pub const SHADOW_PAIRS_KEPT_MAX: usize = 1_000_000;

impl Shadow {
    pub(super) fn record(&self, pair: ShadowPair) {
        if let Ok(mut report) = self.report.lock() {
            report.lines = report.lines.saturating_add(1);
            let (live, candidate) = (Seen::of_decision(&pair.live), Seen::of_decision(&pair.candidate));
            report.add(&live, &candidate, Some((&pair.currency, pair.amount)), None);
        }
        if self.keep > 0
            && let Ok(mut kept) = self.decisions.lock()
            && kept.len() < self.keep
        {
            kept.push(pair);
        }
    }
}

/// One transaction decided live and in shadow.
#[derive(Clone, Debug)]
pub struct ShadowPair {
    /// The input line.
    pub line: u64,
    /// The transaction's currency and amount (for volumes).
    pub currency: String,
    /// Its amount.
    pub amount: Decimal,
    /// What acted.
    pub live: Arc<Decision>,
    /// What the candidate would have decided.
    pub candidate: Arc<Decision>,
}

impl Pipeline {
    /// The same pipeline, evaluating `candidate` in shadow beside every live
    /// evaluation (see [`Shadow`]); it keeps the running report only.
    pub fn with_shadow(self, candidate: Arc<dyn crate::reload::RuleSource>) -> Self {
        self.with_shadow_pairs(candidate, 0)
    }

    /// As [`Pipeline::with_shadow`], also keeping the first `keep` pairs
    /// (at most [`SHADOW_PAIRS_KEPT_MAX`]) for [`Pipeline::shadow_decisions`].
    pub fn with_shadow_pairs(mut self, candidate: Arc<dyn crate::reload::RuleSource>, keep: usize) -> Self {
        let keep = keep.min(SHADOW_PAIRS_KEPT_MAX);
        self.shadow = Some(Arc::new(Shadow { candidate, decisions: Mutex::default(), keep, report: Mutex::default() }));
        self
    }

    /// The shadow candidate's decisions kept so far beside the live ones,
    /// by input line (empty without a shadow, or when none are kept).
    /// Replays and error records have none.
    pub fn shadow_decisions(&self) -> Vec<ShadowPair> {
        let Some(shadow) = &self.shadow else { return Vec::new() };
        let mut all = shadow.decisions.lock().map(|d| d.clone()).unwrap_or_default();
        all.sort_by_key(|p| p.line);
        all
    }

    /// The agreement report of the traffic seen so far (the backtest
    /// report of the live decisions against the candidate's); `None`
    /// without a shadow.
    pub fn shadow_report(&self) -> Option<crate::backtest::Report> {
        let shadow = self.shadow.as_ref()?;
        Some(shadow.report.lock().map(|r| r.clone()).unwrap_or_default())
    }
}
