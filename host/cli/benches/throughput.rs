//! End-to-end throughput and per-transaction latency of the pipeline with the
//! example rule set, on generated traffic, against the same rule crates
//! compiled natively into the host (the reference limit).
//!
//! Run: `scripts/build-rules.sh && cargo bench -p rulehost --bench throughput`
//! Environment: `BENCH_TRANSACTIONS` (default 200000), `BENCH_ROUNDS` (default 3).
//! Prints a table; BENCHMARKS.md records the figures.

use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use rulehost::facts::HistoryQuery;
use rulehost::input::{ParsedTransaction, parse_accounts, parse_transaction};
use rulehost::ledger::{Ledger, MemoryLedger};
use rulehost::model::{AccountStatus, NANOS_PER_SECOND, Transaction, TransactionKind};
use rulehost::params::ParamValue;
use rulehost::pipeline::{Pipeline, RuleCalls, RuleExecutor, SharedLedger};
use rulehost::ruleset::{LoadedRule, RuleSet};
use rulehost::sandbox::{CallContext, CallOutcome, Sandbox, SandboxConfig, Verdict};
use rulehost_cli::generate::{GenConfig, generate};
use rulehost_guest::native::{self, NativeHost};
use rulehost_guest::{RiskRule, Score, Validation, ValidationRule};

/// mimalloc: the default allocator serialises threads that free what another
/// thread allocated (the ledger writer frees what deciding allocated).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The native reference: the shipped rule crates called directly, with the
/// capabilities answered from the same ledger.
struct Native;

struct NativeCall {
    ctx: CallContext,
    now: i128,
}

fn to_sdk_param(v: &ParamValue) -> Option<native::ParamValue> {
    Some(match v {
        ParamValue::Text(s) => native::ParamValue::Text(s.clone()),
        ParamValue::Integer(i) => native::ParamValue::Integer(*i),
        ParamValue::Decimal(d) => native::ParamValue::Decimal(*d),
        ParamValue::TextList(l) => native::ParamValue::TextList(l.clone()),
        _ => return None,
    })
}

fn timestamp(n: i128) -> rulehost_guest::Timestamp {
    rulehost_guest::Timestamp {
        seconds: n.div_euclid(NANOS_PER_SECOND) as i64,
        nanos: n.rem_euclid(NANOS_PER_SECOND) as u32,
    }
}

impl NativeHost for NativeCall {
    fn param(&self, name: &str) -> Option<native::ParamValue> {
        self.ctx.params.get(name).and_then(to_sdk_param)
    }
    fn param_entry(&self, name: &str, key: &str) -> Option<native::ParamValue> {
        self.ctx.params.entry(name, key).as_ref().and_then(to_sdk_param)
    }
    fn history(
        &self,
        account: &str,
        window_seconds: u64,
        range: Option<(rulehost_guest::Decimal, rulehost_guest::Decimal)>,
    ) -> rulehost_guest::HistoryStats {
        let q = HistoryQuery {
            account,
            from_exclusive: self.now - i128::from(window_seconds) * NANOS_PER_SECOND,
            to_inclusive: self.now,
            min: range.map(|r| r.0),
            max: range.map(|r| r.1),
        };
        let s = self.ctx.facts.history(&q);
        rulehost_guest::HistoryStats { count: s.count, sum: s.sum }
    }
    fn account(&self, id: &str) -> Option<rulehost_guest::Account> {
        self.ctx.facts.account(id).map(|a| rulehost_guest::Account {
            id: a.id,
            currency: a.currency,
            country: a.country,
            opened_at: timestamp(a.opened_at),
            status: match a.status {
                AccountStatus::Active => rulehost_guest::AccountStatus::Active,
                AccountStatus::Frozen => rulehost_guest::AccountStatus::Frozen,
                AccountStatus::Closed => rulehost_guest::AccountStatus::Closed,
            },
            available: a.available,
        })
    }
    fn list_contains(&self, list: &str, value: &str) -> bool {
        self.ctx.lists.contains(list, value)
    }
    fn log(&self, _level: rulehost_guest::LogLevel, _message: &str) {}
}

