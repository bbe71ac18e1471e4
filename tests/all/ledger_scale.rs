//! The ledger at scale (issue 13): bounded memory, idempotency across the
//! recent-decision cache and restarts, replay of stored decisions with
//! their own rule-set version, the schema 1 fixture's migration, and one
//! conformance suite run against every backend.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use rulehost::decision::{Outcome, Record};
use rulehost::input::{ParsedTransaction, parse_accounts, parse_transaction};
use rulehost::ledger::{
    Admission, Effect, HoldState, Ledger, LedgerError, MemoryLedger, OpenError, Resolution, SqliteLedger, StoreOptions,
    StoreReader,
};
use rulehost::pipeline::{Pipeline, ReplayError, SharedLedger};
use rust_decimal::Decimal;

use crate::support::{TempRuleSet, commit_as, jsonl, root, sandbox};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/fixtures/pipeline").join(name)).unwrap()
}

fn open_with(path: &Path, options: StoreOptions) -> SqliteLedger {
    SqliteLedger::open(path, &options).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

pub(crate) fn tx(id: &str, source: &str, destination: &str, amount: &str, second: u64) -> ParsedTransaction {
    let (h, m, s) = (second / 3600, second / 60 % 60, second % 60);
    let (day, h) = (1 + h / 24, h % 24);
    let line = format!(
        r#"{{"id":"{id}","timestamp":"2026-01-{day:02}T{h:02}:{m:02}:{s:02}Z","kind":"transfer","source":"{source}","destination":"{destination}","amount":"{amount}","currency":"USD"}}"#
    );
    parse_transaction(1, &line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

pub(crate) fn accounts(n: usize, opening: &str) -> Vec<rulehost::model::Account> {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"acc-{i}","currency":"USD","country":"US","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"0","opening_balance":"{opening}"}}"#
            )
        })
        .collect();
    parse_accounts(&lines.join("\n")).unwrap()
}

// ---------------------------------------------------------------- bounded memory

#[test]
fn resident_state_stops_growing_once_history_retention_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    // Retention: a 10-minute window plus 20 minutes of lateness; one
    // transaction a second, so it is reached after 1 800 transactions.
    let options = StoreOptions {
        lateness_seconds: 1_200,
        history_window_seconds_max: 600,
        decision_cache_entries: 5_000,
        id_filter_bytes: 1 << 20,
        ..StoreOptions::default()
    };
    let mut store = open_with(&path, options.clone());
    let n_accounts = 3_000;
    store.import_accounts(&accounts(n_accounts, "1000000000")).unwrap();
    let total = 300_000u64;
    let mut samples = Vec::new();
    for i in 0..total {
        let (s, d) = (i as usize * 7 % n_accounts, (i as usize * 7 + 1 + i as usize % 5) % n_accounts);
        let parsed = tx(&format!("tx-{i:08}"), &format!("acc-{s}"), &format!("acc-{d}"), "1.25", i);
        // A sample right after a commit made once the store had caught up:
        // what is kept until it is durable (decisions beyond the cache,
        // holds) is then this commit's alone, whatever the machine's speed.
        let sample = (i + 1) % 50_000 == 0;
        if sample {
            store.sync_point().wait().unwrap();
        }
        commit_as(&mut store, &parsed, if i % 10 == 0 { Effect::Hold } else { Effect::Post }, true).unwrap();
        if sample {
            samples.push(store.usage());
        }
    }
    let first = samples[1]; // at 100 000: well past retention and the cache size
    for u in &samples[2..] {
        assert_eq!(u.accounts, n_accounts as u64);
        assert_eq!(u.journal_entries, 0, "the journal lives in the file");
        // Each source keeps what lies within retention of its own newest
        // entry (here: one entry per source).
        assert_eq!(u.history_entries, first.history_entries, "history is bounded by retention: {u:?}");
        assert!(u.history_entries <= n_accounts as u64, "{u:?}");
        assert!(u.decisions <= 5_000, "decisions beyond the cache are in the file: {u:?}");
        // Pending holds grow here (nobody resolves them), but they live in
        // the file: memory keeps each account's pending sum, so it is flat.
        assert!(u.pending_holds > first.pending_holds, "{u:?}");
        assert!(u.bytes <= first.bytes + first.bytes / 50, "at {u:?} vs {first:?}");
    }
    assert_eq!(samples.last().unwrap().pending_holds, total / 10);
    // A hold placed long ago (read from the file) resolves like a new one.
    let before = store.balances("acc-0").unwrap();
    assert_eq!(store.resolve_hold("tx-00000000", false), Ok(Resolution::Done));
    assert_eq!(store.resolve_hold("tx-00000000", false), Ok(Resolution::AlreadyDone));
    let after = store.balances("acc-0").unwrap();
    assert_eq!(before.pending - after.pending, Decimal::new(125, 2));
    assert_eq!(store.usage().pending_holds, total / 10 - 1);
    store.close().unwrap();
    // A clean close checkpoints: the next open has no WAL to replay.
    let wal = path.with_extension("sqlite-wal");
    assert!(!wal.exists(), "{} left behind after a clean close", wal.display());

    // The file holds every decision; reopening loads only the hot state.
    let reopened = open_with(&path, options);
    let u = reopened.usage();
    assert_eq!((u.decisions, u.journal_entries), (0, 0));
    assert_eq!(u.history_entries, samples.last().unwrap().history_entries, "history within retention is reloaded");
    assert_eq!(u.pending_holds, total / 10 - 1, "pending holds are counted, not loaded");
    assert_eq!(reopened.balances("acc-0").unwrap(), after);
    assert_eq!(reopened.hold("tx-00000000").unwrap().map(|h| h.state), Some(HoldState::Voided));
    assert_eq!(reopened.hold("tx-00000010").unwrap().map(|h| h.state), Some(HoldState::Pending));
    assert!(reopened.decision("tx-00000000").unwrap().is_some());
    assert!(reopened.decision("tx-00299999").unwrap().is_some());
    assert!(reopened.decision("tx-00300000").unwrap().is_none());
}

