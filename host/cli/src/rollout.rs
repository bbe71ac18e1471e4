//! Canary rollout and shadow on the command line: the `--canary` options of
//! `run` and `serve`; `rulehost rollout …` and `rulehost shadow report`,
//! clients of a serving host's API.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Subcommand;
use rulehost::rollout::GuardOverride;
use rust_decimal::Decimal;

use crate::{Failure, start};

/// The canary options of `run` and `serve`.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct CanaryArgs {
    /// Canary rollout: this candidate rule set decides for real for
    /// --canary-share percent of source accounts (a stable hash of the
    /// source; each decision records which arm decided and why).
    #[arg(long)]
    pub canary: Option<PathBuf>,
    /// The candidate's share, in percent (0..=100).
    #[arg(long, default_value_t = 0, requires = "canary",
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub canary_share: u8,
    /// Abort the canary when more than this percentage of the candidate's
    /// decisions in the guard window had a failed rule call (over the
    /// candidate manifest's `[rollout] abort_failure_percent`).
    #[arg(long, value_parser = percent)]
    pub abort_failure_percent: Option<Decimal>,
    /// Abort the canary when more than this percentage of the candidate's
    /// decisions in the window were declined or sent to review.
    #[arg(long, value_parser = percent)]
    pub abort_flagged_percent: Option<Decimal>,
    /// The guard's sliding window, in candidate decisions (1..=1 000 000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(rulehost::rollout::GUARD_WINDOW_DECISIONS_MAX)))]
    pub guard_window: Option<u32>,
    /// Candidate decisions the window needs before the guard judges.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(rulehost::rollout::GUARD_WINDOW_DECISIONS_MAX)))]
    pub guard_min_decisions: Option<u32>,
}

fn percent(text: &str) -> Result<Decimal, String> {
    rulehost::rollout::parse_percent(text)
}

impl CanaryArgs {
    /// The guard settings given.
    pub(crate) fn guard(&self) -> GuardOverride {
        GuardOverride {
            failure_percent: self.abort_failure_percent,
            flagged_percent: self.abort_flagged_percent,
            window: self.guard_window,
            min_decisions: self.guard_min_decisions,
        }
    }
}

/// `rulehost rollout …`.
#[derive(clap::Args)]
pub(crate) struct RolloutArgs {
    #[command(subcommand)]
    action: RolloutAction,
    /// The serving host.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// File holding the admin bearer token (or set RULEHOST_ADMIN_TOKEN).
    #[arg(long, global = true)]
    admin_token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum RolloutAction {
    /// Print the rollout: phase, share, versions, guard, counts, transitions.
    Status,
    /// Set the candidate's share of traffic, in percent (0..=100).
    Share {
        /// 5, 20, 50, 100, …
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
    },
    /// The candidate becomes live; the live one is kept for rollback.
    Promote,
    /// Back to 0% (the candidate kept).
    Abort,
    /// Undo the last promotion.
    Rollback,
}

/// Runs a `rulehost rollout` request; prints the answer as JSON.
pub(crate) fn command(args: RolloutArgs) -> Result<u8, Failure> {
    let token = crate::serve::admin_token(args.admin_token_file.as_deref())?;
    let base = args.server.trim_end_matches('/').to_owned();
    let (status, body) = request(&base, token.as_deref(), |client| match args.action {
        RolloutAction::Status => client.get(format!("{base}/v1/rollout")),
        RolloutAction::Share { percent } => {
            client.put(format!("{base}/v1/rollout/share")).json(&serde_json::json!({ "percent": percent }))
        }
        RolloutAction::Promote => client.post(format!("{base}/v1/rollout/promote")),
        RolloutAction::Abort => client.post(format!("{base}/v1/rollout/abort")),
        RolloutAction::Rollback => client.post(format!("{base}/v1/rollout/rollback")),
    })?;
    let pretty = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(body);
    if status.is_success() {
        println!("{pretty}");
        Ok(0)
    } else {
        Err(Failure::CannotStart(anyhow!("{base} answered {status}: {pretty}")))
    }
}

/// Sends the request `build` makes (with the bearer `token`) to the host at
/// `base`; its status and body.
fn request(
    base: &str,
    token: Option<&str>,
    build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, String), Failure> {
    let runtime =
        start(tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime"))?;
    let client = start(
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(REQUEST_TIMEOUT_SECONDS))
            .build()
            .context("making an HTTP client"),
    )?;
    let mut request = build(&client);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    runtime
        .block_on(async {
            let response = request.send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        })
        .with_context(|| format!("talking to {base}"))
        .map_err(Failure::CannotStart)
}

/// How long `rulehost rollout` waits for the host, in seconds.
const REQUEST_TIMEOUT_SECONDS: u64 = 30;

/// `rulehost shadow …`.
#[derive(clap::Args)]
pub(crate) struct ShadowArgs {
    #[command(subcommand)]
    action: ShadowAction,
}

#[derive(Subcommand)]
enum ShadowAction {
    /// The agreement report of the serving host's shadow candidate so far
    /// (the backtest report, for the traffic seen).
    Report {
        /// The serving host.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        /// Also write it as a self-contained HTML page.
        #[arg(long)]
        html: Option<PathBuf>,
    },
}

/// Runs a `rulehost shadow` request.
pub(crate) fn shadow(args: ShadowArgs) -> Result<u8, Failure> {
    let ShadowAction::Report { server, json, html } = args.action;
    let base = server.trim_end_matches('/').to_owned();
    let (status, body) = request(&base, None, |client| client.get(format!("{base}/v1/shadow")))?;
    if !status.is_success() {
        return Err(Failure::CannotStart(anyhow!("{base} answered {status}: {body}")));
    }
    let report: rulehost::backtest::Report =
        start(serde_json::from_str(&body).with_context(|| format!("{base}/v1/shadow did not answer a shadow report")))?;
    if let Some(path) = &html {
        let title = format!("Shadow: live → candidate at {base}");
        start(std::fs::write(path, report.html(&title)).with_context(|| format!("writing {}", path.display())))?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", report.render());
    }
    Ok(0)
}
