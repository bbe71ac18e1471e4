//! The properties the fuzz targets check, as plain functions: `fuzz/`
//! drives them with libFuzzer (`scripts/fuzz.sh`), and the test suite
//! replays the seed corpora, every crash ever found and a stream of random
//! inputs through them on every run. Each panics only when a property
//! fails — which is what both drivers look for.

#![doc(hidden)]

use std::sync::{Arc, Mutex};

use rust_decimal::Decimal;

use crate::pipeline::{Pipeline, RuleCalls, RuleExecutor, SharedLedger, lock};
use crate::ruleset::{LoadedRule, RuleSet};
use rulehost_core::input::{parse_accounts, parse_transaction, strict};
use rulehost_core::manifest::{Manifest, RULES_MAX, WEIGHT_MAX};
use rulehost_ledger::{Ledger, MemoryLedger, equity_account, exact_add, exact_sub};
use rulehost_sandbox::{CallContext, CallOutcome, Verdict};

/// One input line: an error record or a transaction; the strict parser
/// agrees with serde_json where no key repeats; a transaction's fingerprint
/// ignores key order and spacing.
pub fn transaction(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(ours) = strict::from_str(text) {
        let theirs: serde_json::Value = serde_json::from_str(text).expect("strict JSON is JSON");
        assert_eq!(ours, theirs);
    }
    if let Ok(parsed) = parse_transaction(1, text) {
        let value: serde_json::Value = serde_json::from_str(text).expect("parsed");
        let again = parse_transaction(2, &value.to_string()).expect("a transaction re-serialised still parses");
        assert_eq!(parsed.fingerprint, again.fingerprint);
        assert_eq!(parsed.tx, again.tx);
    }
}

/// An accounts file imported into a fresh ledger: an error naming line and
/// field, a refused import that imported nothing, or accounts whose
/// balances sum to zero per currency with equity.
pub fn accounts(data: &[u8]) {
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
            sum = sum.checked_add(ledger.balances(&a.id).expect("imported").posted).expect("in range");
        }
        assert_eq!(sum, Decimal::ZERO, "{c} does not balance");
    }
}

/// `manifest.toml` text: an error naming rule and key, or a manifest whose
/// every limit holds.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(m) = Manifest::parse("manifest.toml", text) else { return };
    assert!(m.review_at <= m.decline_at && m.decline_at <= 1000);
    assert!(!m.rules.is_empty() && m.rules.len() <= RULES_MAX);
    for r in &m.rules {
        assert!(r.weight >= Decimal::ZERO && r.weight <= Decimal::from(WEIGHT_MAX));
        assert!(r.budget.check().is_ok());
    }
}

/// A cases file: an error naming case and field, or cases whose budget is
/// in the manifest's ranges.
pub fn cases(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = crate::cases::CaseFile::parse("cases.toml", text) else { return };
    assert!(file.budget.check().is_ok());
}

/// One step of a stream.
#[derive(Clone, Debug)]
pub enum StreamOp {
    /// A transfer between two of the four accounts (indices mod 4), scored
    /// `score` (mod 1100: some are out of range) by every risk rule.
    Transfer {
        /// Transaction id suffix (ids repeat: replays and conflicts).
        id: u8,
        /// Source index.
        source: u8,
        /// Destination index.
        destination: u8,
        /// The amount as written.
        amount: String,
        /// What the rules answer.
        score: u16,
    },
    /// An operator approves or declines the hold of `t{id}`.
    Resolve {
        /// Transaction id suffix.
        id: u8,
        /// Approve or decline.
        approve: bool,
    },
}

/// Answers each risk call with the number in the transaction's
/// `merchant_category` (so the stream fuzzes the host, not the compiler).
struct Scores;

impl RuleExecutor for Scores {
    fn begin<'a>(&'a self, tx: &'a rulehost_core::model::Transaction) -> Box<dyn RuleCalls + 'a> {
        Box::new(ScoreCalls(tx.merchant_category.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0)))
    }
}

struct ScoreCalls(u32);

impl RuleCalls for ScoreCalls {
    fn call(&mut self, _rule: &LoadedRule, _ctx: CallContext) -> CallOutcome {
        CallOutcome {
            result: Ok(Verdict::Score { score: self.0, reasons: vec![] }),
            fuel: 1,
            memory_bytes: 0,
            logs: vec![],
        }
    }
}

fn balances(ledger: &dyn Ledger) -> Vec<(Decimal, Decimal)> {
    (0..4).map(|i| ledger.balances(&format!("a{i}")).map(|b| (b.posted, b.pending)).unwrap_or_default()).collect()
}