#[test]
fn the_id_filter_is_snapshotted_in_parts_and_a_partial_snapshot_never_hides_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    // Four parts (three whole, one of 8 bytes); a snapshot every 100 decisions.
    let part = rulehost::ledger::durable::FILTER_PART_BYTES;
    let options =
        StoreOptions { id_filter_bytes: 3 * part + 8, id_filter_snapshot_decisions: 100, ..StoreOptions::default() };
    let mut store = open_with(&path, options.clone());
    store.import_accounts(&accounts(50, "1000000")).unwrap();
    let mut decided = 0u64;
    let mut decide_to = |store: &mut SqliteLedger, n: u64| {
        while decided < n {
            let (s, d) = (decided % 50, (decided + 1) % 50);
            let parsed = tx(&format!("id-{decided:05}"), &format!("acc-{s}"), &format!("acc-{d}"), "1.00", decided);
            commit_as(store, &parsed, Effect::Post, true).unwrap();
            decided += 1;
            // Durable one by one: each commit after a snapshot starts then
            // queues its next part (a part waits for the last to be durable).
            store.sync_point().wait().unwrap();
        }
    };
    // What a crash now would leave: a copy of the file and its WAL once
    // everything so far is durable, opened as the next process would.
    let crash_copy = |name: &str| -> std::path::PathBuf {
        let copy = dir.path().join(name);
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(path.with_extension("sqlite-wal"), copy.with_extension("sqlite-wal")).unwrap();
        copy
    };
    let snapshot = |path: &Path| -> (i64, i64) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row("SELECT covered_seq, bytes FROM id_filter WHERE key = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
    };
    let all_found = |store: &SqliteLedger, n: u64| {
        for i in 0..n {
            let id = format!("id-{i:05}");
            assert!(store.decision(&id).unwrap().is_some(), "{id} lost after {n} decisions");
        }
        assert!(store.decision(&format!("id-{n:05}")).unwrap().is_none());
    };

    // The first snapshot, started with the 100th decision and three of its
    // four parts written: it covers nothing yet.
    decide_to(&mut store, 102);
    let copy = crash_copy("first.sqlite");
    assert_eq!(snapshot(&copy), (0, (3 * part + 8) as i64));
    let reopened = open_with(&copy, options.clone());
    all_found(&reopened, 102);
    drop(reopened);

    // Complete, it covers the decisions before its first part.
    decide_to(&mut store, 150);
    let (covered, _) = snapshot(&crash_copy("whole.sqlite"));
    assert_eq!(covered, 100, "the 100 decisions written before its first part");

    // The second (from the 200th), three parts written: old and new parts
    // mixed, the old coverage.
    decide_to(&mut store, 202);
    let copy = crash_copy("second.sqlite");
    assert_eq!(snapshot(&copy).0, covered);
    let reopened = open_with(&copy, options.clone());
    all_found(&reopened, 202);
    drop(reopened);

    // A clean close writes a whole snapshot covering every decision.
    decide_to(&mut store, 234);
    store.close().unwrap();
    assert_eq!(snapshot(&path).0, 234);
    all_found(&open_with(&path, options), 234);
}

