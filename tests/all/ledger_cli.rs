//! The durable ledger through the real binary: `kill -9` at many seeded
//! random moments during `rulehost run`, resuming each time; the ledger and
//! review commands; bad input for `ledger import` and for the store path.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use serde_json::Value;

use crate::support::{TempRuleSet, root};

pub(crate) fn rulehost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rulehost")).args(args).output().expect("run rulehost")
}

pub(crate) fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Stored decisions by id, as JSON values.
fn stored_decisions(ledger: &Path) -> HashMap<String, Value> {
    crate::ledger_postgres::stored(&rulehost::ledger::StoreReader::open(ledger).unwrap())
}

fn transfers_per_reference(ledger: &Path) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT reference, count(*) FROM journal WHERE kind = 'transfer' GROUP BY reference ORDER BY reference",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

/// A decision output line without the per-run fields.
pub(crate) fn acknowledged(line: &str) -> Option<(String, Value)> {
    let mut v: Value = serde_json::from_str(line).unwrap();
    if v["outcome"] == "error" {
        return None;
    }
    let o = v.as_object_mut().unwrap();
    o.remove("line");
    o.remove("replayed");
    Some((o["id"].as_str().unwrap().to_owned(), v))
}

#[test]
fn kill_9_at_random_moments_then_resume_equals_one_clean_run() {
    let set = TempRuleSet::example();
    let rules = set.dir.path();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let cache = data.join("cache");
    let generated = rulehost(&["gen", "--out", s(data), "--accounts", "300", "--transactions", "20000", "--seed", "7"]);
    assert!(generated.status.success(), "{}", text(&generated));
    let (accounts, input) = (data.join("accounts.jsonl"), data.join("transactions.jsonl"));
    let run = |ledger: &Path, output: &Path| {
        Command::new(env!("CARGO_BIN_EXE_rulehost"))
            .args(["run", "--quiet", "--rules", s(rules), "--accounts", s(&accounts), "--input", s(&input)])
            .args(["--output", s(output), "--ledger", s(ledger), "--cache-dir", s(&cache)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // The uninterrupted run.
    let clean = data.join("clean.sqlite");
    let out = run(&clean, &data.join("clean.jsonl")).wait_with_output().unwrap();
    assert!(out.status.code().unwrap() <= 1, "{}", text(&out));

    // The same input, killed with SIGKILL at seeded random moments and resumed.
    let crashed = data.join("crashed.sqlite");
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(20_261_128);
    let mut acked: HashMap<String, Value> = HashMap::new();
    let mut kills = 0;
    let mut finished_early = 0;
    for round in 0.. {
        let output = data.join(format!("round-{round}.jsonl"));
        let mut child = run(&crashed, &output);
        let killing = kills < 22;
        if killing {
            std::thread::sleep(Duration::from_millis(rng.random_range(150..2500)));
        }
        let finished = if killing { child.try_wait().unwrap().is_some() } else { true };
        if !finished {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let status = child.wait().unwrap();
        if finished && killing {
            finished_early += 1;
        }
        // What the output shows was acknowledged: every complete line.
        let written = std::fs::read_to_string(&output).unwrap_or_default();
        let complete = written.rsplit_once('\n').map_or("", |(done, _)| done);
        acked.extend(complete.lines().filter_map(acknowledged));
        // After every crash, the store reconciles: nothing half-written.
        let reconcile = rulehost(&["ledger", "reconcile", "--ledger", s(&crashed)]);
        assert!(reconcile.status.success(), "after round {round}: {}", text(&reconcile));
        if !killing {
            assert!(status.code().unwrap() <= 1, "the final run completes");
            break;
        }
    }
    assert!(kills >= 20, "{kills} kills ({finished_early} runs finished before their kill)");

    let want = stored_decisions(&clean);
    let got = stored_decisions(&crashed);
    assert_eq!(got.len(), want.len(), "every transaction decided exactly once");
    for (id, decision) in &want {
        assert_eq!(got.get(id), Some(decision), "decision of {id} equals the uninterrupted run's");
    }
    for (id, decision) in &acked {
        assert_eq!(got.get(id), Some(decision), "acknowledged decision {id} is in the store, unchanged");
    }
    assert!(acked.len() > 1000, "the kills landed mid-stream ({} acknowledged)", acked.len());
    let transfers = transfers_per_reference(&crashed);
    assert!(transfers.iter().all(|(_, n)| *n == 1), "no transaction posted twice");
    assert_eq!(transfers, transfers_per_reference(&clean));
    let balances = |l: &Path| text(&rulehost(&["ledger", "accounts", "--ledger", s(l)]));
    assert_eq!(balances(&crashed), balances(&clean), "final balances equal the uninterrupted run's");
}

fn fixture(name: &str) -> std::path::PathBuf {
    root().join("tests/fixtures/pipeline").join(name)
}

#[test]
fn review_commands_post_or_void_holds_idempotently() {
    let set = TempRuleSet::example();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let l = s(&ledger);
    let out = rulehost(&[
        "run",
        "--quiet",
        "--rules",
        s(set.dir.path()),
        "--accounts",
        s(&fixture("accounts.jsonl")),
        "--input",
        s(&fixture("transactions.jsonl")),
        "--output",
        s(&dir.path().join("out.jsonl")),
        "--ledger",
        l,
    ]);
    assert_eq!(out.status.code(), Some(1), "the fixture has error lines: {}", text(&out));
    let list = rulehost(&["review", "list", "--ledger", l]);
    let pending: Vec<Value> =
        String::from_utf8(list.stdout).unwrap().lines().map(|x| serde_json::from_str(x).unwrap()).collect();
    let ids: Vec<&str> = pending.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"t16-hold"), "{ids:?}");
    assert!(pending.iter().all(|h| h["state"] == "pending"));

    let balance = |account: &str| -> Value {
        let out = rulehost(&["ledger", "balance", account, "--ledger", l]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = balance("holdy");
    assert_eq!((before["posted"].as_str(), before["pending"].as_str()), (Some("7000.00"), Some("7000.00")));

    let approve = rulehost(&["review", "approve", "t16-hold", "--ledger", l]);
    assert!(approve.status.success(), "{}", text(&approve));
    let done: Value = serde_json::from_slice(&approve.stdout).unwrap();
    assert_eq!((done["state"].as_str(), done["result"].as_str()), (Some("posted"), Some("done")));
    let after = balance("holdy");
    assert_eq!(after["pending"].as_str(), Some("0.00"));
    assert_eq!(after["posted"].as_str(), Some("0.00"), "{after}");

    let again = rulehost(&["review", "approve", "t16-hold", "--ledger", l]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["result"], "already-done", "approving twice posts once");
    let decline = rulehost(&["review", "decline", "t16-hold", "--ledger", l]);
    assert_eq!(decline.status.code(), Some(1));
    assert!(text(&decline).contains("already posted"), "{}", text(&decline));
    let unknown = rulehost(&["review", "approve", "nope", "--ledger", l]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown).contains("no hold for transaction \"nope\""), "{}", text(&unknown));

    let journal =
        String::from_utf8(rulehost(&["ledger", "journal", "--account", "holdy", "--ledger", l]).stdout).unwrap();
    assert_eq!(journal.matches("\"kind\":\"hold-posted\"").count(), 1, "{journal}");
    assert!(journal.lines().all(|e| e.contains("\"holdy\"")), "only holdy's entries: {journal}");
    let reconcile = rulehost(&["ledger", "reconcile", "--ledger", l]);
    assert!(reconcile.status.success(), "{}", text(&reconcile));
    let conn = rusqlite::Connection::open(&ledger).unwrap();
    let recorded: i64 =
        conn.query_row("SELECT count(*) FROM resolutions WHERE hold_id = 't16-hold'", [], |r| r.get(0)).unwrap();
    assert_eq!(recorded, 1, "the resolution is recorded once");

    // Tampering is reported and fails the command.
    conn.execute("UPDATE accounts SET pending = '1.00' WHERE id = 'a1'", []).unwrap();
    drop(conn);
    let reconcile = rulehost(&["ledger", "reconcile", "--ledger", l]);
    assert_eq!(reconcile.status.code(), Some(1));
    assert!(text(&reconcile).contains("DISCREPANCY account a1: pending 1.00"), "{}", text(&reconcile));
}

#[test]
fn ledger_import_names_the_bad_line_and_imports_nothing_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let l = s(&ledger);
    let good = dir.path().join("good.jsonl");
    let account = |id: &str, overdraft: &str| {
        format!(
            r#"{{"id":"{id}","currency":"EUR","country":"DE","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"{overdraft}","opening_balance":"10.00"}}"#
        )
    };
    std::fs::write(&good, format!("{}\n{}\n", account("g1", "0"), account("g2", "0"))).unwrap();
    let out = rulehost(&["ledger", "import", s(&good), "--ledger", l]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("imported 2 new account(s)"), "{}", text(&out));
    let again = rulehost(&["ledger", "import", s(&good), "--ledger", l]);
    assert!(text(&again).contains("imported 0 new account(s)") && text(&again).contains("2 already present"));

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{}\n{}\n", account("n1", "0"), account("n2", "0").replace("\"EUR\"", "7"))).unwrap();
    let out = rulehost(&["ledger", "import", s(&bad), "--ledger", l]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("line 2") && text(&out).contains("currency"), "{}", text(&out));
    let changed = dir.path().join("changed.jsonl");
    std::fs::write(&changed, format!("{}\n{}\n", account("n1", "0"), account("g1", "5.00"))).unwrap();
    let out = rulehost(&["ledger", "import", s(&changed), "--ledger", l]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("account \"g1\" already exists with different facts"), "{}", text(&out));
    let accounts = String::from_utf8(rulehost(&["ledger", "accounts", "--ledger", l]).stdout).unwrap();
    assert_eq!(accounts.lines().count(), 2, "nothing of a failed import is kept: {accounts}");
    let missing = rulehost(&["ledger", "balance", "zz", "--ledger", l]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("no account \"zz\""));

    // Bad store paths: clear errors, files untouched.
    let garbage = dir.path().join("garbage.sqlite");
    std::fs::write(&garbage, "this is not a database, it is a note to self\n".repeat(200)).unwrap();
    let out = rulehost(&["ledger", "import", s(&good), "--ledger", s(&garbage)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("is not a rulehost ledger"), "{}", text(&out));
    assert!(std::fs::read_to_string(&garbage).unwrap().starts_with("this is not a database"));
    let out = rulehost(&["ledger", "accounts", "--ledger", s(&dir.path().join("absent.sqlite"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no such file"), "{}", text(&out));
    let out = rulehost(&["ledger", "import", s(&good), "--ledger", s(&good.join("below-a-file.sqlite"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cannot open ledger"), "{}", text(&out));

    // While a run owns the ledger, other writers are told so.
    let set = TempRuleSet::example();
    let mut holder = Command::new(env!("CARGO_BIN_EXE_rulehost"))
        .args(["run", "--quiet", "--rules", s(set.dir.path()), "--ledger", l])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let busy = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            rulehost(&["review", "approve", "x", "--ledger", l])
        })
        .find(|o| text(o).contains("in use by another process"));
    drop(holder.stdin.take());
    holder.wait().unwrap();
    assert!(busy.is_some(), "a second process is refused while a run owns the ledger");
}
