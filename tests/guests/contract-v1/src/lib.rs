//! A risk rule built directly against the frozen contract
//! `rulehost:rules@1.0.0` (`wit/v1/rulehost.wit`), as rules built with the
//! 0.1 SDK were: `evaluate` receives the transaction as a WIT record. The
//! host loads it beside 2.0.0 rules (`tests/all/contracts.rs`).
//!
//! Scores 50 — `V1_FOREIGN` — when the transaction has a country that
//! differs from the source account's, and 25 — `V1_MCC` — when the
//! merchant category is in the `mcc` list parameter; it reads every field
//! of the record, so a wrong lowering shows.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../../wit/v1/rulehost.wit", world: "rule-world" });

    use exports::rulehost::rules::rule::{Guest, ParamSpec, RiskScore, RuleInfo, RuleKind, Verdict};
    use rulehost::rules::host;
    use rulehost::rules::types::{ParamType, ParamValue, Transaction};

    struct Rule;

    impl Guest for Rule {
        fn describe() -> RuleInfo {
            RuleInfo {
                kind: RuleKind::Risk,
                params: vec![ParamSpec { name: "mcc".into(), type_: ParamType::TextList }],
                lists: Vec::new(),
                history_window_seconds_max: 0,
            }
        }

        fn evaluate(tx: Transaction) -> Verdict {
            let mut score = 0;
            let mut reasons = Vec::new();
            if let (Some(country), Some(account)) = (&tx.country, host::account(&tx.source))
                && *country != account.country
            {
                score += 50;
                reasons.push("V1_FOREIGN".to_string());
            }
            if let (Some(mcc), Some(ParamValue::TextList(list))) = (&tx.merchant_category, host::param("mcc"))
                && list.contains(mcc)
            {
                score += 25;
                reasons.push("V1_MCC".to_string());
            }
            // Every field must have arrived; an empty id or currency would be a
            // broken lowering.
            if tx.id.is_empty() || tx.currency.is_empty() || tx.destination.is_empty() || tx.timestamp.seconds == 0 {
                return Verdict::Score(RiskScore { score: 999, reasons: vec!["V1_BROKEN".into()] });
            }
            Verdict::Score(RiskScore { score, reasons })
        }
    }

    export!(Rule);
}
