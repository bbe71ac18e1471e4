//! The PostgreSQL ledger against a server of the test's own: the
//! conformance suite every backend passes, `run` onto PostgreSQL deciding
//! exactly as onto SQLite, the `ledger` and `review` commands on it,
//! `kill -9` mid-run and resume, one owner at a time, schema versions, and
//! a password never shown.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rulehost::ledger::{Ledger, LedgerReader, PgReader, PostgresLedger, StoreOptions};
use serde_json::Value;

use crate::ledger_cli::{rulehost, s, text};
use crate::postgres::PgServer;
use crate::support::TempRuleSet;

fn open(url: &str) -> PostgresLedger {
    let options = StoreOptions { history_window_seconds_max: 86_400, ..StoreOptions::default() };
    PostgresLedger::open(url, &options).unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

/// `rulehost run` of `input` onto `ledger` (with `accounts` imported first,
/// when given), its records to `output`.
pub(crate) fn run_onto(
    rules: &Path,
    accounts: Option<&Path>,
    input: &Path,
    output: &Path,
    ledger: &str,
    cache: &Path,
) -> std::process::Output {
    let mut args = vec!["run", "--quiet", "--rules", s(rules), "--input", s(input), "--output", s(output)];
    args.extend(["--ledger", ledger, "--cache-dir", s(cache)]);
    if let Some(a) = accounts {
        args.extend(["--accounts", s(a)]);
    }
    rulehost(&args)
}

/// Stored decisions by id, through any reader.
pub(crate) fn stored(reader: &dyn LedgerReader) -> HashMap<String, Value> {
    reader
        .decision_ids()
        .unwrap()
        .into_iter()
        .map(|id| {
            let record = reader.record(&id).unwrap().expect("a listed decision reads back");
            (id, serde_json::from_str(record.decision.json()).unwrap())
        })
        .collect()
}

/// Output lines that were acknowledged (complete lines), by id, without
/// per-run fields.
fn acknowledged(output: &str) -> HashMap<String, Value> {
    let complete = output.rsplit_once('\n').map_or("", |(done, _)| done);
    complete.lines().filter_map(crate::ledger_cli::acknowledged).collect()
}

#[test]
fn postgres_passes_the_conformance_suite() {
    let server = PgServer::start();
    let url = server.database("conformance");
    let u = url.clone();
    crate::ledger_scale::conformance(&mut || Box::new(open(&url)), &mut |l| {
        l.sync_point().wait().unwrap();
        drop(l);
        Box::new(open(&u))
    });
    let report = PgReader::open(&url).unwrap().reconcile().unwrap();
    assert!(report.is_clean(), "{:?}", report.discrepancies);
    assert_eq!(report.accounts, 3);
}

#[test]
fn one_host_owns_a_database_and_readers_read_meanwhile() {
    let server = PgServer::start();
    let url = server.database("owner");
    let mut first = open(&url);
    let accounts = rulehost::input::parse_accounts(&crate::support::generated(1, 5, 0).0).unwrap();
    first.import_accounts(&accounts).unwrap();
    first.sync_point().wait().unwrap();
    let second = PostgresLedger::open(&url, &StoreOptions::default()).err().expect("a second owner is refused");
    assert!(second.to_string().contains("in use by another host"), "{second}");
    let reader = PgReader::open(&url).unwrap();
    assert_eq!(reader.accounts().unwrap().len(), accounts.len(), "a reader reads while the owner runs");
    drop(first);
    let again = open(&url);
    assert_eq!(again.account_ids().len(), accounts.len(), "the next owner loads what the first wrote");
}

#[test]
fn run_onto_postgres_decides_exactly_as_onto_sqlite_and_the_commands_read_it() {
    let server = PgServer::start();
    let url = server.database("run");
    let set = TempRuleSet::example();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let cache = data.join("cache");
    let generated = rulehost(&["gen", "--out", s(data), "--accounts", "200", "--transactions", "4000", "--seed", "11"]);
    assert!(generated.status.success(), "{}", text(&generated));
    let (accounts, input) = (data.join("accounts.jsonl"), data.join("transactions.jsonl"));
    let run = |ledger: &str, output: &Path| run_onto(set.dir.path(), Some(&accounts), &input, output, ledger, &cache);
    let sqlite = data.join("ledger.sqlite");
    let out = run(s(&sqlite), &data.join("sqlite.jsonl"));
    assert!(out.status.code().unwrap() <= 1, "{}", text(&out));
    let out = run(&url, &data.join("pg.jsonl"));
    assert!(out.status.code().unwrap() <= 1, "{}", text(&out));
    let read = |name: &str| std::fs::read_to_string(data.join(name)).unwrap();
    assert_eq!(read("pg.jsonl"), read("sqlite.jsonl"), "the same decisions, byte for byte");

    // The commands read the database as they read the file.
    let same = |args: &[&str]| {
        let with = |ledger: &str| {
            let mut all: Vec<&str> = args.to_vec();
            all.extend(["--ledger", ledger]);
            let out = rulehost(&all);
            assert!(out.status.success(), "{args:?} on {ledger}: {}", text(&out));
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(with(&url), with(s(&sqlite)), "{args:?}");
    };
    same(&["ledger", "accounts"]);
    same(&["review", "list"]);
    same(&["ledger", "balance", "acc-000007"]);
    let reconcile = rulehost(&["ledger", "reconcile", "--ledger", &url]);
    assert!(reconcile.status.success(), "{}", text(&reconcile));
    assert!(text(&reconcile).contains("reconciled"), "{}", text(&reconcile));
    let pg = PgReader::open(&url).unwrap();
    let decisions = stored(&pg);
    assert_eq!(decisions, stored(&rulehost::ledger::StoreReader::open(&sqlite).unwrap()));
    assert_eq!(decisions.len(), acknowledged(&read("pg.jsonl")).len(), "every decided line is stored");
    assert!(decisions.len() > 3500);
    // Journals agree entry for entry (the sequence numbers too: one writer, no rollback).
    assert_eq!(
        pg.journal(None).unwrap(),
        LedgerReader::journal(&rulehost::ledger::StoreReader::open(&sqlite).unwrap(), None).unwrap()
    );

    // Show and replay a sample, byte-identical.
    let mut ids: Vec<&String> = decisions.keys().collect();
    ids.sort();
    for id in ids.iter().step_by(997) {
        let show = rulehost(&["ledger", "show", id, "--ledger", &url]);
        assert!(show.status.success(), "{}", text(&show));
        let replay = rulehost(&["ledger", "replay", id, "--ledger", &url, "--cache-dir", s(&cache)]);
        assert!(replay.status.success(), "replay {id}: {}", text(&replay));
    }

    // Running the same input again replays every decision: nothing moves twice.
    let again = run(&url, &data.join("again.jsonl"));
    assert!(again.status.code().unwrap() <= 1, "{}", text(&again));
    assert_eq!(acknowledged(&read("again.jsonl")), acknowledged(&read("pg.jsonl")));
    let decided = read("again.jsonl");
    let mut decided = decided.lines().filter(|l| !l.contains("\"outcome\":\"error\""));
    assert!(decided.all(|l| l.contains("\"replayed\":true")), "a second run replays every decision");
    same(&["ledger", "accounts"]);

    // A hold resolved through the database applies once.
    let holds = String::from_utf8(rulehost(&["review", "list", "--ledger", &url]).stdout).unwrap();
    if let Some(first) = holds.lines().next() {
        let id = serde_json::from_str::<Value>(first).unwrap()["id"].as_str().unwrap().to_owned();
        let approve = rulehost(&["review", "approve", &id, "--ledger", &url]);
        assert!(approve.status.success(), "{}", text(&approve));
        let repeat = rulehost(&["review", "approve", &id, "--ledger", &url]);
        assert!(text(&repeat).contains("already-done"), "{}", text(&repeat));
        assert!(rulehost(&["ledger", "reconcile", "--ledger", &url]).status.success());
    }
}

#[test]
fn kill_9_mid_run_then_resume_on_postgres_loses_nothing_and_posts_nothing_twice() {
    let server = PgServer::start();
    let url = server.database("crash");
    let set = TempRuleSet::example();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let cache = data.join("cache");
    let generated = rulehost(&["gen", "--out", s(data), "--accounts", "300", "--transactions", "20000", "--seed", "5"]);
    assert!(generated.status.success(), "{}", text(&generated));
    let (accounts, input) = (data.join("accounts.jsonl"), data.join("transactions.jsonl"));
    let run = |ledger: &str, output: &Path| {
        Command::new(env!("CARGO_BIN_EXE_rulehost"))
            .args(["run", "--quiet", "--rules", s(set.dir.path()), "--accounts", s(&accounts), "--input", s(&input)])
            .args(["--output", s(output), "--ledger", ledger, "--cache-dir", s(&cache)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let clean = data.join("clean.sqlite");
    let out = run(s(&clean), &data.join("clean.jsonl")).wait_with_output().unwrap();
    assert!(out.status.code().unwrap() <= 1, "{}", text(&out));

    let mut acked: HashMap<String, Value> = HashMap::new();
    let mut kills = 0;
    for (round, wait_ms) in [400u64, 900, 1500, 700, 1200, 0].into_iter().enumerate() {
        let output = data.join(format!("round-{round}.jsonl"));
        let mut child = run(&url, &output);
        if wait_ms > 0 {
            std::thread::sleep(Duration::from_millis(wait_ms));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
            }
        }
        let status = child.wait().unwrap();
        acked.extend(acknowledged(&std::fs::read_to_string(&output).unwrap_or_default()));
        let reconcile = rulehost(&["ledger", "reconcile", "--ledger", &url]);
        assert!(reconcile.status.success(), "after round {round}: {}", text(&reconcile));
        if wait_ms == 0 {
            assert!(status.code().unwrap() <= 1, "the final run completes");
        }
    }
    assert!(kills >= 3, "only {kills} runs were killed mid-stream");
    let want = stored(&rulehost::ledger::StoreReader::open(&clean).unwrap());
    let got = stored(&PgReader::open(&url).unwrap());
    assert_eq!(got.len(), want.len(), "every transaction decided exactly once");
    for (id, decision) in &want {
        assert_eq!(got.get(id), Some(decision), "decision of {id} equals the uninterrupted run's");
    }
    for (id, decision) in &acked {
        assert_eq!(got.get(id), Some(decision), "acknowledged decision {id} is in the database, unchanged");
    }
    let balances = |l: &str| text(&rulehost(&["ledger", "accounts", "--ledger", l]));
    assert_eq!(balances(&url), balances(s(&clean)), "final balances equal the uninterrupted run's");
}

#[test]
fn schema_versions_are_checked_and_migrate_creates_the_schema() {
    let server = PgServer::start();
    let url = server.database("schema");
    let err = PgReader::open(&url).err().expect("nothing to read yet");
    assert!(err.to_string().contains("rulehost ledger migrate --ledger"), "{err}");
    let migrate = rulehost(&["ledger", "migrate", "--ledger", &url]);
    assert!(migrate.status.success(), "{}", text(&migrate));
    let current = format!("schema version {}", rulehost::ledger::postgres::SCHEMA_VERSION);
    assert!(text(&migrate).contains(&current), "{}", text(&migrate));
    assert!(PgReader::open(&url).is_ok());

    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client.execute("UPDATE rulehost.meta SET value = '99' WHERE key = 'schema_version'", &[]).unwrap();
    let err = PostgresLedger::open(&url, &StoreOptions::default()).err().expect("a later schema is refused");
    assert!(err.to_string().contains("later release"), "{err}");
    let err = PgReader::open(&url).err().expect("a later schema is refused");
    assert!(err.to_string().contains("later release"), "{err}");
    // A ledger of schema 1 (before partitions): read-only access asks for a
    // migration, which adds the partitions table.
    client
        .batch_execute(
            "UPDATE rulehost.meta SET value = '1' WHERE key = 'schema_version'; DROP TABLE rulehost.partitions;",
        )
        .unwrap();
    let err = PgReader::open(&url).err().expect("schema 1 needs migrating");
    assert!(err.to_string().contains("schema version 1") && err.to_string().contains("migrate"), "{err}");
    let migrate = rulehost(&["ledger", "migrate", "--ledger", &url]);
    assert!(migrate.status.success(), "{}", text(&migrate));
    assert!(PgReader::open(&url).unwrap().partitions().unwrap().is_empty(), "the partitions table exists, empty");

    let other = server.database("foreign");
    let mut client = postgres::Client::connect(&other, postgres::NoTls).unwrap();
    client.batch_execute("CREATE SCHEMA rulehost; CREATE TABLE rulehost.accounts (x int);").unwrap();
    let err = PostgresLedger::open(&other, &StoreOptions::default()).err().expect("not ours");
    assert!(err.to_string().contains("not a rulehost ledger"), "{err}");
    let tables: i64 =
        client.query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'rulehost'", &[]).unwrap().get(0);
    assert_eq!(tables, 1, "a refused database is left as it was");
}

#[test]
fn a_password_is_never_shown() {
    let server = PgServer::start();
    // Trust authentication accepts any password; a missing database fails.
    let url = format!("postgres://rulehost:hunter2@127.0.0.1:{}/no_such_db", server.port());
    let out = rulehost(&["ledger", "accounts", "--ledger", &url]);
    assert!(!out.status.success());
    let shown = text(&out);
    assert!(shown.contains("no_such_db") && shown.contains("rulehost:***@"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let err = PostgresLedger::open(&url, &StoreOptions::default()).err().unwrap();
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}
