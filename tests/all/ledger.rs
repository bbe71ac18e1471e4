//! The durable ledger in-process: it decides exactly like the memory ledger,
//! survives reopening unchanged, enforces its keys in the store, refuses bad
//! files without touching them, and — property-tested — equals a simple model
//! after any sequence of transfers, holds, approvals, declines, replays and
//! reopenings, with every `reconcile` invariant holding after every step.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use rulehost::input::{parse_accounts, parse_transaction};
use rulehost::ledger::{
    Effect, HoldState, Ledger, LedgerError, MemoryLedger, OpenError, Resolution, SqliteLedger, StoreOptions,
    StoreReader,
};
use rulehost::pipeline::{Pipeline, SharedLedger};
use rust_decimal::Decimal;

use crate::support::{TempRuleSet, commit_as, jsonl, root, sandbox};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/fixtures/pipeline").join(name)).unwrap()
}

fn open(path: &Path) -> SqliteLedger {
    SqliteLedger::open(path, &StoreOptions { history_window_seconds_max: 86_400, ..StoreOptions::default() })
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

fn decide_all(pipeline: &Pipeline, ruleset: &rulehost::ruleset::RuleSet, text: &str) -> String {
    let records: Vec<_> =
        text.lines().enumerate().map(|(i, l)| pipeline.decide_line(ruleset, i as u64 + 1, l)).collect();
    jsonl(&records)
}

#[test]
fn durable_ledger_decides_like_memory_and_reopens_identical() {
    let ruleset = TempRuleSet::example().load();
    let accounts = parse_accounts(&fixture("accounts.jsonl")).unwrap();
    let transactions = fixture("transactions.jsonl");

    let mut memory = MemoryLedger::default();
    memory.import_accounts(&accounts).unwrap();
    memory.retain_history(ruleset.history_window_seconds_max);
    let memory: SharedLedger = Arc::new(Mutex::new(Box::new(memory)));
    let want = decide_all(&Pipeline::new(sandbox(), memory.clone()), &ruleset, &transactions);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut store = open(&path);
    assert_eq!(store.import_accounts(&accounts).unwrap(), accounts.len());
    let durable: SharedLedger = Arc::new(Mutex::new(Box::new(store)));
    let got = decide_all(&Pipeline::new(sandbox(), durable.clone()), &ruleset, &transactions);
    assert_eq!(got, want, "the durable ledger decides exactly like the memory ledger");
    durable.lock().unwrap().sync_point().wait().unwrap();
    drop(durable);

    // Reopened: the same balances, holds, journal and decisions; a second
    // import of the same accounts is a no-op; every line now replays.
    let mut reopened = open(&path);
    assert_eq!(reopened.import_accounts(&accounts).unwrap(), 0);
    let memory = memory.lock().unwrap();
    for id in memory.account_ids() {
        assert_eq!(reopened.balances(&id), memory.balances(&id), "balances of {id}");
    }
    assert_eq!(reopened.holds().unwrap(), memory.holds().unwrap());
    assert_eq!(reopened.journal(None).unwrap(), memory.journal(None).unwrap());
    let report = reopened.reconcile().unwrap();
    assert!(report.is_clean(), "{:?}", report.discrepancies);
    assert!(report.decisions > 0 && report.holds > 0 && report.entries > 0, "{report:?}");
    let reopened: SharedLedger = Arc::new(Mutex::new(Box::new(reopened)));
    let again = decide_all(&Pipeline::new(sandbox(), reopened.clone()), &ruleset, &transactions);
    let strip = |s: &str| s.replace(",\"replayed\":true", "");
    assert_eq!(strip(&again), strip(&want), "replays after reopening return the stored decisions");
    let journal_len = reopened.lock().unwrap().journal(None).unwrap().len();
    assert_eq!(journal_len, memory.journal(None).unwrap().len(), "replaying posts nothing twice");
}

#[test]
fn the_store_itself_refuses_a_second_decision_or_posting_for_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut store = open(&path);
    store.import_accounts(&parse_accounts(&fixture("accounts.jsonl")).unwrap()).unwrap();
    let parsed = parse_transaction(1, &fixture("transactions.jsonl").lines().next().unwrap().replace("t01", "k1"))
        .expect("first fixture line parses");
    let tx = &parsed.tx;
    assert_eq!(commit_as(&mut store, &parsed, Effect::Post, true).unwrap().effect, Effect::Post);
    store.close().unwrap();

    // Bypass the host: the database's own keys refuse duplicates.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let dup_decision = conn.execute("INSERT INTO decisions (id, record) VALUES (?1, x'01')", [&tx.id]);
    assert!(dup_decision.is_err(), "decisions.id is unique");
    let dup_posting = conn.execute(
        "INSERT INTO journal (reference, kind, debit, credit, currency, amount) SELECT reference, kind, debit, credit, currency, amount FROM journal WHERE reference = ?1",
        [&tx.id],
    );
    assert!(dup_posting.is_err(), "journal (reference, kind) is unique");
}

