//! The `rulehost` command line. Parsing is in two phases: clap turns raw
//! arguments into a command, then each command validates its inputs before
//! doing any work. Exit codes (documented in the README):
//!
//! - 0: every line was processed and none was an error record
//! - 1: processing finished, but some lines were error records
//! - 2: could not start (bad rule set, accounts, arguments, unreadable files)
//! - 3: an I/O error stopped processing part-way

mod compare;
mod ledger;
mod rollout;
mod ruleset;
mod run;
mod serve;

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use rulehost::ruleset::RuleSet;
use rulehost::run::Progress;
use rulehost::sandbox::{Sandbox, SandboxConfig};
use rulehost_cli::generate::{GenConfig, generate};

/// mimalloc: the default allocator serialises threads that free what another
/// thread allocated (the ledger writer frees what deciding allocated).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The ledger file when `--ledger` is not given.
const LEDGER_PATH_DEFAULT: &str = "rulehost-ledger.sqlite";

/// Exit code: processed, some lines were errors.
const EXIT_SOME_ERRORS: u8 = 1;
/// Exit code: could not start.
const EXIT_CANNOT_START: u8 = 2;
/// Exit code: I/O failure part-way.
const EXIT_IO: u8 = 3;

#[derive(Parser)]
#[command(
    name = "rulehost",
    version,
    about = "WebAssembly rules and risk-scoring host with a native double-entry ledger"
)]
struct Cli {
    /// Log format on standard error (`RUST_LOG` filters, default `warn`;
    /// `serve` defaults to `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event, with its spans.
    Json,
}

/// Where compiled rule modules are kept between runs.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct CacheArg {
    /// Folder of compiled modules, so that an unchanged module is never
    /// compiled twice, across runs and restarts (default:
    /// `$RULEHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/rulehost`, else
    /// `~/.cache/rulehost`). Entries are keyed by the module's content and
    /// the engine's version and settings.
    #[arg(long, conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,
    /// Compile every module afresh and keep nothing.
    #[arg(long)]
    no_cache: bool,
}

