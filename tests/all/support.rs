//! Shared helpers: locating the built Wasm modules, assembling rule sets in
//! temporary folders, running JSON Lines through a fresh pipeline, and the
//! snapshot `check` used by the fixture tests (refresh with `UPDATE_EXPECT=1`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rulehost::decision::{Decision, LedgerEffect, Outcome, Record};
use rulehost::input::{ParsedTransaction, parse_accounts};
use rulehost::ledger::{Admission, Commit, Committed, Effect, Ledger, LedgerError, MemoryLedger};
use rulehost::pipeline::{Pipeline, SharedLedger};
use rulehost::ruleset::RuleSet;
use rulehost::sandbox::{Sandbox, SandboxConfig};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("host/cli is two levels below the root").to_owned()
}

/// A built Wasm module, by crate name (`rule-velocity`, `guest-hostile`).
pub fn module(crate_name: &str) -> PathBuf {
    let path = root().join("target/wasm32-wasip2/wasm-release").join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(path.exists(), "{} is missing: build the Wasm modules first with scripts/build-rules.sh", path.display());
    path
}

/// One sandbox for the whole test binary (its epoch ticker is a thread).
pub fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX.get_or_init(|| Arc::new(Sandbox::new(&SandboxConfig::default()).expect("sandbox"))).clone()
}

/// A rule-set folder in a temp dir: `manifest` plus modules copied from the
/// build under the names the manifest uses (`modules/<rule>.wasm` for the
/// shipped rules, `modules/hostile.wasm` and `modules/ambient.wasm` for the
/// test guests).
pub struct TempRuleSet {
    pub dir: tempfile::TempDir,
}

impl TempRuleSet {
    pub fn new(manifest: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("modules")).unwrap();
        std::fs::create_dir_all(dir.path().join("lists")).unwrap();
        for entry in std::fs::read_dir(root().join("rules")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            std::fs::copy(module(&format!("rule-{name}")), dir.path().join(format!("modules/{name}.wasm"))).unwrap();
        }
        std::fs::copy(module("guest-hostile"), dir.path().join("modules/hostile.wasm")).unwrap();
        std::fs::copy(module("guest-ambient"), dir.path().join("modules/ambient.wasm")).unwrap();
        std::fs::copy(module("guest-contract-v1"), dir.path().join("modules/contract-v1.wasm")).unwrap();
        std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
        std::fs::write(dir.path().join("lists/blocked-accounts.txt"), "acc-000666\nacc-001313\n").unwrap();
        TempRuleSet { dir }
    }

    /// The example rule set's manifest with its modules.
    pub fn example() -> Self {
        Self::new(&std::fs::read_to_string(root().join("examples/ruleset/manifest.toml")).unwrap())
    }

    pub fn load(&self) -> RuleSet {
        RuleSet::load(&sandbox(), self.dir.path()).unwrap_or_else(|e| panic!("loading rule set: {e}"))
    }
}

/// `rulehost gen` traffic: (accounts, transactions) as JSON Lines.
pub fn generated(seed: u64, accounts: usize, transactions: usize) -> (String, String) {
    let config = rulehost_cli::generate::GenConfig { seed, accounts, transactions, ..Default::default() };
    let (mut a, mut t) = (Vec::new(), Vec::new());
    rulehost_cli::generate::generate(&config, &mut a, &mut t).expect("generate");
    (String::from_utf8(a).expect("utf-8"), String::from_utf8(t).expect("utf-8"))
}

/// A fresh in-memory ledger holding `accounts` (JSON Lines).
pub fn ledger(accounts: &str, ruleset: &RuleSet) -> SharedLedger {
    let mut ledger = MemoryLedger::default();
    ledger.import_accounts(&parse_accounts(accounts).expect("accounts")).expect("import");
    ledger.retain_history(ruleset.history_window_seconds_max);
    Arc::new(Mutex::new(Box::new(ledger)))
}

/// Decides every line of `transactions` against `ruleset` with a fresh
/// ledger; returns the records.
pub fn run(ruleset: &RuleSet, accounts: &str, transactions: &str) -> (Vec<Record>, SharedLedger) {
    let ledger = ledger(accounts, ruleset);
    let pipeline = Pipeline::new(sandbox(), ledger.clone());
    let mut lines: Vec<&str> = transactions.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let records = lines.iter().enumerate().map(|(i, l)| pipeline.decide_line(ruleset, i as u64 + 1, l)).collect();
    (records, ledger)
}

/// The records as JSON Lines.
pub fn jsonl(records: &[Record]) -> String {
    let mut out = Vec::new();
    for r in records {
        r.write_json(&mut out);
    }
    String::from_utf8(out).unwrap()
}

/// Compares `actual` with the file `expected`; with `UPDATE_EXPECT=1` it
/// rewrites the file instead.
pub fn check(expected: &Path, actual: &str) {
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(expected, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(expected)
        .unwrap_or_else(|e| panic!("{}: {e} (create it with UPDATE_EXPECT=1)", expected.display()));
    if want != actual {
        for (i, (w, a)) in want.lines().zip(actual.lines()).enumerate() {
            if w != a {
                panic!(
                    "{} line {} differs:\nexpected: {w}\nactual:   {a}\n(refresh deliberately with UPDATE_EXPECT=1)",
                    expected.display(),
                    i + 1
                );
            }
        }
        panic!("{}: {} expected lines, {} actual", expected.display(), want.lines().count(), actual.lines().count());
    }
}

/// A decision's JSON as a value, for targeted assertions.
pub fn value(record: &Record) -> serde_json::Value {
    serde_json::from_str(&record.to_json()).unwrap()
}

/// Commits `parsed` straight to a ledger asking for `wanted`; the decision
/// follows the ledger's funds check: approve (posted) or review (held) when
/// admitted, reject when refused, decline when nothing was asked.
pub fn commit_as(
    store: &mut dyn Ledger,
    parsed: &ParsedTransaction,
    wanted: Effect,
    count_in_history: bool,
) -> Result<Committed, LedgerError> {
    let id = parsed.tx.id.clone();
    store.commit(Commit {
        tx: &parsed.tx,
        fingerprint: parsed.fingerprint,
        extra: parsed.extra.as_deref(),
        wanted,
        count_in_history,
        facts: Default::default(),
        decide: Box::new(move |admission| {
            let (outcome, ledger) = match (admission, wanted) {
                (Admission::Admitted, Effect::Post) => (Outcome::Approve, LedgerEffect::Posted),
                (Admission::Admitted, Effect::Hold) => (Outcome::Review, LedgerEffect::Held),
                (Admission::Refused(_), _) => (Outcome::Reject, LedgerEffect::None),
                _ => (Outcome::Decline, LedgerEffect::None),
            };
            Arc::new(Decision {
                id,
                outcome,
                score: 0,
                reasons: Vec::new(),
                ruleset: "direct".into(),
                rollout: None,
                rules: Vec::new(),
                ledger,
                json: Default::default(),
            })
        }),
    })
}
