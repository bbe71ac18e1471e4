//! The guard's sliding window over the candidate's last decisions (its
//! thresholds, [`Guard`], are in `rulehost_core::rollout`).

use std::collections::VecDeque;
use std::sync::Arc;

use rulehost_core::rollout::Guard;
use rust_decimal::Decimal;

/// The guard's sliding window over the candidate's decisions.
#[derive(Default)]
pub(super) struct Window {
    /// (failed a rule, declined or reviewed), newest last.
    pub(super) flags: VecDeque<(bool, bool)>,
    pub(super) failed: u64,
    pub(super) flagged: u64,
    /// The candidate version the window counts (a reload starts afresh).
    version: Option<Arc<str>>,
}

impl Window {
    pub(super) fn clear(&mut self) {
        *self = Window::default();
    }

    pub(super) fn push(&mut self, version: &Arc<str>, failed: bool, flagged: bool, size: u32) {
        if self.version.as_deref() != Some(&**version) {
            self.clear();
            self.version = Some(version.clone());
        }
        self.flags.push_back((failed, flagged));
        self.failed = self.failed.saturating_add(u64::from(failed));
        self.flagged = self.flagged.saturating_add(u64::from(flagged));
        while self.flags.len() > size as usize {
            if let Some((f, g)) = self.flags.pop_front() {
                self.failed = self.failed.saturating_sub(u64::from(f));
                self.flagged = self.flagged.saturating_sub(u64::from(g));
            }
        }
    }

    /// Why the guard fires, if it does: a count over the window strictly
    /// above `percent` of its length (exact: `count * 100 > percent * len`).
    pub(super) fn verdict(&self, guard: &Guard) -> Option<String> {
        let len = self.flags.len() as u64;
        if len < u64::from(guard.min_decisions) {
            return None;
        }
        let over = |count: u64, percent: Option<Decimal>| {
            percent.filter(|p| Decimal::from(count) * Decimal::ONE_HUNDRED > *p * Decimal::from(len))
        };
        if let Some(p) = over(self.failed, guard.failure_percent) {
            return Some(format!(
                "rule-failure rate {}/{len} decisions is above {p}% (guard window {})",
                self.failed, guard.window
            ));
        }
        if let Some(p) = over(self.flagged, guard.flagged_percent) {
            return Some(format!(
                "decline/review rate {}/{len} decisions is above {p}% (guard window {})",
                self.flagged, guard.window
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_judges_exactly() {
        let guard =
            Guard { failure_percent: Some(Decimal::from(10)), flagged_percent: None, window: 20, min_decisions: 10 };
        let v: Arc<str> = "v1".into();
        let mut w = Window::default();
        for i in 0..10 {
            w.push(&v, i == 0, false, guard.window);
        }
        // 1 of 10 is exactly 10%: not above.
        assert_eq!(w.verdict(&guard), None);
        w.push(&v, true, false, guard.window);
        assert!(w.verdict(&guard).unwrap().contains("2/11"));
        // Old decisions leave the window.
        for _ in 0..20 {
            w.push(&v, false, false, guard.window);
        }
        assert_eq!((w.flags.len(), w.failed), (20, 0));
        // Another version starts afresh.
        w.push(&"v2".into(), true, false, guard.window);
        assert_eq!((w.flags.len(), w.failed), (1, 1));
    }
}
