//! The library API in-process: a `Host` built inside a tokio runtime decides,
//! batches, resolves holds, reads balances and versions, tells subscribers
//! about reloads, and never runs Wasm on the runtime's own thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rulehost::decision::{Outcome, Record};
use rulehost::ledger::{HoldState, Resolution};
use rulehost::reload::ReloadEvent;
use rulehost::service::{Host, HostBuilder, HostError};

use crate::support::{TempRuleSet, root};

fn tx(id: &str, source: &str, destination: &str, amount: &str) -> String {
    format!(
        r#"{{"id":"{id}","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"{source}","destination":"{destination}","amount":"{amount}","currency":"USD"}}"#
    )
}

async fn host(set: &TempRuleSet, ledger: &std::path::Path) -> Host {
    HostBuilder::new(set.dir.path())
        .ledger_file(ledger)
        .accounts(root().join("tests/fixtures/pipeline/accounts.jsonl"))
        .eval_threads(2)
        .build()
        .await
        .expect("host builds")
}

fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

#[tokio::test(flavor = "current_thread")]
async fn the_host_decides_resolves_and_reports_from_a_tokio_service() {
    assert_send_sync_clone::<Host>();
    let set = TempRuleSet::example();
    let dir = tempfile::tempdir().unwrap();
    let host = host(&set, &dir.path().join("ledger.sqlite")).await;

    let record = host.evaluate(&tx("s1", "a1", "a2", "10.00")).await.unwrap();
    let Record::Decision { decision, replayed: false, .. } = &record else { panic!("{record:?}") };
    assert_eq!(decision.outcome, Outcome::Approve);
    assert_eq!(*decision.ruleset, *host.version());
    assert_eq!(host.decision("s1").unwrap().as_deref(), Some(&**decision));
    let again = host.evaluate(&tx("s1", "a1", "a2", "10.00")).await.unwrap();
    assert!(matches!(again, Record::Decision { replayed: true, .. }));
    let bad = host.evaluate(r#"{"id":"s2","amount":1.5}"#).await.unwrap();
    assert!(matches!(bad, Record::Error(_)), "bad input is an error record, not an error");

    let batch = host
        .evaluate_batch(vec![tx("s3", "a1", "a2", "1.00"), "nonsense".into(), tx("s4", "holdy", "a1", "1.00")])
        .await
        .unwrap();
    assert_eq!(batch.len(), 3);
    assert_eq!(batch[1].outcome(), Outcome::Error);

    // A review (foreign, high-risk country and merchant): held, then approved.
    let review = r#"{"id":"s5","timestamp":"2026-01-05T10:13:00Z","kind":"payment","source":"holdy","destination":"a2","amount":"6000.00","currency":"USD","country":"RU","merchant_category":"7995"}"#;
    let held = host.evaluate(review).await.unwrap();
    assert_eq!(held.outcome(), Outcome::Review, "{}", held.to_json());
    assert_eq!(host.pending_holds().unwrap().len(), 1);
    let (resolution, hold) = host.resolve_hold("s5", true).await.unwrap();
    assert_eq!((resolution, hold.state), (Resolution::Done, HoldState::Posted));
    let (resolution, _) = host.resolve_hold("s5", true).await.unwrap();
    assert_eq!(resolution, Resolution::AlreadyDone);
    assert!(matches!(host.resolve_hold("nope", false).await, Err(HostError::Ledger(_))));
    let holdy = host.account("holdy").unwrap();
    assert_eq!(holdy.pending, rust_decimal::Decimal::ZERO);
    assert!(host.account("nope").is_none());
    assert!(host.is_ready());
    host.flush().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn rule_calls_never_stall_the_runtime_thread() {
    let set = TempRuleSet::example();
    let dir = tempfile::tempdir().unwrap();
    let host = host(&set, &dir.path().join("ledger.sqlite")).await;
    // One runtime thread: if Wasm ran on it, the ticker could not tick
    // while the batch is decided.
    let ticks = Arc::new(AtomicU64::new(0));
    let counter = ticks.clone();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(2));
        loop {
            interval.tick().await;
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let lines: Vec<String> = (0..3000).map(|i| tx(&format!("n{i}"), "a1", "a2", "0.01")).collect();
    let started = std::time::Instant::now();
    let before = ticks.load(Ordering::Relaxed);
    let records = host.evaluate_batch(lines).await.unwrap();
    let elapsed = started.elapsed();
    let during = ticks.load(Ordering::Relaxed) - before;
    ticker.abort();
    assert_eq!(records.len(), 3000);
    assert!(
        during as u128 * 2 * 4 >= elapsed.as_millis(),
        "the runtime thread ticked {during} times in {elapsed:?} while rules ran (expected about one per 2 ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_hear_of_reloads_refusals_and_rollbacks() {
    let set = TempRuleSet::example();
    let dir = tempfile::tempdir().unwrap();
    let host = host(&set, &dir.path().join("ledger.sqlite")).await;
    let mut events = host.subscribe();
    let first = host.version();
    let manifest = set.dir.path().join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("decline_at = 700", "decline_at = 701")).unwrap();
    let event = tokio::time::timeout(Duration::from_secs(20), events.recv()).await.expect("an event").unwrap();
    let ReloadEvent::Swapped { from, to } = event else { panic!("{event:?}") };
    assert_eq!((from.as_str(), to.as_str()), (&*first, &*host.version()));
    std::fs::write(&manifest, "this is not toml [").unwrap();
    let event = tokio::time::timeout(Duration::from_secs(20), events.recv()).await.expect("an event").unwrap();
    assert!(matches!(event, ReloadEvent::Refused { .. }), "{event:?}");
    assert_eq!(*host.version(), *to, "the refused version never serves");
    host.rollback().await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(20), events.recv()).await.expect("an event").unwrap();
    assert!(matches!(event, ReloadEvent::RolledBack { .. }), "{event:?}");
    assert_eq!(*host.version(), *first);
}
