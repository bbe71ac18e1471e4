//! Shadow mode: a candidate evaluated beside every live decision never
//! changes a live byte, and its report is what the candidate would have
//! decided on the state each live decision saw.

use std::collections::BTreeMap;
use std::sync::Arc;

use rulehost::pipeline::Pipeline;
use rulehost::run::{RunOptions, run_stream};
use serde_json::Value;

use crate::support::{TempRuleSet, generated, ledger, sandbox};

fn run(live: &TempRuleSet, candidate: Option<&TempRuleSet>, accounts: &str, transactions: &str) -> (String, Pipeline) {
    let ruleset = Arc::new(live.load());
    let mut pipeline = Pipeline::new(sandbox(), ledger(accounts, &ruleset));
    if let Some(c) = candidate {
        pipeline = pipeline.with_shadow_pairs(Arc::new(Arc::new(c.load())), usize::MAX);
    }
    let mut out = Vec::new();
    let options = RunOptions { threads: 2, ..RunOptions::default() };
    run_stream(&pipeline, &ruleset, transactions.as_bytes(), &mut out, &options, None).unwrap();
    (String::from_utf8(out).unwrap(), pipeline)
}

#[test]
fn a_shadow_candidate_never_changes_a_live_decision_and_reports_its_own() {
    let (accounts, transactions) = generated(5, 300, 3_000);
    let live = TempRuleSet::example();
    let manifest = std::fs::read_to_string(live.dir.path().join("manifest.toml")).unwrap();
    let candidate = TempRuleSet::new(&manifest.replace("review_at = 400", "review_at = 300"));

    let (alone, _) = run(&live, None, &accounts, &transactions);
    let (beside, pipeline) = run(&live, Some(&candidate), &accounts, &transactions);
    assert_eq!(alone, beside, "live output is byte-identical with a shadow");

    // The candidate only lowers review_at: on the state the live decision
    // saw, its outcome follows from the live score (a funds refusal stays
    // one, a validation reject stays one, a failed rule still forces review).
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in alone.lines() {
        let d: Value = serde_json::from_str(line).unwrap();
        if d["outcome"] == "error" || d["replayed"] == true {
            continue;
        }
        let live_outcome = d["outcome"].as_str().unwrap().to_owned();
        let score = d["score"].as_u64().unwrap();
        let reasons: Vec<&str> = d["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        let scored = d["rules"].as_array().unwrap().iter().any(|r| r["result"] == "score");
        let candidate_outcome = if live_outcome == "reject" && (!scored || reasons.contains(&"RULE_FAILED")) {
            live_outcome.clone()
        } else if reasons == ["INSUFFICIENT_FUNDS"] {
            if score >= 700 { "decline".into() } else { "reject".into() }
        } else if score >= 700 {
            "decline".into()
        } else if score >= 300 || reasons.contains(&"RULE_FAILED") {
            "review".into()
        } else {
            "approve".into()
        };
        *expected.entry((live_outcome, candidate_outcome)).or_default() += 1;
    }
    let report = pipeline.shadow_report().unwrap();
    let got: BTreeMap<(String, String), u64> =
        report.transitions.iter().map(|t| ((t.from.clone(), t.to.clone()), t.count)).collect();
    assert_eq!(got, expected);
    assert!(got.get(&("approve".into(), "review".into())).copied().unwrap_or(0) > 0);
    // Every shadow decision names the candidate's version.
    let version = candidate.load().version;
    assert!(pipeline.shadow_decisions().iter().all(|p| p.candidate.ruleset == version && p.live.ruleset != version));

    // An identical candidate agrees on everything.
    let same = TempRuleSet::new(&manifest);
    let (_, pipeline) = run(&live, Some(&same), &accounts, &transactions);
    let report = pipeline.shadow_report().unwrap();
    assert_eq!(report.changed, 0);
    assert!(report.transitions.iter().all(|t| t.from == t.to));
}

/// A candidate that decides every outcome and ledger effect as the live one
/// does but scores differently (every risk weight halved, both thresholds
/// halved): its alternate history is the live history, so a backtest over the
/// same traffic must report exactly what shadow mode reports.
#[test]
fn the_shadow_report_equals_a_backtest_of_the_same_traffic() {
    let (accounts, transactions) = generated(6, 300, 3_000);
    let live = TempRuleSet::example();
    let manifest = std::fs::read_to_string(live.dir.path().join("manifest.toml")).unwrap();
    let halved = manifest
        .replace("kind = \"risk\"", "kind = \"risk\"\nweight = \"0.5\"")
        .replace("review_at = 400", "review_at = 200")
        .replace("decline_at = 700", "decline_at = 350");
    let candidate = TempRuleSet::new(&halved);
    let (alone, pipeline) = run(&live, Some(&candidate), &accounts, &transactions);
    let shadow = pipeline.shadow_report().unwrap();

    let (next, _) = run(&candidate, None, &accounts, &transactions);
    let parse = |text: &str| -> Vec<Value> { text.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let (live_records, candidate_records) = (parse(&alone), parse(&next));
    let inputs: Vec<Value> = transactions.lines().map(|l| serde_json::from_str(l).unwrap_or_default()).collect();
    // Shadow pairs new decisions only: no error records, no replays.
    let new = |i: &usize| live_records[*i]["outcome"] != "error" && live_records[*i]["replayed"] != true;
    let kept: Vec<usize> = (0..live_records.len()).filter(new).collect();
    let pick = |all: &[Value]| -> Vec<Value> { kept.iter().map(|i| all[*i].clone()).collect() };
    let mut backtest = rulehost::backtest::compare(
        &pick(&live_records),
        &pick(&candidate_records),
        &pick(&inputs),
        &Default::default(),
    );
    backtest.lines = shadow.lines;
    assert_eq!(shadow, backtest);
    assert!(shadow.changed > 100, "the scores change: {}", shadow.changed);
    assert!(shadow.transitions.iter().all(|t| t.from == t.to));
    assert_ne!(shadow.scores.live, shadow.scores.candidate);
}