#[test]
fn a_failed_store_takes_no_more_changes() {
    use rulehost::ledger::durable::{Durable, GroupWriter, Queued, Report, StoreRead, empty_filter};
    struct DiskFull;
    impl GroupWriter for DiskFull {
        fn write_group(&mut self, _: Vec<Queued>) -> Result<(), String> {
            Err("disk full".into())
        }
    }
    struct Nothing;
    impl StoreRead for Nothing {
        fn record(&mut self, _: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(None)
        }
        fn hold(&mut self, _: &str) -> Result<Option<rulehost::ledger::Hold>, String> {
            Ok(None)
        }
        fn holds(&mut self) -> Result<Vec<rulehost::ledger::Hold>, String> {
            Ok(Vec::new())
        }
        fn journal(&mut self, _: Option<&str>) -> Result<Vec<rulehost::ledger::JournalEntry>, String> {
            Ok(Vec::new())
        }
        fn ruleset(&mut self, _: &str) -> Result<Option<rulehost::ledger::RulesetArchive>, String> {
            Ok(None)
        }
        fn reconcile(&mut self) -> Result<Report, String> {
            Err("nothing stored".into())
        }
    }
    let options = StoreOptions::default();
    let mut l = Durable::start(MemoryLedger::hot(0), empty_filter(1024), Nothing, DiskFull, &options).unwrap();
    l.import_accounts(&accounts(2, "100.00")).unwrap();
    let failed = l.sync_point().wait().unwrap_err();
    assert!(matches!(&failed, LedgerError::Storage(why) if why.contains("disk full")), "{failed}");
    // Nothing more is applied, in memory either.
    let before = (l.balances("acc-0"), l.usage());
    let posted = commit_as(&mut l, &tx("t1", "acc-0", "acc-1", "1.00", 1), Effect::Post, true);
    assert!(matches!(posted, Err(LedgerError::Storage(_))), "{posted:?}");
    let held = commit_as(&mut l, &tx("t2", "acc-0", "acc-1", "1.00", 2), Effect::Hold, true);
    assert!(matches!(held, Err(LedgerError::Storage(_))), "{held:?}");
    assert!(matches!(l.resolve_hold("t2", true), Err(LedgerError::Storage(_))));
    assert!(matches!(l.import_accounts(&accounts(3, "1.00")), Err(LedgerError::Storage(_))));
    assert_eq!((l.balances("acc-0"), l.usage()), before);
    assert!(l.decision("t1").unwrap().is_none());
}

// ---------------------------------------------------------------- idempotency across the cache

#[test]
fn ids_decided_long_ago_replay_and_conflict_exactly_like_recent_ones() {
    let ruleset = TempRuleSet::example().load();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let options = StoreOptions {
        history_window_seconds_max: ruleset.history_window_seconds_max,
        decision_cache_entries: 4,
        ..StoreOptions::default()
    };
    let transactions = fixture("transactions.jsonl");
    let decide = |ledger: &SharedLedger, text: &str| -> String {
        let pipeline = Pipeline::new(sandbox(), ledger.clone());
        let records: Vec<Record> =
            text.lines().enumerate().map(|(i, l)| pipeline.decide_line(&ruleset, i as u64 + 1, l)).collect();
        jsonl(&records)
    };
    let mut store = open_with(&path, options.clone());
    store.import_accounts(&parse_accounts(&fixture("accounts.jsonl")).unwrap()).unwrap();
    let shared: SharedLedger = Arc::new(Mutex::new(Box::new(store)));
    let first = decide(&shared, &transactions);
    shared.lock().unwrap().sync_point().wait().unwrap();
    // A cache of 4: almost every id is now answered from the file.
    let again = decide(&shared, &transactions);
    let strip = |s: &str| s.replace(",\"replayed\":true", "");
    assert_eq!(strip(&again), strip(&first), "evicted ids replay the stored decisions");
    let conflicting = transactions.replace("\"amount\":\"125.50\"", "\"amount\":\"125.51\"");
    let conflicts = decide(&shared, &conflicting);
    let conflict_line = conflicts.lines().next().unwrap();
    assert!(conflict_line.contains("IDEMPOTENCY_CONFLICT"), "{conflict_line}");
    drop(shared);

    // After a restart: the same answers.
    let reopened: SharedLedger = Arc::new(Mutex::new(Box::new(open_with(&path, options))));
    assert_eq!(strip(&decide(&reopened, &transactions)), strip(&first));
    assert_eq!(decide(&reopened, &conflicting).lines().next().unwrap(), conflict_line);
}