fn to_sdk_tx(tx: &Transaction) -> rulehost_guest::Transaction {
    rulehost_guest::Transaction {
        id: tx.id.clone(),
        timestamp: timestamp(tx.timestamp),
        kind: match tx.kind {
            TransactionKind::Payment => rulehost_guest::TransactionKind::Payment,
            TransactionKind::Transfer => rulehost_guest::TransactionKind::Transfer,
            TransactionKind::Deposit => rulehost_guest::TransactionKind::Deposit,
            TransactionKind::Withdrawal => rulehost_guest::TransactionKind::Withdrawal,
        },
        source: tx.source.clone(),
        destination: tx.destination.clone(),
        amount: tx.amount,
        currency: tx.currency.clone(),
        country: tx.country.clone(),
        merchant_category: tx.merchant_category.clone(),
        channel: tx.channel.clone(),
        metadata: tx.metadata.clone(),
    }
}

fn validation<R: ValidationRule>(tx: &rulehost_guest::Transaction) -> Verdict {
    match R::validate(tx) {
        Validation::Accept => Verdict::Accept,
        Validation::Reject { code, message } => Verdict::Reject { code, message },
    }
}

fn risk<R: RiskRule>(tx: &rulehost_guest::Transaction) -> Verdict {
    let Score { score, reasons } = R::score(tx);
    Verdict::Score { score, reasons }
}

impl RuleExecutor for Native {
    fn begin<'a>(&'a self, tx: &'a Transaction) -> Box<dyn RuleCalls + 'a> {
        Box::new(NativeCalls { sdk_tx: to_sdk_tx(tx), now: tx.timestamp })
    }
}

struct NativeCalls {
    sdk_tx: rulehost_guest::Transaction,
    now: i128,
}

impl RuleCalls for NativeCalls {
    fn call(&mut self, rule: &LoadedRule, ctx: CallContext) -> CallOutcome {
        let sdk_tx = &self.sdk_tx;
        let call = Rc::new(NativeCall { ctx, now: self.now });
        let verdict = native::with_host(call, || match &*rule.name {
            "amount-format" => validation::<rule_amount_format::AmountFormat>(sdk_tx),
            "sanctions" => validation::<rule_sanctions::Sanctions>(sdk_tx),
            "account-status" => validation::<rule_account_status::AccountStatusRule>(sdk_tx),
            "velocity" => risk::<rule_velocity::Velocity>(sdk_tx),
            "large-amount" => risk::<rule_large_amount::LargeAmount>(sdk_tx),
            "structuring" => risk::<rule_structuring::Structuring>(sdk_tx),
            "new-account" => risk::<rule_new_account::NewAccount>(sdk_tx),
            "geo-mismatch" => risk::<rule_geo_mismatch::GeoMismatch>(sdk_tx),
            "merchant-category" => risk::<rule_merchant_category::MerchantCategory>(sdk_tx),
            other => panic!("no native build of rule {other}"),
        });
        CallOutcome { result: Ok(verdict), fuel: 0, memory_bytes: 0, logs: Vec::new() }
    }
}

fn fresh_ledger(accounts: &str, ruleset: &RuleSet) -> SharedLedger {
    let mut ledger = MemoryLedger::default();
    ledger.import_accounts(&parse_accounts(accounts).unwrap()).unwrap();
    ledger.retain_history(ruleset.history_window_seconds_max);
    Arc::new(Mutex::new(Box::new(ledger)))
}

