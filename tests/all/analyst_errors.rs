//! The mistakes an analyst makes get a message that says what is wrong and
//! how to fix it, naming the rule (and key): a module built against another
//! WIT version, a missing export, the wrong kind, a mistyped or missing
//! parameter, a missing list, a broken pin, bytes that are not a component.

use rulehost::ruleset::RuleSet;

use crate::support::{TempRuleSet, module, sandbox};

fn load_error(manifest: &str, prepare: impl FnOnce(&std::path::Path)) -> String {
    let set = TempRuleSet::new(manifest);
    prepare(set.dir.path());
    match RuleSet::load(&sandbox(), set.dir.path()) {
        Ok(_) => panic!("the rule set loaded"),
        Err(e) => e.to_string(),
    }
}

fn rule(name: &str, kind: &str, module: &str, extra: &str) -> String {
    format!("[[rule]]\nname = \"{name}\"\nkind = \"{kind}\"\nmodule = \"{module}\"\n{extra}\n")
}

fn assert_says(message: &str, needles: &[&str]) {
    for n in needles {
        assert!(message.contains(n), "{n:?} not in: {message}");
    }
}

#[test]
fn module_built_against_another_wit_version() {
    let e = load_error(&rule("future", "risk", "modules/future.wasm", ""), |dir| {
        std::fs::copy(module("guest-wit-future"), dir.join("modules/future.wasm")).unwrap();
    });
    assert_says(&e, &["rule `future`", "rulehost:rules/host@3.0.0", "rulehost:rules@2.0.0", "rebuild the rule"]);
}

#[test]
fn module_without_the_rule_export() {
    let e = load_error(&rule("plain", "risk", "modules/plain.wasm", ""), |dir| {
        std::fs::copy(module("guest-no-export"), dir.join("modules/plain.wasm")).unwrap();
    });
    assert_says(&e, &["rule `plain`", "does not export `rulehost:rules/rule@2.0.0`", "export_risk_rule!"]);
}

#[test]
fn wrong_kind_in_the_manifest() {
    let e = load_error(&rule("velocity", "validation", "modules/velocity.wasm", ""), |_| {});
    assert_says(&e, &["rule `velocity`", "kind = \"validation\"", "is a risk rule", "set kind = \"risk\""]);
}

#[test]
fn parameter_of_the_wrong_type() {
    let extra = "[rule.params]\nlarge_threshold = \"10000\"";
    let e = load_error(&rule("large-amount", "risk", "modules/large-amount.wasm", extra), |_| {});
    assert_says(&e, &["rule `large-amount`", "parameter `large_threshold` must be decimal-map", "large_threshold = {"]);
}

#[test]
fn missing_and_unknown_parameters() {
    let e = load_error(&rule("large-amount", "risk", "modules/large-amount.wasm", ""), |_| {});
    assert_says(&e, &["rule `large-amount`", "missing parameter `large_threshold`"]);
    let extra = "[rule.params]\nlarge_threshold = { USD = \"1\" }\nlarge_treshold = 5";
    let e = load_error(&rule("large-amount", "risk", "modules/large-amount.wasm", extra), |_| {});
    assert_says(&e, &["unknown parameter `large_treshold`", "large_threshold"]);
}

#[test]
fn missing_list() {
    let extra = "[rule.params]\nblocked_countries = []";
    let e = load_error(&rule("sanctions", "validation", "modules/sanctions.wasm", extra), |dir| {
        std::fs::remove_file(dir.join("lists/blocked-accounts.txt")).unwrap();
    });
    assert_says(&e, &["rule `sanctions`", "list `blocked-accounts`", "blocked-accounts.txt does not exist"]);
}

#[test]
fn broken_pin_and_bytes_that_are_not_a_component() {
    let pin = format!("sha256 = \"{}\"", "0".repeat(64));
    let e = load_error(&rule("velocity", "risk", "modules/velocity.wasm", &pin), |_| {});
    assert_says(&e, &["rule `velocity`", "the manifest pins 0000", "rebuild the module or update the pin"]);
    let e = load_error(&rule("junk", "risk", "modules/junk.wasm", ""), |dir| {
        std::fs::write(dir.join("modules/junk.wasm"), b"definitely not wasm").unwrap();
    });
    assert_says(&e, &["rule `junk`", "not a valid Wasm component"]);
    let e = load_error(&rule("gone", "risk", "modules/gone.wasm", ""), |_| {});
    assert_says(&e, &["modules/gone.wasm", "No such file"]);
}
