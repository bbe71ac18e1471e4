//! `rulehost run`: its options, and the streaming job with its optional
//! watcher, shadow candidate and canary.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rulehost::ledger::{LedgerLocation, StoreOptions};
use rulehost::pipeline::Pipeline;
use rulehost::reload::{DEBOUNCE_MS_DEFAULT, LiveRules, RuleSource, Watcher};
use rulehost::ruleset::RuleSet;
use rulehost::run::{RunOptions, run_stream};
use rulehost::service::{BuildError, Setup};

use crate::{CacheArg, EXIT_SOME_ERRORS, Failure, sandbox_config, spinner, start, threads_range};

/// The options of `rulehost run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The rule-set folder (manifest.toml, modules, lists/).
    #[arg(long)]
    rules: PathBuf,
    /// Accounts to import first (JSON Lines); accounts already in the
    /// ledger with the same facts are skipped.
    #[arg(long)]
    accounts: Option<PathBuf>,
    #[command(flatten)]
    ledger: crate::ledger::LedgerArg,
    #[command(flatten)]
    store: crate::ledger::StoreArgs,
    /// Input transactions (default: standard input).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output decisions (default: standard output).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Print no summary on standard error.
    #[arg(long)]
    quiet: bool,
    /// Threads evaluating rules, 1..=256 (default: one per CPU). The
    /// output is the same for any value.
    #[arg(long, value_parser = threads_range())]
    threads: Option<usize>,
    /// Watch the rule-set folder and swap in new versions while running
    /// (each decision names the version that made it).
    #[arg(long)]
    watch: bool,
    /// Shadow mode: evaluate this candidate rule set on every transaction
    /// beside the live one; only the live decision acts. Prints the
    /// agreement report (as `backtest`) on standard error at the end.
    #[arg(long)]
    shadow: Option<PathBuf>,
    /// Write the candidate's decisions beside the live ones here, one
    /// `{"line","live","candidate"}` object per decided line.
    #[arg(long, requires = "shadow")]
    shadow_log: Option<PathBuf>,
    #[command(flatten)]
    canary: crate::rollout::CanaryArgs,
    #[command(flatten)]
    cache: CacheArg,
}

/// Lets an `Arc<LiveRules>` serve as the run's rule source.
struct ArcRules(Arc<LiveRules>);

impl RuleSource for ArcRules {
    fn current(&self) -> Arc<RuleSet> {
        self.0.current()
    }
}

/// How often `run` logs what the ledger keeps in memory, with
/// `RUST_LOG=rulehost::usage=debug` (or any filter that enables it).
pub(crate) const USAGE_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The thread that logs the ledger's memory every [`USAGE_LOG_INTERVAL`]
/// while a run goes on (only when that log is enabled); stops when dropped.
struct UsageLog {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UsageLog {
    fn start(ledger: &rulehost::pipeline::SharedLedger) -> UsageLog {
        let idle = UsageLog { stop: None, thread: None };
        if !tracing::enabled!(target: "rulehost::usage", tracing::Level::DEBUG) {
            return idle;
        }
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let ledger = ledger.clone();
        let started = std::time::Instant::now();
        let thread = std::thread::Builder::new().name("rulehost-usage".into()).spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(USAGE_LOG_INTERVAL) {
                let usage = rulehost::pipeline::lock(&ledger).usage();
                tracing::debug!(
                    target: "rulehost::usage",
                    seconds = started.elapsed().as_secs(),
                    accounts = usage.accounts,
                    pending_holds = usage.pending_holds,
                    history_entries = usage.history_entries,
                    decisions_cached = usage.decisions,
                    ledger_bytes = usage.bytes,
                    sqlite_heap_bytes = rulehost::ledger::sqlite_heap_bytes(),
                    "ledger memory"
                );
            }
        });
        match thread {
            Ok(thread) => UsageLog { stop: Some(stop), thread: Some(thread) },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the usage log");
                idle
            }
        }
    }
}

