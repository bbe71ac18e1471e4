//! `sanctions`: rejects with `SANCTIONED` when the transaction's country is in
//! `blocked_countries`, or its source or destination is in the operator list
//! `blocked-accounts`.

#![cfg_attr(target_arch = "wasm32", no_std)]

use rulehost_guest::prelude::*;
use rulehost_guest::{ParamType, RuleInfo, Transaction, Validation, ValidationRule, list_contains, params};

/// The `sanctions` validation rule.
pub struct Sanctions;

/// The operator list of blocked account ids.
const BLOCKED_ACCOUNTS: &str = "blocked-accounts";

impl ValidationRule for Sanctions {
    fn declare() -> RuleInfo {
        RuleInfo::new().param("blocked_countries", ParamType::TextList).list(BLOCKED_ACCOUNTS)
    }

    fn validate(tx: &Transaction) -> Validation {
        if let Some(country) = &tx.country
            && params::text_list("blocked_countries").iter().any(|c| c == country)
        {
            return Validation::reject("SANCTIONED", format!("country {country} is sanctioned"));
        }
        for account in [&tx.source, &tx.destination] {
            if list_contains(BLOCKED_ACCOUNTS, account) {
                return Validation::reject("SANCTIONED", format!("account {account} is blocked"));
            }
        }
        Validation::Accept
    }
}

rulehost_guest::export_validation_rule!(Sanctions);
rulehost_guest::no_std_runtime!();

#[cfg(test)]
mod tests {
    use super::*;
    use rulehost_guest::testing::{FakeHost, dec, ts};

    #[test]
    fn cases() {
        let host = FakeHost::new()
            .text_list("blocked_countries", &["KP", "IR", "SY", "CU"])
            .list(BLOCKED_ACCOUNTS, &["acc-bad"]);
        // (country, source, destination, sanctioned)
        let cases = [
            (None, "a", "b", false),
            (Some("US"), "a", "b", false),
            (Some("KP"), "a", "b", true),
            (Some("CU"), "a", "b", true),
            (Some("kp"), "a", "b", false),
            (Some("US"), "acc-bad", "b", true),
            (Some("US"), "a", "acc-bad", true),
            (None, "acc-bad", "b", true),
            (Some("US"), "acc-bad2", "b", false),
        ];
        for (country, source, destination, sanctioned) in cases {
            let mut tx = Transaction::payment("t", ts("2026-01-05T10:00:00Z"), source, destination, dec("10"), "USD");
            tx.country = country.map(str::to_owned);
            let got = host.validate::<Sanctions>(&tx);
            let is_sanctioned = matches!(&got, Validation::Reject { code, .. } if code == "SANCTIONED");
            assert_eq!(is_sanctioned, sanctioned, "{country:?} {source} {destination}: {got:?}");
            assert!(is_sanctioned || got == Validation::Accept);
        }
    }
}
