//! Hot reload: versions swap atomically under load, broken versions never go
//! live, a file still being written is never loaded half-done, and a warm
//! compiled-module cache means a restart compiles nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rulehost::pipeline::Pipeline;
use rulehost::reload::{LiveRules, ReloadOutcome, RuleSource, Watcher};
use rulehost::ruleset::RuleSet;
use rulehost::sandbox::{Sandbox, SandboxConfig};
use rulehost_cli::generate::{GenConfig, generate};

use crate::support::{TempRuleSet, ledger, module, sandbox};

fn example_manifest() -> String {
    std::fs::read_to_string(crate::support::root().join("examples/ruleset/manifest.toml")).unwrap()
}

#[test]
fn reloads_under_load_lose_nothing_and_broken_versions_never_go_live() {
    let set = TempRuleSet::example();
    let dir = set.dir.path().to_owned();
    // A compiled-module cache keeps each reload short, so many happen while
    // the stream runs.
    let cache = tempfile::tempdir().unwrap();
    let engine = Arc::new(
        Sandbox::new(&SandboxConfig { cache_dir: Some(cache.path().to_owned()), ..Default::default() }).unwrap(),
    );
    let live = Arc::new(LiveRules::load(engine.clone(), &dir, None).unwrap());
    let first = live.current();

    let config = GenConfig { seed: 3, accounts: 200, transactions: 20_000, ..GenConfig::default() };
    let (mut accounts, mut transactions) = (Vec::new(), Vec::new());
    generate(&config, &mut accounts, &mut transactions).unwrap();
    let accounts = String::from_utf8(accounts).unwrap();
    let pipeline = Pipeline::new(engine.clone(), ledger(&accounts, &first));

    let velocity = std::fs::read(dir.join("modules/velocity.wasm")).unwrap();
    let good_a = example_manifest();
    let good_b = good_a.replace("review_at = 400", "review_at = 450");
    let output = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            let options = rulehost::run::RunOptions { threads: 2, window_per_thread: 4 };
            let mut out = Vec::new();
            let source: &dyn RuleSource = &*live;
            let summary =
                rulehost::run::run_stream(&pipeline, source, &transactions[..], &mut out, &options, None).unwrap();
            (summary, String::from_utf8(out).unwrap())
        });
        let mut refused = 0;
        let mut swapped = 0;
        for i in 0..60 {
            // Alternate good versions with every kind of broken one.
            let broken = match i % 6 {
                0 => {
                    std::fs::write(dir.join("manifest.toml"), &good_b).unwrap();
                    false
                }
                1 => {
                    std::fs::write(dir.join("modules/velocity.wasm"), b"\0asm garbage").unwrap();
                    true
                }
                2 => {
                    std::fs::copy(module("guest-wit-future"), dir.join("modules/velocity.wasm")).unwrap();
                    true
                }
                3 => {
                    std::fs::write(dir.join("modules/velocity.wasm"), &velocity[..velocity.len() / 2]).unwrap();
                    true
                }
                4 => {
                    std::fs::write(dir.join("modules/velocity.wasm"), &velocity).unwrap();
                    std::fs::write(dir.join("manifest.toml"), format!("reveiw_at = 1\n{good_a}")).unwrap();
                    true
                }
                _ => {
                    std::fs::write(dir.join("manifest.toml"), &good_a).unwrap();
                    false
                }
            };
            match live.reload() {
                Ok(ReloadOutcome::Swapped { .. }) => swapped += 1,
                Ok(ReloadOutcome::Unchanged) => {}
                Err(e) => {
                    assert!(broken, "a good version was refused: {e}");
                    refused += 1;
                }
            }
            if i % 6 == 4 {
                std::fs::write(dir.join("manifest.toml"), &good_b).unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(refused, 40, "every broken version is refused");
        assert!(swapped >= 10, "{swapped} swaps");
        runner.join().unwrap()
    });
    let (summary, out) = output;
    assert_eq!(summary.lines, 20_000, "no transaction dropped");
    let status = live.status();
    assert_eq!(status.failures, 40);
    assert!(status.last_error.is_some());
    // Every decision names a version that was live; only two contents ever were.
    let versions: HashSet<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["ruleset"].as_str().map(String::from))
        .collect();
    let a = first.version.to_string();
    std::fs::write(dir.join("manifest.toml"), &good_b).unwrap();
    let b = RuleSet::load(&sandbox(), &dir).unwrap().version.to_string();
    assert_eq!(versions, HashSet::from([a.clone(), b.clone()]), "both versions served, and only they");
    for record in &status.history {
        assert!(record.version == a || record.version == b, "{} went live", record.version);
    }
    // No decision failed because of a reload.
    assert!(!out.contains("RULE_FAILED"));
}

