//! `rulehost serve`: its options and the runtime that serves.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context;
use rulehost::ledger::LedgerLocation;
use rulehost::service::HostBuilder;

use crate::ledger::LedgerArg;
use crate::{Failure, start};

/// The options of `rulehost serve`.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// The rule-set folder; watched and hot-reloaded.
    #[arg(long)]
    rules: PathBuf,
    #[command(flatten)]
    ledger: LedgerArg,
    #[command(flatten)]
    store: crate::ledger::StoreArgs,
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
    /// Largest request body, in bytes (1 KiB..=256 MiB).
    #[arg(long, default_value_t = rulehost::server::BODY_BYTES_MAX_DEFAULT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=256 << 20))]
    body_bytes_max: usize,
    /// Most transactions in one batch request (1..=1 000 000).
    #[arg(long, default_value_t = rulehost::server::BATCH_TRANSACTIONS_MAX_DEFAULT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    batch_max: usize,
    /// Longest a request may take, in milliseconds (1..=600 000).
    #[arg(long, default_value_t = rulehost::server::REQUEST_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    request_timeout_ms: u64,
    /// Most requests in flight; more are answered 503 at once (1..=65 536).
    #[arg(long, default_value_t = rulehost::server::IN_FLIGHT_MAX_DEFAULT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    in_flight_max: usize,
    /// Longest a client may take to send a request's headers, in
    /// milliseconds (100..=600 000); then the connection is closed.
    #[arg(long, default_value_t = rulehost::server::HEADER_READ_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    header_read_timeout_ms: u64,
    /// Threads evaluating rules, 1..=256 (default: one per CPU).
    #[arg(long, value_parser = crate::threads_range())]
    threads: Option<usize>,
    /// Shadow mode: evaluate this candidate rule set beside every live
    /// decision; its agreement report is `GET /v1/shadow`.
    #[arg(long)]
    shadow: Option<PathBuf>,
    #[command(flatten)]
    canary: crate::rollout::CanaryArgs,
    /// Where the rollout state is kept, so that a restart resumes it
    /// (default: beside a durable ledger, `<ledger>.rollout.json`).
    #[arg(long)]
    rollout_state: Option<PathBuf>,
    /// Do not watch the rule-set folder (reload through the API only).
    #[arg(long)]
    no_watch: bool,
    #[command(flatten)]
    cache: crate::CacheArg,
}

/// The admin bearer token: the file's content (trimmed), else
/// `RULEHOST_ADMIN_TOKEN`; an empty one is refused.
pub(crate) fn admin_token(file: Option<&std::path::Path>) -> Result<Option<String>, Failure> {
    let token = match file {
        Some(p) => Some(start(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the admin token {}", p.display()))
                .map(|t| t.trim().to_owned()),
        )?),
        None => std::env::var("RULEHOST_ADMIN_TOKEN").ok(),
    };
    if token.as_deref().is_some_and(str::is_empty) {
        return Err(Failure::CannotStart(anyhow::anyhow!("the admin token is empty")));
    }
    Ok(token)
}

/// Runs the server until SIGTERM or Ctrl-C.
pub(crate) fn run(args: ServeArgs) -> Result<u8, Failure> {
    let ServeArgs {
        rules,
        ledger,
        store,
        accounts,
        listen,
        admin_token_file,
        body_bytes_max,
        batch_max,
        request_timeout_ms,
        in_flight_max,
        header_read_timeout_ms,
        threads,
        shadow,
        canary,
        rollout_state,
        no_watch,
        cache,
    } = args;
    let cache_dir = cache.dir();
    let admin_token = admin_token(admin_token_file.as_deref())?;
    let config = rulehost::server::ServeConfig {
        admin_token,
        body_bytes_max,
        batch_transactions_max: batch_max,
        request_timeout: std::time::Duration::from_millis(request_timeout_ms),
        in_flight_max,
        header_read_timeout: std::time::Duration::from_millis(header_read_timeout_ms),
    };
    let runtime = start(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("rulehost-http")
            .build()
            .context("starting the runtime"),
    )?;
    let mut builder = HostBuilder::new(&rules)
        .ledger(LedgerLocation::from_arg(&ledger.ledger))
        .store_options(start(store.apply(rulehost::ledger::StoreOptions::default(), true))?)
        .watch(!no_watch);
    if let Some(a) = accounts {
        builder = builder.accounts(a);
    }
    if let Some(t) = threads {
        builder = builder.eval_threads(t);
    }
    if let Some(c) = cache_dir {
        builder = builder.cache_dir(c);
    }
    if let Some(s) = shadow {
        builder = builder.shadow(s);
    }
    if let Some(dir) = &canary.canary {
        builder = builder.canary(dir, canary.canary_share);
    }
    builder = builder.canary_guard(canary.guard());
    if let Some(file) = rollout_state {
        builder = builder.rollout_state(file);
    }
    runtime.block_on(serve(builder, listen, config))
}

async fn serve(builder: HostBuilder, listen: String, config: rulehost::server::ServeConfig) -> Result<u8, Failure> {
    if config.admin_token.is_none() {
        tracing::warn!("no admin token configured: admin endpoints answer 401");
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
