//! The guard of a canary: thresholds over the candidate's last decisions,
//! from its manifest's `[rollout]` table and the operator's settings, and
//! the sliding window that judges them.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Decisions in the guard's sliding window by default.
pub const GUARD_WINDOW_DECISIONS_DEFAULT: u32 = 1_000;
/// Largest guard window, in decisions.
pub const GUARD_WINDOW_DECISIONS_MAX: u32 = 1_000_000;
/// Candidate decisions the window needs before the guard judges, by default.
pub const GUARD_MIN_DECISIONS_DEFAULT: u32 = 100;

/// The automatic abort: thresholds over the candidate's last `window`
/// decisions. A rate is a percentage (a decimal, `0..=100`); the guard fires
/// when a rate is strictly above its threshold, once the window holds
/// `min_decisions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// Highest share of decisions with a failed rule call.
    pub failure_percent: Option<Decimal>,
    /// Highest share of decisions declined or sent to review.
    pub flagged_percent: Option<Decimal>,
    /// Decisions in the window.
    pub window: u32,
    /// Decisions the window needs before the guard judges.
    pub min_decisions: u32,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            failure_percent: None,
            flagged_percent: None,
            window: GUARD_WINDOW_DECISIONS_DEFAULT,
            min_decisions: GUARD_MIN_DECISIONS_DEFAULT,
        }
    }
}

/// Guard settings given by an operator (command line, builder); each one set
/// wins over the candidate manifest's `[rollout]` table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardOverride {
    /// See [`Guard::failure_percent`].
    pub failure_percent: Option<Decimal>,
    /// See [`Guard::flagged_percent`].
    pub flagged_percent: Option<Decimal>,
    /// See [`Guard::window`].
    pub window: Option<u32>,
    /// See [`Guard::min_decisions`].
    pub min_decisions: Option<u32>,
}

impl GuardOverride {
    /// These settings, each one unset taken from `under`.
    pub fn or(self, under: GuardOverride) -> GuardOverride {
        GuardOverride {
            failure_percent: self.failure_percent.or(under.failure_percent),
            flagged_percent: self.flagged_percent.or(under.flagged_percent),
            window: self.window.or(under.window),
            min_decisions: self.min_decisions.or(under.min_decisions),
        }
    }

    /// The guard in force over a candidate's manifest guard, checked; the
    /// error names the setting.
    pub fn checked_over(&self, manifest: Option<&Guard>) -> Result<Guard, String> {
        let guard = self.over(manifest);
        check_guard(&guard).map_err(|(key, message)| format!("canary guard: {key}: {message}"))?;
        Ok(guard)
    }

    /// The guard in force: these settings over the manifest's.
    pub fn over(&self, manifest: Option<&Guard>) -> Guard {
        let base = manifest.copied().unwrap_or_default();
        Guard {
            failure_percent: self.failure_percent.or(base.failure_percent),
            flagged_percent: self.flagged_percent.or(base.flagged_percent),
            window: self.window.unwrap_or(base.window),
            min_decisions: self.min_decisions.unwrap_or(base.min_decisions),
        }
    }
}

/// Checks a guard's numbers; the error names the setting.
pub fn check_guard(g: &Guard) -> Result<(), (&'static str, String)> {
    for (key, rate) in [("abort_failure_percent", g.failure_percent), ("abort_flagged_percent", g.flagged_percent)] {
        if let Some(r) = rate {
            percentage(r).map_err(|message| (key, message))?;
        }
    }
    if g.window == 0 || g.window > GUARD_WINDOW_DECISIONS_MAX {
        return Err(("window_decisions", format!("{} is not in 1..={GUARD_WINDOW_DECISIONS_MAX}", g.window)));
    }
    if g.min_decisions == 0 || g.min_decisions > g.window {
        return Err(("min_decisions", format!("{} is not in 1..=window_decisions ({})", g.min_decisions, g.window)));
    }
    Ok(())
}

/// Parses a percentage written as an integer or a decimal string (never a
/// float: it would be inexact).
pub fn parse_percent(text: &str) -> Result<Decimal, String> {
    percentage(Decimal::from_str(text.trim()).map_err(|e| format!("{text:?} is not a decimal: {e}"))?)
}

/// `value` when it is a percentage, `0..=100`.
fn percentage(value: Decimal) -> Result<Decimal, String> {
    if value.is_sign_negative() || value > Decimal::ONE_HUNDRED {
        return Err(format!("{value} is not a percentage in 0..=100"));
    }
    Ok(value)
}

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

    #[test]
    fn guards_are_checked() {
        let mut g = Guard::default();
        assert!(check_guard(&g).is_ok());
        g.failure_percent = Some(Decimal::from(101));
        assert_eq!(check_guard(&g).unwrap_err().0, "abort_failure_percent");
        g.failure_percent = None;
        g.min_decisions = g.window + 1;
        assert_eq!(check_guard(&g).unwrap_err().0, "min_decisions");
        assert!(parse_percent("12.5").is_ok());
        assert!(parse_percent("-1").is_err());
        assert!(parse_percent("x").is_err());
    }
}
