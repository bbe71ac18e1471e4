//! The cost of one rule call, per shipped rule: on a reused, reset instance
//! (the default) and on a fresh component instance (`reuse_instances =
//! false`), with the fuel each uses. The transaction and the facts are the
//! same for every call, so the figures isolate the sandbox.
//!
//! Run: `scripts/build-rules.sh && cargo bench -p rulehost --bench calls`
//! Environment: `BENCH_CALLS` (default 20000 per rule), `BENCH_ROUNDS` (default 3),
//! `BENCH_NO_POOLING` (on-demand instance allocation, so that valgrind can
//! run it), `BENCH_RULES` (another rule-set folder, e.g. one with unstripped modules
//! for profiling), `BENCH_REUSED_ONLY` (skip the fresh-instance column), `RULEHOST_PERF_MAP=1`
//! (name guest functions for `perf`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rulehost::facts::{AccountFacts, Facts, HistoryQuery, HistoryStats};
use rulehost::model::{AccountStatus, Transaction, TransactionKind};
use rulehost::ruleset::RuleSet;
use rulehost::sandbox::{CallContext, Sandbox, SandboxConfig};
use rust_decimal::Decimal;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Two active accounts and a short history.
struct FixedFacts;

impl Facts for FixedFacts {
    fn account(&self, id: &str) -> Option<AccountFacts> {
        Some(AccountFacts {
            id: id.to_owned(),
            currency: "USD".into(),
            country: "US".into(),
            opened_at: 1_700_000_000_000_000_000,
            status: AccountStatus::Active,
            available: Decimal::new(100_000, 2),
        })
    }

    fn history(&self, _query: &HistoryQuery<'_>) -> HistoryStats {
        HistoryStats { count: 3, sum: Decimal::new(4_500, 2) }
    }
}

fn transaction() -> Transaction {
    Transaction {
        id: "tx-00000001".into(),
        timestamp: 1_767_571_200_229_880_179,
        kind: TransactionKind::Payment,
        source: "acc-000715".into(),
        destination: "acc-001418".into(),
        amount: Decimal::new(26_712, 2),
        currency: "USD".into(),
        country: Some("US".into()),
        merchant_category: Some("5541".into()),
        channel: Some("mobile".into()),
        metadata: Vec::new(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let calls = if benching { env("BENCH_CALLS", 20_000) } else { 50 };
    let rounds = if benching { env("BENCH_ROUNDS", 3) } else { 1 };
    let rules = std::env::var_os("BENCH_RULES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ruleset"));
    let tx = transaction();
    let facts: Arc<dyn Facts> = Arc::new(FixedFacts);
    println!("rulehost calls: {calls} calls per rule, {rounds} rounds, median ns per call");
    println!("{:<20} {:>12} {:>8} {:>14} {:>8}", "rule", "reused ns", "fuel", "fresh ns", "fuel");
    let perf_map = std::env::var_os("RULEHOST_PERF_MAP").is_some();
    // Without the pooling allocator's reservations the benchmark runs under
    // valgrind (`--tool=callgrind` counts instructions repeatably).
    let pooling = std::env::var_os("BENCH_NO_POOLING").is_none();
    let reused = Sandbox::new(&SandboxConfig { perf_map, pooling, ..SandboxConfig::default() }).unwrap();
    let fresh = Sandbox::new(&SandboxConfig { reuse_instances: false, pooling, ..SandboxConfig::default() }).unwrap();
    let reused_set = RuleSet::load(&reused, &rules).expect("build the modules first: scripts/build-rules.sh");
    let fresh_set = RuleSet::load(&fresh, &rules).unwrap();
    let (mut total_reused, mut total_fresh) = (0.0, 0.0);
    for (a, b) in reused_set.rules.iter().zip(&fresh_set.rules) {
        let measure = |sandbox: &Sandbox, set: &RuleSet, rule: &rulehost::ruleset::LoadedRule| {
            let mut fuel = 0;
            let per_round: Vec<f64> = (0..rounds)
                .map(|_| {
                    let started = Instant::now();
                    for _ in 0..calls {
                        let ctx = CallContext {
                            params: rule.params.clone(),
                            lists: set.lists.clone(),
                            declared_lists: rule.lists.clone(),
                            history_window_seconds_max: rule.history_window_seconds_max,
                            facts: facts.clone(),
                            budget: rule.budget,
                        };
                        let out = sandbox.evaluate(&rule.compiled, rule.kind, ctx, &tx);
                        assert!(out.result.is_ok(), "{}: {:?}", rule.name, out.result);
                        fuel = out.fuel;
                    }
                    started.elapsed().as_nanos() as f64 / calls as f64
                })
                .collect();
            (median(per_round), fuel)
        };
        let (reused_ns, reused_fuel) = measure(&reused, &reused_set, a);
        let (fresh_ns, fresh_fuel) =
            if std::env::var_os("BENCH_REUSED_ONLY").is_some() { (0.0, 0) } else { measure(&fresh, &fresh_set, b) };
        total_reused += reused_ns;
        total_fresh += fresh_ns;
        println!("{:<20} {:>12.0} {:>8} {:>14.0} {:>8}", a.name, reused_ns, reused_fuel, fresh_ns, fresh_fuel);
    }
    println!("{:<20} {:>12.0} {:>8} {:>14.0}", "all nine", total_reused, "", total_fresh);
}
