//! The durable ledger: postings per second with group commit, commit latency,
//! the latency of acknowledging one transaction at a time, and `rulehost run`
//! end to end on the durable store — each against the memory ledger measured
//! in the same run.
//!
//! The PostgreSQL store is measured the same way, on a server the benchmark
//! starts (PostgreSQL 15 from `/usr/lib/postgresql/15/bin`, `fsync=on`, on
//! this machine, sharing its cores with the host), or on `BENCH_PG_URL`'s
//! server (each round in a database of its own, created there).
//!
//! Run: `scripts/build-rules.sh && cargo bench -p rulehost-cli --bench ledger`
//! Environment: `BENCH_POSTINGS` (default 200000), `BENCH_TRANSACTIONS`
//! (end to end, default 100000), `BENCH_ROUNDS` (default 3). Files go to a
//! temporary folder on the same disk as `TMPDIR`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rulehost::decision::{Decision, LedgerEffect, Outcome, RuleResult, RuleTrace};
use rulehost::input::{parse_accounts, parse_transaction};
use rulehost::ledger::{Commit, Effect, Ledger, MemoryLedger, PostgresLedger, SqliteLedger, StoreOptions};
use rulehost::model::{Account, AccountStatus, Transaction, TransactionKind};
use rulehost::pipeline::{Pipeline, SharedLedger};
use rulehost::ruleset::RuleSet;
use rulehost::sandbox::{Sandbox, SandboxConfig};
use rulehost_cli::generate::{GenConfig, generate};
use rust_decimal::Decimal;

/// The tests' own PostgreSQL server.
#[path = "../../../tests/all/postgres.rs"]
mod postgres;

/// mimalloc: the default allocator serialises threads that free what another
/// thread allocated (the ledger writer frees what deciding allocated).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: usize = 1000;

fn accounts() -> Vec<Account> {
    (0..ACCOUNTS)
        .map(|i| Account {
            id: format!("acc-{i:06}"),
            currency: "USD".into(),
            country: "US".into(),
            opened_at: 0,
            status: AccountStatus::Active,
            overdraft_limit: Decimal::ZERO,
            opening_balance: Decimal::new(1_000_000_000, 2),
            tags: Vec::new(),
        })
        .collect()
}

fn transfers(n: usize) -> Vec<(Transaction, [u8; 32])> {
    (0..n)
        .map(|i| {
            let source = i * 7919 % ACCOUNTS;
            let destination = (source + 1 + i % (ACCOUNTS - 1)) % ACCOUNTS;
            let tx = Transaction {
                id: format!("tx-{i:09}"),
                timestamp: 1_767_000_000_000_000_000 + i as i128 * 1_000_000,
                kind: TransactionKind::Transfer,
                source: format!("acc-{source:06}"),
                destination: format!("acc-{destination:06}"),
                amount: Decimal::new(100 + (i % 5000) as i64, 2),
                currency: "USD".into(),
                country: None,
                merchant_category: None,
                channel: None,
                metadata: Vec::new(),
            };
            let mut fingerprint = [0u8; 32];
            fingerprint[..8].copy_from_slice(&(i as u64).to_le_bytes());
            (tx, fingerprint)
        })
        .collect()
}

/// A decision shaped like the example rule set's: nine traces.
fn decision(id: &str, traces: usize) -> Arc<Decision> {
    let rules = (0..traces)
        .map(|i| RuleTrace {
            rule: format!("rule-{i}").into(),
            version: "0123456789abcdef".into(),
            result: if i < 3 { RuleResult::Accept } else { RuleResult::Score { score: 0, reasons: Vec::new() } },
            fuel: 5_000 + i as u64 * 731,
            logs: Vec::new(),
        })
        .collect();
    Arc::new(Decision {
        id: id.to_owned(),
        outcome: Outcome::Approve,
        score: 0,
        reasons: Vec::new(),
        ruleset: "fedcba9876543210".into(),
        rollout: None,
        rules,
        ledger: LedgerEffect::Posted,
        json: Default::default(),
    })
}

/// Commits an approved transfer.
fn post(ledger: &mut dyn Ledger, tx: &Transaction, fingerprint: [u8; 32], decision: &Arc<Decision>) {
    let decision = decision.clone();
    let commit = Commit {
        tx,
        fingerprint,
        extra: None,
        wanted: Effect::Post,
        count_in_history: true,
        facts: Default::default(),
        decide: Box::new(move |_| decision),
    };
    ledger.commit(commit).unwrap();
}

