//! `new-account`: 250 if the source account is younger than 7 days at the
//! transaction's timestamp (`t − opened_at < 604800 s`; a transaction dated
//! before the account opened counts as younger) and the amount is at least
//! the currency's `new_account_amount` — `NEW_ACCOUNT_LARGE`.

#![cfg_attr(target_arch = "wasm32", no_std)]

use rulehost_guest::{ParamType, RiskRule, RuleInfo, Score, Timestamp, Transaction, account, params};

/// The `new-account` risk rule.
pub struct NewAccount;

/// An account younger than this, in seconds, is new.
const NEW_ACCOUNT_AGE_SECONDS: i128 = 604_800;

impl RiskRule for NewAccount {
    fn declare() -> RuleInfo {
        RuleInfo::new().param("new_account_amount", ParamType::DecimalMap)
    }

    fn score(tx: &Transaction) -> Score {
        let Some(limit) = params::decimal_entry("new_account_amount", &tx.currency) else {
            return Score::zero();
        };
        if tx.amount < limit {
            return Score::zero();
        }
        let Some(source) = account(&tx.source) else {
            return Score::zero();
        };
        let age_nanos = tx.timestamp.nanos_since(source.opened_at);
        if age_nanos < NEW_ACCOUNT_AGE_SECONDS * Timestamp::NANOS_PER_SECOND {
            Score::new(250, "NEW_ACCOUNT_LARGE")
        } else {
            Score::zero()
        }
    }
}

rulehost_guest::export_risk_rule!(NewAccount);
rulehost_guest::no_std_runtime!();

#[cfg(test)]
mod tests {
    use super::*;
    use rulehost_guest::testing::{FakeHost, account as acc, dec, ts};

    fn score(opened_at: &str, at: &str, amount: &str) -> u32 {
        let host = FakeHost::new()
            .decimal_map("new_account_amount", &[("USD", "1000"), ("GBP", "800")])
            .account(acc("src", "USD", "US", opened_at));
        let tx = Transaction::payment("t", ts(at), "src", "dst", dec(amount), "USD");
        host.score::<NewAccount>(&tx).score
    }

    #[test]
    fn seven_day_edge() {
        let opened = "2026-01-01T00:00:00Z";
        assert_eq!(score(opened, "2026-01-07T23:59:59.999999999Z", "1000"), 250);
        assert_eq!(score(opened, "2026-01-08T00:00:00Z", "1000"), 0);
        assert_eq!(score(opened, "2026-01-01T00:00:00Z", "1000"), 250);
        assert_eq!(score(opened, "2025-12-31T00:00:00Z", "1000"), 250, "before opening counts as young");
    }

    #[test]
    fn amount_edge() {
        let opened = "2026-01-01T00:00:00Z";
        assert_eq!(score(opened, "2026-01-02T00:00:00Z", "999.99"), 0);
        assert_eq!(score(opened, "2026-01-02T00:00:00Z", "1000.00"), 250);
    }

    #[test]
    fn unknown_currency_scores_nothing() {
        let host = FakeHost::new().decimal_map("new_account_amount", &[("USD", "1000")]).account(acc(
            "src",
            "XXX",
            "US",
            "2026-01-01T00:00:00Z",
        ));
        let tx = Transaction::payment("t", ts("2026-01-02T00:00:00Z"), "src", "dst", dec("99999"), "XXX");
        assert_eq!(host.score::<NewAccount>(&tx), Score::zero());
    }
}
