//! `geo-mismatch`: two independent parts, added. 100 if the transaction has a
//! country and it differs from the source account's — `FOREIGN_COUNTRY`; 200
//! if the transaction's country is in `high_risk_countries`, whether or not it
//! differs — `HIGH_RISK_COUNTRY`. Country codes compare exactly.

#![cfg_attr(target_arch = "wasm32", no_std)]

use rulehost_guest::{ParamType, RiskRule, RuleInfo, Score, Transaction, account, params};

/// The `geo-mismatch` risk rule.
pub struct GeoMismatch;

impl RiskRule for GeoMismatch {
    fn declare() -> RuleInfo {
        RuleInfo::new().param("high_risk_countries", ParamType::TextList)
    }

    fn score(tx: &Transaction) -> Score {
        let Some(country) = &tx.country else {
            return Score::zero();
        };
        let mut score = Score::zero();
        if account(&tx.source).is_some_and(|a| &a.country != country) {
            score = score.add(100, "FOREIGN_COUNTRY");
        }
        if params::text_list("high_risk_countries").iter().any(|c| c == country) {
            score = score.add(200, "HIGH_RISK_COUNTRY");
        }
        score
    }
}

rulehost_guest::export_risk_rule!(GeoMismatch);
rulehost_guest::no_std_runtime!();

#[cfg(test)]
mod tests {
    use super::*;
    use rulehost_guest::testing::{FakeHost, account as acc, dec, ts};

    #[test]
    fn cases() {
        // (account country, tx country, score, reasons)
        let cases: [(&str, Option<&str>, u32, &[&str]); 6] = [
            ("US", None, 0, &[]),
            ("US", Some("US"), 0, &[]),
            ("US", Some("FR"), 100, &["FOREIGN_COUNTRY"]),
            ("US", Some("RU"), 300, &["FOREIGN_COUNTRY", "HIGH_RISK_COUNTRY"]),
            ("RU", Some("RU"), 200, &["HIGH_RISK_COUNTRY"]),
            ("US", Some("us"), 100, &["FOREIGN_COUNTRY"]),
        ];
        for (home, country, expected, reasons) in cases {
            let host = FakeHost::new().text_list("high_risk_countries", &["RU", "BY", "MM", "VE", "AF"]).account(acc(
                "src",
                "USD",
                home,
                "2025-01-01T00:00:00Z",
            ));
            let mut tx = Transaction::payment("t", ts("2026-01-05T10:00:00Z"), "src", "dst", dec("10"), "USD");
            tx.country = country.map(str::to_owned);
            let got = host.score::<GeoMismatch>(&tx);
            assert_eq!(got.score, expected, "{home} {country:?}");
            assert_eq!(got.reasons, reasons.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
    }
}
