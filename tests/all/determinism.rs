//! Determinism: the same input and rule set give byte-identical output, fuel
//! included, run after run — on generated traffic with every pattern.

use crate::support::{TempRuleSet, generated, jsonl, run};

#[test]
fn same_input_twice_gives_identical_bytes() {
    let (accounts, transactions) = generated(11, 300, 4_000);
    let set = TempRuleSet::example();
    let first = jsonl(&run(&set.load(), &accounts, &transactions).0);
    // A second load of the same folder: a fresh compile, same bytes out.
    let second = jsonl(&run(&set.load(), &accounts, &transactions).0);
    assert_eq!(first.len(), second.len());
    assert!(first == second, "two runs differ");
    assert_eq!(first.lines().count(), 4_000);
}

#[test]
fn parallel_run_equals_one_by_one() {
    // Few accounts, so concurrent evaluations often read what an earlier
    // transaction writes and must be redone: the output must not show it.
    let (accounts, transactions) = generated(5, 40, 3_000);
    let set = TempRuleSet::example();
    let ruleset = std::sync::Arc::new(set.load());
    let one_by_one = jsonl(&run(&ruleset, &accounts, &transactions).0);
    for threads in [1, 2, 4] {
        let pipeline =
            rulehost::pipeline::Pipeline::new(crate::support::sandbox(), crate::support::ledger(&accounts, &ruleset));
        let options = rulehost::run::RunOptions { threads, window_per_thread: 8 };
        let mut out = Vec::new();
        let summary =
            rulehost::run::run_stream(&pipeline, &ruleset, transactions.as_bytes(), &mut out, &options, None).unwrap();
        assert_eq!(summary.lines, 3_000);
        assert!(String::from_utf8(out).unwrap() == one_by_one, "{threads} threads differ from one by one");
    }
}
