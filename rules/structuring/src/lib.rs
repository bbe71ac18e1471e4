//! `structuring`: for an amount in `[0.9·T, T)`, `k` = the source's earlier
//! transactions in the last 24 hours with amount in `[0.9·T, T)`; 500 if
//! `k + 1 ≥ 3` — `STRUCTURING`. `T` is the currency's `large_threshold`.

#![cfg_attr(target_arch = "wasm32", no_std)]

use rulehost_guest::{Decimal, ParamType, RiskRule, RuleInfo, Score, Transaction, history, params};

/// The `structuring` risk rule.
pub struct Structuring;

/// The window counted, in seconds.
const WINDOW_SECONDS: u64 = 86_400;

impl RiskRule for Structuring {
    fn declare() -> RuleInfo {
        RuleInfo::new().param("large_threshold", ParamType::DecimalMap).history_window_seconds(WINDOW_SECONDS)
    }

    fn score(tx: &Transaction) -> Score {
        let Some(threshold) = params::decimal_entry("large_threshold", &tx.currency) else {
            return Score::zero();
        };
        let low = threshold * Decimal::new(9, 1);
        if tx.amount < low || tx.amount >= threshold {
            return Score::zero();
        }
        let k = history(&tx.source, WINDOW_SECONDS, Some((low, threshold))).count;
        if k + 1 >= 3 { Score::new(500, "STRUCTURING") } else { Score::zero() }
    }
}

rulehost_guest::export_risk_rule!(Structuring);
rulehost_guest::no_std_runtime!();

#[cfg(test)]
mod tests {
    use super::*;
    use rulehost_guest::testing::{FakeHost, dec, ts};

    fn score(host: FakeHost, amount: &str) -> u32 {
        let host = host.decimal_map("large_threshold", &[("USD", "10000"), ("JPY", "1500000")]);
        let tx = Transaction::payment("t", ts("2026-01-05T10:00:00Z"), "src", "dst", dec(amount), "USD");
        host.score::<Structuring>(&tx).score
    }

    #[test]
    fn band_edges() {
        let two = || FakeHost::new().earlier_n(2, "src", "2026-01-05T08:00:00Z", "9500");
        assert_eq!(score(two(), "8999.99"), 0);
        assert_eq!(score(two(), "9000"), 500);
        assert_eq!(score(two(), "9000.00"), 500);
        assert_eq!(score(two(), "9999.99"), 500);
        assert_eq!(score(two(), "10000"), 0);
    }

    #[test]
    fn needs_two_earlier_in_band() {
        for (k, expected) in [(0, 0), (1, 0), (2, 500), (5, 500)] {
            let host = FakeHost::new().earlier_n(k, "src", "2026-01-05T08:00:00Z", "9000");
            assert_eq!(score(host, "9500"), expected, "k = {k}");
        }
    }

    #[test]
    fn earlier_amounts_outside_band_do_not_count() {
        let host = FakeHost::new()
            .earlier("src", "2026-01-05T08:00:00Z", "8999.99")
            .earlier("src", "2026-01-05T08:00:00Z", "10000")
            .earlier("src", "2026-01-05T08:00:00Z", "9000");
        assert_eq!(score(host, "9500"), 0);
    }

    #[test]
    fn window_is_24_hours() {
        let outside = FakeHost::new().earlier_n(2, "src", "2026-01-04T10:00:00Z", "9500");
        assert_eq!(score(outside, "9500"), 0);
        let inside = FakeHost::new().earlier_n(2, "src", "2026-01-04T10:00:01Z", "9500");
        assert_eq!(score(inside, "9500"), 500);
    }

    #[test]
    fn other_currency_band() {
        let host = FakeHost::new().decimal_map("large_threshold", &[("JPY", "1500000")]).earlier_n(
            2,
            "src",
            "2026-01-05T09:00:00Z",
            "1400000",
        );
        let tx = Transaction::payment("t", ts("2026-01-05T10:00:00Z"), "src", "dst", dec("1350000"), "JPY");
        assert_eq!(host.score::<Structuring>(&tx), Score::new(500, "STRUCTURING"));
    }
}
