//! `amount-format`: rejects unsupported currencies and malformed amounts.
//!
//! - `CURRENCY_UNSUPPORTED`: the currency is not in `minor_units`.
//! - `AMOUNT_INVALID`: amount ≤ 0, or more significant decimal places than
//!   the currency's minor units (trailing zeros do not count).
//! - `AMOUNT_TOO_LARGE`: amount > `max_amount` of the currency.

#![cfg_attr(target_arch = "wasm32", no_std)]

use rulehost_guest::prelude::*;
use rulehost_guest::{ParamType, RuleInfo, Transaction, Validation, ValidationRule, params};

/// The `amount-format` validation rule.
pub struct AmountFormat;

impl ValidationRule for AmountFormat {
    fn declare() -> RuleInfo {
        RuleInfo::new().param("minor_units", ParamType::IntegerMap).param("max_amount", ParamType::DecimalMap)
    }

    fn validate(tx: &Transaction) -> Validation {
        let Some(minor_units) = params::integer_entry("minor_units", &tx.currency) else {
            return Validation::reject("CURRENCY_UNSUPPORTED", format!("currency {} is not supported", tx.currency));
        };
        if tx.amount <= rulehost_guest::Decimal::ZERO {
            return Validation::reject("AMOUNT_INVALID", "amount must be positive");
        }
        // `normalize` drops trailing zeros: 125.500 has 1 significant place.
        let places = i64::from(tx.amount.normalize().scale());
        if places > minor_units {
            return Validation::reject(
                "AMOUNT_INVALID",
                format!("{} has {places} decimal places, {} allows {minor_units}", tx.amount, tx.currency),
            );
        }
        match params::decimal_entry("max_amount", &tx.currency) {
            Some(max) if tx.amount > max => Validation::reject(
                "AMOUNT_TOO_LARGE",
                format!("{} exceeds the maximum {max} {}", tx.amount, tx.currency),
            ),
            _ => Validation::Accept,
        }
    }
}

rulehost_guest::export_validation_rule!(AmountFormat);
rulehost_guest::no_std_runtime!();

#[cfg(test)]
mod tests {
    use super::*;
    use rulehost_guest::testing::{FakeHost, dec, ts};

    fn host() -> FakeHost {
        FakeHost::new()
            .integer_map("minor_units", &[("USD", 2), ("JPY", 0), ("BHD", 3), ("GBP", 2)])
            .decimal_map("max_amount", &[("USD", "50000"), ("JPY", "7000000"), ("BHD", "20000"), ("GBP", "40000")])
    }

    #[test]
    fn cases() {
        // (currency, amount, expected code or "" for accept)
        let cases = [
            ("USD", "125.50", ""),
            ("USD", "125.500", ""),
            ("USD", "125.505", "AMOUNT_INVALID"),
            ("USD", "0.01", ""),
            ("USD", "0", "AMOUNT_INVALID"),
            ("USD", "0.00", "AMOUNT_INVALID"),
            ("USD", "-5", "AMOUNT_INVALID"),
            ("USD", "50000", ""),
            ("USD", "50000.00", ""),
            ("USD", "50000.01", "AMOUNT_TOO_LARGE"),
            ("JPY", "1500", ""),
            ("JPY", "1500.0", ""),
            ("JPY", "1500.5", "AMOUNT_INVALID"),
            ("JPY", "7000001", "AMOUNT_TOO_LARGE"),
            ("BHD", "1.234", ""),
            ("BHD", "1.2345", "AMOUNT_INVALID"),
            ("GBP", "40000.01", "AMOUNT_TOO_LARGE"),
            ("XXX", "10", "CURRENCY_UNSUPPORTED"),
            ("usd", "10", "CURRENCY_UNSUPPORTED"),
            ("XXX", "-1", "CURRENCY_UNSUPPORTED"),
        ];
        for (currency, amount, expected) in cases {
            let tx = Transaction::payment("t", ts("2026-01-05T10:00:00Z"), "a", "b", dec(amount), currency);
            let got = host().validate::<AmountFormat>(&tx);
            match (expected, &got) {
                ("", Validation::Accept) => {}
                (code, Validation::Reject { code: got, .. }) if code == got => {}
                _ => panic!("{currency} {amount}: expected {expected:?}, got {got:?}"),
            }
        }
    }
}
