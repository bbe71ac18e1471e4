//! Deadlines count the rule's own CPU time: a host that answers slowly, or a
//! machine too busy to run the evaluating thread, never turns a healthy call
//! into a `deadline` failure, so decisions do not depend on load; a rule
//! that spins still meets its deadline (`containment.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rulehost::facts::{AccountFacts, Facts, HistoryQuery, HistoryStats};
use rulehost::manifest::Budget;
use rulehost::model::{AccountStatus, Transaction, TransactionKind};
use rulehost::sandbox::{CallContext, CallOutcome, Sandbox, SandboxConfig};
use rust_decimal::Decimal;

use crate::support::{TempRuleSet, generated, jsonl, module, run};

/// Facts that take `delay` of wall time (and no CPU) to answer.
struct SlowFacts {
    delay: Duration,
}

impl Facts for SlowFacts {
    fn account(&self, id: &str) -> Option<AccountFacts> {
        std::thread::sleep(self.delay);
        Some(AccountFacts {
            id: id.to_owned(),
            currency: "USD".into(),
            country: "US".into(),
            opened_at: 0,
            status: AccountStatus::Active,
            available: Decimal::new(1_000, 0),
        })
    }

    fn history(&self, _query: &HistoryQuery<'_>) -> HistoryStats {
        std::thread::sleep(self.delay);
        HistoryStats { count: 7, sum: Decimal::new(70, 0) }
    }
}

fn tx() -> Transaction {
    Transaction {
        id: "t1".into(),
        timestamp: 1_767_607_200_000_000_000,
        kind: TransactionKind::Payment,
        source: "a".into(),
        destination: "b".into(),
        amount: Decimal::new(1_000, 2),
        currency: "USD".into(),
        country: Some("US".into()),
        merchant_category: None,
        channel: None,
        metadata: Vec::new(),
    }
}

/// One call of `crate_name`'s module with facts that answer after `delay`.
fn call(sandbox: &Sandbox, crate_name: &str, delay: Duration, budget: Budget) -> (CallOutcome, Duration) {
    let bytes = std::fs::read(module(crate_name)).unwrap();
    let rule = sandbox.load(&bytes).unwrap();
    let declared = sandbox.describe(&rule, &budget).unwrap();
    let ctx = CallContext {
        params: Default::default(),
        lists: Default::default(),
        declared_lists: Vec::new().into(),
        history_window_seconds_max: declared.history_window_seconds_max,
        facts: Arc::new(SlowFacts { delay }),
        budget,
    };
    let started = Instant::now();
    let out = sandbox.evaluate(&rule, declared.kind, ctx, &tx());
    (out, started.elapsed())
}

#[test]
fn time_the_host_takes_does_not_count_against_the_deadline() {
    let budget = Budget { deadline_ms: 5, ..Budget::default() };
    for config in [SandboxConfig::default(), SandboxConfig { reuse_instances: false, ..SandboxConfig::default() }] {
        let sandbox = Sandbox::new(&config).unwrap();
        // Velocity asks for history once; each answer takes 30 ms of wall
        // time, six times the deadline.
        let (quick, _) = call(&sandbox, "rule-velocity", Duration::ZERO, budget);
        let (slow, wall) = call(&sandbox, "rule-velocity", Duration::from_millis(30), budget);
        assert!(wall >= Duration::from_millis(30), "the host really was slow: {wall:?}");
        assert!(slow.result.is_ok(), "reuse {}: {:?}", config.reuse_instances, slow.result);
        assert_eq!(slow.result, quick.result);
        assert_eq!(slow.fuel, quick.fuel, "the same work");
    }
}

#[test]
fn a_busy_machine_does_not_change_decisions() {
    let (accounts, transactions) = generated(23, 100, 1_500);
    let set = TempRuleSet::example();
    let ruleset = set.load();
    let quiet = jsonl(&run(&ruleset, &accounts, &transactions).0);
    // Far more spinning threads than CPUs, at the same priority, for the
    // whole run: the evaluating thread is preempted again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..4 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    let busy = jsonl(&run(&ruleset, &accounts, &transactions).0);
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    assert!(!busy.contains("\"deadline\""), "a healthy rule failed its deadline under load");
    assert!(busy == quiet, "decisions changed with the machine's load");
}
