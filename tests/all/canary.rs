//! Canary rollout in the pipeline: the candidate decides exactly the source
//! accounts whose stable bucket is below the share, every decision says so,
//! the records do not depend on the thread count, and the guard aborts a
//! candidate that fails — at the same decision every time.

use std::collections::HashMap;
use std::sync::Arc;

use rulehost::pipeline::Pipeline;
use rulehost::reload::RuleSource;
use rulehost::rollout::{Event, GuardOverride, Phase, Rollout, bucket};
use rulehost::run::{RunOptions, run_stream};
use serde_json::Value;

use crate::support::{TempRuleSet, generated, ledger, sandbox};

/// Runs `transactions` with `candidate` at `share` (none: no rollout);
/// returns the output and the rollout.
fn run(
    live: &TempRuleSet,
    candidate: Option<(&TempRuleSet, u8)>,
    accounts: &str,
    transactions: &str,
    threads: usize,
) -> (String, Option<Arc<Rollout>>) {
    let ruleset = Arc::new(live.load());
    let mut pipeline = Pipeline::new(sandbox(), ledger(accounts, &ruleset));
    let mut rollout = None;
    if let Some((c, share)) = candidate {
        let source: Arc<dyn RuleSource> = Arc::new(Arc::new(c.load()));
        let r = Arc::new(Rollout::new(source, share, GuardOverride::default()));
        pipeline = pipeline.with_rollout(r.clone());
        rollout = Some(r);
    }
    let mut out = Vec::new();
    let options = RunOptions { threads, ..RunOptions::default() };
    run_stream(&pipeline, &ruleset, transactions.as_bytes(), &mut out, &options, None).unwrap();
    (String::from_utf8(out).unwrap(), rollout)
}

fn sources(transactions: &str) -> HashMap<String, String> {
    transactions
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v["id"].as_str()?.to_owned(), v["source"].as_str()?.to_owned())))
        .collect()
}

fn changed(live: &TempRuleSet) -> TempRuleSet {
    let manifest = std::fs::read_to_string(live.dir.path().join("manifest.toml")).unwrap();
    TempRuleSet::new(&manifest.replace("review_at = 400", "review_at = 300"))
}

#[test]
fn the_candidate_decides_the_share_of_sources_its_hash_gives_it() {
    let (accounts, transactions) = generated(11, 2_000, 8_000);
    let live = TempRuleSet::example();
    let candidate = changed(&live);
    let (live_version, candidate_version) = (live.load().version, candidate.load().version);
    let source_of = sources(&transactions);

    let (out, rollout) = run(&live, Some((&candidate, 20)), &accounts, &transactions, 2);
    let (mut decided, mut by_candidate) = (0u64, 0u64);
    let mut arm_of_source: HashMap<String, String> = HashMap::new();
    for line in out.lines() {
        let d: Value = serde_json::from_str(line).unwrap();
        if d["outcome"] == "error" || d["replayed"] == true {
            continue;
        }
        let source = &source_of[d["id"].as_str().unwrap()];
        let tag = &d["rollout"];
        let arm = tag["arm"].as_str().unwrap_or_else(|| panic!("no rollout tag: {d}")).to_owned();
        // Why this arm: the source's bucket against the share.
        assert_eq!(tag["bucket"].as_u64(), Some(u64::from(bucket(source))), "{d}");
        assert_eq!(tag["share"], 20);
        assert_eq!(arm == "candidate", bucket(source) < 20, "{d}");
        let want = if arm == "candidate" { &candidate_version } else { &live_version };
        assert_eq!(d["ruleset"].as_str(), Some(&**want), "{d}");
        // One customer, one version.
        let first = arm_of_source.entry(source.clone()).or_insert_with(|| arm.clone());
        assert_eq!(*first, arm, "source {source} met both versions");
        decided += 1;
        by_candidate += u64::from(arm == "candidate");
    }
    let share = by_candidate as f64 / decided as f64;
    assert!((0.16..=0.24).contains(&share), "candidate decided {by_candidate} of {decided} ({share:.3})");
    let rollout = rollout.unwrap();
    assert_eq!(rollout.decided_counts(), (decided - by_candidate, by_candidate));

    // Any thread count: the same bytes.
    let (one, _) = run(&live, Some((&candidate, 20)), &accounts, &transactions, 1);
    assert_eq!(one, out, "1 thread vs 2");

    // At 0% every decision is the live one's, byte for byte but for the tag.
    let (alone, _) = run(&live, None, &accounts, &transactions, 2);
    let (zero, _) = run(&live, Some((&candidate, 0)), &accounts, &transactions, 2);
    let untagged: Vec<String> = zero
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.remove("rollout");
            }
            v.to_string()
        })
        .collect();
    let plain: Vec<String> = alone.lines().map(|l| serde_json::from_str::<Value>(l).unwrap().to_string()).collect();
    assert_eq!(untagged, plain);
    assert!(!alone.contains("\"rollout\""), "no tag without a rollout");
}

