//! `large-amount`: 300 if the amount is at least the currency's large
//! threshold `T` (`large_threshold`) — `LARGE_AMOUNT`.

#![cfg_attr(target_arch = "wasm32", no_std)]

use rulehost_guest::{ParamType, RiskRule, RuleInfo, Score, Transaction, params};

/// The `large-amount` risk rule.
pub struct LargeAmount;

impl RiskRule for LargeAmount {
    fn declare() -> RuleInfo {
        RuleInfo::new().param("large_threshold", ParamType::DecimalMap)
    }

    fn score(tx: &Transaction) -> Score {
        match params::decimal_entry("large_threshold", &tx.currency) {
            Some(threshold) if tx.amount >= threshold => Score::new(300, "LARGE_AMOUNT"),
            _ => Score::zero(),
        }
    }
}

rulehost_guest::export_risk_rule!(LargeAmount);
rulehost_guest::no_std_runtime!();

#[cfg(test)]
mod tests {
    use super::*;
    use rulehost_guest::testing::{FakeHost, dec, ts};

    #[test]
    fn cases() {
        let host =
            FakeHost::new().decimal_map("large_threshold", &[("USD", "10000"), ("JPY", "1500000"), ("BHD", "4000")]);
        let cases = [
            ("USD", "9999.99", 0),
            ("USD", "10000", 300),
            ("USD", "10000.00", 300),
            ("USD", "50000", 300),
            ("JPY", "1499999", 0),
            ("JPY", "1500000", 300),
            ("BHD", "3999.999", 0),
            ("BHD", "4000.000", 300),
            ("XXX", "999999", 0),
        ];
        for (currency, amount, expected) in cases {
            let tx = Transaction::payment("t", ts("2026-01-05T10:00:00Z"), "a", "b", dec(amount), currency);
            let got = host.score::<LargeAmount>(&tx);
            assert_eq!(got.score, expected, "{currency} {amount}");
            assert_eq!(got.reasons.is_empty(), expected == 0);
        }
    }
}