// ---------------------------------------------------------------- replay

/// Decides the fixture with `ruleset` into `ledger`, ids suffixed.
fn decide_fixture(ledger: &SharedLedger, ruleset: &rulehost::ruleset::RuleSet, suffix: &str) -> Vec<String> {
    let pipeline = Pipeline::new(sandbox(), ledger.clone());
    let mut ids = Vec::new();
    for (i, line) in fixture("transactions.jsonl").lines().enumerate() {
        let line = line.replacen("\"id\":\"t", &format!("\"id\":\"{suffix}t"), 1);
        if let Record::Decision { decision, replayed: false, .. } = pipeline.decide_line(ruleset, i as u64 + 1, &line) {
            ids.push(decision.id.clone());
        }
    }
    ids
}

/// Replays every id from `ledger`'s records with the rule set it kept.
fn replay_all(ledger: &SharedLedger, ids: &[String]) -> usize {
    let pipeline = Pipeline::new(sandbox(), ledger.clone());
    let mut loaded: std::collections::HashMap<String, rulehost::ruleset::RuleSet> = Default::default();
    let mut replayed = 0;
    for id in ids {
        let record = ledger.lock().unwrap().record(id).unwrap().expect("a decided id has a record");
        let version = record.decision.ruleset.to_string();
        if !loaded.contains_key(&version) {
            let archive = ledger.lock().unwrap().ruleset(&version).unwrap().expect("its rule set is kept");
            let dir = tempfile::tempdir().unwrap();
            archive.extract(dir.path()).unwrap();
            let ruleset = rulehost::ruleset::RuleSet::load(&sandbox(), dir.path()).unwrap();
            assert_eq!(ruleset.sha256, archive.sha256, "the kept files load as the same version");
            loaded.insert(version.clone(), ruleset);
        }
        let ruleset = &loaded[&version];
        let input = record.input.as_ref().unwrap();
        let accounts: Vec<_> = [&input.tx.source, &input.tx.destination]
            .into_iter()
            .filter_map(|a| ledger.lock().unwrap().account(a).cloned())
            .collect();
        let r = pipeline.replay(ruleset, &record, accounts).unwrap();
        assert!(r.identical, "{id}: stored {}\nreplayed {}", r.stored.json(), r.replayed.json());
        assert_eq!(r.unrecorded_reads, 0, "{id}");
        replayed += 1;
    }
    replayed
}

#[test]
fn every_stored_decision_replays_byte_identical_across_versions_and_restarts() {
    let v1 = TempRuleSet::example();
    let v2 = TempRuleSet::example();
    let manifest = std::fs::read_to_string(v2.dir.path().join("manifest.toml")).unwrap();
    std::fs::write(v2.dir.path().join("manifest.toml"), manifest.replace("review_at = 400", "review_at = 300"))
        .unwrap();
    let (r1, r2) = (v1.load(), v2.load());
    assert_ne!(r1.version, r2.version);
    for durable in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let options = StoreOptions { history_window_seconds_max: 86_400, ..StoreOptions::default() };
        let opened: Box<dyn Ledger> = if durable {
            Box::new(open_with(&path, options.clone()))
        } else {
            let mut m = MemoryLedger::default();
            m.retain_history(86_400);
            Box::new(m)
        };
        let ledger: SharedLedger = Arc::new(Mutex::new(opened));
        ledger.lock().unwrap().import_accounts(&parse_accounts(&fixture("accounts.jsonl")).unwrap()).unwrap();
        let mut ids = decide_fixture(&ledger, &r1, "");
        // The hot reload: the next decisions are made by another version.
        ids.extend(decide_fixture(&ledger, &r2, "b-"));
        assert!(ids.len() > 60, "{}", ids.len());
        assert_eq!(replay_all(&ledger, &ids), ids.len());
        if durable {
            ledger.lock().unwrap().sync_point().wait().unwrap();
            drop(ledger);
            let reopened: SharedLedger = Arc::new(Mutex::new(Box::new(open_with(&path, options))));
            assert_eq!(replay_all(&reopened, &ids), ids.len(), "after a restart");
        }
    }
}

