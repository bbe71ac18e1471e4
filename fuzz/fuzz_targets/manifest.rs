//! Any text as `manifest.toml`: an error naming the rule and key, or a
//! manifest whose every limit holds — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulehost::manifest::{Manifest, RULES_MAX, WEIGHT_MAX};
use rust_decimal::Decimal;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(m) = Manifest::parse("manifest.toml", text) else { return };
    assert!(m.review_at <= m.decline_at && m.decline_at <= 1000);
    assert!(!m.rules.is_empty() && m.rules.len() <= RULES_MAX);
    for r in &m.rules {
        assert!(r.weight >= Decimal::ZERO && r.weight <= Decimal::from(WEIGHT_MAX));
        assert!(r.budget.check().is_ok());
    }
});
