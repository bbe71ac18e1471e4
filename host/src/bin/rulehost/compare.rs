//! `rulehost diff` and `rulehost backtest`: deciding one input file with
//! rule sets on scratch ledgers, then comparing (the comparisons themselves
//! are `rulehost::diff` and `rulehost::backtest`).

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use rulehost::ledger::import_file;
use rulehost::pipeline::Pipeline;
use rulehost::run::{RunOptions, run_stream};

use crate::{CacheArg, Failure, load, start, threads_range};

/// What `diff` and `backtest` share.
#[derive(clap::Args)]
pub(crate) struct CompareArgs {
    /// The report as JSON.
    #[arg(long)]
    json: bool,
    /// Threads evaluating rules, 1..=256 (default: one per CPU).
    #[arg(long, value_parser = threads_range())]
    threads: Option<usize>,
    #[command(flatten)]
    cache: CacheArg,
}

/// `rulehost diff`: both sides on the same input file, then the comparison.
pub(crate) fn diff(
    rules: &Path,
    accounts: &Path,
    legacy: &str,
    input: Option<&Path>,
    equate: &[rulehost::diff::Equivalence],
    common: &CompareArgs,
) -> Result<u8, Failure> {
    use rulehost::diff::{SideTime, compare, cpu_seconds};
    // Both sides read the same bytes: standard input is kept in a file.
    struct Spool(PathBuf);
    impl Drop for Spool {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let mut spool = None;
    let input = match input {
        Some(p) => p.to_owned(),
        None => {
            let path = std::env::temp_dir().join(format!("rulehost-diff-{}.jsonl", std::process::id()));
            let mut file = start(File::create(&path).with_context(|| format!("creating {}", path.display())))?;
            let kept = Spool(path.clone());
            start(io::copy(&mut io::stdin().lock(), &mut file).context("reading standard input"))?;
            spool = Some(kept);
            path
        }
    };
    let _spool = spool;
    let (ours, ours_time) = start(decide_file(rules, accounts, &input, common))?;
    let children_before = cpu_seconds().1;
    let started = std::time::Instant::now();
    let stdin = start(File::open(&input).with_context(|| format!("opening {}", input.display())))?;
    let out = start(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(legacy)
            .stdin(stdin)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running the legacy command `{legacy}`")),
    )?;
    let legacy_time = SideTime { wall_s: started.elapsed().as_secs_f64(), cpu_s: cpu_seconds().1 - children_before };
    if !out.status.success() {
        // Many implementations exit non-zero when some lines were errors
        // (rulehost itself does): only an empty answer is a failure.
        if out.stdout.is_empty() {
            return Err(Failure::CannotStart(anyhow::anyhow!(
                "the legacy command `{legacy}` failed ({}) without output",
                out.status
            )));
        }
        eprintln!("note: the legacy command exited with {}; comparing what it wrote", out.status);
    }
    let mut report = compare(&String::from_utf8_lossy(&ours), &String::from_utf8_lossy(&out.stdout), equate);
    report.rulehost = ours_time;
    report.legacy = legacy_time;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", report.render());
    }
    Ok(if report.agrees() { 0 } else { 1 })
}

/// Decides every line of `input` with the rule set in `rules` on a scratch
/// in-memory ledger holding `accounts`; the records and the time it took.
fn decide_file(
    rules: &Path,
    accounts: &Path,
    input: &Path,
    common: &CompareArgs,
) -> Result<(Vec<u8>, rulehost::diff::SideTime)> {
    let (sandbox, ruleset) = load(rules, &common.cache)?;
    let mut memory: Box<dyn rulehost::ledger::Ledger> = Box::new(rulehost::ledger::MemoryLedger::default());
    memory.retain_history(ruleset.history_window_seconds_max);
    import_file(&mut *memory, accounts).map_err(|e| anyhow::anyhow!("{}: {e}", accounts.display()))?;
    let pipeline = Pipeline::new(sandbox, Arc::new(Mutex::new(memory)));
    let options =
        RunOptions { threads: common.threads.unwrap_or(RunOptions::default().threads), ..RunOptions::default() };
    let cpu_before = rulehost::diff::cpu_seconds().0;
    let started = std::time::Instant::now();
    let reader = BufReader::new(File::open(input).with_context(|| format!("opening {}", input.display()))?);
    let mut out = Vec::new();
    run_stream(&pipeline, &Arc::new(ruleset), reader, &mut out, &options, None)
        .with_context(|| format!("deciding {} with {}", input.display(), rules.display()))?;
    let time = rulehost::diff::SideTime {
        wall_s: started.elapsed().as_secs_f64(),
        cpu_s: rulehost::diff::cpu_seconds().0 - cpu_before,
    };
    Ok((out, time))
}

/// `rulehost backtest`: the live and the candidate rule set over the same
/// stream, each on a scratch ledger; nothing real is written.
pub(crate) fn backtest(
    rules: &Path,
    candidate: &Path,
    accounts: &Path,
    input: &Path,
    labels: Option<&Path>,
    common: &CompareArgs,
) -> Result<u8, Failure> {
    let labels = match labels {
        Some(p) => {
            let text = start(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))?;
            start(rulehost::backtest::parse_labels(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display())))?
        }
        None => Default::default(),
    };
    let (live, _) = start(decide_file(rules, accounts, input, common))?;
    let (next, _) = start(decide_file(candidate, accounts, input, common))?;
    let values = |bytes: &[u8]| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(bytes).lines().map(|l| serde_json::from_str(l).unwrap_or_default()).collect()
    };
    let text = start(std::fs::read(input).with_context(|| format!("reading {}", input.display())))?;
    let report = rulehost::backtest::compare(&values(&live), &values(&next), &values(&text), &labels);
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", report.render());
    }
    Ok(0)
}