#[test]
fn a_replay_of_another_version_is_refused() {
    let ruleset = TempRuleSet::example().load();
    let ledger: SharedLedger = Arc::new(Mutex::new(Box::new(MemoryLedger::default())));
    ledger.lock().unwrap().import_accounts(&parse_accounts(&fixture("accounts.jsonl")).unwrap()).unwrap();
    let ids = decide_fixture(&ledger, &ruleset, "");
    let record = ledger.lock().unwrap().record(&ids[0]).unwrap().unwrap();
    let mut other = (*record.decision).clone();
    other.ruleset = "0000000000000000".into();
    let forged = rulehost::ledger::DecisionRecord { decision: Arc::new(other), ..record };
    let err = Pipeline::new(sandbox(), ledger.clone()).replay(&ruleset, &forged, Vec::new()).unwrap_err();
    assert!(matches!(err, ReplayError::WrongVersion { .. }), "{err}");
}

#[test]
fn ledger_show_and_replay_commands() {
    let set = TempRuleSet::example();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let input = root().join("tests/fixtures/pipeline/transactions.jsonl");
    let accounts = root().join("tests/fixtures/pipeline/accounts.jsonl");
    let run = Command::new(env!("CARGO_BIN_EXE_rulehost"))
        .args(["run", "--quiet", "--rules"])
        .arg(set.dir.path())
        .arg("--accounts")
        .arg(&accounts)
        .arg("--ledger")
        .arg(&ledger)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    // Exit 1: the fixture has bad lines (error records); nothing else failed.
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rulehost")).args(args).arg("--ledger").arg(&ledger).output().unwrap()
    };
    let show = cli(&["ledger", "show", "t03-review"]);
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["decision"]["outcome"], "review");
    assert_eq!(shown["input"]["transaction"]["amount"], "50.00", "the amount as received");
    assert_eq!(shown["input"]["funds_check"], "admitted");
    assert_eq!(shown["ruleset_kept"], true);
    for id in ["t01-approve", "t03-review", "t16-hold", "t20-v12", "t21-s3"] {
        let out = cli(&["ledger", "replay", id]);
        assert!(
            out.status.success(),
            "{id}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["identical"], true, "{v}");
    }
    let missing = cli(&["ledger", "show", "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no decision for \"nope\""));
}

// ---------------------------------------------------------------- migration

fn schema_1_copy(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("old.sqlite");
    std::fs::copy(root().join("tests/fixtures/ledger/schema-1.sqlite"), &path).unwrap();
    path
}

#[test]
fn a_schema_1_ledger_migrates_and_answers_exactly_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = schema_1_copy(dir.path());
    let untouched = std::fs::read(&path).unwrap();
    // A read-only opener refuses it and says how to migrate, changing nothing.
    let err = StoreReader::open(&path).err().expect("needs migration");
    assert!(matches!(err, OpenError::NeedsMigration { found: 1, .. }), "{err}");
    assert!(err.to_string().contains("rulehost ledger migrate"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), untouched);

    let ruleset = TempRuleSet::example().load();
    let options = StoreOptions { history_window_seconds_max: ruleset.history_window_seconds_max, ..Default::default() };
    let mut store = open_with(&path, options.clone());
    assert!(store.reconcile().unwrap().is_clean());
    assert_eq!(store.hold("t03-review").unwrap().unwrap().state, HoldState::Posted);
    assert_eq!(store.hold("t16-hold").unwrap().unwrap().state, HoldState::Voided);
    assert_eq!(store.hold("t20-v12").unwrap().unwrap().state, HoldState::Pending);
    assert_eq!(store.resolve_hold("t03-review", true), Ok(Resolution::AlreadyDone));
    assert!(matches!(store.resolve_hold("t16-hold", true), Err(LedgerError::HoldResolved { .. })));
    let record = store.record("t01-approve").unwrap().unwrap();
    assert!(record.input.is_none(), "schema 1 kept no input");
    let err = Pipeline::new(sandbox(), Arc::new(Mutex::new(Box::new(MemoryLedger::default()))))
        .replay(&ruleset, &record, Vec::new())
        .unwrap_err();
    assert!(matches!(err, ReplayError::NoInput(_)), "{err}");

    // Every line the old release decided replays its stored decision.
    let shared: SharedLedger = Arc::new(Mutex::new(Box::new(store)));
    answers_exactly_as_before(&shared, &ruleset);
    // New decisions on the migrated ledger keep their input and replay.
    let new = decide_fixture(&shared, &ruleset, "new-");
    assert!(!new.is_empty());
    assert_eq!(replay_all(&shared, &new[..5]), 5);
    drop(shared);
    assert!(StoreReader::open(&path).unwrap().reconcile().unwrap().is_clean());
}