#[test]
fn a_module_written_in_chunks_is_never_loaded_half_done() {
    let set = TempRuleSet::example();
    let dir = set.dir.path().to_owned();
    let live = Arc::new(LiveRules::load(sandbox(), &dir, None).unwrap());
    let before = live.current().version.to_string();
    let watcher = Watcher::start(live.clone(), Duration::from_millis(100)).unwrap();

    // A new module for `merchant-category`: the hostile rule would not fit, so
    // use the large-amount module under its name — a different, valid module.
    let new_module = std::fs::read(dir.join("modules/large-amount.wasm")).unwrap();
    let manifest = example_manifest().replace(
        "module = \"modules/merchant-category.wasm\"\n[rule.params]\nhigh_risk_mcc = [\"7995\", \"6051\", \"4829\", \"5967\", \"6211\"]",
        "module = \"modules/merchant-category.wasm\"\n[rule.params]\nlarge_threshold = { USD = \"10000\" }",
    );
    assert_ne!(manifest, example_manifest());
    // Chunks with pauses longer than the debounce: reloads happen in between.
    let path = dir.join("modules/merchant-category.wasm");
    std::fs::write(&path, []).unwrap();
    for chunk in new_module.chunks(new_module.len() / 3 + 1) {
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, chunk).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(400));
    }
    std::fs::write(dir.join("manifest.toml"), &manifest).unwrap();
    let expected = RuleSet::load(&sandbox(), &dir).unwrap().version.to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while *live.current().version != *expected {
        assert!(std::time::Instant::now() < deadline, "the complete version never went live: {:?}", live.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(watcher);
    let status = live.status();
    assert!(status.failures >= 1, "partial writes were seen and refused: {status:?}");
    let live_versions: Vec<&str> = status.history.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(live_versions, vec![before.as_str(), expected.as_str()], "only complete versions went live");
    // Roll back to the version before.
    assert!(matches!(live.rollback(), Ok(ReloadOutcome::Swapped { .. })));
    assert_eq!(&*live.current().version, before.as_str());
}

#[test]
fn a_second_start_with_a_warm_cache_compiles_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let set = TempRuleSet::example();
    let config = SandboxConfig { cache_dir: Some(cache.path().to_owned()), ..SandboxConfig::default() };
    let cold = Sandbox::new(&config).unwrap();
    RuleSet::load(&cold, set.dir.path()).unwrap();
    // Each resettable rule is two artifacts: its component (for `describe`)
    // and its instrumented core module.
    assert_eq!(cold.cache_stats(), Some((0, 18)), "the first start compiles all nine, twice each");
    let warm = Sandbox::new(&config).unwrap();
    RuleSet::load(&warm, set.dir.path()).unwrap();
    assert_eq!(warm.cache_stats(), Some((18, 0)), "the second start compiles nothing");
}

#[test]
fn status_and_rollback_commands_reach_a_watching_run() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_rulehost");
    let set = TempRuleSet::example();
    let dir = set.dir.path().to_owned();
    let accounts = dir.join("accounts.jsonl");
    std::fs::write(
        &accounts,
        std::fs::read_to_string(crate::support::root().join("tests/fixtures/pipeline/accounts.jsonl")).unwrap(),
    )
    .unwrap();
    let mut child = Command::new(bin)
        .args([
            "run",
            "--watch",
            "--quiet",
            "--ledger",
            ":memory:",
            "--rules",
            dir.to_str().unwrap(),
            "--accounts",
            accounts.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = |dir: &std::path::Path| -> Option<serde_json::Value> {
        let out = Command::new(bin).args(["ruleset", "status", "--rules", dir.to_str().unwrap()]).output().unwrap();
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    };
    let wait_for = |what: &str, check: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = status(&dir)
                && check(&s)
            {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {:?}", status(&dir));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let first = wait_for("the first status", &|_| true)["version"].as_str().unwrap().to_owned();
    std::fs::write(dir.join("manifest.toml"), example_manifest().replace("review_at = 400", "review_at = 450"))
        .unwrap();
    let second =
        wait_for("the new version", &|s| s["version"] != first.as_str())["version"].as_str().unwrap().to_owned();

    let out = Command::new(bin).args(["ruleset", "rollback", "--rules", dir.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(second.as_str()));
    let now = status(&dir).unwrap();
    assert_eq!(now["version"], first.as_str());
    assert!(now["history"].as_array().unwrap().last().unwrap()["change"].as_str().unwrap().starts_with("rollback"));

    // A broken version is refused and visible in the status.
    std::fs::write(dir.join("modules/velocity.wasm"), b"truncated").unwrap();
    let refused = wait_for("the refusal", &|s| s["failures"].as_u64() == Some(1));
    assert!(refused["last_error"]["message"].as_str().unwrap().contains("velocity"), "{refused}");
    assert_eq!(refused["version"], first.as_str(), "the previous version keeps serving");

    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, r#"{{"id":"w1","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a1","destination":"a2","amount":"5.00","currency":"USD"}}"#).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let decision: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["ruleset"], first.as_str(), "decided by the version rolled back to");
}
