//! A short random stream — accounts with any balances and overdrafts (up
//! to 28 digits), transfers of any amount, replays, hold resolutions —
//! decided by the real pipeline against a model of what each decision must
//! do to the ledger: approve moves exactly the amount, review reserves it,
//! reject and decline touch nothing, a replay changes nothing, and every
//! currency balances to zero with its equity account. Never a panic.
//!
//! Rules are answered natively (a score read from the transaction) so the
//! target fuzzes the host, not Cranelift; the rule set is the example
//! folder's `velocity` module, loaded once for its shape.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rulehost::ledger::{Ledger, MemoryLedger};
use rulehost::pipeline::{Pipeline, RuleCalls, RuleExecutor, SharedLedger};
use rulehost::ruleset::{LoadedRule, RuleSet};
use rulehost::sandbox::{CallContext, CallOutcome, Sandbox, SandboxConfig, Verdict};
use rust_decimal::Decimal;

#[derive(Arbitrary, Debug)]
enum Amount {
    Cents(u32),
    Digits(u128, u8),
    Max,
    Zero,
    Negative(u16),
}

impl Amount {
    fn text(&self) -> String {
        match self {
            Amount::Cents(c) => Decimal::new(i64::from(*c), 2).to_string(),
            Amount::Digits(d, scale) => {
                let d = d % 10u128.pow(28);
                Decimal::from_i128_with_scale(d as i128, u32::from(*scale % 29)).to_string()
            }
            Amount::Max => "9999999999999999999999999999".into(),
            Amount::Zero => "0".into(),
            Amount::Negative(c) => format!("-{c}"),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Transfer { id: u8, source: u8, destination: u8, amount: Amount, score: u16 },
    Resolve { id: u8, approve: bool },
}

#[derive(Arbitrary, Debug)]
struct Input {
    accounts: [(Amount, Amount); 4],
    ops: Vec<Op>,
}

/// Scores each risk call with the number in `merchant_category`.
struct Scores;

impl RuleExecutor for Scores {
    fn begin<'a>(&'a self, tx: &'a rulehost::model::Transaction) -> Box<dyn RuleCalls + 'a> {
        Box::new(ScoreCalls(tx.merchant_category.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0)))
    }
}

struct ScoreCalls(u32);

impl RuleCalls for ScoreCalls {
    fn call(&mut self, _rule: &LoadedRule, _ctx: CallContext) -> CallOutcome {
        CallOutcome { result: Ok(Verdict::Score { score: self.0, reasons: vec![] }), fuel: 1, memory_bytes: 0, logs: vec![] }
    }
}

fn ruleset() -> &'static RuleSet {
    static SET: OnceLock<RuleSet> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rulehost-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("modules")).unwrap();
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ruleset/modules");
        std::fs::copy(examples.join("velocity.wasm"), dir.join("modules/velocity.wasm"))
            .expect("build the modules first: scripts/build-rules.sh");
        std::fs::write(dir.join("manifest.toml"), "[[rule]]\nname = \"v\"\nkind = \"risk\"\nmodule = \"modules/velocity.wasm\"\n").unwrap();
        let sandbox = Sandbox::new(&SandboxConfig::default()).unwrap();
        RuleSet::load(&sandbox, &dir).unwrap()
    })
}

fn balances(ledger: &dyn Ledger) -> Vec<(Decimal, Decimal)> {
    (0..4).map(|i| ledger.balances(&format!("a{i}")).map(|b| (b.posted, b.pending)).unwrap_or_default()).collect()
}

/// Every USD balance plus `equity` (what the openings put in equity:USD)
/// sums to zero, and every available balance is in range.
fn balanced(ledger: &dyn Ledger, equity: Decimal) {
    let mut sum = equity;
    for (posted, pending) in balances(ledger) {
        sum = sum.checked_add(posted).expect("in range");
        assert!(pending >= Decimal::ZERO);
        assert!(posted.checked_sub(pending).is_some(), "available out of range");
    }
    assert_eq!(sum, Decimal::ZERO, "USD does not balance");
}

fuzz_target!(|input: Input| {
    let ruleset = ruleset();
    let lines: Vec<String> = input
        .accounts
        .iter()
        .enumerate()
        .map(|(i, (opening, overdraft))| {
            let overdraft = overdraft.text().trim_start_matches('-').to_owned();
            format!(
                r#"{{"id":"a{i}","currency":"USD","country":"US","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"{overdraft}","opening_balance":"{}"}}"#,
                opening.text()
            )
        })
        .collect();
    let Ok(accounts) = rulehost::input::parse_accounts(&lines.join("\n")) else { return };
    let mut memory = MemoryLedger::default();
    if memory.import_accounts(&accounts).is_err() {
        return;
    }
    let equity = memory.system_balance("equity:USD");
    let ledger: SharedLedger = Arc::new(Mutex::new(Box::new(memory)));
    let pipeline = Pipeline::with_executor(Arc::new(Scores), ledger.clone());
    let mut seen = std::collections::HashMap::new();
    for (n, op) in input.ops.iter().take(64).enumerate() {
        let line = n as u64 + 1;
        match op {
            Op::Transfer { id, source, destination, amount, score } => {
                let (s, d) = (source % 4, destination % 4);
                let text = format!(
                    r#"{{"id":"t{id}","timestamp":"2026-01-05T10:00:00Z","kind":"transfer","source":"a{s}","destination":"a{d}","amount":"{}","currency":"USD","merchant_category":"{}"}}"#,
                    amount.text(),
                    score % 1100
                );
                let before = balances(&**rulehost::pipeline::lock(&ledger));
                let record = pipeline.decide_line(ruleset, line, &text);
                let after = balances(&**rulehost::pipeline::lock(&ledger));
                let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
                let amount: Decimal = match json["error"].is_object() {
                    true => {
                        assert_eq!(before, after, "an error record moved money");
                        continue;
                    }
                    false => text.split("\"amount\":\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap(),
                };
                if json["replayed"] == true {
                    assert_eq!(before, after, "a replay moved money");
                    let first: &serde_json::Value = seen.get(id).expect("replayed what was decided");
                    assert_eq!(first["rules"], json["rules"]);
                    assert_eq!(first["outcome"], json["outcome"]);
                    continue;
                }
                let (s, d) = (usize::from(s), usize::from(d));
                match json["ledger"].as_str().unwrap() {
                    "posted" => {
                        assert!(amount > Decimal::ZERO);
                        assert_eq!(after[s].0, before[s].0 - amount);
                        assert_eq!(after[d].0, before[d].0 + amount);
                    }
                    "held" => {
                        assert!(amount > Decimal::ZERO);
                        assert_eq!(after[s].1, before[s].1 + amount);
                        assert_eq!(after[s].0, before[s].0);
                    }
                    _ => assert_eq!(before, after, "{json}"),
                }
                seen.insert(*id, json);
            }
            Op::Resolve { id, approve } => {
                let mut l = rulehost::pipeline::lock(&ledger);
                let _ = l.resolve_hold(&format!("t{id}"), *approve);
            }
        }
        balanced(&**rulehost::pipeline::lock(&ledger), equity);
    }
});
