//! The `rulehost` command line. Parsing is in two phases: clap turns raw
//! arguments into a command, then each command validates its inputs before
//! doing any work. Exit codes (documented in the README):
//!
//! - 0: every line was processed and none was an error record
//! - 1: processing finished, but some lines were error records
//! - 2: could not start (bad rule set, accounts, arguments, unreadable files)
//! - 3: an I/O error stopped processing part-way

use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use rulehost::generate::{GenConfig, generate};
use rulehost::input::parse_accounts;
use rulehost::ledger::{Hold, HoldState, Ledger, MemoryLedger, Resolution, SqliteLedger, StoreOptions, StoreReader};
use rulehost::pipeline::{Pipeline, SharedLedger};
use rulehost::reload::{DEBOUNCE_MS_DEFAULT, LiveRules, RuleSource, Watcher};
use rulehost::ruleset::RuleSet;
use rulehost::run::{Progress, RunOptions, run_stream};
use rulehost::sandbox::{Sandbox, SandboxConfig};

/// mimalloc: the default allocator serialises threads that free what another
/// thread allocated (the ledger writer frees what deciding allocated).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The ledger file when `--ledger` is not given.
const LEDGER_PATH_DEFAULT: &str = "rulehost-ledger.sqlite";
/// `--ledger` value for a memory-only ledger.
const MEMORY_LEDGER: &str = ":memory:";

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

