//! Hot reload: latency from a file change to the new version serving (a cold
//! compile of one changed module, and a manifest-only change whose modules
//! are already compiled), and throughput while reloading every second
//! against throughput without reloads, in the same run.
//!
//! Run: `scripts/build-rules.sh && cargo bench -p rulehost --bench reload`
//! Prints a table; BENCHMARKS.md records the figures.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rulehost::input::parse_accounts;
use rulehost::ledger::{Ledger, MemoryLedger};
use rulehost::pipeline::Pipeline;
use rulehost::reload::{LiveRules, RuleSource, Watcher};
use rulehost::run::{RunOptions, run_stream};
use rulehost::sandbox::{Sandbox, SandboxConfig};
use rulehost_cli::generate::{GenConfig, generate};

/// mimalloc: the default allocator serialises threads that free what another
/// thread allocated (the ledger writer frees what deciding allocated).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A component with a custom section appended: same behaviour, new content
/// hash, so the host must compile it.
fn touched(bytes: &[u8], n: u32) -> Vec<u8> {
    let name = b"rulehost-bench";
    let payload = n.to_le_bytes();
    let mut out = bytes.to_vec();
    out.push(0);
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Milliseconds from writing `write` to `live` serving a new version.
fn change_to_live(live: &LiveRules, write: impl FnOnce()) -> f64 {
    let before = live.current().version.clone();
    let started = Instant::now();
    write();
    while live.current().version == before {
        assert!(started.elapsed() < Duration::from_secs(30), "never went live: {:?}", live.status());
        std::thread::sleep(Duration::from_micros(200));
    }
    started.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = if benching { 5 } else { 1 };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("ruleset");
    copy_dir(&root.join("examples/ruleset"), &dir);
    let manifest = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
    let velocity = std::fs::read(dir.join("modules/velocity.wasm")).unwrap();

    let sandbox = Arc::new(Sandbox::new(&SandboxConfig::default()).unwrap());
    let live = Arc::new(LiveRules::load(sandbox.clone(), &dir, None).unwrap());
    let watcher = Watcher::start(live.clone(), Duration::from_millis(rulehost::reload::DEBOUNCE_MS_DEFAULT)).unwrap();

    let mut cold = Vec::new();
    let mut cached = Vec::new();
    for n in 0..rounds {
        let v = touched(&velocity, n as u32);
        cold.push(change_to_live(&live, || std::fs::write(dir.join("modules/velocity.wasm"), &v).unwrap()));
        let m = manifest.replace("review_at = 400", &format!("review_at = {}", 401 + n));
        cached.push(change_to_live(&live, || std::fs::write(dir.join("manifest.toml"), &m).unwrap()));
    }
    drop(watcher);
    let t = live.status().last_timings;
    println!(
        "rulehost reload: {rounds} rounds, median reported (debounce {} ms included)",
        rulehost::reload::DEBOUNCE_MS_DEFAULT
    );
    println!("change to live, one module recompiled (cold):   {:>8.1} ms", median(cold));
    println!("change to live, manifest only (modules cached): {:>8.1} ms", median(cached));
    println!("last reload: load {} µs, validate (cases) {} µs, swap {} µs", t.load_us, t.validate_us, t.swap_us);

    // Throughput with and without a reload every second, same stream.
    let transactions = if benching { 60_000 } else { 500 };
    let config = GenConfig { transactions, ..GenConfig::default() };
    let (mut accounts, mut input) = (Vec::new(), Vec::new());
    generate(&config, &mut accounts, &mut input).unwrap();
    let accounts = parse_accounts(&String::from_utf8(accounts).unwrap()).unwrap();
    let run = |reloading: bool| -> f64 {
        let mut ledger = MemoryLedger::default();
        ledger.import_accounts(&accounts).unwrap();
        ledger.retain_history(86_400);
        let pipeline = Pipeline::new(sandbox.clone(), Arc::new(std::sync::Mutex::new(Box::new(ledger))));
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            if reloading {
                s.spawn(|| {
                    let mut n = 0;
                    while !done.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_secs(1));
                        n += 1;
                        let m = manifest.replace("review_at = 400", &format!("review_at = {}", 500 + n % 2));
                        std::fs::write(dir.join("manifest.toml"), m).unwrap();
                        let _ = live.reload();
                    }
                });
            }
            let source: &dyn RuleSource = &*live;
            let summary =
                run_stream(&pipeline, source, &input[..], std::io::sink(), &RunOptions::default(), None).unwrap();
            done.store(true, Ordering::Relaxed);
            summary.throughput()
        })
    };
    let mut steady = Vec::new();
    let mut reloading = Vec::new();
    for _ in 0..rounds.min(3) {
        steady.push(run(false));
        reloading.push(run(true));
    }
    let (s, r) = (median(steady), median(reloading));
    println!("throughput steady:             {s:>10.0} tx/s");
    println!("throughput reloading every 1s: {r:>10.0} tx/s ({:.0}% of steady)", 100.0 * r / s);
}
