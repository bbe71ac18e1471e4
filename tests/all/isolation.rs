//! Isolation of reused instances: after many calls — including calls that
//! trapped, ran out of fuel, hit the memory cap or grew memory — a rule's
//! reused instance holds exactly what a fresh one holds (memory and every
//! mutable global); the hostile guest's leak probes never see an earlier
//! call; a fresh instance of the direct path equals the component model's
//! own instance of the module; and reused instances decide exactly as fresh
//! component instances do.

use rulehost::decision::Record;
use rulehost::manifest::Budget;
use rulehost::ruleset::RuleSet;
use rulehost::sandbox::{InstanceState, Isolation, Sandbox, SandboxConfig};

use crate::support::{TempRuleSet, generated, module, run, sandbox, value};

const ACCOUNTS: &str = r#"{"id":"a","currency":"USD","country":"US","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"1000000","opening_balance":"1000"}
{"id":"b","currency":"USD","country":"US","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"0"}
"#;

/// The hostile rule between two shipped ones, with budgets that let every
/// failing mode fail quickly.
const HOSTILE_SET: &str = r#"
[[rule]]
name = "velocity"
kind = "risk"
module = "modules/velocity.wasm"

[[rule]]
name = "hostile"
kind = "risk"
module = "modules/hostile.wasm"
[rule.budget]
fuel_max = 300000
memory_bytes_max = 4194304
[rule.params]
mode = "ok"

[[rule]]
name = "merchant-category"
kind = "risk"
module = "modules/merchant-category.wasm"
[rule.params]
high_risk_mcc = ["7995"]
"#;

/// A payment whose metadata picks the hostile rule's mode. Every line has
/// the same shape, so every `ok` call does the same work.
fn tx(i: usize, mode: &str) -> String {
    format!(
        r#"{{"id":"t{i:05}","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"1.00","currency":"USD","merchant_category":"5411","metadata":{{"mode":"{mode}"}}}}"#
    )
}

/// Every way a call can end, interleaved with healthy calls.
const MODES: [&str; 9] = ["ok", "loop", "ok", "panic", "grow", "memory", "ok", "deep-trap", "counter"];

fn hostile_stream(n: usize) -> String {
    (0..n).map(|i| tx(i, MODES[i % MODES.len()])).collect::<Vec<_>>().join("\n")
}

#[test]
fn leak_probes_never_see_an_earlier_call() {
    let set = TempRuleSet::new(HOSTILE_SET);
    let ruleset = set.load();
    assert_eq!(ruleset.rules[1].compiled.isolation(), Isolation::Reset, "the hostile guest is resettable");
    let (records, _) = run(&ruleset, ACCOUNTS, &hostile_stream(270));
    let mut ok_fuel = Vec::new();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for r in &records {
        let v = value(r);
        let text = v.to_string();
        assert!(!text.contains("LEAK_"), "a call saw an earlier one: {text}");
        let hostile = &v["rules"][1];
        if let Some(kind) = hostile["failure"].as_str() {
            *failures.entry(kind.to_owned()).or_default() += 1;
        }
        if hostile["reasons"] == serde_json::json!(["HOSTILE_OK"]) {
            ok_fuel.push(hostile["fuel"].as_u64().unwrap());
        }
        if hostile["reasons"] == serde_json::json!(["COUNTER"]) {
            assert_eq!(hostile["score"], 1, "{text}");
        }
    }
    // Each failure kind happened, and a fresh instance after it behaves
    // exactly as the reused one before: the same work costs the same fuel.
    assert_eq!(failures.get("fuel"), Some(&30), "{failures:?}");
    assert_eq!(failures.get("trap"), Some(&60), "{failures:?}");
    assert_eq!(failures.get("memory"), Some(&30), "{failures:?}");
    assert_eq!(ok_fuel.len(), 90);
    assert!(ok_fuel.iter().all(|f| *f == ok_fuel[0]), "fuel differs between calls: {ok_fuel:?}");
}

/// Runs `lines` on this thread and compares each rule's reused instance
/// with a fresh one.
fn assert_reused_equals_fresh(ruleset: &RuleSet, accounts: &str, lines: &str) {
    let (records, _) = run(ruleset, accounts, lines);
    assert!(!records.is_empty());
    let sandbox = sandbox();
    for rule in &ruleset.rules {
        if rule.compiled.isolation() != Isolation::Reset {
            continue;
        }
        let (reused, fresh) = rule
            .compiled
            .compare_with_fresh(&sandbox, &rule.budget)
            .unwrap_or_else(|| panic!("rule {} has no instance on this thread", rule.name));
        assert_eq!(reused.globals, fresh.globals, "rule {}: mutable globals differ", rule.name);
        assert_eq!(reused.memory.len(), fresh.memory.len(), "rule {}: memory size differs", rule.name);
        if let Some(at) = reused.memory.iter().zip(&fresh.memory).position(|(a, b)| a != b) {
            panic!("rule {}: memory differs from a fresh instance's at byte {at}", rule.name);
        }
    }
}

#[test]
fn every_shipped_rule_is_reset_to_a_fresh_instance() {
    let (accounts, transactions) = generated(3, 200, 2_000);
    let set = TempRuleSet::example();
    let ruleset = set.load();
    for rule in &ruleset.rules {
        assert_eq!(rule.compiled.isolation(), Isolation::Reset, "{} is resettable", rule.name);
    }
    assert_reused_equals_fresh(&ruleset, &accounts, &transactions);
}

#[test]
fn the_hostile_rule_is_reset_to_a_fresh_instance_after_every_failure() {
    let set = TempRuleSet::new(HOSTILE_SET);
    let ruleset = set.load();
    // End on a healthy call, so the instance compared is a reused one.
    let mut lines = hostile_stream(180);
    lines.push('\n');
    lines.push_str(&tx(999, "ok"));
    assert_reused_equals_fresh(&ruleset, ACCOUNTS, &lines);
}

/// A global's value as the bits `InstanceState` holds (the sandbox's own
/// encoding, restated here so that the check stays independent of it).
fn val_bits(v: &wasmtime::Val) -> u128 {
    match v {
        wasmtime::Val::I32(x) => u128::from(x.cast_unsigned()),
        wasmtime::Val::I64(x) => u128::from(x.cast_unsigned()),
        wasmtime::Val::F32(x) => u128::from(*x),
        wasmtime::Val::F64(x) => u128::from(*x),
        wasmtime::Val::V128(x) => x.as_u128(),
        _ => u128::MAX,
    }
}

/// The component model's own instance of the main module, right after
/// instantiation, read with wasmtime's guest-debug API (which reaches a
/// component's core instances).
fn component_model_state(bytes: &[u8], global_indices: &[u32]) -> InstanceState {
    use wasmtime::component::{Component, Linker};
    let mut config = wasmtime::Config::new();
    config.guest_debug(true);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let component = Component::new(&engine, bytes).unwrap();
    let mut linker = Linker::<()>::new(&engine);
    // Instantiation calls no import, so every import can be a trap.
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let mut store = wasmtime::Store::new(&engine, ());
    linker.instantiate(&mut store, &component).unwrap();
    let main = store
        .debug_all_instances()
        .into_iter()
        .find(|i| i.get_export(&mut store, "rulehost:rules/rule@2.0.0#evaluate").is_some())
        .expect("a core instance exports `evaluate`");
    let memory = main.debug_memory(&mut store, 0).expect("the main instance has a memory").data(&store).to_vec();
    let globals = global_indices
        .iter()
        .map(|i| val_bits(&main.debug_global(&mut store, *i).expect("global").get(&mut store)))
        .collect();
    InstanceState { memory, globals, global_indices: global_indices.to_vec() }
}

#[test]
fn a_direct_instance_starts_as_the_component_models_own() {
    for crate_name in ["rule-velocity", "rule-sanctions", "rule-geo-mismatch", "guest-hostile"] {
        let bytes = std::fs::read(module(crate_name)).unwrap();
        let direct = sandbox().fresh_state(&bytes, &Budget::default()).unwrap_or_else(|e| panic!("{crate_name}: {e}"));
        assert!(!direct.global_indices.is_empty(), "{crate_name}: the stack pointer is a mutable global");
        let component = component_model_state(&bytes, &direct.global_indices);
        assert_eq!(component.globals, direct.globals, "{crate_name}: globals");
        assert!(component.memory == direct.memory, "{crate_name}: memory differs");
    }
}

/// Everything of a record but fuel, which differs between the paths (the
/// direct path runs an instrumented module and hands the transaction over
/// without the canonical per-string copies).
fn without_fuel(r: &Record) -> serde_json::Value {
    let mut v = value(r);
    if let Some(rules) = v["rules"].as_array_mut() {
        for rule in rules {
            rule.as_object_mut().unwrap().remove("fuel");
        }
    }
    v
}

#[test]
fn reused_instances_decide_as_fresh_component_instances() {
    let (accounts, transactions) = generated(17, 150, 3_000);
    let set = TempRuleSet::example();
    let reused = run(&set.load(), &accounts, &transactions).0;
    let fresh_sandbox =
        std::sync::Arc::new(Sandbox::new(&SandboxConfig { reuse_instances: false, ..Default::default() }).unwrap());
    let fresh_set = RuleSet::load(&fresh_sandbox, set.dir.path()).unwrap();
    assert!(matches!(fresh_set.rules[0].compiled.isolation(), Isolation::Fresh(_)));
    let ledger = crate::support::ledger(&accounts, &fresh_set);
    let pipeline = rulehost::pipeline::Pipeline::new(fresh_sandbox, ledger);
    let fresh: Vec<Record> =
        transactions.lines().enumerate().map(|(i, l)| pipeline.decide_line(&fresh_set, i as u64 + 1, l)).collect();
    assert_eq!(reused.len(), fresh.len());
    for (a, b) in reused.iter().zip(&fresh) {
        assert_eq!(without_fuel(a), without_fuel(b));
    }
}