#[derive(Subcommand)]
enum Command {
    /// Decide every transaction of a JSON Lines stream, in order.
    Run {
        /// The rule-set folder (manifest.toml, modules, lists/).
        #[arg(long)]
        rules: PathBuf,
        /// Accounts to import first (JSON Lines); accounts already in the
        /// ledger with the same facts are skipped.
        #[arg(long)]
        accounts: Option<PathBuf>,
        #[command(flatten)]
        ledger: LedgerArg,
        /// Input transactions (default: standard input).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Output decisions (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Print no summary on standard error.
        #[arg(long)]
        quiet: bool,
        /// Threads evaluating rules (default: one per CPU). The output is the
        /// same for any value.
        #[arg(long)]
        threads: Option<usize>,
        /// Watch the rule-set folder and swap in new versions while running
        /// (each decision names the version that made it).
        #[arg(long)]
        watch: bool,
        /// Folder of compiled modules, so unchanged modules are not compiled
        /// again (default: none).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Generate deterministic sample accounts and transactions.
    Gen {
        /// Folder to write accounts.jsonl and transactions.jsonl into.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the generator.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Regular accounts.
        #[arg(long, default_value_t = 2_000)]
        accounts: usize,
        /// Transaction lines.
        #[arg(long, default_value_t = 200_000)]
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
        action: RulesetAction,
    },
    /// Serve the host over HTTP/JSON (see host/openapi.json).
    Serve {
        /// The rule-set folder; watched and hot-reloaded.
        #[arg(long)]
        rules: PathBuf,
        #[command(flatten)]
        ledger: LedgerArg,
        /// Accounts to import first (JSON Lines).
        #[arg(long)]
        accounts: Option<PathBuf>,
        /// Address to listen on (port 0: any free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// File holding the bearer token of the admin endpoints (or set
        /// RULEHOST_ADMIN_TOKEN). Without one, admin endpoints answer 401.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Largest request body, in bytes.
        #[arg(long, default_value_t = rulehost::server::BODY_BYTES_MAX_DEFAULT)]
        body_bytes_max: usize,
        /// Most transactions in one batch request.
        #[arg(long, default_value_t = rulehost::server::BATCH_TRANSACTIONS_MAX_DEFAULT)]
        batch_max: usize,
        /// Longest a request may take, in milliseconds.
        #[arg(long, default_value_t = rulehost::server::REQUEST_TIMEOUT_MS_DEFAULT)]
        request_timeout_ms: u64,
        /// Most requests in flight; more are answered 503 at once.
        #[arg(long, default_value_t = rulehost::server::IN_FLIGHT_MAX_DEFAULT)]
        in_flight_max: usize,
        /// Threads evaluating rules (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
        /// Do not watch the rule-set folder (reload through the API only).
        #[arg(long)]
        no_watch: bool,
        /// Folder of compiled modules kept across restarts.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// The durable ledger: import accounts, balances, journal, reconcile.
    Ledger {
        #[command(subcommand)]
        action: LedgerAction,
    },
    /// Transactions held for review: list, approve (post), decline (void).
    Review {
        #[command(subcommand)]
        action: ReviewAction,
    },
    /// Load and validate a rule set; print its version and rules.
    Check {
        /// The rule-set folder.
        #[arg(long)]
        rules: PathBuf,
    },
}

/// Which ledger file.
#[derive(clap::Args, Clone)]
struct LedgerArg {
    /// The ledger file (SQLite; created when absent). `:memory:` keeps the
    /// ledger in memory only, for this process.
    #[arg(long, default_value = LEDGER_PATH_DEFAULT)]
    ledger: PathBuf,
}

#[derive(Subcommand)]
enum LedgerAction {
    /// Import accounts (JSON Lines): all or nothing; a bad line is named by
    /// line and field. Accounts already present with the same facts are skipped.
    Import {
        /// The accounts file.
        file: PathBuf,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Print an account's balances (JSON).
    Balance {
        /// The account id.
        account: String,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Print every account with its balances (JSON Lines).
    Accounts {
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Print the journal (JSON Lines), optionally only one account's entries.
    Journal {
        /// Only entries debiting or crediting this account.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Recompute every balance from the journal and check every invariant;
    /// exit 1 on any discrepancy.
    Reconcile {
        #[command(flatten)]
        ledger: LedgerArg,
    },
}

#[derive(Subcommand)]
enum ReviewAction {
    /// Print the pending holds (JSON Lines).
    List {
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Post a held transaction (funds are checked again). Idempotent.
    Approve {
        /// The transaction id.
        id: String,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Void a held transaction. Idempotent.
    Decline {
        /// The transaction id.
        id: String,
        #[command(flatten)]
        ledger: LedgerArg,
    },
}

/// Lets an `Arc<LiveRules>` serve as the run's rule source.
struct ArcRules(Arc<LiveRules>);

impl RuleSource for ArcRules {
    fn current(&self) -> Arc<RuleSet> {
        self.0.current()
    }
}

#[derive(Subcommand)]
enum RulesetAction {
    /// Print the status a watching host publishes: live version, history,
    /// last refused reload, counts.
    Status {
        /// The rule-set folder.
        #[arg(long)]
        rules: PathBuf,
    },
    /// Ask the watching host to serve the previous version again.
    Rollback {
        /// The rule-set folder.
        #[arg(long)]
        rules: PathBuf,
        /// How long to wait for the host to act, in seconds.
        #[arg(long, default_value_t = 10)]
        wait_seconds: u64,
    },
}

fn read_status(rules: &Path) -> Result<serde_json::Value> {
    let path = rules.join(rulehost::reload::STATE_DIR).join(rulehost::reload::STATUS_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no host watching {} has published a status ({})", rules.display(), path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
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

enum Failure {
    CannotStart(anyhow::Error),
    Io(anyhow::Error),
}

fn start<T>(r: Result<T>) -> Result<T, Failure> {
    r.map_err(Failure::CannotStart)
}

fn load(rules: &Path) -> Result<(Arc<Sandbox>, RuleSet)> {
    let sandbox = Arc::new(Sandbox::new(&SandboxConfig::default())?);
    let ruleset = RuleSet::load(&sandbox, rules).with_context(|| format!("loading rule set {}", rules.display()))?;
    Ok((sandbox, ruleset))
}

/// Opens the ledger at `path` (or a memory one for `:memory:`), keeping the
/// history `window_seconds_max` needs.
fn open_ledger(path: &Path, window_seconds_max: u64) -> Result<Box<dyn Ledger>> {
    if path == Path::new(MEMORY_LEDGER) {
        let mut ledger = MemoryLedger::default();
        ledger.retain_history(window_seconds_max);
        return Ok(Box::new(ledger));
    }
    let options = StoreOptions { history_window_seconds_max: window_seconds_max, ..StoreOptions::default() };
    Ok(Box::new(SqliteLedger::open(path, &options)?))
}

/// Imports an accounts file into `ledger` and waits until it is durable;
/// returns (new, already present).
fn import_accounts(ledger: &mut dyn Ledger, accounts: &Path) -> Result<(usize, usize)> {
    let text = std::fs::read_to_string(accounts).with_context(|| format!("reading {}", accounts.display()))?;
    let list = parse_accounts(&text).with_context(|| format!("{}", accounts.display()))?;
    let added = ledger.import_accounts(&list).with_context(|| format!("importing {}", accounts.display()))?;
    ledger.sync_point().wait().with_context(|| format!("importing {}", accounts.display()))?;
    Ok((added, list.len() - added))
}

fn open_store(ledger: &LedgerArg) -> Result<SqliteLedger> {
    Ok(SqliteLedger::open(&ledger.ledger, &StoreOptions::default())?)
}

fn read_store(ledger: &LedgerArg) -> Result<StoreReader> {
    Ok(StoreReader::open(&ledger.ledger)?)
}

fn print_json_lines<T: serde::Serialize>(items: impl IntoIterator<Item = T>) -> Result<(), Failure> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    for item in items {
        serde_json::to_writer(&mut out, &item).map_err(|e| Failure::Io(e.into()))?;
        writeln!(out).map_err(|e| Failure::Io(e.into()))?;
    }
    out.flush().map_err(|e| Failure::Io(e.into()))
}

#[derive(serde::Serialize)]
struct EntryJson<'a> {
    seq: u64,
    reference: &'a str,
    kind: &'static str,
    debit: &'a str,
    credit: &'a str,
    currency: &'a str,
    amount: rust_decimal::Decimal,
}

#[derive(serde::Serialize)]
struct HoldJson<'a> {
    id: &'a str,
    source: &'a str,
    destination: &'a str,
    amount: rust_decimal::Decimal,
    currency: &'a str,
    state: &'static str,
}

impl<'a> From<&'a Hold> for HoldJson<'a> {
    fn from(h: &'a Hold) -> Self {
        HoldJson {
            id: &h.id,
            source: &h.source,
            destination: &h.destination,
            amount: h.amount,
            currency: &h.currency,
            state: h.state.as_str(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    rules: PathBuf,
    ledger: LedgerArg,
    accounts: Option<PathBuf>,
    listen: String,
    threads: Option<usize>,
    watch: bool,
    cache_dir: Option<PathBuf>,
    config: rulehost::server::ServeConfig,
) -> Result<u8, Failure> {
    use rulehost::service::{HostBuilder, LedgerLocation};
    if config.admin_token.is_none() {
        tracing::warn!("no admin token configured: admin endpoints answer 401");
    }
    let location = if ledger.ledger == Path::new(MEMORY_LEDGER) {
        LedgerLocation::Memory
    } else {
        LedgerLocation::File(ledger.ledger.clone())
    };
    let mut builder = HostBuilder::new(&rules).ledger(location).watch(watch);
    if let Some(a) = accounts {
        builder = builder.accounts(a);
    }
    if let Some(t) = threads {
        builder = builder.eval_threads(t);
    }
    if let Some(c) = cache_dir {
        builder = builder.cache_dir(c);
    }
    let host = builder.build().await.map_err(|e| Failure::CannotStart(e.into()))?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))
        .map_err(Failure::CannotStart)?;
    let address = listener.local_addr().map_err(|e| Failure::CannotStart(e.into()))?;
    // The first line of standard output is the address (port 0 picks one).
    println!("listening on http://{address}");
    let _ = io::stdout().flush();
    tracing::info!(%address, ruleset = %host.version(), "serving");
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    rulehost::server::serve(host, config, listener, shutdown).await.context("serving").map_err(Failure::Io)?;
    Ok(0)
}

fn ledger_command(action: LedgerAction) -> Result<u8, Failure> {
    match action {
        LedgerAction::Import { file, ledger } => {
            let mut store = start(open_store(&ledger))?;
            let (added, present) = start(import_accounts(&mut store, &file))?;
            start(store.close().context("closing the ledger"))?;
            eprintln!("imported {added} new account(s) into {} ({present} already present)", ledger.ledger.display());
            Ok(0)
        }
        LedgerAction::Balance { account, ledger } => {
            let accounts = start(read_store(&ledger).and_then(|r| r.accounts().map_err(anyhow::Error::msg)))?;
            match accounts.into_iter().find(|a| a.id == account) {
                Some(a) => print_json_lines([a]).map(|_| 0),
                None => {
                    Err(Failure::CannotStart(anyhow::anyhow!("no account {account:?} in {}", ledger.ledger.display())))
                }
            }
        }
        LedgerAction::Accounts { ledger } => {
            let accounts = start(read_store(&ledger).and_then(|r| r.accounts().map_err(anyhow::Error::msg)))?;
            print_json_lines(accounts).map(|_| 0)
        }
        LedgerAction::Journal { account, ledger } => {
            let journal =
                start(read_store(&ledger).and_then(|r| r.journal(account.as_deref()).map_err(anyhow::Error::msg)))?;
            print_json_lines(journal.iter().map(|e| EntryJson {
                seq: e.seq,
                reference: &e.reference,
                kind: e.kind.as_str(),
                debit: &e.postings[0].account,
                credit: &e.postings[1].account,
                currency: &e.postings[1].currency,
                amount: e.postings[1].amount,
            }))
            .map(|_| 0)
        }
        LedgerAction::Reconcile { ledger } => {
            let report = start(read_store(&ledger).and_then(|r| r.reconcile().map_err(anyhow::Error::msg)))?;
            println!(
                "ledger {}: {} accounts, {} journal entries, {} holds, {} decisions",
                ledger.ledger.display(),
                report.accounts,
                report.entries,
                report.holds,
                report.decisions
            );
            for d in &report.discrepancies {
                println!("DISCREPANCY {d}");
            }
            if report.is_clean() {
                println!("reconciled: every balance equals the journal; every invariant holds");
                Ok(0)
            } else {
                println!("{} discrepancies", report.discrepancies.len());
                Ok(EXIT_SOME_ERRORS)
            }
        }
    }
}

fn review_command(action: ReviewAction) -> Result<u8, Failure> {
    let (id, approve, ledger) = match action {
        ReviewAction::List { ledger } => {
            let holds = start(read_store(&ledger).and_then(|r| r.holds().map_err(anyhow::Error::msg)))?;
            return print_json_lines(holds.iter().filter(|h| h.state == HoldState::Pending).map(HoldJson::from))
                .map(|_| 0);
        }
        ReviewAction::Approve { id, ledger } => (id, true, ledger),
        ReviewAction::Decline { id, ledger } => (id, false, ledger),
    };
    let mut store = start(open_store(&ledger))?;
    let result = store.resolve_hold(&id, approve);
    start(store.sync_point().wait().context("making the resolution durable"))?;
    let hold = store.hold(&id);
    start(store.close().context("closing the ledger"))?;
    match result {
        Ok(resolution) => {
            let hold = hold.expect("a resolved hold exists");
            let mut json = serde_json::to_value(HoldJson::from(&hold)).expect("hold serializes");
            json["result"] = (if resolution == Resolution::Done { "done" } else { "already-done" }).into();
            println!("{json}");
            Ok(0)
        }
        Err(e) => {
            eprintln!("rulehost: {e}");
            Ok(EXIT_SOME_ERRORS)
        }
    }
}

fn dispatch(command: Command) -> Result<u8, Failure> {
    match command {
        Command::Ledger { action } => ledger_command(action),
        Command::Serve {
            rules,
            ledger,
            accounts,
            listen,
            admin_token_file,
            body_bytes_max,
            batch_max,
            request_timeout_ms,
            in_flight_max,
            threads,
            no_watch,
            cache_dir,
        } => {
            let admin_token = match &admin_token_file {
                Some(p) => Some(start(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("reading the admin token {}", p.display()))
                        .map(|t| t.trim().to_owned()),
                )?),
                None => std::env::var("RULEHOST_ADMIN_TOKEN").ok(),
            };
            if admin_token.as_deref().is_some_and(str::is_empty) {
                return Err(Failure::CannotStart(anyhow::anyhow!("the admin token is empty")));
            }
            let config = rulehost::server::ServeConfig {
                admin_token,
                body_bytes_max,
                batch_transactions_max: batch_max,
                request_timeout: std::time::Duration::from_millis(request_timeout_ms),
                in_flight_max,
            };
            let runtime = start(
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("rulehost-http")
                    .build()
                    .context("starting the runtime"),
            )?;
            runtime.block_on(serve(rules, ledger, accounts, listen, threads, !no_watch, cache_dir, config))
        }
        Command::Review { action } => review_command(action),
        Command::Run { rules, accounts, ledger, input, output, quiet, threads, watch, cache_dir } => {
            let sandbox = Arc::new(start(Sandbox::new(&SandboxConfig { cache_dir, ..SandboxConfig::default() }))?);
            let ruleset = start(
                RuleSet::load(&sandbox, &rules).with_context(|| format!("loading rule set {}", rules.display())),
            )?;
            let mut opened = start(
                open_ledger(&ledger.ledger, ruleset.history_window_seconds_max)
                    .with_context(|| "opening the ledger".to_string()),
            )?;
            if let Some(accounts) = &accounts {
                start(import_accounts(&mut *opened, accounts))?;
            }
            let ledger: SharedLedger = Arc::new(Mutex::new(opened));
            let pipeline = Pipeline::new(sandbox.clone(), ledger.clone());
            let (source, _watcher): (Box<dyn RuleSource>, Option<Watcher>) = if watch {
                let retain = ledger.clone();
                let live = Arc::new(start(
                    LiveRules::load(
                        sandbox.clone(),
                        &rules,
                        Some(Box::new(move |r: &RuleSet| {
                            rulehost::pipeline::lock(&retain).retain_history(r.history_window_seconds_max)
                        })),
                    )
                    .map_err(anyhow::Error::msg),
                )?);
                let watcher = start(
                    Watcher::start(live.clone(), std::time::Duration::from_millis(DEBOUNCE_MS_DEFAULT))
                        .map_err(anyhow::Error::msg),
                )?;
                (Box::new(ArcRules(live)), Some(watcher))
            } else {
                (Box::new(Arc::new(ruleset)), None)
            };
            let reader: Box<dyn io::BufRead + Send> = match &input {
                Some(p) => {
                    Box::new(BufReader::new(start(File::open(p).with_context(|| format!("opening {}", p.display())))?))
                }
                None => Box::new(BufReader::with_capacity(1 << 16, io::stdin())),
            };
            let writer: Box<dyn Write + Send> = match &output {
                Some(p) => Box::new(BufWriter::new(start(
                    File::create(p).with_context(|| format!("creating {}", p.display())),
                )?)),
                None => Box::new(io::stdout()),
            };
            let progress: Option<Box<dyn Progress>> = if io::stderr().is_terminal() && !quiet {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {human_pos} lines  {per_sec}  {elapsed}")
                        .expect("valid template"),
                );
                bar.enable_steady_tick(std::time::Duration::from_millis(200));
                Some(Box::new(bar))
            } else {
                None
            };
            let mut options = RunOptions::default();
            if let Some(t) = threads {
                options.threads = t;
            }
            let summary = run_stream(&pipeline, &*source, reader, writer, &options, progress)
                .context("processing")
                .map_err(Failure::Io)?;
            if !quiet {
                let live = source.current();
                eprintln!("rule set {} ({} rules)", live.version, live.rules.len());
                eprint!("{summary}");
            }
            Ok(if summary.error_count() > 0 { EXIT_SOME_ERRORS } else { 0 })
        }
        Command::Gen { out, seed, accounts, transactions } => {
            start(std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display())))?;
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
        Command::Test { module, cases, ruleset, junit, update } => {
            let sandbox = Arc::new(start(Sandbox::new(&SandboxConfig::default()))?);
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
                    std::fs::write(&path, rulehost::testrun::junit(&report))
                        .with_context(|| format!("writing {}", path.display())),
                )?;
            }
            let (_, failed) = report.counts();
            if update && failed > 0 {
                let n = start(rulehost::testrun::update(&report).map_err(anyhow::Error::from))?;
                eprintln!("updated {n} expectation(s)");
                return Ok(0);
            }
            Ok(if failed > 0 { EXIT_SOME_ERRORS } else { 0 })
        }
        Command::NewRule { name, kind, dir, sdk } => {
            let kind = if kind == "risk" {
                rulehost::manifest::RuleKind::Risk
            } else {
                rulehost::manifest::RuleKind::Validation
            };
            let sdk = sdk.unwrap_or_else(rulehost::scaffold::default_sdk_path);
            let path = start(rulehost::scaffold::new_rule(&dir, &name, kind, &sdk).map_err(anyhow::Error::from))?;
            eprintln!(
                "created {} — next: cd {0} && cargo test && cargo build --release --target wasm32-wasip2",
                path.display()
            );
            Ok(0)
        }
        Command::Ruleset { action: RulesetAction::Status { rules } } => {
            let status = start(read_status(&rules))?;
            println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
            Ok(0)
        }
        Command::Ruleset { action: RulesetAction::Rollback { rules, wait_seconds } } => {
            let before = start(read_status(&rules))?;
            let dir = rules.join(rulehost::reload::STATE_DIR);
            start(
                std::fs::write(dir.join(rulehost::reload::ROLLBACK_FILE), b"rollback\n")
                    .with_context(|| format!("writing the request into {}", dir.display())),
            )?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_seconds);
            loop {
                std::thread::sleep(std::time::Duration::from_millis(50));
                if let Ok(now) = read_status(&rules)
                    && now["as_of"] != before["as_of"]
                    && !dir.join(rulehost::reload::ROLLBACK_FILE).exists()
                {
                    if now["version"] == before["version"] {
                        return Err(Failure::CannotStart(anyhow::anyhow!(
                            "the host kept version {} (nothing earlier to roll back to?)",
                            now["version"]
                        )));
                    }
                    println!("rolled back: {} -> {}", before["version"], now["version"]);
                    return Ok(0);
                }
                if std::time::Instant::now() > deadline {
                    let _ = std::fs::remove_file(dir.join(rulehost::reload::ROLLBACK_FILE));
                    return Err(Failure::CannotStart(anyhow::anyhow!(
                        "no watching host acted on the request within {wait_seconds} s"
                    )));
                }
            }
        }
        Command::Check { rules } => {
            let (_, ruleset) = start(load(&rules))?;
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
            }
            Ok(0)
        }
    }
}