impl CacheArg {
    /// The folder to use, if any.
    pub(crate) fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        if let Some(dir) = &self.cache_dir {
            return Some(dir.clone());
        }
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        env("RULEHOST_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("rulehost")))
            .or_else(|| env("HOME").map(|h| h.join(".cache/rulehost")))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Decide every transaction of a JSON Lines stream, in order.
    Run(run::RunArgs),
    /// Generate deterministic sample accounts and transactions.
    Gen {
        /// Folder to write accounts.jsonl and transactions.jsonl into.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the generator.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Regular accounts, 1..=10 000 000.
        #[arg(long, default_value_t = 2_000,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=rulehost_cli::generate::ACCOUNTS_MAX as u64))]
        accounts: usize,
        /// Transaction lines, 0..=1 000 000 000.
        #[arg(long, default_value_t = 200_000,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=rulehost_cli::generate::TRANSACTIONS_MAX as u64))]
        transactions: usize,
    },
    /// Run rule cases in the production sandbox: one module against a cases
    /// file, or every cases file a rule set carries.
    Test {
        /// The module to test (with --cases).
        module: Option<PathBuf>,
        /// The cases file for MODULE.
        #[arg(long, requires = "module")]
        cases: Option<PathBuf>,
        /// Test a rule set: cases/<rule>.toml and cases/<scenario>/ folders.
        #[arg(long, conflicts_with_all = ["module", "cases"])]
        ruleset: Option<PathBuf>,
        /// Also write JUnit XML here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Rewrite failing expectations with the actual results.
        #[arg(long)]
        update: bool,
        #[command(flatten)]
        cache: CacheArg,
    },
    /// Scaffold a new rule crate that builds and passes its tests.
    NewRule {
        /// Rule name (lower-case letters, digits, `-`).
        name: String,
        /// Validation or risk.
        #[arg(long, value_parser = ["validation", "risk"])]
        kind: String,
        /// Folder to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The guest SDK to depend on (default: the one this binary was built with).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// The live rule set of a host watching a folder (`run --watch`).
    Ruleset {
        #[command(subcommand)]
        action: ruleset::RulesetAction,
    },
    /// Serve the host over HTTP/JSON (see host/openapi.json).
    Serve(serve::ServeArgs),
    /// The canary rollout of a serving host: status, share, promote, abort,
    /// rollback (through its admin API).
    Rollout(rollout::RolloutArgs),
    /// The shadow candidate of a serving host: its agreement report so far.
    Shadow(rollout::ShadowArgs),
    /// The durable ledger: import accounts, balances, journal, reconcile.
    Ledger {
        #[command(subcommand)]
        action: ledger::LedgerAction,
    },
    /// Transactions held for review: list, approve (post), decline (void).
    Review {
        #[command(subcommand)]
        action: ledger::ReviewAction,
    },
    /// Run the same input through rulehost (on a scratch ledger) and through
    /// another implementation, pair the records by line and report every
    /// disagreement by kind. Exit code 1 when anything disagrees.
    Diff {
        /// The rule-set folder.
        #[arg(long)]
        rules: PathBuf,
        /// Accounts both sides start from (JSON Lines).
        #[arg(long)]
        accounts: PathBuf,
        /// The other implementation, a shell command reading the
        /// transactions on standard input and writing one record per line,
        /// e.g. 'python3 ../shared/legacy/python_rules.py accounts.jsonl blocked.txt'.
        #[arg(long)]
        legacy: String,
        /// The transactions (default: standard input).
        #[arg(long)]
        input: Option<PathBuf>,
        /// A declared representational difference (repeatable).
        #[arg(long, value_parser = equivalence_parser())]
        equate: Vec<rulehost::diff::Equivalence>,
        #[command(flatten)]
        common: compare::CompareArgs,
    },
    /// Re-decide a stream with a candidate rule set beside the live one (each
    /// on a scratch ledger) and report what would change: outcome
    /// transitions with money volume, reasons gained and lost, per-rule
    /// scores, and caught/missed fraud given labels.
    Backtest {
        /// The live rule-set folder.
        #[arg(long)]
        rules: PathBuf,
        /// The candidate rule-set folder.
        #[arg(long)]
        candidate: PathBuf,
        /// Accounts the stream starts from (JSON Lines).
        #[arg(long)]
        accounts: PathBuf,
        /// The transactions, in their original order.
        #[arg(long)]
        input: PathBuf,
        /// Known outcomes: `{"id":…,"label":"fraud"|"legit"}` per line.
        #[arg(long)]
        labels: Option<PathBuf>,
        #[command(flatten)]
        scope: compare::BacktestScope,
        #[command(flatten)]
        common: compare::CompareArgs,
    },
    /// Load and validate a rule set; print its version and rules.
    Check {
        /// The rule-set folder.
        #[arg(long)]
        rules: PathBuf,
        #[command(flatten)]
        cache: CacheArg,
    },
}

/// A progress spinner on standard error (lines, rate, time), when it is a
/// terminal; `label` names the job.
pub(crate) fn spinner(label: &str) -> Option<Box<dyn Progress>> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix}{human_pos} lines  {per_sec}  {elapsed}")
            .expect("valid template"),
    );
    if !label.is_empty() {
        bar.set_prefix(format!("{label}: "));
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(Box::new(Spinner(bar)))
}

/// An indicatif spinner as a run's [`Progress`].
struct Spinner(indicatif::ProgressBar);

impl Progress for Spinner {
    fn advance(&mut self, lines_done: u64) {
        self.0.set_position(lines_done);
    }
}

/// `--equate`'s values: [`rulehost::diff::Equivalence`] by its spelling.
fn equivalence_parser() -> impl clap::builder::TypedValueParser<Value = rulehost::diff::Equivalence> {
    use clap::builder::TypedValueParser as _;
    use rulehost::diff::Equivalence;
    clap::builder::PossibleValuesParser::new(Equivalence::ALL.map(Equivalence::as_str))
        .map(|s| Equivalence::ALL.into_iter().find(|e| e.as_str() == s).unwrap_or(Equivalence::NullScoreIsZero))
}

