//! `velocity`: `n` = the source's earlier transactions in the last hour;
//! 400 if `n ≥ 10`, 150 if `n ≥ 5`, else 0 — `HIGH_VELOCITY`.

#![cfg_attr(target_arch = "wasm32", no_std)]

use rulehost_guest::{RiskRule, RuleInfo, Score, Transaction, history};

/// The `velocity` risk rule.
pub struct Velocity;

/// The window counted, in seconds.
const WINDOW_SECONDS: u64 = 3600;

impl RiskRule for Velocity {
    fn declare() -> RuleInfo {
        RuleInfo::new().history_window_seconds(WINDOW_SECONDS)
    }

    fn score(tx: &Transaction) -> Score {
        let n = history(&tx.source, WINDOW_SECONDS, None).count;
        match n {
            10.. => Score::new(400, "HIGH_VELOCITY"),
            5.. => Score::new(150, "HIGH_VELOCITY"),
            _ => Score::zero(),
        }
    }
}

rulehost_guest::export_risk_rule!(Velocity);
rulehost_guest::no_std_runtime!();

#[cfg(test)]
mod tests {
    use super::*;
    use rulehost_guest::testing::{FakeHost, dec, ts};

    fn score(host: &FakeHost) -> u32 {
        let tx = Transaction::payment("t", ts("2026-01-05T10:00:00Z"), "src", "dst", dec("10"), "USD");
        host.score::<Velocity>(&tx).score
    }

    #[test]
    fn thresholds() {
        for (n, expected) in [(0, 0), (4, 0), (5, 150), (9, 150), (10, 400), (25, 400)] {
            let host = FakeHost::new().earlier_n(n, "src", "2026-01-05T09:30:00Z", "1");
            assert_eq!(score(&host), expected, "n = {n}");
        }
    }

    #[test]
    fn window_is_half_open_one_hour_back() {
        // Exactly one hour earlier is outside (t − 3600, t]; the same instant is inside.
        let outside = FakeHost::new().earlier_n(5, "src", "2026-01-05T09:00:00Z", "1");
        assert_eq!(score(&outside), 0);
        let inside = FakeHost::new().earlier_n(5, "src", "2026-01-05T09:00:00.000000001Z", "1");
        assert_eq!(score(&inside), 150);
        let now = FakeHost::new().earlier_n(5, "src", "2026-01-05T10:00:00Z", "1");
        assert_eq!(score(&now), 150);
        let later = FakeHost::new().earlier_n(5, "src", "2026-01-05T10:00:01Z", "1");
        assert_eq!(score(&later), 0);
    }

    #[test]
    fn only_the_source_counts() {
        let host = FakeHost::new().earlier_n(10, "other", "2026-01-05T09:30:00Z", "1");
        assert_eq!(score(&host), 0);
        let tx = Transaction::payment("t", ts("2026-01-05T10:00:00Z"), "src", "dst", dec("10"), "USD");
        let host = FakeHost::new().earlier_n(10, "src", "2026-01-05T09:30:00Z", "1");
        assert_eq!(host.score::<Velocity>(&tx), Score::new(400, "HIGH_VELOCITY"));
    }
}
