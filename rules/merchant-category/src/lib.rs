//! `merchant-category`: 200 if `merchant_category` is in `high_risk_mcc` —
//! `HIGH_RISK_MCC`.

#![cfg_attr(target_arch = "wasm32", no_std)]

use rulehost_guest::{ParamType, RiskRule, RuleInfo, Score, Transaction, params};

/// The `merchant-category` risk rule.
pub struct MerchantCategory;

impl RiskRule for MerchantCategory {
    fn declare() -> RuleInfo {
        RuleInfo::new().param("high_risk_mcc", ParamType::TextList)
    }

    fn score(tx: &Transaction) -> Score {
        match &tx.merchant_category {
            Some(mcc) if params::text_list("high_risk_mcc").iter().any(|m| m == mcc) => {
                Score::new(200, "HIGH_RISK_MCC")
            }
            _ => Score::zero(),
        }
    }
}

rulehost_guest::export_risk_rule!(MerchantCategory);
rulehost_guest::no_std_runtime!();

#[cfg(test)]
mod tests {
    use super::*;
    use rulehost_guest::testing::{FakeHost, dec, ts};

    #[test]
    fn cases() {
        let host = FakeHost::new().text_list("high_risk_mcc", &["7995", "6051", "4829", "5967", "6211"]);
        for (mcc, expected) in
            [(None, 0), (Some("5411"), 0), (Some("7995"), 200), (Some("6211"), 200), (Some("79950"), 0)]
        {
            let mut tx = Transaction::payment("t", ts("2026-01-05T10:00:00Z"), "a", "b", dec("10"), "USD");
            tx.merchant_category = mcc.map(str::to_owned);
            assert_eq!(host.score::<MerchantCategory>(&tx).score, expected, "{mcc:?}");
        }
    }
}
