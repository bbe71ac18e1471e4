//! Issue 11's defects, one regression test each: inputs that used to panic
//! the process, poison a lock, hang, or grow memory without bound now get a
//! clear error naming what and where, and nothing is lost or posted twice.

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use rulehost::decision::Record;
use rulehost::input::{parse_accounts, parse_transaction};
use rulehost::ledger::{Ledger, LedgerError, LedgerLocation, MemoryLedger, StoreOptions};
use rulehost::pipeline::{Pipeline, RuleCalls, RuleExecutor, SharedLedger};
use rulehost::reload::LiveRules;
use rulehost::ruleset::{LoadedRule, RuleSet};
use rulehost::sandbox::{CallContext, CallOutcome, Verdict};
use rust_decimal::Decimal;

use crate::support::{TempRuleSet, sandbox, value};

const BIG: &str = "9999999999999999999999999999";

fn rulehost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rulehost")).args(args).output().expect("run rulehost")
}

fn account(id: &str, opening: &str, overdraft: &str) -> String {
    format!(
        r#"{{"id":"{id}","currency":"USD","country":"US","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"{overdraft}","opening_balance":"{opening}"}}"#
    )
}

fn transfer(id: &str, source: &str, destination: &str, amount: &str) -> String {
    format!(
        r#"{{"id":"{id}","timestamp":"2026-01-05T10:00:00Z","kind":"transfer","source":"{source}","destination":"{destination}","amount":"{amount}","currency":"USD"}}"#
    )
}

/// A rule set of one risk rule that scores nothing here, so any amount is
/// approved and reaches the ledger step.
fn approving() -> TempRuleSet {
    TempRuleSet::new("[[rule]]\nname = \"velocity\"\nkind = \"risk\"\nmodule = \"modules/velocity.wasm\"\n")
}

fn decide_all(ruleset: &RuleSet, ledger: &SharedLedger, lines: &[String]) -> Vec<serde_json::Value> {
    let pipeline = Pipeline::new(sandbox(), ledger.clone());
    lines.iter().enumerate().map(|(i, l)| value(&pipeline.decide_line(ruleset, i as u64 + 1, l))).collect()
}

#[test]
fn a_huge_weight_is_refused_at_load_and_a_watching_host_keeps_serving() {
    let set = TempRuleSet::new("[[rule]]\nname = \"velocity\"\nkind = \"risk\"\nmodule = \"modules/velocity.wasm\"\n");
    let live = LiveRules::load(sandbox(), set.dir.path(), None).expect("the first version loads");
    let before = live.status().version.clone();
    for weight in [format!("\"{BIG}\""), "1001".to_string(), "\"0.0000000001\"".to_string()] {
        std::fs::write(
            set.dir.path().join("manifest.toml"),
            format!("[[rule]]\nname = \"velocity\"\nkind = \"risk\"\nmodule = \"modules/velocity.wasm\"\nweight = {weight}\n"),
        )
        .unwrap();
        let refused = live.reload().expect_err("a weight out of range is refused");
        assert!(refused.to_string().contains("weight"), "{refused}");
        // Nothing poisoned: the status answers, the old version serves.
        let status = live.status();
        assert_eq!(status.version, before);
        assert!(status.last_error.is_some());
    }
    std::fs::write(
        set.dir.path().join("manifest.toml"),
        "[[rule]]\nname = \"velocity\"\nkind = \"risk\"\nmodule = \"modules/velocity.wasm\"\nweight = \"2.5\"\n",
    )
    .unwrap();
    assert!(live.reload().is_ok(), "a good rule set loads after the refusals");
    assert_ne!(live.status().version, before);
}