/// The range of `--threads`: 1..=`rulehost::run::THREADS_MAX`.
pub(crate) fn threads_range() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=rulehost::run::THREADS_MAX as u64)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve { .. }) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(io::stderr().is_terminal())
        // At `debug`, each transaction and rule-call span reports its time when it closes.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(true).init(),
    }
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::CannotStart(e)) => {
            eprintln!("rulehost: {e:#}");
            ExitCode::from(EXIT_CANNOT_START)
        }
        Err(Failure::Io(e)) => {
            eprintln!("rulehost: {e:#}");
            ExitCode::from(EXIT_IO)
        }
    }
}

pub(crate) enum Failure {
    CannotStart(anyhow::Error),
    Io(anyhow::Error),
}

pub(crate) fn start<T>(r: Result<T>) -> Result<T, Failure> {
    r.map_err(Failure::CannotStart)
}

pub(crate) fn load(rules: &Path, cache: &CacheArg) -> Result<(Arc<Sandbox>, RuleSet)> {
    let sandbox = Arc::new(Sandbox::new(&sandbox_config(cache.dir()))?);
    let ruleset = RuleSet::load(&sandbox, rules).with_context(|| format!("loading rule set {}", rules.display()))?;
    Ok((sandbox, ruleset))
}

/// The sandbox options of the commands: the compiled-module cache;
/// `RULEHOST_PERF_MAP=1` to let `perf` name guest functions;
/// `RULEHOST_POOLING=0` for on-demand instance allocation, whose smaller
/// address-space reservations let `valgrind` run the host.
fn sandbox_config(cache_dir: Option<PathBuf>) -> SandboxConfig {
    let env_is = |name: &str, value: &str| std::env::var_os(name).is_some_and(|v| v == value);
    SandboxConfig {
        cache_dir,
        perf_map: env_is("RULEHOST_PERF_MAP", "1"),
        pooling: !env_is("RULEHOST_POOLING", "0"),
        ..SandboxConfig::default()
    }
}

fn dispatch(command: Command) -> Result<u8, Failure> {
    match command {
        Command::Ledger { action } => ledger::ledger_command(action),
        Command::Serve(args) => serve::run(args),
        Command::Rollout(args) => rollout::command(args),
        Command::Shadow(args) => rollout::shadow(args),
        Command::Review { action } => ledger::review_command(action),
        Command::Run(args) => run::command(args),
        Command::Gen { out, seed, accounts, transactions } => gen_command(&out, seed, accounts, transactions),
        Command::Test { module, cases, ruleset, junit, update, cache } => {
            test_command(module, cases, ruleset, junit.as_deref(), update, &cache)
        }
        Command::NewRule { name, kind, dir, sdk } => new_rule_command(&name, &kind, &dir, sdk),
        Command::Ruleset { action } => ruleset::command(action),
        Command::Diff { rules, accounts, legacy, input, equate, common } => {
            compare::diff(&rules, &accounts, &legacy, input.as_deref(), &equate, &common)
        }
        Command::Backtest { rules, candidate, accounts, input, labels, scope, common } => {
            compare::backtest(&rules, &candidate, &accounts, &input, labels.as_deref(), &scope, &common)
        }
        Command::Check { rules, cache } => check_command(&rules, &cache),
    }
}

/// `rulehost gen`: the seeded sample files in `out`.
fn gen_command(out: &Path, seed: u64, accounts: usize, transactions: usize) -> Result<u8, Failure> {
    start(std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display())))?;
    let config = GenConfig { seed, accounts, transactions, ..GenConfig::default() };
    let create = |name: &str| -> Result<BufWriter<File>> {
        let path = out.join(name);
        Ok(BufWriter::new(File::create(&path).with_context(|| format!("creating {}", path.display()))?))
    };
    let mut a = start(create("accounts.jsonl"))?;
    let mut t = start(create("transactions.jsonl"))?;
    generate(&config, &mut a, &mut t)
        .and_then(|_| a.flush())
        .and_then(|_| t.flush())
        .context("writing")
        .map_err(Failure::Io)?;
    eprintln!(
        "wrote {} and {} ({transactions} lines, seed {seed})",
        out.join("accounts.jsonl").display(),
        out.join("transactions.jsonl").display()
    );
    Ok(0)
}

