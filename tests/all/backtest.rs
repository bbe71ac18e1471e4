//! `rulehost backtest` through the real binary: an identical candidate is
//! the identity, a changed one moves exactly the decisions that change, and
//! labels count caught and missed fraud before and after.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::support::{TempRuleSet, generated, run, value};

fn backtest(live: &TempRuleSet, candidate: &TempRuleSet, dir: &std::path::Path, labels: Option<&str>) -> Value {
    backtest_with(live, candidate, dir, labels, &[])
}

fn backtest_with(
    live: &TempRuleSet,
    candidate: &TempRuleSet,
    dir: &std::path::Path,
    labels: Option<&str>,
    extra: &[&str],
) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rulehost"));
    cmd.current_dir(dir);
    cmd.args(["backtest", "--json", "--rules", live.dir.path().to_str().unwrap()])
        .args(["--candidate", candidate.dir.path().to_str().unwrap()])
        .args(["--accounts", dir.join("accounts.jsonl").to_str().unwrap()])
        .args(["--input", dir.join("transactions.jsonl").to_str().unwrap()])
        .args(extra);
    if let Some(l) = labels {
        cmd.args(["--labels", l]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A generated stream in a temp folder, and the example rule set.
fn stream(seed: u64, accounts: usize) -> (tempfile::TempDir, String, String, TempRuleSet, String) {
    let dir = tempfile::tempdir().unwrap();
    let (accounts, transactions) = generated(seed, accounts, 3_000);
    std::fs::write(dir.path().join("accounts.jsonl"), &accounts).unwrap();
    std::fs::write(dir.path().join("transactions.jsonl"), &transactions).unwrap();
    let live = TempRuleSet::example();
    let manifest = std::fs::read_to_string(live.dir.path().join("manifest.toml")).unwrap();
    (dir, accounts, transactions, live, manifest)
}

/// The report's transition matrix: (from, to) → count.
fn transitions(report: &Value) -> BTreeMap<(String, String), u64> {
    report["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| ((t["from"].as_str().unwrap().into(), t["to"].as_str().unwrap().into()), t["count"].as_u64().unwrap()))
        .collect()
}

#[test]
fn backtests_show_exactly_what_a_candidate_changes() {
    let (dir, accounts, transactions, live, manifest) = stream(3, 300);

    // The same rule set: the identity.
    let same = TempRuleSet::new(&manifest);
    let report = backtest(&live, &same, dir.path(), None);
    assert_eq!(report["changed"], 0, "{report}");
    for t in report["transitions"].as_array().unwrap() {
        assert_eq!(t["from"], t["to"], "{t}");
    }
    let decided = report["decided"].as_u64().unwrap();
    assert!(decided > 2_500);

    // A lower review threshold, against the pipeline's own answers.
    let candidate = TempRuleSet::new(&manifest.replace("review_at = 400", "review_at = 300"));
    let before: Vec<Value> = run(&live.load(), &accounts, &transactions).0.iter().map(value).collect();
    let after: Vec<Value> = run(&candidate.load(), &accounts, &transactions).0.iter().map(value).collect();
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (b, a) in before.iter().zip(&after).filter(|(b, _)| b["outcome"] != "error") {
        *expected.entry((b["outcome"].as_str().unwrap().into(), a["outcome"].as_str().unwrap().into())).or_default() +=
            1;
    }
    // Labels: every transaction a fraud if its id ends in 7, else legit.
    let labels: String = before
        .iter()
        .filter_map(|d| d["id"].as_str())
        .map(|id| format!("{{\"id\":\"{id}\",\"label\":\"{}\"}}\n", if id.ends_with('7') { "fraud" } else { "legit" }))
        .collect();
    let labels_path = dir.path().join("labels.jsonl");
    std::fs::write(&labels_path, labels).unwrap();
    let report = backtest(&live, &candidate, dir.path(), Some(labels_path.to_str().unwrap()));
    let got = transitions(&report);
    assert_eq!(got, expected);
    assert!(expected.get(&("approve".into(), "review".into())).copied().unwrap_or(0) > 0, "the change moves something");
    // Caught and missed, counted here independently (flagged = not approve;
    // a replayed line counts once per line, like the report).
    let confusion = |ds: &[Value]| {
        let (mut caught, mut missed, mut fp) = (0u64, 0u64, 0u64);
        for d in ds.iter().filter(|d| d["outcome"] != "error") {
            let fraud = d["id"].as_str().unwrap().ends_with('7');
            let flagged = d["outcome"] != "approve";
            match (fraud, flagged) {
                (true, true) => caught += 1,
                (true, false) => missed += 1,
                (false, true) => fp += 1,
                _ => {}
            }
        }
        (caught, missed, fp)
    };
    let l = &report["labels"];
    for (side, ds) in [("live", &before), ("candidate", &after)] {
        let (caught, missed, fp) = confusion(ds);
        assert_eq!(
            (l[side]["caught"].as_u64(), l[side]["missed"].as_u64(), l[side]["false_positives"].as_u64()),
            (Some(caught), Some(missed), Some(fp)),
            "{side}: {l}"
        );
    }
}

#[test]
fn a_backtest_of_a_time_range_and_a_sample_of_customers_compares_just_those_and_writes_no_ledger() {
    let (dir, accounts, transactions, live, manifest) = stream(4, 400);
    let candidate = TempRuleSet::new(&manifest.replace("review_at = 400", "review_at = 300"));
    // A real ledger in the folder the backtest runs in stays byte-identical.
    let ledger = dir.path().join("rulehost-ledger.sqlite");
    let status = Command::new(env!("CARGO_BIN_EXE_rulehost"))
        .current_dir(dir.path())
        .args(["ledger", "import", "accounts.jsonl"])
        .status()
        .unwrap();
    assert!(status.success());
    let ledger_before = std::fs::read(&ledger).unwrap();

    // The sample: the lines of sources whose bucket is below 30, decided on
    // their own; the range: the middle half of that stream's timestamps.
    // (A line without a readable source stays: an error record either way.)
    let fields = |l: &str| -> (Option<String>, Option<String>) {
        let v: Option<Value> = serde_json::from_str(l).ok();
        let get = |k: &str| v.as_ref().and_then(|v| v[k].as_str().map(str::to_owned));
        (get("source"), get("timestamp"))
    };
    let sampled: String = transactions
        .lines()
        .filter(|l| fields(l).0.is_none_or(|s| rulehost::rollout::bucket(&s) < 30))
        .map(|l| format!("{l}\n"))
        .collect();
    let at = |s: &str| rulehost::input::parse_timestamp(s).ok();
    let stamps: Vec<Option<i128>> = sampled.lines().map(|l| fields(l).1.and_then(|t| at(&t))).collect();
    let texts: Vec<String> = sampled.lines().filter_map(|l| fields(l).1).filter(|t| at(t).is_some()).collect();
    let (from, to) = (&texts[texts.len() / 4], &texts[texts.len() * 3 / 4]);
    let range = at(from).unwrap()..at(to).unwrap();
    let before: Vec<Value> = run(&live.load(), &accounts, &sampled).0.iter().map(value).collect();
    let after: Vec<Value> = run(&candidate.load(), &accounts, &sampled).0.iter().map(value).collect();
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut outside = 0;
    for ((b, a), stamp) in before.iter().zip(&after).zip(&stamps) {
        if stamp.is_some_and(|t| !range.contains(&t)) {
            // Decided on both sides (for the history it makes), not compared.
            outside += u64::from(b["outcome"] != "error" && a["outcome"] != "error");
            continue;
        }
        if b["outcome"] != "error" && a["outcome"] != "error" {
            *expected
                .entry((b["outcome"].as_str().unwrap().into(), a["outcome"].as_str().unwrap().into()))
                .or_default() += 1;
        }
    }
    assert!(outside > 0 && expected.values().sum::<u64>() > 100, "a real range: {outside} outside, {expected:?}");
    let html = dir.path().join("report.html");
    let report = backtest_with(
        &live,
        &candidate,
        dir.path(),
        None,
        &["--sample", "30", "--from", from, "--to", to, "--html", html.to_str().unwrap()],
    );
    let got = transitions(&report);
    assert_eq!(got, expected, "{report}");
    assert_eq!(report["lines"].as_u64(), Some(stamps.len() as u64));
    assert_eq!(report["scope"]["outside"], outside);
    assert_eq!(report["scope"]["sample_percent"], 30);
    // The score distributions count every compared decision once a side.
    let decided = report["decided"].as_u64().unwrap();
    for side in ["live", "candidate"] {
        let total: u64 = report["scores"][side].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(total, decided, "{side}");
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>") && page.contains("<svg") && page.contains("Outcome transitions"));
    assert_eq!(std::fs::read(&ledger).unwrap(), ledger_before, "the real ledger is untouched");
}