#[test]
fn an_overflowing_transfer_is_rejected_with_balance_overflow_on_both_ledgers() {
    let set = approving();
    let ruleset = set.load();
    let mut accounts: Vec<String> = (1..=8).map(|i| account(&format!("s{i}"), "0", BIG)).collect();
    accounts.push(account("d", "0", "0"));
    let accounts = parse_accounts(&accounts.join("\n")).unwrap();
    let lines: Vec<String> = (1..=8).map(|i| transfer(&format!("t{i}"), &format!("s{i}"), "d", BIG)).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    for location in [LedgerLocation::Memory, LedgerLocation::File(path.clone())] {
        let mut opened = location.open(&StoreOptions::default()).unwrap();
        opened.import_accounts(&accounts).unwrap();
        let ledger: SharedLedger = Arc::new(Mutex::new(opened));
        let out = decide_all(&ruleset, &ledger, &lines);
        for d in &out[..7] {
            assert_eq!(d["outcome"], "approve", "{d}");
        }
        assert_eq!(out[7]["outcome"], "reject", "{}", out[7]);
        assert_eq!(out[7]["reasons"], serde_json::json!(["BALANCE_OVERFLOW"]));
        assert_eq!(out[7]["ledger"], "none");
        let l = rulehost::pipeline::lock(&ledger);
        let seven = Decimal::from_str_exact(BIG).unwrap() * Decimal::from(7);
        assert_eq!(l.balances("d").unwrap().posted, seven, "the refused transfer posted nothing");
        assert_eq!(l.balances("s8").unwrap().posted, Decimal::ZERO);
        drop(l);
        // Running the same lines again replays, without a panic.
        let again = decide_all(&ruleset, &ledger, &lines);
        assert!(again.iter().all(|d| d["replayed"] == true), "{again:?}");
        rulehost::pipeline::lock(&ledger).sync_point().wait().unwrap();
    }
}

#[test]
fn opening_balances_beyond_range_fail_the_import_and_import_nothing() {
    let text: Vec<String> = (0..10).map(|i| account(&format!("a{i}"), BIG, "0")).collect();
    let accounts = parse_accounts(&text.join("\n")).unwrap();
    let mut ledger = MemoryLedger::default();
    let e = ledger.import_accounts(&accounts).expect_err("equity:USD cannot hold ten of them");
    assert!(matches!(&e, LedgerError::BalanceOverflow(what) if what.contains("equity:USD")), "{e}");
    assert!(ledger.account_ids().is_empty(), "all or nothing");
    assert!(ledger.journal(None).unwrap().is_empty());
}