#[test]
fn bad_store_paths_and_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // A path below a regular file cannot be created.
    let file = dir.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    let err = SqliteLedger::open(&file.join("ledger.sqlite"), &StoreOptions::default()).err().unwrap();
    assert!(matches!(err, OpenError::Unopenable { .. }), "{err}");
    assert!(err.to_string().contains("cannot open ledger"), "{err}");

    // Garbage is not a ledger, and stays byte for byte as it was.
    let garbage = dir.path().join("garbage.sqlite");
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&garbage, &bytes).unwrap();
    let err = SqliteLedger::open(&garbage, &StoreOptions::default()).err().unwrap();
    assert!(err.to_string().contains("is not a rulehost ledger"), "{err}");
    assert_eq!(std::fs::read(&garbage).unwrap(), bytes, "a refused file is untouched");

    // Another application's SQLite database is not ours either.
    let foreign = dir.path().join("foreign.sqlite");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let err = SqliteLedger::open(&foreign, &StoreOptions::default()).err().unwrap();
    assert!(err.to_string().contains("no rulehost `meta` table"), "{err}");

    // A ledger truncated mid-file is refused, and not rewritten.
    let path = dir.path().join("ledger.sqlite");
    let mut store = open(&path);
    store.import_accounts(&parse_accounts(&fixture("accounts.jsonl")).unwrap()).unwrap();
    store.close().unwrap();
    let whole = std::fs::read(&path).unwrap();
    let cut = &whole[..whole.len() / 2];
    std::fs::write(&path, cut).unwrap();
    let err = SqliteLedger::open(&path, &StoreOptions::default()).err().expect("a truncated ledger is refused");
    assert!(!err.to_string().is_empty());
    assert_eq!(std::fs::read(&path).unwrap(), cut, "a refused file is untouched");

    // One process (here: one handle) owns a ledger at a time.
    let owned = dir.path().join("owned.sqlite");
    let first = open(&owned);
    let err = SqliteLedger::open(&owned, &StoreOptions::default()).err().expect("second opener refused");
    assert!(matches!(err, OpenError::InUse(_)), "{err}");
    drop(first);
    open(&owned);
}

#[test]
fn reconcile_names_every_tampered_figure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let ruleset = TempRuleSet::example().load();
    let mut store = open(&path);
    store.import_accounts(&parse_accounts(&fixture("accounts.jsonl")).unwrap()).unwrap();
    let shared: SharedLedger = Arc::new(Mutex::new(Box::new(store)));
    decide_all(&Pipeline::new(sandbox(), shared.clone()), &ruleset, &fixture("transactions.jsonl"));
    shared.lock().unwrap().sync_point().wait().unwrap();
    drop(shared);
    assert!(StoreReader::open(&path).unwrap().reconcile().unwrap().is_clean());

    let conn = rusqlite::Connection::open(&path).unwrap();
    let first: String = conn.query_row("SELECT id FROM decisions ORDER BY seq LIMIT 1", [], |r| r.get(0)).unwrap();
    conn.execute("UPDATE accounts SET posted = '123456.78' WHERE id = 'a1'", []).unwrap();
    conn.execute("UPDATE holds SET state = 'voided' WHERE id = 't16-hold'", []).unwrap();
    conn.execute("DELETE FROM journal WHERE seq = (SELECT max(seq) FROM journal WHERE kind = 'transfer')", []).unwrap();
    // A record no replay can read (its format byte is gone).
    conn.execute("UPDATE decisions SET record = substr(record, 2) WHERE seq = (SELECT min(seq) FROM decisions)", [])
        .unwrap();
    drop(conn);
    let report = StoreReader::open(&path).unwrap().reconcile().unwrap();
    let all = report.discrepancies.join("\n");
    assert!(all.contains("account a1: posted 123456.78 but the journal sums to"), "{all}");
    assert!(all.contains("pending holds sum to"), "a voided hold no longer explains pending: {all}");
    assert!(all.contains("has 0 transfer(s)"), "a decision lost its posting: {all}");
    assert!(all.contains("account a2: posted"), "the lost posting's accounts no longer match: {all}");
    assert!(all.contains("its record is unreadable"), "reconcile reads every record a replay reads: {all}");
    // Opening reads no decisions (fast start): the damaged record is found
    // when its id comes again, as an error, never a panic or a new decision.
    let store = SqliteLedger::open(&path, &StoreOptions::default()).unwrap();
    let err = store.decision(&first).unwrap_err();
    assert!(err.to_string().contains("stored decision record"), "{err}");
}