struct Measured {
    tx_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

/// Decides every parsed line one by one, timing each decision.
fn per_transaction(pipeline: &Pipeline, ruleset: &RuleSet, parsed: &[(u64, ParsedTransaction)]) -> Measured {
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    for (line, p) in parsed {
        let t = Instant::now();
        std::hint::black_box(pipeline.decide(ruleset, *line, p));
        hist.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    Measured {
        tx_per_s: parsed.len() as f64 / elapsed,
        p50_us: hist.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1e3,
        max_us: hist.max() as f64 / 1e3,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this
    // runs as a quick smoke test so the benchmark cannot rot.
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let transactions = if benching { env("BENCH_TRANSACTIONS", 200_000) } else { 300 };
    let rounds = if benching { env("BENCH_ROUNDS", 3) } else { 1 };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap();
    let rules = root.join("examples/ruleset");

    let config = GenConfig { transactions, ..GenConfig::default() };
    let (mut accounts, mut input) = (Vec::new(), Vec::new());
    generate(&config, &mut accounts, &mut input).unwrap();
    let accounts = String::from_utf8(accounts).unwrap();
    let parsed: Vec<(u64, ParsedTransaction)> = String::from_utf8(input.clone())
        .unwrap()
        .lines()
        .enumerate()
        .filter_map(|(i, l)| parse_transaction(i as u64 + 1, l).ok().map(|p| (i as u64 + 1, p)))
        .collect();

    println!(
        "rulehost throughput: {transactions} generated lines ({} well-formed), {rounds} rounds, median reported",
        parsed.len()
    );
    println!("{:<44} {:>12} {:>10} {:>10} {:>10}", "configuration", "tx/s", "p50 µs", "p99 µs", "max µs");

    let only_pooling = std::env::var_os("BENCH_POOLING_ONLY").is_some();
    let mut wasm_rate = 0.0;
    for (label, pooling) in [("wasm, pooling allocator (default)", true), ("wasm, on-demand allocator", false)] {
        if only_pooling && !pooling {
            continue;
        }
        let sandbox = Arc::new(Sandbox::new(&SandboxConfig { pooling, ..SandboxConfig::default() }).unwrap());
        let ruleset =
            Arc::new(RuleSet::load(&sandbox, &rules).expect("build the modules first: scripts/build-rules.sh"));
        let runs: Vec<Measured> = (0..rounds)
            .map(|_| {
                per_transaction(&Pipeline::new(sandbox.clone(), fresh_ledger(&accounts, &ruleset)), &ruleset, &parsed)
            })
            .collect();
        report(label, &runs);
        if pooling {
            wasm_rate = median(runs.iter().map(|m| m.tx_per_s).collect());
            // End to end: parse + decide + serialize through run_stream, with
            // one evaluating thread and with one per CPU.
            for threads in [1, std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)] {
                let e2e: Vec<f64> = (0..rounds)
                    .map(|_| {
                        let pipeline = Pipeline::new(sandbox.clone(), fresh_ledger(&accounts, &ruleset));
                        let options = rulehost::run::RunOptions { threads, ..Default::default() };
                        let s =
                            rulehost::run::run_stream(&pipeline, &ruleset, &input[..], std::io::sink(), &options, None)
                                .unwrap();
                        s.throughput()
                    })
                    .collect();
                println!(
                    "{:<44} {:>12.0}",
                    format!("wasm, end to end (rulehost run, {threads} thread(s))"),
                    median(e2e)
                );
            }
        }
    }
    let sandbox = Arc::new(Sandbox::new(&SandboxConfig::default()).unwrap());
    let ruleset = RuleSet::load(&sandbox, &rules).unwrap();
    let runs: Vec<Measured> = (0..rounds)
        .map(|_| {
            per_transaction(
                &Pipeline::with_executor(Arc::new(Native), fresh_ledger(&accounts, &ruleset)),
                &ruleset,
                &parsed,
            )
        })
        .collect();
    report("native reference (same rule crates)", &runs);
    let native_rate = median(runs.iter().map(|m| m.tx_per_s).collect());
    println!("ratio wasm / native throughput: {:.3}", wasm_rate / native_rate);
}

fn report(label: &str, runs: &[Measured]) {
    println!(
        "{:<44} {:>12.0} {:>10.1} {:>10.1} {:>10.1}",
        label,
        median(runs.iter().map(|m| m.tx_per_s).collect()),
        median(runs.iter().map(|m| m.p50_us).collect()),
        median(runs.iter().map(|m| m.p99_us).collect()),
        median(runs.iter().map(|m| m.max_us).collect()),
    );
}