impl Drop for UsageLog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `rulehost run`.
pub(crate) fn command(args: RunArgs) -> Result<u8, Failure> {
    let RunArgs {
        rules,
        accounts,
        ledger,
        store,
        input,
        output,
        quiet,
        threads,
        watch,
        shadow,
        shadow_log,
        canary,
        cache,
    } = args;
    let location = LedgerLocation::from_arg(&ledger.ledger);
    let setup = Setup::open(
        &rules,
        &sandbox_config(cache.dir()),
        &location,
        start(store.apply(StoreOptions::default(), false))?,
        accounts.as_deref(),
    );
    let Setup { sandbox, ruleset, ledger } = start(setup.map_err(|e| match e {
        BuildError::Ledger(e) => anyhow::Error::new(e).context("opening the ledger"),
        e => e.into(),
    }))?;
    let mut pipeline = Pipeline::new(sandbox.clone(), ledger.clone());
    if let Some(dir) = &shadow {
        let candidate =
            start(RuleSet::load(&sandbox, dir).with_context(|| format!("loading shadow rule set {}", dir.display())))?;
        rulehost::pipeline::lock(&ledger).retain_history(candidate.history_window_seconds_max);
        let keep = if shadow_log.is_some() { rulehost::pipeline::SHADOW_PAIRS_KEPT_MAX } else { 0 };
        pipeline = pipeline.with_shadow_pairs(Arc::new(Arc::new(candidate)), keep);
    }
    if let Some(dir) = &canary.canary {
        let candidate =
            start(RuleSet::load(&sandbox, dir).with_context(|| format!("loading canary rule set {}", dir.display())))?;
        start(canary.guard().checked_over(candidate.guard.as_ref()).map_err(anyhow::Error::msg))?;
        rulehost::pipeline::lock(&ledger).retain_history(candidate.history_window_seconds_max);
        let candidate: Arc<dyn RuleSource> = Arc::new(Arc::new(candidate));
        let rollout = rulehost::rollout::Rollout::new(candidate, canary.canary_share, canary.guard());
        pipeline = pipeline.with_rollout(Arc::new(rollout));
    }
    let (source, _watcher): (Box<dyn RuleSource>, Option<Watcher>) = if watch {
        let retain = ledger.clone();
        let live = Arc::new(start(
            LiveRules::with_loaded(
                sandbox.clone(),
                &rules,
                ruleset,
                Some(Box::new(move |r: &RuleSet| {
                    rulehost::pipeline::lock(&retain).retain_history(r.history_window_seconds_max)
                })),
            )
            .map_err(anyhow::Error::new),
        )?);
        let watcher = start(
            Watcher::start(live.clone(), std::time::Duration::from_millis(DEBOUNCE_MS_DEFAULT))
                .map_err(anyhow::Error::new),
        )?;
        (Box::new(ArcRules(live)), Some(watcher))
    } else {
        (Box::new(Arc::new(ruleset)), None)
    };
    let reader: Box<dyn io::BufRead + Send> = match &input {
        Some(p) => {
            let file = start(File::open(p).with_context(|| format!("opening --input {}", p.display())))?;
            if file.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(Failure::CannotStart(anyhow::anyhow!(
                    "--input {} is a directory; give a file of JSON lines (or - for standard input)",
                    p.display()
                )));
            }
            Box::new(BufReader::new(file))
        }
        None => Box::new(BufReader::with_capacity(1 << 16, io::stdin())),
    };
    let writer: Box<dyn Write + Send> = match &output {
        Some(p) => {
            Box::new(BufWriter::new(start(File::create(p).with_context(|| format!("creating {}", p.display())))?))
        }
        None => Box::new(io::stdout()),
    };
    let progress = if quiet { None } else { spinner("") };
    let mut options = RunOptions::default();
    if let Some(t) = threads {
        options.threads = t;
    }
    let usage_log = UsageLog::start(&ledger);
    let summary = run_stream(&pipeline, &*source, reader, writer, &options, progress)
        .context("processing")
        .map_err(Failure::Io)?;
    drop(usage_log);
    if !quiet {
        let live = source.current();
        eprintln!("rule set {} ({} rules)", live.version, live.rules.len());
        eprint!("{summary}");
    }
    if let Some(rollout) = pipeline.rollout()
        && !quiet
    {
        let (live, candidate) = rollout.decided_counts();
        eprintln!(
            "canary: {candidate} decided by the candidate, {live} by the live rule set; now {} at {}%",
            rollout.phase().as_str(),
            rollout.share()
        );
        for t in rollout.saved_state().transitions {
            eprintln!("  {} {} {}% -> {}%: {}", t.at, t.event.as_str(), t.from_share, t.to_share, t.why);
        }
    }
    if shadow.is_some() {
        if let Some(path) = &shadow_log {
            let mut log = start(File::create(path).with_context(|| format!("creating {}", path.display())))
                .map(BufWriter::new)?;
            for p in pipeline.shadow_decisions() {
                writeln!(
                    log,
                    "{{\"line\":{},\"live\":{},\"candidate\":{}}}",
                    p.line,
                    p.live.json(),
                    p.candidate.json()
                )
                .and_then(|()| log.flush())
                .with_context(|| format!("writing {}", path.display()))
                .map_err(Failure::Io)?;
            }
        }
        if !quiet {
            eprintln!("shadow (live → candidate):");
            eprint!("{}", pipeline.shadow_report().unwrap_or_default().render());
        }
    }
    Ok(if summary.error_count() > 0 { EXIT_SOME_ERRORS } else { 0 })
}
