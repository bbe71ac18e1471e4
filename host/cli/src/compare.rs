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
use rulehost::run::{Progress, RunOptions, run_stream};

use crate::{CacheArg, Failure, load, spinner, start, threads_range};

/// A temporary input file, removed when dropped.
struct Spool(PathBuf);

impl Spool {
    fn new(what: &str) -> Spool {
        Spool(std::env::temp_dir().join(format!("rulehost-{what}-{}.jsonl", std::process::id())))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

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
    let mut spool = None;
    let input = match input {
        Some(p) => p.to_owned(),
        None => {
            let kept = Spool::new("diff");
            let path = kept.0.clone();
            let mut file = start(File::create(&path).with_context(|| format!("creating {}", path.display())))?;
            start(io::copy(&mut io::stdin().lock(), &mut file).context("reading standard input"))?;
            spool = Some(kept);
            path
        }
    };
    let _spool = spool;
    let (ours, ours_time) = start(decide_file(rules, accounts, &input, common, spinner("rulehost")))?;
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
    progress: Option<Box<dyn Progress>>,
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
    run_stream(&pipeline, &Arc::new(ruleset), reader, &mut out, &options, progress)
        .with_context(|| format!("deciding {} with {}", input.display(), rules.display()))?;
    let time = rulehost::diff::SideTime {
        wall_s: started.elapsed().as_secs_f64(),
        cpu_s: rulehost::diff::cpu_seconds().0 - cpu_before,
    };
    Ok((out, time))
}

/// What part of the stream `backtest` decides and compares.
#[derive(clap::Args)]
pub(crate) struct BacktestScope {
    /// Compare only transactions at or after this instant (RFC 3339); the
    /// earlier ones are still decided, for the history they make.
    #[arg(long, value_parser = instant)]
    from: Option<(i128, String)>,
    /// Compare only transactions before this instant (RFC 3339).
    #[arg(long, value_parser = instant)]
    to: Option<(i128, String)>,
    /// Decide only the source accounts whose stable bucket (the canary's
    /// hash) is below this percentage, 1..=100: a sample that keeps each
    /// customer's whole history.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    sample: Option<u8>,
    /// Also write the report as a self-contained HTML page (charts of the
    /// transition matrix and score distributions).
    #[arg(long)]
    html: Option<PathBuf>,
}

fn instant(text: &str) -> Result<(i128, String), String> {
    rulehost::input::parse_timestamp(text).map(|n| (n, text.to_owned()))
}

/// `rulehost backtest`: the live and the candidate rule set over the same
/// stream, each on a scratch ledger; nothing real is written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backtest(
    rules: &Path,
    candidate: &Path,
    accounts: &Path,
    input: &Path,
    labels: Option<&Path>,
    scope: &BacktestScope,
    common: &CompareArgs,
) -> Result<u8, Failure> {
    let labels = match labels {
        Some(p) => {
            let text = start(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))?;
            start(rulehost::backtest::parse_labels(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display())))?
        }
        None => Default::default(),
    };
    let mut text = start(std::fs::read(input).with_context(|| format!("reading {}", input.display())))?;
    // A sample: only the lines of sampled sources (a line without a
    // readable source is kept; it is an error record on both sides).
    if let Some(percent) = scope.sample.filter(|p| *p < 100) {
        let sampled: Vec<&[u8]> = text
            .split_inclusive(|b| *b == b'\n')
            .filter(|line| {
                let source = serde_json::from_slice::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("source").and_then(|s| s.as_str()).map(rulehost::rollout::bucket));
                source.is_none_or(|b| b < percent)
            })
            .collect();
        text = sampled.concat();
    }
    let threads = common.threads.unwrap_or(RunOptions::default().threads);
    let pool = start(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("rulehost-eval-{i}"))
            .build()
            .context("starting the evaluation threads"),
    )?;
    let (sandbox, live_rules) = start(load(rules, &common.cache))?;
    let candidate_rules = start(
        rulehost::ruleset::RuleSet::load(&sandbox, candidate)
            .with_context(|| format!("loading rule set {}", candidate.display())),
    )?;
    let window = live_rules.history_window_seconds_max.max(candidate_rules.history_window_seconds_max);
    let scratch = || -> Result<Pipeline> {
        let mut memory: Box<dyn rulehost::ledger::Ledger> = Box::new(rulehost::ledger::MemoryLedger::default());
        memory.retain_history(window);
        import_file(&mut *memory, accounts).map_err(|e| anyhow::anyhow!("{}: {e}", accounts.display()))?;
        Ok(Pipeline::new(sandbox.clone(), Arc::new(Mutex::new(memory))))
    };
    let (live_pipeline, candidate_pipeline) = (start(scratch())?, start(scratch())?);
    let options = rulehost::backtest::StreamOptions {
        pool: &pool,
        window: threads * rulehost::run::WINDOW_PER_THREAD_DEFAULT,
        labels: &labels,
    };
    let (mut report, outside) = rulehost::backtest::backtest_stream(
        rulehost::backtest::Side { pipeline: &live_pipeline, ruleset: &live_rules },
        rulehost::backtest::Side { pipeline: &candidate_pipeline, ruleset: &candidate_rules },
        &text,
        &options,
        |tx| {
            scope.from.as_ref().is_none_or(|f| tx.timestamp >= f.0)
                && scope.to.as_ref().is_none_or(|t| tx.timestamp < t.0)
        },
        spinner("backtest"),
    );
    if scope.from.is_some() || scope.to.is_some() || scope.sample.is_some() {
        report.scope = Some(rulehost::backtest::Scope {
            from: scope.from.as_ref().map(|f| f.1.clone()),
            to: scope.to.as_ref().map(|t| t.1.clone()),
            sample_percent: scope.sample,
            outside,
        });
    }
    if let Some(path) = &scope.html {
        let title = format!("Backtest: {} → {}", rules.display(), candidate.display());
        start(std::fs::write(path, report.html(&title)).with_context(|| format!("writing {}", path.display())))?;
    }
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", report.render());
    }
    Ok(0)
}