/// Every line of the pipeline fixture decided again on a migrated ledger
/// replays what the old release decided (`decisions.jsonl`: the records
/// the releases of schema 1 and 2 wrote for it, identical).
fn answers_exactly_as_before(shared: &SharedLedger, ruleset: &rulehost::ruleset::RuleSet) {
    let pipeline = Pipeline::new(sandbox(), shared.clone());
    let records: Vec<Record> = fixture("transactions.jsonl")
        .lines()
        .enumerate()
        .map(|(i, l)| pipeline.decide_line(ruleset, i as u64 + 1, l))
        .collect();
    let old = std::fs::read_to_string(root().join("tests/fixtures/ledger/decisions.jsonl")).unwrap();
    let now = jsonl(&records);
    assert_eq!(old.lines().count(), now.lines().count());
    for (was, is) in old.lines().zip(now.lines()) {
        if was.contains("\"outcome\":\"error\"") || was.contains("\"replayed\":true") {
            assert_eq!(was, is);
        } else {
            assert_eq!(format!("{},\"replayed\":true}}", &was[..was.len() - 1]), is);
        }
    }
}

/// `schema-2.sqlite`: the pipeline fixture decided by the release before
/// schema 3 (`rulehost run … --id-filter-bytes 2097160`, so its id filter
/// snapshot is a 2 MiB blob), then `review approve t03-review` and
/// `review decline t16-hold`.
#[test]
fn a_schema_2_ledger_reads_as_it_is_and_migrates_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    std::fs::copy(root().join("tests/fixtures/ledger/schema-2.sqlite"), &path).unwrap();
    let head = |path: &Path| -> (String, i64) {
        let conn = rusqlite::Connection::open(path).unwrap();
        let v = conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap();
        let index = conn
            .query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'holds_pending'", [], |r| r.get(0))
            .unwrap();
        (v, index)
    };
    assert_eq!(head(&path), ("2".into(), 0));
    // A reader reads it as it is (schema 3 only adds to it), changing nothing.
    let before = std::fs::read(&path).unwrap();
    let reader = StoreReader::open(&path).unwrap();
    assert!(reader.reconcile().unwrap().is_clean());
    assert_eq!(reader.holds().unwrap().iter().filter(|h| h.state == HoldState::Pending).count(), 2);
    drop(reader);
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // Opening to write migrates it: the index, the filter's snapshot in
    // parts (its coverage kept), the version.
    let ruleset = TempRuleSet::example().load();
    let options = StoreOptions {
        history_window_seconds_max: ruleset.history_window_seconds_max,
        id_filter_bytes: 2_097_160,
        ..Default::default()
    };
    let store = open_with(&path, options.clone());
    assert_eq!(store.usage().pending_holds, 2);
    assert_eq!(store.hold("t03-review").unwrap().map(|h| h.state), Some(HoldState::Posted));
    assert_eq!(store.hold("t16-hold").unwrap().map(|h| h.state), Some(HoldState::Voided));
    assert_eq!(store.hold("t20-v12").unwrap().map(|h| h.state), Some(HoldState::Pending));
    drop(store);
    assert_eq!(head(&path), (rulehost::ledger::SCHEMA_VERSION.to_string(), 1));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let parts: Vec<(i64, i64)> = conn
        .prepare("SELECT byte_offset, length(bits) FROM id_filter_parts ORDER BY byte_offset")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(parts, [(0, 1 << 20), (1 << 20, 1 << 20), (2 << 20, 8)]);
    let filter: (i64, i64) =
        conn.query_row("SELECT covered_seq, bytes FROM id_filter", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(filter, (38, 2_097_160), "the snapshot covers the 38 decisions it covered");
    drop(conn);

    // The same ledger: resolutions, replays, reconcile.
    let mut store = open_with(&path, options);
    assert_eq!(store.resolve_hold("t03-review", true), Ok(Resolution::AlreadyDone));
    assert!(matches!(store.resolve_hold("t16-hold", true), Err(LedgerError::HoldResolved { .. })));
    assert_eq!(store.resolve_hold("t21-s3", false), Ok(Resolution::Done));
    assert!(store.record("t01-approve").unwrap().unwrap().input.is_some(), "schema 2 keeps the input");
    let shared: SharedLedger = Arc::new(Mutex::new(Box::new(store)));
    answers_exactly_as_before(&shared, &ruleset);
    // What the old release stored re-evaluates byte for byte with the rule
    // set it kept.
    let old: Vec<String> = std::fs::read_to_string(root().join("tests/fixtures/ledger/decisions.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"outcome\":\"error\"") && !l.contains("\"replayed\":true"))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(old.len(), 38);
    assert_eq!(replay_all(&shared, &old), old.len());
    drop(shared);
    assert!(StoreReader::open(&path).unwrap().reconcile().unwrap().is_clean());
}

