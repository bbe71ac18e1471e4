//! Determinism: the same input and rule set give byte-identical output, fuel
//! included, run after run — on generated traffic with every pattern.

use rulehost::generate::{GenConfig, generate};

use crate::support::{TempRuleSet, jsonl, run};

#[test]
fn same_input_twice_gives_identical_bytes() {
    let config = GenConfig { seed: 11, accounts: 300, transactions: 4_000, ..GenConfig::default() };
    let (mut accounts, mut transactions) = (Vec::new(), Vec::new());
    generate(&config, &mut accounts, &mut transactions).unwrap();
    let (accounts, transactions) = (String::from_utf8(accounts).unwrap(), String::from_utf8(transactions).unwrap());
    let set = TempRuleSet::example();
    let first = jsonl(&run(&set.load(), &accounts, &transactions).0);
    // A second load of the same folder: a fresh compile, same bytes out.
    let second = jsonl(&run(&set.load(), &accounts, &transactions).0);
    assert_eq!(first.len(), second.len());
    assert!(first == second, "two runs differ");
    assert_eq!(first.lines().count(), 4_000);
}
