//! `rulehost diff` through the real binary: against itself (no
//! disagreement), against a changed rule set (exactly the lines whose
//! decision changed, grouped right), and against the legacy Python of
//! `../shared/legacy/` with and without the declared equivalence.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::support::{TempRuleSet, generated, root};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(lines: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, transactions) = generated(7, 300, lines);
        std::fs::write(dir.path().join("accounts.jsonl"), accounts).unwrap();
        std::fs::write(dir.path().join("transactions.jsonl"), transactions).unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// `rulehost diff --json` of `rules` against `legacy`; (exit code, report).
    fn diff(&self, rules: &std::path::Path, legacy: &str, extra: &[&str]) -> (i32, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_rulehost"))
            .args(["diff", "--json", "--rules", rules.to_str().unwrap(), "--accounts", &self.path("accounts.jsonl")])
            .args(["--legacy", legacy, "--input", &self.path("transactions.jsonl")])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap(), report)
    }

    /// The command line of `rulehost run` on `rules`, as a legacy side.
    fn run_command(&self, rules: &std::path::Path) -> String {
        format!(
            "{} run --quiet --ledger :memory: --rules {} --accounts {}",
            env!("CARGO_BIN_EXE_rulehost"),
            rules.display(),
            self.path("accounts.jsonl")
        )
    }
}

#[test]
fn rulehost_against_itself_agrees_on_every_line() {
    let f = Fixture::new(2_000);
    let set = TempRuleSet::example();
    let (code, report) = f.diff(set.dir.path(), &f.run_command(set.dir.path()), &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!((report["lines"].as_u64(), report["disagreeing"].as_u64()), (Some(2_000), Some(0)));
    assert!(report["rulehost"]["wall_s"].as_f64().unwrap() > 0.0);
    assert!(report["legacy"]["cpu_s"].as_f64().unwrap() > 0.0, "the other side's CPU time is measured");
}

#[test]
fn a_changed_rule_set_disagrees_exactly_where_its_decisions_changed() {
    let f = Fixture::new(3_000);
    let live = TempRuleSet::example();
    let manifest = std::fs::read_to_string(live.dir.path().join("manifest.toml")).unwrap();
    let candidate = TempRuleSet::new(&manifest.replace("review_at = 400", "review_at = 300"));
    // What changed, computed on its own: both rule sets through the pipeline.
    let transactions = std::fs::read_to_string(f.path("transactions.jsonl")).unwrap();
    let accounts = std::fs::read_to_string(f.path("accounts.jsonl")).unwrap();
    let decide = |set: &TempRuleSet| -> Vec<Value> {
        crate::support::run(&set.load(), &accounts, &transactions).0.iter().map(crate::support::value).collect()
    };
    let (before, after) = (decide(&live), decide(&candidate));
    let mut outcome_pairs: BTreeMap<String, u64> = BTreeMap::new();
    let mut changed = 0;
    for (b, a) in before.iter().zip(&after) {
        let key = |v: &Value| (v["outcome"].clone(), v["score"].clone(), v["reasons"].clone(), v["ledger"].clone());
        if key(a) != key(b) {
            changed += 1;
            if a["outcome"] != b["outcome"] {
                *outcome_pairs
                    .entry(format!("outcome {} → {}", a["outcome"].as_str().unwrap(), b["outcome"].as_str().unwrap()))
                    .or_default() += 1;
            }
        }
    }
    assert!(changed > 0, "the candidate must change something for this test to mean anything");
    let (code, report) = f.diff(candidate.dir.path(), &f.run_command(live.dir.path()), &[]);
    assert_eq!(code, 1);
    assert_eq!(report["disagreeing"].as_u64(), Some(changed), "{report}");
    let groups: BTreeMap<String, u64> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["kind"].as_str().unwrap().starts_with("outcome"))
        .map(|g| (g["kind"].as_str().unwrap().to_owned(), g["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(groups, outcome_pairs);
}

#[test]
fn against_the_legacy_python_only_declared_differences_remain() {
    // The legacy system lives beside the checkout (`../shared/legacy/`, not
    // copied in); RULEHOST_LEGACY points elsewhere.
    let legacy = std::env::var_os("RULEHOST_LEGACY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/legacy/python_rules.py"));
    if !legacy.exists() {
        eprintln!("SKIPPED: no legacy system at {} (set RULEHOST_LEGACY)", legacy.display());
        return;
    }
    let f = Fixture::new(3_000);
    let set = TempRuleSet::example();
    let command = format!(
        "python3 {} {} {}",
        legacy.display(),
        f.path("accounts.jsonl"),
        root().join("examples/ruleset/lists/blocked-accounts.txt").display()
    );
    let equate = ["--equate", "null-score-is-zero", "--equate", "errors-agree"];
    let (code, report) = f.diff(set.dir.path(), &command, &equate);
    assert_eq!((code, report["disagreeing"].as_u64()), (0, Some(0)), "{report}");
    // Without the score equivalence, the null scores of early rejects are
    // all that differ.
    let (code, report) = f.diff(set.dir.path(), &command, &["--equate", "errors-agree"]);
    assert_eq!(code, 1);
    let kinds: Vec<&str> = report["groups"].as_array().unwrap().iter().map(|g| g["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["score 0 → null"], "{report}");
}
