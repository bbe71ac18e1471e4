//! Budgets and containment: hostile guests (tests/guests/hostile) that loop,
//! hoard memory, panic, return garbage or keep global state. Each failure
//! must follow the rule's `on_error`, be named in the trace, and leave the
//! host serving: the next transaction, on the same sandbox, is unaffected.

use rulehost::decision::Record;

use crate::support::{TempRuleSet, run, value};

const ACCOUNTS: &str = r#"{"id":"a","currency":"USD","country":"US","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"0","opening_balance":"1000"}
{"id":"b","currency":"USD","country":"US","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"0"}
"#;

/// Three small payments a → b.
fn transactions(n: usize) -> String {
    (1..=n)
        .map(|i| format!(r#"{{"id":"t{i}","timestamp":"2026-01-05T10:0{i}:00Z","kind":"payment","source":"a","destination":"b","amount":"10.00","currency":"USD","merchant_category":"7995"}}"#))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A rule set: the hostile rule in `mode` with `budget` and `on_error`, then
/// the shipped merchant-category rule (which must keep working).
fn manifest(mode: &str, budget: &str, on_error: &str) -> String {
    format!(
        r#"
[[rule]]
name = "hostile"
kind = "risk"
module = "modules/hostile.wasm"
on_error = "{on_error}"
[rule.budget]
{budget}
[rule.params]
mode = "{mode}"

[[rule]]
name = "merchant-category"
kind = "risk"
module = "modules/merchant-category.wasm"
[rule.params]
high_risk_mcc = ["7995"]
"#
    )
}

/// Runs three transactions through `mode` and returns their records.
fn scenario(mode: &str, budget: &str, on_error: &str) -> Vec<Record> {
    let set = TempRuleSet::new(&manifest(mode, budget, on_error));
    let ruleset = set.load();
    run(&ruleset, ACCOUNTS, &transactions(3)).0
}

/// Asserts every record failed with `kind` under on_error = review, and the
/// well-behaved rule still scored.
fn assert_failed(records: &[Record], kind: &str, message_part: &str) {
    assert_eq!(records.len(), 3);
    for r in records {
        let v = value(r);
        assert_eq!(v["outcome"], "review", "{v}");
        assert_eq!(v["reasons"], serde_json::json!(["RULE_FAILED", "HIGH_RISK_MCC"]), "{v}");
        assert_eq!(v["rules"][0]["result"], "failed", "{v}");
        assert_eq!(v["rules"][0]["failure"], kind, "{v}");
        assert!(v["rules"][0]["message"].as_str().unwrap().contains(message_part), "{v}");
        assert_eq!(v["rules"][1]["score"], 200, "{v}");
        assert_eq!(v["ledger"], "held");
    }
    healthy_afterwards();
}

/// The same sandbox still serves a well-behaved rule set normally.
fn healthy_afterwards() {
    let records = scenario("ok", "", "review");
    for r in &records {
        let v = value(r);
        assert_eq!(v["outcome"], "approve", "{v}");
        assert_eq!(v["score"], 210);
    }
}

#[test]
fn infinite_loop_is_stopped_by_fuel() {
    let records = scenario("loop", "fuel_max = 200000", "review");
    assert_failed(&records, "fuel", "fuel");
    let v = value(&records[0]);
    assert_eq!(v["rules"][0]["fuel"], 200000, "the whole budget is used and reported");
}

#[test]
fn loop_with_huge_fuel_is_stopped_by_the_deadline() {
    let started = std::time::Instant::now();
    let records = scenario("loop", "fuel_max = 10000000000\ndeadline_ms = 20", "review");
    assert_failed(&records, "deadline", "deadline");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "deadlines bound the wall time");
}

#[test]
fn memory_bomb_is_stopped_by_the_cap() {
    let records =
        scenario("memory", "memory_bytes_max = 4194304\nfuel_max = 1000000000\ndeadline_ms = 10000", "review");
    assert_failed(&records, "memory", "4194304");
}

#[test]
fn panic_is_a_trap_with_the_guest_message() {
    let records = scenario("panic", "", "review");
    assert_failed(&records, "trap", "hostile rule panics on t");
}

#[test]
fn out_of_range_score_is_invalid_output() {
    assert_failed(&scenario("score", "", "review"), "invalid-output", "5000");
}

#[test]
fn giant_reason_list_is_invalid_output() {
    assert_failed(
        &scenario("reasons", "fuel_max = 1000000000\ndeadline_ms = 10000", "review"),
        "invalid-output",
        "reasons exceed",
    );
}

#[test]
fn malformed_reason_code_is_invalid_output() {
    assert_failed(&scenario("bad-code", "", "review"), "invalid-output", "not-a-code");
}

#[test]
fn undeclared_history_window_traps() {
    assert_failed(&scenario("history", "", "review"), "trap", "declared maximum");
}

#[test]
fn on_error_reject_rejects_with_rule_failed() {
    for r in scenario("panic", "", "reject") {
        let v = value(&r);
        assert_eq!(v["outcome"], "reject", "{v}");
        assert_eq!(v["reasons"], serde_json::json!(["RULE_FAILED"]));
        assert_eq!(v["ledger"], "none");
        assert_eq!(v["rules"][0]["on_error"], "reject");
    }
}

#[test]
fn on_error_ignore_skips_the_rule() {
    for r in scenario("panic", "", "ignore") {
        let v = value(&r);
        assert_eq!(v["outcome"], "approve", "{v}");
        assert_eq!(v["reasons"], serde_json::json!(["HIGH_RISK_MCC"]));
        assert_eq!(v["rules"][0]["failure"], "trap", "the trace still names the failure");
    }
}

#[test]
fn global_counter_never_leaks_between_evaluations() {
    for r in scenario("counter", "", "review") {
        let v = value(&r);
        assert_eq!(v["rules"][0]["score"], 1, "every call starts from the post-instantiation state: {v}");
    }
}

#[test]
fn ambient_authority_is_denied_deterministically() {
    // Clock reads the epoch, no environment, no files; randomness is fixed.
    // The rule is `std` (it imports WASI), so it runs in a fresh component
    // instance per call: its static counter stays at 1.
    let set = TempRuleSet::new(
        r#"
[[rule]]
name = "ambient"
kind = "risk"
module = "modules/ambient.wasm"
"#,
    );
    let ruleset = set.load();
    let why = match ruleset.rules[0].compiled.isolation() {
        rulehost::sandbox::Isolation::Fresh(why) => why,
        other => panic!("a std rule is not resettable: {other:?}"),
    };
    assert!(why.contains("wasi"), "{why}");
    for r in run(&ruleset, ACCOUNTS, &transactions(3)).0 {
        let v = value(&r);
        assert_eq!(v["rules"][0]["result"], "score", "{v}");
        assert_eq!(v["rules"][0]["score"], 1, "{v}");
        assert_eq!(v["rules"][0]["reasons"], serde_json::json!(["AMBIENT"]), "{v}");
    }
}

#[test]
fn log_output_is_capped() {
    for r in scenario("log", "", "review") {
        let v = value(&r);
        let logs = v["rules"][0]["logs"].as_array().unwrap();
        let bytes: usize = logs.iter().map(|l| l["message"].as_str().unwrap().len()).sum();
        assert!(bytes <= rulehost::sandbox::LOG_BYTES_PER_EVALUATION_MAX, "{bytes}");
        assert!(logs.iter().all(|l| l["message"].as_str().unwrap().len() <= rulehost::sandbox::LOG_BYTES_PER_CALL_MAX));
        assert!(!logs.is_empty());
    }
}