fn commit_all(ledger: &mut dyn Ledger, txs: &[(Transaction, [u8; 32])], decisions: &[Arc<Decision>]) -> f64 {
    let started = Instant::now();
    for ((tx, fingerprint), d) in txs.iter().zip(decisions) {
        post(ledger, tx, *fingerprint, d);
    }
    ledger.sync_point().wait().unwrap();
    txs.len() as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn open(dir: &Path, name: &str, window: u64) -> SqliteLedger {
    SqliteLedger::open(&dir.join(name), &StoreOptions { history_window_seconds_max: window, ..StoreOptions::default() })
        .unwrap()
}

/// The durable stores measured.
#[derive(Clone, Copy, PartialEq)]
enum Store {
    Sqlite,
    Postgres,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "SQLite",
            Store::Postgres => "PostgreSQL",
        }
    }
}

/// Where PostgreSQL ledgers are made: a server of the benchmark's own, or
/// `BENCH_PG_URL`'s.
struct Databases {
    server: Option<postgres::PgServer>,
    base: Option<String>,
    made: std::cell::Cell<u32>,
}

impl Databases {
    fn new() -> Databases {
        match std::env::var("BENCH_PG_URL") {
            Ok(url) => Databases { server: None, base: Some(url), made: 0.into() },
            Err(_) => Databases { server: Some(postgres::PgServer::start_durable()), base: None, made: 0.into() },
        }
    }

    /// A fresh database's URL.
    fn fresh(&self) -> String {
        let n = self.made.get() + 1;
        self.made.set(n);
        let name = format!("bench_{}_{n}", std::process::id());
        match (&self.server, &self.base) {
            (Some(server), _) => server.database(&name),
            (None, Some(base)) => {
                let mut admin = ::postgres::Client::connect(base, ::postgres::NoTls).expect("BENCH_PG_URL connects");
                admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create a database");
                let (head, _) = base.rsplit_once('/').expect("BENCH_PG_URL names a database");
                format!("{head}/{name}")
            }
            (None, None) => unreachable!("one of the two is set"),
        }
    }
}

/// A durable ledger of either store.
enum Opened {
    Sqlite(SqliteLedger),
    Postgres(PostgresLedger),
}

impl Opened {
    /// A fresh one of `store`.
    fn fresh(store: Store, dir: &Path, name: &str, window: u64, dbs: &Databases) -> Opened {
        let options = StoreOptions { history_window_seconds_max: window, ..StoreOptions::default() };
        match store {
            Store::Sqlite => Opened::Sqlite(open(dir, name, window)),
            Store::Postgres => Opened::Postgres(PostgresLedger::open(&dbs.fresh(), &options).unwrap()),
        }
    }

    fn ledger(&mut self) -> &mut dyn Ledger {
        match self {
            Opened::Sqlite(l) => l,
            Opened::Postgres(l) => l,
        }
    }

    fn stats(&self) -> rulehost::ledger::CommitStats {
        match self {
            Opened::Sqlite(l) => l.stats(),
            Opened::Postgres(l) => l.stats(),
        }
    }

    fn into_ledger(self) -> Box<dyn Ledger> {
        match self {
            Opened::Sqlite(l) => Box::new(l),
            Opened::Postgres(l) => Box::new(l),
        }
    }