/// `rulehost test`: a module's cases, or a rule set's cases and scenarios.
fn test_command(
    module: Option<PathBuf>,
    cases: Option<PathBuf>,
    ruleset: Option<PathBuf>,
    junit: Option<&Path>,
    update: bool,
    cache: &CacheArg,
) -> Result<u8, Failure> {
    let sandbox = Arc::new(start(Sandbox::new(&sandbox_config(cache.dir())).map_err(anyhow::Error::from))?);
    let report = match (module, cases, ruleset) {
        (Some(m), Some(c), None) => rulehost::testrun::test_module(&sandbox, &m, &c),
        (None, None, Some(dir)) => rulehost::testrun::test_ruleset(&sandbox, &dir),
        _ => {
            return Err(Failure::CannotStart(anyhow::anyhow!(
                "give MODULE.wasm --cases FILE, or --ruleset DIR (see rulehost test --help)"
            )));
        }
    };
    let report = start(report.map_err(anyhow::Error::from))?;
    print!("{}", rulehost::testrun::render(&report));
    if let Some(path) = junit {
        start(
            std::fs::write(path, rulehost_cli::testreport::junit(&report))
                .with_context(|| format!("writing {}", path.display())),
        )?;
    }
    let (_, failed) = report.counts();
    if update && failed > 0 {
        let n = start(rulehost_cli::testreport::update(&report).map_err(anyhow::Error::from))?;
        eprintln!("updated {n} expectation(s)");
        return Ok(0);
    }
    Ok(if failed > 0 { EXIT_SOME_ERRORS } else { 0 })
}

/// `rulehost new-rule`: a rule crate to start from.
fn new_rule_command(name: &str, kind: &str, dir: &Path, sdk: Option<PathBuf>) -> Result<u8, Failure> {
    let kind =
        if kind == "risk" { rulehost::manifest::RuleKind::Risk } else { rulehost::manifest::RuleKind::Validation };
    let sdk = sdk.unwrap_or_else(rulehost_cli::scaffold::default_sdk_path);
    let path = start(rulehost_cli::scaffold::new_rule(dir, name, kind, &sdk).map_err(anyhow::Error::from))?;
    eprintln!(
        "created {} — next: cd {0} && cargo test && cargo build --release --target wasm32-wasip2",
        path.display()
    );
    Ok(0)
}

/// `rulehost check`: a rule set's rules, budgets and isolation.
fn check_command(rules: &Path, cache: &CacheArg) -> Result<u8, Failure> {
    let (_, ruleset) = start(load(rules, cache))?;
    println!("rule set {} (sha256 {})", ruleset.version, ruleset.sha256);
    println!("review_at {}  decline_at {}", ruleset.review_at, ruleset.decline_at);
    for r in &ruleset.rules {
        println!(
            "  {:<20} {:<10} weight {:<4} fuel_max {:<9} memory_bytes_max {:<9} deadline_ms {:<4} on_error {:<6} {} ({} bytes)",
            r.name,
            r.kind.as_str(),
            r.weight,
            r.budget.fuel_max,
            r.budget.memory_bytes_max,
            r.budget.deadline_ms,
            r.on_error.as_str(),
            r.version,
            r.module_bytes
        );
        println!("      imports: {}", r.compiled.imports().join(", "));
        match r.compiled.isolation() {
            rulehost::sandbox::Isolation::Reset => {
                println!("      contract {}; instance reused, reset after every call", r.compiled.contract())
            }
            rulehost::sandbox::Isolation::Fresh(why) => {
                println!("      contract {}; fresh instance per call: {why}", r.compiled.contract())
            }
        }
    }
    Ok(0)
}