#[test]
fn a_ledger_from_a_later_release_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    open_with(&path, StoreOptions::default()).close().unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'", []).unwrap();
    drop(conn);
    let before = std::fs::read(&path).unwrap();
    let err = SqliteLedger::open(&path, &StoreOptions::default()).err().expect("refused");
    assert!(err.to_string().contains("later release"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

// ---------------------------------------------------------------- conformance

/// The behaviour every backend must have; `reopen` gives the same ledger
/// again (after a restart, for a durable one).
pub(crate) fn conformance(
    fresh: &mut dyn FnMut() -> Box<dyn Ledger>,
    reopen: &mut dyn FnMut(Box<dyn Ledger>) -> Box<dyn Ledger>,
) {
    let mut l = fresh();
    let mut accts = accounts(3, "100.00");
    accts[2].overdraft_limit = Decimal::new(5000, 2);
    assert_eq!(l.import_accounts(&accts).unwrap(), 3);
    assert_eq!(l.import_accounts(&accts).unwrap(), 0, "importing the same file again is a no-op");
    let mut reserved = accounts(1, "1");
    reserved[0].id = "equity:USD".into();
    assert_eq!(l.import_accounts(&reserved), Err(LedgerError::ReservedAccount("equity:USD".into())));
    let mut changed = accts[0].clone();
    changed.country = "FR".into();
    assert_eq!(l.import_accounts(&[changed]), Err(LedgerError::AccountChanged("acc-0".into())));

    // The funds check runs inside the commit.
    let c = commit_as(&mut *l, &tx("p1", "acc-0", "acc-1", "60.00", 1), Effect::Post, true).unwrap();
    assert_eq!((c.effect, c.decision.outcome), (Effect::Post, Outcome::Approve));
    let c = commit_as(&mut *l, &tx("p2", "acc-0", "acc-1", "60.00", 2), Effect::Post, true).unwrap();
    assert_eq!((c.effect, c.decision.outcome), (Effect::Nothing, Outcome::Reject), "40.00 left");
    let c = commit_as(&mut *l, &tx("h1", "acc-2", "acc-1", "140.00", 3), Effect::Hold, true).unwrap();
    assert_eq!(c.effect, Effect::Hold, "the overdraft covers it");
    let c = commit_as(&mut *l, &tx("h2", "acc-2", "acc-1", "20.00", 4), Effect::Hold, true).unwrap();
    assert_eq!(c.effect, Effect::Nothing, "the pending hold counts against available");
    let dup = commit_as(&mut *l, &tx("p1", "acc-0", "acc-1", "1.00", 5), Effect::Post, true);
    assert_eq!(dup.err(), Some(LedgerError::DuplicateDecision("p1".into())));
    let big = tx("o1", "acc-1", "acc-2", "9999999999999999999999999999", 6);
    let c = commit_as(&mut *l, &big, Effect::Post, true).unwrap();
    assert_eq!(c.effect, Effect::Nothing, "no funds for it, and no panic");

    let b = |l: &dyn Ledger, id: &str| l.balances(id).map(|b| (b.posted, b.pending, b.available));
    let d = |s: &str| Decimal::from_str_exact(s).unwrap();
    assert_eq!(b(&*l, "acc-0"), Some((d("40.00"), d("0"), d("40.00"))));
    assert_eq!(b(&*l, "acc-2"), Some((d("100.00"), d("140.00"), d("-40.00"))));
    assert_eq!(l.hold("h1").unwrap().map(|h| h.state), Some(HoldState::Pending));
    assert_eq!(l.hold("p2").unwrap(), None);

    let mut l = reopen(l);
    assert_eq!(l.usage().pending_holds, 1, "h1 is pending after a restart");
    assert_eq!(l.pending_holds().unwrap().iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["h1"]);
    assert_eq!(b(&*l, "acc-2"), Some((d("100.00"), d("140.00"), d("-40.00"))), "and still reserves its amount");
    assert_eq!(l.resolve_hold("h1", false), Ok(Resolution::Done));
    assert_eq!(l.usage().pending_holds, 0);
    assert_eq!(l.pending_holds().unwrap(), []);
    let mut l = reopen(l);
    assert_eq!(l.resolve_hold("h1", false), Ok(Resolution::AlreadyDone), "idempotent after a restart");
    assert_eq!(l.resolve_hold("h1", true), Err(LedgerError::HoldResolved { id: "h1".into(), state: "voided" }));
    assert_eq!(l.resolve_hold("nope", true), Err(LedgerError::UnknownHold("nope".into())));
    assert_eq!(b(&*l, "acc-2"), Some((d("100.00"), d("0"), d("100.00"))));
    let holds = l.holds().unwrap();
    assert_eq!(holds.iter().map(|h| (h.id.as_str(), h.state)).collect::<Vec<_>>(), [("h1", HoldState::Voided)]);

    // Stored decisions read back exactly, with their input.
    for (id, outcome) in [("p1", Outcome::Approve), ("p2", Outcome::Reject), ("h1", Outcome::Review)] {
        let stored = l.decision(id).unwrap().unwrap();
        assert_eq!(stored.decision.outcome, outcome, "{id}");
        let record = l.record(id).unwrap().unwrap();
        assert_eq!(record.input.unwrap().tx.id, id);
    }
    let refused = l.record("p2").unwrap().unwrap().input.unwrap().admission;
    assert_eq!(refused, Admission::Refused(rulehost::ledger::Refusal::InsufficientFunds));
    assert!(l.decision("never").unwrap().is_none());

    // The journal: openings, then the transfer; per account on request.
    let journal = l.journal(None).unwrap();
    assert_eq!(journal.len(), 4);
    assert_eq!(journal.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(l.journal(Some("acc-0")).unwrap().len(), 2);
    // A new entry after a restart continues the sequence.
    commit_as(&mut *l, &tx("p3", "acc-1", "acc-0", "1.00", 7), Effect::Post, true).unwrap();
    l.sync_point().wait().unwrap();
    assert_eq!(l.journal(None).unwrap().last().map(|e| e.seq), Some(5));

    // Resolving twice in a row, before the first resolution is durable, is
    // idempotent: the second answers AlreadyDone and moves no money again.
    let c = commit_as(&mut *l, &tx("h3", "acc-0", "acc-1", "5.00", 8), Effect::Hold, true).unwrap();
    assert_eq!(c.effect, Effect::Hold);
    let before = b(&*l, "acc-1").map(|(posted, ..)| posted);
    assert_eq!(l.resolve_hold("h3", true), Ok(Resolution::Done));
    assert_eq!(l.resolve_hold("h3", true), Ok(Resolution::AlreadyDone));
    assert_eq!(l.resolve_hold("h3", false), Err(LedgerError::HoldResolved { id: "h3".into(), state: "posted" }));
    assert_eq!(b(&*l, "acc-1").map(|(posted, ..)| posted), before.map(|p| p + d("5.00")));

    // Rule-set archives round-trip by version.
    let archive = Arc::new(rulehost::ledger::RulesetArchive {
        version: "abcdef0123456789".into(),
        sha256: "ff".repeat(32),
        files: vec![rulehost::ledger::ArchiveFile {
            path: "manifest.toml".into(),
            sha256: "00".repeat(32),
            bytes: b"review_at = 400\n".as_slice().into(),
        }],
    });
    l.keep_ruleset(&archive).unwrap();
    l.keep_ruleset(&archive).unwrap();
    let l = reopen(l);
    assert_eq!(l.ruleset("abcdef0123456789").unwrap().as_ref(), Some(&*archive));
    assert_eq!(l.ruleset("0000000000000000").unwrap(), None);
    let u = l.usage();
    assert_eq!((u.accounts, u.pending_holds), (3, 0));
}

#[test]
fn every_backend_passes_the_conformance_suite() {
    // Memory: a "restart" keeps the same ledger (it has no file).
    conformance(&mut || Box::new(MemoryLedger::default()), &mut |l| l);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conformance.sqlite");
    let p = path.clone();
    conformance(&mut || Box::new(open_with(&path, StoreOptions::default())), &mut |l| {
        l.sync_point().wait().unwrap();
        drop(l);
        Box::new(open_with(&p, StoreOptions::default()))
    });
    assert!(StoreReader::open(&path).unwrap().reconcile().unwrap().is_clean());
}