    fn close(self) {
        match self {
            Opened::Sqlite(l) => l.close().unwrap(),
            Opened::Postgres(l) => l.close().unwrap(),
        }
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let postings = if benching { env("BENCH_POSTINGS", 200_000) } else { 2_000 };
    let e2e_lines = if benching { env("BENCH_TRANSACTIONS", 100_000) } else { 300 };
    let rounds = if benching { env("BENCH_ROUNDS", 3) } else { 1 };
    let dir = tempfile::tempdir().unwrap();
    let dbs = Databases::new();
    let accounts = accounts();
    let txs = transfers(postings);

    println!("rulehost ledger: {postings} transfers over {ACCOUNTS} accounts, {rounds} rounds, median reported");
    println!("(p50/p99: duration of one durable group commit, write + fsync)");
    println!("{:<66} {:>12} {:>10} {:>10}", "configuration", "postings/s", "p50 µs", "p99 µs");
    for (label, traces) in [("nine-rule decision records", 9), ("decision records without traces", 0)] {
        let decisions: Vec<Arc<Decision>> = txs.iter().map(|(tx, _)| decision(&tx.id, traces)).collect();
        // Serialize copies (a decision caches its JSON; the store must make its own below).
        let copies: Vec<Decision> = decisions.iter().map(|d| (**d).clone()).collect();
        let t = Instant::now();
        let bytes: usize = copies.iter().map(|d| d.json().len()).sum();
        println!(
            "{:<66} {:>12.0}   ({} bytes each)",
            format!("  serializing {label} (records/s)"),
            decisions.len() as f64 / t.elapsed().as_secs_f64(),
            bytes / decisions.len()
        );
        let memory: Vec<f64> = (0..rounds)
            .map(|_| {
                let mut l = MemoryLedger::default();
                l.import_accounts(&accounts).unwrap();
                commit_all(&mut l, &txs, &decisions)
            })
            .collect();
        println!("{:<66} {:>12.0}", format!("memory ledger, {label}"), median(memory));
        for store in [Store::Sqlite, Store::Postgres] {
            let mut p50 = Vec::new();
            let mut p99 = Vec::new();
            let mut groups = Vec::new();
            let durable: Vec<f64> = (0..rounds)
                .map(|round| {
                    let name = format!("store-{traces}-{round}.sqlite");
                    let mut l = Opened::fresh(store, dir.path(), &name, 0, &dbs);
                    l.ledger().import_accounts(&accounts).unwrap();
                    l.ledger().sync_point().wait().unwrap();
                    let rate = commit_all(l.ledger(), &txs, &decisions);
                    let stats = l.stats();
                    let h = &stats.commit_us;
                    p50.push(h.value_at_quantile(0.5) as f64);
                    p99.push(h.value_at_quantile(0.99) as f64);
                    groups.push((stats.ops - 1) as f64 / (stats.commits - 1).max(1) as f64);
                    l.close();
                    rate
                })
                .collect();
            println!(
                "{:<66} {:>12.0} {:>10.0} {:>10.0}",
                format!("durable ({}, group commit), {label}", store.name()),
                median(durable),
                median(p50),
                median(p99)
            );
            println!("{:<66} {:>12.0}", "  mean changes per durable commit", median(groups));
        }
    }

    // One transaction acknowledged at a time (what a lone API request pays).
    let lone = 2_000.min(postings);
    let decisions: Vec<Arc<Decision>> = txs[..lone].iter().map(|(tx, _)| decision(&tx.id, 9)).collect();
    println!("(p50/p99: one commit call until its decision is durable)");
    for store in [Store::Sqlite, Store::Postgres] {
        let mut l = Opened::fresh(store, dir.path(), "lone.sqlite", 0, &dbs);
        l.ledger().import_accounts(&accounts).unwrap();
        let mut h = Histogram::<u64>::new(3).unwrap();
        let started = Instant::now();
        for ((tx, fingerprint), d) in txs[..lone].iter().zip(&decisions) {
            let t = Instant::now();
            post(l.ledger(), tx, *fingerprint, d);
            l.ledger().sync_point().wait().unwrap();
            h.record(t.elapsed().as_micros() as u64).unwrap();
        }
        println!(
            "{:<66} {:>12.0} {:>10} {:>10}",
            format!("durable ({}), one at a time (commit + wait)", store.name()),
            lone as f64 / started.elapsed().as_secs_f64(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99)
        );
        l.close();
    }

    // End to end: `rulehost run`'s stream on the example rule set.
    if e2e_lines == 0 {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap();
    let sandbox = Arc::new(Sandbox::new(&SandboxConfig::default()).unwrap());
    let ruleset = Arc::new(RuleSet::load(&sandbox, &root.join("examples/ruleset")).expect("build the modules first"));
    let (mut gen_accounts, mut input) = (Vec::new(), Vec::new());
    generate(&GenConfig { transactions: e2e_lines, ..GenConfig::default() }, &mut gen_accounts, &mut input).unwrap();
    let gen_accounts = parse_accounts(std::str::from_utf8(&gen_accounts).unwrap()).unwrap();
    let well_formed = std::str::from_utf8(&input).unwrap().lines().filter(|l| parse_transaction(0, l).is_ok()).count();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("end to end: {e2e_lines} generated lines ({well_formed} well-formed), {threads} evaluating threads");
    for durable in [None, Some(Store::Sqlite), Some(Store::Postgres)] {
        let rates: Vec<f64> = (0..rounds)
            .map(|round| {
                let window = ruleset.history_window_seconds_max;
                let mut ledger: Box<dyn Ledger> = match durable {
                    Some(store) => {
                        Opened::fresh(store, dir.path(), &format!("e2e-{round}.sqlite"), window, &dbs).into_ledger()
                    }
                    None => {
                        let mut m = MemoryLedger::default();
                        m.retain_history(window);
                        Box::new(m)
                    }
                };
                ledger.import_accounts(&gen_accounts).unwrap();
                ledger.sync_point().wait().unwrap();
                let shared: SharedLedger = Arc::new(Mutex::new(ledger));
                let pipeline = Pipeline::new(sandbox.clone(), shared);
                let options = rulehost::run::RunOptions { threads, ..Default::default() };
                let s = rulehost::run::run_stream(&pipeline, &ruleset, &input[..], std::io::sink(), &options, None)
                    .unwrap();
                s.throughput()
            })
            .collect();
        let label = durable.map_or("memory ledger".to_owned(), |s| format!("durable ledger ({})", s.name()));
        println!("{:<66} {:>12.0}", format!("rulehost run, example rule set, {label} (tx/s)"), median(rates));
    }
    std::thread::sleep(Duration::from_millis(10));
}