#[test]
fn a_negative_opening_balance_is_the_same_on_both_ledgers_and_survives_a_restart() {
    let accounts = parse_accounts(&[account("neg", "-5.25", "10"), account("pos", "3", "0")].join("\n")).unwrap();
    let mut memory = MemoryLedger::default();
    memory.import_accounts(&accounts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    {
        let mut durable = LedgerLocation::File(path.clone()).open(&StoreOptions::default()).unwrap();
        durable.import_accounts(&accounts).unwrap();
        durable.sync_point().wait().expect("the writer accepts a negative opening balance");
        assert_eq!(durable.journal(None).unwrap(), memory.journal(None).unwrap());
    }
    let reopened = rulehost::ledger::SqliteLedger::open(&path, &StoreOptions::default()).unwrap();
    assert_eq!(
        reopened.journal(None).unwrap(),
        memory.journal(None).unwrap(),
        "the journal reads back as it was written"
    );
    assert_eq!(reopened.balances("neg").unwrap().posted, Decimal::new(-525, 2));
    assert_eq!(memory.system_balance("equity:USD"), Decimal::new(225, 2));
    let mut reopened = reopened;
    let report = reopened.reconcile().unwrap();
    assert!(report.discrepancies.is_empty(), "{:?}", report.discrepancies);
}

#[test]
fn system_account_ids_and_unknown_currencies_are_refused_at_import() {
    let e = parse_accounts(&account("equity:USD", "1", "0")).expect_err("reserved");
    assert_eq!((e.line, e.field.as_deref()), (1, Some("id")));
    assert!(e.message.contains("reserved"), "{}", e.message);
    for currency in ["XYZ", "", "usd"] {
        let line = account("a", "1", "0").replace("\"USD\"", &format!("\"{currency}\""));
        let e = parse_accounts(&line).expect_err(currency);
        assert_eq!(e.field.as_deref(), Some("currency"), "{currency}: {e}");
    }
    // The ledger API refuses them too, whoever parsed the account.
    let mut a = parse_accounts(&account("x", "1", "0")).unwrap();
    a[0].id = "equity:EUR".into();
    assert!(matches!(MemoryLedger::default().import_accounts(&a), Err(LedgerError::ReservedAccount(_))));
}

#[test]
fn duplicate_keys_are_invalid_fields_naming_the_key() {
    let tx = r#"{"id":"t","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"1.00","amount":"2.00","currency":"USD"}"#;
    let e = parse_transaction(3, tx).expect_err("duplicate amount");
    assert_eq!((e.line, e.code.as_str(), e.field.as_deref()), (3, "INVALID_FIELD", Some("amount")));
    let nested = r#"{"id":"t","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"1.00","currency":"USD","metadata":{"k":"1","k":"2"}}"#;
    assert_eq!(parse_transaction(1, nested).unwrap_err().field.as_deref(), Some("metadata.k"));
    let deep = r#"{"id":"t","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"1.00","currency":"USD","x":[{"y":1,"y":1}]}"#;
    assert_eq!(parse_transaction(1, deep).unwrap_err().field.as_deref(), Some("x[0].y"));
    let acc = account("a", "1", "0").replace(r#""status":"active""#, r#""status":"active","status":"closed""#);
    assert_eq!(parse_accounts(&acc).unwrap_err().field.as_deref(), Some("status"));
}

#[test]
fn special_files_in_a_rule_set_are_refused_without_hanging() {
    let set = TempRuleSet::example();
    let lists = set.dir.path().join("lists");
    std::fs::remove_file(lists.join("blocked-accounts.txt")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", lists.join("blocked-accounts.txt")).unwrap();
    let e = RuleSet::load(&sandbox(), set.dir.path()).err().expect("a link to /dev/zero is refused");
    assert!(e.to_string().contains("symlink") && e.to_string().contains("blocked-accounts"), "{e}");

    let set = TempRuleSet::example();
    let module = set.dir.path().join("modules/velocity.wasm");
    std::fs::remove_file(&module).unwrap();
    let c = std::ffi::CString::new(module.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = RuleSet::load(&sandbox(), set.dir.path()).err().expect("a FIFO module is refused");
    assert!(e.to_string().contains("FIFO") && e.to_string().contains("velocity.wasm"), "{e}");
}

#[test]
fn an_over_long_line_is_refused_and_the_next_line_is_decided() {
    let set = TempRuleSet::example();
    let ruleset = set.load();
    let accounts = [account("a", "100", "0"), account("b", "0", "0")].join("\n");
    let ledger = crate::support::ledger(&accounts, &ruleset);
    let pipeline = Pipeline::new(sandbox(), ledger);
    let mut input = Vec::new();
    input.extend(std::iter::repeat_n(b'x', 3 * rulehost::run::LINE_BYTES_MAX));
    input.push(b'\n');
    input.extend(transfer("ok", "a", "b", "1.00").bytes());
    input.push(b'\n');
    let mut out = Vec::new();
    let arc: Arc<RuleSet> = Arc::new(ruleset);
    let options = rulehost::run::RunOptions { threads: 1, ..Default::default() };
    rulehost::run::run_stream(&pipeline, &arc, &input[..], &mut out, &options, None).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["error"]["code"], "MALFORMED_JSON");
    assert!(lines[0]["error"]["message"].as_str().unwrap().contains("exceeds the limit"), "{}", lines[0]);
    assert_eq!(lines[1]["outcome"], "approve");
}

/// An executor that answers every call with one fixed verdict, whatever the
/// rule's kind: the pipeline must hold it to the output contract.
struct Fixed(Verdict);

impl RuleExecutor for Fixed {
    fn begin<'a>(&'a self, _tx: &'a rulehost::model::Transaction) -> Box<dyn RuleCalls + 'a> {
        Box::new(FixedCalls(&self.0))
    }
}

struct FixedCalls<'a>(&'a Verdict);

impl RuleCalls for FixedCalls<'_> {
    fn call(&mut self, _rule: &LoadedRule, _ctx: CallContext) -> CallOutcome {
        CallOutcome { result: Ok(self.0.clone()), fuel: 1, memory_bytes: 0, logs: Vec::new() }
    }
}

#[test]
fn the_pipeline_holds_every_executor_to_the_output_contract() {
    let set = TempRuleSet::example();
    let ruleset = set.load();
    let accounts = [account("a", "100", "0"), account("b", "0", "0")].join("\n");
    for (verdict, failing) in [
        (Verdict::Score { score: 10, reasons: vec![] }, "amount-format"),
        (Verdict::Accept, "velocity"),
        (Verdict::Score { score: 5000, reasons: vec![] }, "amount-format"),
    ] {
        let executor: Arc<dyn RuleExecutor> = Arc::new(Fixed(verdict.clone()));
        let pipeline = Pipeline::with_executor(executor, crate::support::ledger(&accounts, &ruleset));
        let record = pipeline.decide_line(&ruleset, 1, &transfer("t", "a", "b", "1.00"));
        let Record::Decision { .. } = &record else { panic!("{record:?}") };
        let d = value(&record);
        let trace = d["rules"].as_array().unwrap().iter().find(|r| r["rule"] == failing).unwrap().clone();
        assert_eq!(trace["result"], "failed", "{verdict:?}: {trace}");
        assert_eq!(trace["failure"], "invalid-output", "{verdict:?}: {trace}");
    }
}

#[test]
fn numeric_options_have_named_ranges() {
    for args in [
        &["ruleset", "rollback", "--rules", ".", "--wait-seconds", "18446744073709551615"][..],
        &["gen", "--out", "/nonexistent", "--accounts", "18446744073709551615"],
        &["run", "--rules", ".", "--threads", "100000"],
        &["run", "--rules", ".", "--threads", "0"],
        &["serve", "--rules", ".", "--in-flight-max", "0"],
    ] {
        let out = rulehost(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("not in"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn cases_files_use_the_manifest_budget_ranges() {
    for (budget, key) in [
        ("deadline_ms = 0", "deadline_ms"),
        ("fuel_max = 18446744073709551615", "fuel_max"),
        ("memory_bytes_max = 18446744073709551615", "memory_bytes_max"),
    ] {
        let text = format!("[defaults.budget]\n{budget}\n\n[[case]]\nname = \"c\"\nexpect = {{ accept = true }}\n");
        let e = rulehost::cases::CaseFile::parse("cases.toml", &text).err().expect(budget);
        assert!(e.to_string().contains(key), "{budget}: {e}");
    }
}

#[test]
fn a_rollback_works_with_a_relative_rules_path() {
    let set = TempRuleSet::new("[[rule]]\nname = \"velocity\"\nkind = \"risk\"\nmodule = \"modules/velocity.wasm\"\n");
    let parent = set.dir.path().parent().unwrap();
    let name = set.dir.path().file_name().unwrap();
    let cwd = std::env::current_dir().unwrap();
    // LiveRules canonicalises: relative to the test's own directory.
    let relative = pathdiff(set.dir.path(), &cwd);
    let live = LiveRules::load(sandbox(), &relative, None).expect("loads from a relative path");
    assert!(live.dir().is_absolute(), "{}", live.dir().display());
    assert_eq!(live.dir(), parent.join(name).canonicalize().unwrap());
}

/// `path` relative to `base` (both absolute), with `..` steps.
fn pathdiff(path: &std::path::Path, base: &std::path::Path) -> std::path::PathBuf {
    let (p, b): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = std::path::PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    out
}

#[test]
fn a_component_with_too_many_core_instances_is_refused_at_load_naming_the_limit() {
    let mut text = String::from("(component (core module $m)");
    for _ in 0..=rulehost::sandbox::CORE_INSTANCES_PER_COMPONENT_MAX {
        text.push_str(" (core instance (instantiate $m))");
    }
    text.push(')');
    let bytes = wat::parse_str(&text).unwrap();
    let e = sandbox().load(&bytes).err().expect("refused");
    let message = e.to_string();
    assert!(message.contains("core instances") && message.contains("CORE_INSTANCES_PER_COMPONENT_MAX"), "{message}");
}
