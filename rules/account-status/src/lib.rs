//! `account-status`: rejects with `ACCOUNT_INACTIVE` when the source or the
//! destination account is not `active` (frozen, closed, or unknown).

#![cfg_attr(target_arch = "wasm32", no_std)]

use rulehost_guest::prelude::*;
use rulehost_guest::{AccountStatus, RuleInfo, Transaction, Validation, ValidationRule, account};

/// The `account-status` validation rule.
pub struct AccountStatusRule;

impl ValidationRule for AccountStatusRule {
    fn declare() -> RuleInfo {
        RuleInfo::new()
    }

    fn validate(tx: &Transaction) -> Validation {
        for id in [&tx.source, &tx.destination] {
            // The host's pre-checks guarantee both accounts exist; an unknown
            // one is treated as inactive rather than trusted.
            let status = account(id).map(|a| a.status);
            if status != Some(AccountStatus::Active) {
                return Validation::reject("ACCOUNT_INACTIVE", format!("account {id} is not active ({status:?})"));
            }
        }
        Validation::Accept
    }
}

rulehost_guest::export_validation_rule!(AccountStatusRule);
rulehost_guest::no_std_runtime!();

#[cfg(test)]
mod tests {
    use super::*;
    use rulehost_guest::testing::{FakeHost, account as acc, dec, ts};

    fn with_status(id: &str, status: AccountStatus) -> rulehost_guest::Account {
        let mut a = acc(id, "USD", "US", "2025-01-01T00:00:00Z");
        a.status = status;
        a
    }

    #[test]
    fn cases() {
        use AccountStatus::*;
        // (source status, destination status, accepted)
        let cases = [
            (Some(Active), Some(Active), true),
            (Some(Frozen), Some(Active), false),
            (Some(Closed), Some(Active), false),
            (Some(Active), Some(Frozen), false),
            (Some(Active), Some(Closed), false),
            (None, Some(Active), false),
            (Some(Active), None, false),
        ];
        for (src, dst, accepted) in cases {
            let mut host = FakeHost::new();
            if let Some(s) = src {
                host = host.account(with_status("src", s));
            }
            if let Some(s) = dst {
                host = host.account(with_status("dst", s));
            }
            let tx = Transaction::payment("t", ts("2026-01-05T10:00:00Z"), "src", "dst", dec("10"), "USD");
            let got = host.validate::<AccountStatusRule>(&tx);
            if accepted {
                assert_eq!(got, Validation::Accept, "{src:?} {dst:?}");
            } else {
                assert!(
                    matches!(&got, Validation::Reject { code, .. } if code == "ACCOUNT_INACTIVE"),
                    "{src:?} {dst:?}: {got:?}"
                );
            }
        }
    }
}
