//! `rulehost backtest` through the real binary: an identical candidate is
//! the identity, a changed one moves exactly the decisions that change, and
//! labels count caught and missed fraud before and after.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::support::{TempRuleSet, generated, run, value};

fn backtest(live: &TempRuleSet, candidate: &TempRuleSet, dir: &std::path::Path, labels: Option<&str>) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rulehost"));
    cmd.args(["backtest", "--json", "--rules", live.dir.path().to_str().unwrap()])
        .args(["--candidate", candidate.dir.path().to_str().unwrap()])
        .args(["--accounts", dir.join("accounts.jsonl").to_str().unwrap()])
        .args(["--input", dir.join("transactions.jsonl").to_str().unwrap()]);
    if let Some(l) = labels {
        cmd.args(["--labels", l]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn backtests_show_exactly_what_a_candidate_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (accounts, transactions) = generated(3, 300, 3_000);
    std::fs::write(dir.path().join("accounts.jsonl"), &accounts).unwrap();
    std::fs::write(dir.path().join("transactions.jsonl"), &transactions).unwrap();
    let live = TempRuleSet::example();
    let manifest = std::fs::read_to_string(live.dir.path().join("manifest.toml")).unwrap();

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
    let got: BTreeMap<(String, String), u64> = report["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| ((t["from"].as_str().unwrap().into(), t["to"].as_str().unwrap().into()), t["count"].as_u64().unwrap()))
        .collect();
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
