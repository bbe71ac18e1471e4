//! The embedded `Host` called from Rust, one transaction at a time
//! (`Host::evaluate`, blocking on a tokio runtime from the calling thread, as
//! the Python package does), and a whole sample at once
//! (`Host::evaluate_batch`): the baseline `python/bench.py` measures the
//! Python package's `decide` and `decide_many` against.
//!
//! Run: `scripts/bench-python.sh` (makes the sample, runs this and the Python side).
//! Environment: `BENCH_SAMPLE` (a folder with `accounts.jsonl` and
//! `transactions.jsonl`; default the pipeline fixture, which is what
//! `cargo test` runs once as a smoke test), `BENCH_ROUNDS` (default 5),
//! `BENCH_THREADS` (evaluation threads, default 1 for per-call figures).
//!
//! The system allocator, as in a Python process (the CLI uses mimalloc).

use std::path::PathBuf;
use std::time::Instant;

use rulehost::service::HostBuilder;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sample =
        std::env::var_os("BENCH_SAMPLE").map(PathBuf::from).unwrap_or_else(|| root.join("tests/fixtures/pipeline"));
    let rounds = if benching { env("BENCH_ROUNDS", 5) } else { 1 };
    let threads = env("BENCH_THREADS", 1);
    let rules = root.join("examples/ruleset");
    let text = std::fs::read_to_string(sample.join("transactions.jsonl")).expect("transactions.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let build = || {
        runtime
            .block_on(
                HostBuilder::new(&rules)
                    .accounts(sample.join("accounts.jsonl"))
                    .eval_threads(threads)
                    .watch(false)
                    .build(),
            )
            .expect("the host starts")
    };
    let (mut single, mut batch) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let host = build();
        let started = Instant::now();
        for line in &lines {
            runtime.block_on(host.evaluate(line)).expect("decided");
        }
        single.push(started.elapsed().as_secs_f64() * 1e6 / lines.len() as f64);
        drop(host);
        let host = build();
        let owned: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        let started = Instant::now();
        let records = runtime.block_on(host.evaluate_batch(owned)).expect("decided");
        assert_eq!(records.len(), lines.len());
        batch.push(lines.len() as f64 / started.elapsed().as_secs_f64());
    }
    println!(
        "{{\"lines\":{},\"threads\":{threads},\"rounds\":{rounds},\"evaluate_us\":{:.2},\"evaluate_batch_per_s\":{:.0}}}",
        lines.len(),
        median(single),
        median(batch)
    );
}