// ---------------------------------------------------------------- property test

/// The simple model: balances, holds and decided ids, nothing else.
#[derive(Default)]
struct Model {
    accounts: BTreeMap<String, (Decimal, Decimal, Decimal)>, // posted, pending, overdraft
    holds: BTreeMap<String, (String, String, Decimal, HoldState)>,
    decided: std::collections::BTreeSet<String>,
}

impl Model {
    fn covers(&self, account: &str, amount: Decimal, released: Decimal) -> bool {
        let (posted, pending, overdraft) = self.accounts[account];
        posted - (pending - released) + overdraft >= amount
    }
}

#[derive(Clone, Debug)]
enum Step {
    Transfer { id: u8, source: u8, destination: u8, cents: u32, review: bool },
    Resolve { id: u8, approve: bool },
    Replay { id: u8 },
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0u8..24, 0u8..4, 0u8..4, 1u32..20_000, any::<bool>())
            .prop_map(|(id, source, destination, cents, review)| Step::Transfer { id, source, destination, cents, review }),
        3 => (0u8..24, any::<bool>()).prop_map(|(id, approve)| Step::Resolve { id, approve }),
        1 => (0u8..24).prop_map(|id| Step::Replay { id }),
        1 => Just(Step::Reopen),
    ]
}

fn account_line(i: u8, opening_cents: u32, overdraft_cents: u32) -> String {
    format!(
        r#"{{"id":"a{i}","currency":"USD","country":"US","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"{}","opening_balance":"{}"}}"#,
        Decimal::new(overdraft_cents.into(), 2),
        Decimal::new(opening_cents.into(), 2)
    )
}

fn tx_line(id: &str, source: u8, destination: u8, cents: u32) -> String {
    format!(
        r#"{{"id":"{id}","timestamp":"2026-01-05T10:00:00Z","kind":"transfer","source":"a{source}","destination":"a{destination}","amount":"{}","currency":"USD"}}"#,
        Decimal::new(cents.into(), 2)
    )
}

/// Compares the store (in memory and as written on disk) with the model and
/// checks every invariant.
fn agree(store: &mut SqliteLedger, model: &Model) -> Result<(), TestCaseError> {
    for (id, (posted, pending, _)) in &model.accounts {
        let b = store.balances(id).expect("account exists");
        prop_assert_eq!((b.posted, b.pending), (*posted, *pending), "balances of {}", id);
    }
    for (id, (source, destination, amount, state)) in &model.holds {
        let h = store.hold(id).unwrap().expect("hold exists");
        prop_assert_eq!((&h.source, &h.destination, h.amount, h.state), (source, destination, *amount, *state));
    }
    prop_assert_eq!(store.holds().unwrap().len(), model.holds.len());
    store.sync_point().wait().unwrap();
    let on_disk = {
        let reader = StoreReader::open(store.path()).unwrap();
        reader.accounts().unwrap()
    };
    for a in on_disk {
        let (p, q, _) = model.accounts[&a.id];
        prop_assert_eq!((a.posted, a.pending), (p, q));
    }
    let report = store.reconcile().unwrap();
    prop_assert!(report.is_clean(), "{:?}", report.discrepancies);
    prop_assert_eq!(report.decisions as usize, model.decided.len());
    Ok(())
}