/// A short stream decided by the real pipeline (`ruleset` gives its shape:
/// risk rules only), against a model of what each decision must do:
/// approve moves exactly the amount, review reserves it, reject and decline
/// touch nothing, a replay changes nothing and repeats the decision, a hold
/// resolution moves exactly the hold, every change is exact, and no
/// available balance leaves the range.
/// `accounts` are (opening balance, overdraft limit) as written.
pub fn stream(ruleset: &RuleSet, accounts: &[(String, String); 4], ops: &[StreamOp]) {
    let lines: Vec<String> = accounts
        .iter()
        .enumerate()
        .map(|(i, (opening, overdraft))| {
            format!(
                r#"{{"id":"a{i}","currency":"USD","country":"US","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"{overdraft}","opening_balance":"{opening}"}}"#
            )
        })
        .collect();
    let Ok(parsed) = parse_accounts(&lines.join("\n")) else { return };
    let mut memory = MemoryLedger::default();
    if memory.import_accounts(&parsed).is_err() {
        return;
    }
    let openings = memory.journal(None).map(|j| j.len()).unwrap_or(0);
    let ledger: SharedLedger = Arc::new(Mutex::new(Box::new(memory)));
    let pipeline = Pipeline::with_executor(Arc::new(Scores), ledger.clone());
    let mut seen: std::collections::HashMap<u8, serde_json::Value> = std::collections::HashMap::new();
    for (n, op) in ops.iter().take(64).enumerate() {
        match op {
            StreamOp::Transfer { id, source, destination, amount, score } => {
                let (s, d) = (usize::from(source % 4), usize::from(destination % 4));
                let text = format!(
                    r#"{{"id":"t{id}","timestamp":"2026-01-05T10:00:00Z","kind":"transfer","source":"a{s}","destination":"a{d}","amount":"{amount}","currency":"USD","merchant_category":"{}"}}"#,
                    score % 1100
                );
                let before = balances(&**lock(&ledger));
                let record = pipeline.decide_line(ruleset, n as u64 + 1, &text);
                let after = balances(&**lock(&ledger));
                let json: serde_json::Value = serde_json::from_str(&record.to_json()).expect("records are JSON");
                if json["error"].is_object() {
                    assert_eq!(before, after, "an error record moved money: {json}");
                    continue;
                }
                if json["replayed"] == true {
                    assert_eq!(before, after, "a replay moved money");
                    let first = seen.get(id).expect("replayed what was decided");
                    assert_eq!((&first["outcome"], &first["rules"]), (&json["outcome"], &json["rules"]));
                    continue;
                }
                let amount: Decimal = amount.parse().expect("a decided amount parses");
                let moved = |a: Decimal, b: Decimal, add: bool| {
                    if add { exact_add(a, b) } else { exact_sub(a, b) }.expect("an admitted change is exact")
                };
                match json["ledger"].as_str() {
                    Some("posted") => {
                        assert!(amount > Decimal::ZERO && s != d);
                        assert_eq!(after[s].0, moved(before[s].0, amount, false));
                        assert_eq!(after[d].0, moved(before[d].0, amount, true));
                        assert_eq!((after[s].1, after[d].1), (before[s].1, before[d].1));
                    }
                    Some("held") => {
                        assert!(amount > Decimal::ZERO);
                        assert_eq!((after[s].0, after[s].1), (before[s].0, moved(before[s].1, amount, true)));
                    }
                    _ => assert_eq!(before, after, "{json}"),
                }
                for (i, (b, a)) in before.iter().zip(&after).enumerate() {
                    if i != s && i != d {
                        assert_eq!(a, b, "a transfer touched a third account");
                    }
                }
                seen.insert(*id, json);
            }
            StreamOp::Resolve { id, approve } => {
                let mut l = lock(&ledger);
                let hold = l.hold(&format!("t{id}")).expect("a memory ledger reads");
                let before = balances(&**l);
                let result = l.resolve_hold(&format!("t{id}"), *approve);
                let after = balances(&**l);
                match (hold, result) {
                    (Some(h), Ok(rulehost_ledger::Resolution::Done)) => {
                        let index = |a: &str| a[1..].parse::<usize>().expect("a0..a3");
                        let (s, d) = (index(&h.source), index(&h.destination));
                        assert_eq!(after[s].1, exact_sub(before[s].1, h.amount).expect("exact"));
                        if *approve {
                            assert_eq!(after[s].0, exact_sub(before[s].0, h.amount).expect("exact"));
                            assert_eq!(after[d].0, exact_add(before[d].0, h.amount).expect("exact"));
                        } else {
                            assert_eq!(after[s].0, before[s].0);
                        }
                    }
                    _ => assert_eq!(before, after, "a refused or repeated resolution moved money"),
                }
            }
        }
        let l = lock(&ledger);
        for (posted, pending) in balances(&**l) {
            assert!(pending >= Decimal::ZERO);
            assert!(exact_sub(posted, pending).is_some(), "an available balance left the range");
        }
        // Equity is touched only by openings: every later change moved an
        // amount from one account to another, checked above.
        assert_eq!(
            l.journal(None)
                .expect("a memory ledger reads")
                .iter()
                .filter(|e| e.kind == rulehost_ledger::EntryKind::Opening)
                .count(),
            openings
        );
    }
}