/// The example rule set plus a risk rule that traps on every call (ignored:
/// it never changes an outcome), aborted by its guard above 10% failures.
fn failing_candidate() -> TempRuleSet {
    let manifest = std::fs::read_to_string(crate::support::root().join("examples/ruleset/manifest.toml")).unwrap();
    TempRuleSet::new(&format!(
        r#"{manifest}
[[rule]]
name = "hostile"
kind = "risk"
module = "modules/hostile.wasm"
on_error = "ignore"
[rule.params]
mode = "trap"

[rollout]
abort_failure_percent = "10"
window_decisions = 50
min_decisions = 25
"#
    ))
}

#[test]
fn the_guard_aborts_a_failing_candidate_at_the_same_decision_every_time() {
    let (accounts, transactions) = generated(12, 300, 1_500);
    let live = TempRuleSet::example();
    let candidate = failing_candidate();
    let (out, rollout) = run(&live, Some((&candidate, 100)), &accounts, &transactions, 2);
    let rollout = rollout.unwrap();
    assert_eq!(rollout.phase(), Phase::Aborted);
    assert_eq!(rollout.share(), 0);
    let state = rollout.saved_state();
    let abort = state.transitions.iter().find(|t| t.event == Event::AutoAbort).expect("an auto-abort");
    assert_eq!((abort.from_share, abort.to_share), (100, 0));
    assert!(abort.why.contains("/25 decisions is above 10%"), "{}", abort.why);
    // Nearly every decision failed a rule (all that reached the risk
    // rules), so the guard fired at the 25th; all
    // later ones are the live rule set's, tagged with share 0.
    let arms: Vec<(String, u64)> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|d| d["outcome"] != "error" && d["replayed"] != true)
        .map(|d| (d["rollout"]["arm"].as_str().unwrap().to_owned(), d["rollout"]["share"].as_u64().unwrap()))
        .collect();
    assert!(arms[..25].iter().all(|(a, s)| a == "candidate" && *s == 100), "{:?}", &arms[..26]);
    assert!(arms[25..].iter().all(|(a, s)| a == "live" && *s == 0), "{:?}", &arms[..30]);
    assert_eq!(rollout.decided_counts().1, 25);
    // Deterministic: one thread aborts at the same line.
    let (again, _) = run(&live, Some((&candidate, 100)), &accounts, &transactions, 1);
    assert_eq!(again, out);
}

#[test]
fn the_manifest_guard_is_checked_when_the_rule_set_loads() {
    let manifest = std::fs::read_to_string(crate::support::root().join("examples/ruleset/manifest.toml")).unwrap();
    for (table, key) in [
        ("abort_failure_percent = \"101\"", "abort_failure_percent"),
        ("abort_flagged_percent = 2.5", "abort_flagged_percent"),
        ("window_decisions = 10\nmin_decisions = 11", "min_decisions"),
        ("window_decisions = 0", "window_decisions"),
    ] {
        let set = TempRuleSet::new(&format!("{manifest}\n[rollout]\n{table}\n"));
        let error = rulehost::ruleset::RuleSet::load(&sandbox(), set.dir.path()).err().expect(table).to_string();
        assert!(error.contains(&format!("[rollout] key `{key}`")), "{table}: {error}");
    }
}