fn run_steps(openings: Vec<(u32, u32)>, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut store = open(&path);
    let mut model = Model::default();
    let lines: Vec<String> = openings.iter().enumerate().map(|(i, (o, d))| account_line(i as u8, *o, *d)).collect();
    store.import_accounts(&parse_accounts(&lines.join("\n")).unwrap()).unwrap();
    for (i, (o, d)) in openings.iter().enumerate() {
        model
            .accounts
            .insert(format!("a{i}"), (Decimal::new((*o).into(), 2), Decimal::ZERO, Decimal::new((*d).into(), 2)));
    }
    agree(&mut store, &model)?;

    for step in steps {
        match step {
            Step::Transfer { id, source, destination, cents, review } => {
                let id = format!("t{id}");
                let parsed = parse_transaction(1, &tx_line(&id, source, destination, cents)).unwrap();
                if model.decided.contains(&id) {
                    prop_assert!(store.decision(&id).unwrap().is_some());
                    continue;
                }
                if source == destination {
                    continue; // a pre-check rejects it before the ledger
                }
                let amount = parsed.tx.amount;
                let funded = model.covers(&parsed.tx.source, amount, Decimal::ZERO);
                let wanted = if review { Effect::Hold } else { Effect::Post };
                let admitted = store.admit(&parsed.tx.source, &parsed.tx.destination, amount, wanted);
                prop_assert_eq!(admitted.is_ok(), funded);
                let effect = match (funded, review) {
                    (true, false) => Effect::Post,
                    (true, true) => Effect::Hold,
                    (false, _) => Effect::Nothing,
                };
                // The funds check inside the commit agrees with the model.
                let committed = commit_as(&mut store, &parsed, wanted, true).unwrap();
                prop_assert_eq!(committed.effect, effect);
                model.decided.insert(id.clone());
                let (s, t) = (parsed.tx.source.clone(), parsed.tx.destination.clone());
                match effect {
                    Effect::Post => {
                        model.accounts.get_mut(&s).unwrap().0 -= amount;
                        model.accounts.get_mut(&t).unwrap().0 += amount;
                    }
                    Effect::Hold => {
                        model.accounts.get_mut(&s).unwrap().1 += amount;
                        model.holds.insert(id, (s, t, amount, HoldState::Pending));
                    }
                    Effect::Nothing => {}
                }
            }
            Step::Resolve { id, approve } => {
                let id = format!("t{id}");
                let got = store.resolve_hold(&id, approve);
                let want = match model.holds.get(&id).cloned() {
                    None => Err(LedgerError::UnknownHold(id.clone())),
                    Some((s, t, amount, state)) => match (state, approve) {
                        (HoldState::Posted, true) | (HoldState::Voided, false) => Ok(Resolution::AlreadyDone),
                        (HoldState::Posted, false) => {
                            Err(LedgerError::HoldResolved { id: id.clone(), state: "posted" })
                        }
                        (HoldState::Voided, true) => Err(LedgerError::HoldResolved { id: id.clone(), state: "voided" }),
                        (HoldState::Pending, true) if !model.covers(&s, amount, amount) => {
                            Err(LedgerError::InsufficientFunds(s.clone()))
                        }
                        (HoldState::Pending, _) => {
                            model.accounts.get_mut(&s).unwrap().1 -= amount;
                            if approve {
                                model.accounts.get_mut(&s).unwrap().0 -= amount;
                                model.accounts.get_mut(&t).unwrap().0 += amount;
                            }
                            let new = if approve { HoldState::Posted } else { HoldState::Voided };
                            model.holds.get_mut(&id).unwrap().3 = new;
                            Ok(Resolution::Done)
                        }
                    },
                };
                prop_assert_eq!(got, want);
            }
            Step::Replay { id } => {
                let id = format!("t{id}");
                if store.decision(&id).unwrap().is_some() {
                    let parsed = parse_transaction(1, &tx_line(&id, 0, 1, 1)).unwrap();
                    let again = commit_as(&mut store, &parsed, Effect::Post, false).err();
                    prop_assert_eq!(again, Some(LedgerError::DuplicateDecision(id)));
                }
            }
            Step::Reopen => {
                store.close().unwrap();
                store = open(&path);
            }
        }
        agree(&mut store, &model)?;
    }
    store.close().unwrap();
    let mut reopened = open(&path);
    agree(&mut reopened, &model)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn store_equals_model_and_reconciles_after_every_step(
        openings in prop::collection::vec((0u32..50_000, prop_oneof![Just(0u32), 0u32..10_000]), 4),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        run_steps(openings, steps)?;
    }
}
