//! Any text as an accounts file, imported into a fresh ledger: an error
//! naming line and field, or accounts whose balances sum to zero per
//! currency (equity included) — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulehost::input::parse_accounts;
use rulehost::ledger::{Ledger, MemoryLedger, equity_account};
use rust_decimal::Decimal;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(accounts) = parse_accounts(text) else { return };
    let mut ledger = MemoryLedger::default();
    if ledger.import_accounts(&accounts).is_err() {
        assert!(ledger.account_ids().is_empty(), "a failed import imports nothing");
        return;
    }
    let mut currencies: Vec<&str> = accounts.iter().map(|a| a.currency.as_str()).collect();
    currencies.sort_unstable();
    currencies.dedup();
    for c in currencies {
        let mut sum = ledger.system_balance(&equity_account(c));
        for a in accounts.iter().filter(|a| a.currency == c) {
            sum += ledger.balances(&a.id).expect("imported").posted;
        }
        assert_eq!(sum, Decimal::ZERO, "{c} does not balance");
    }
});
