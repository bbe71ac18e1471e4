//! `rulehost ruleset status|rollback`: talking to a watching host through
//! the status and request files it keeps in the rule set's `.rulehost/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::{Failure, start};

#[derive(Subcommand)]
pub(crate) enum RulesetAction {
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
        /// How long to wait for the host to act, in seconds (1..=86400).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=WAIT_SECONDS_MAX))]
        wait_seconds: u64,
    },
}

/// Longest `ruleset rollback --wait-seconds`, in seconds (a day).
const WAIT_SECONDS_MAX: u64 = 86_400;

fn read_status(rules: &Path) -> Result<serde_json::Value> {
    let path = rules.join(rulehost::reload::STATE_DIR).join(rulehost::reload::STATUS_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no host watching {} has published a status ({})", rules.display(), path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

pub(crate) fn command(action: RulesetAction) -> Result<u8, Failure> {
    match action {
        RulesetAction::Status { rules } => {
            let status = start(read_status(&rules))?;
            println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
            Ok(0)
        }
        RulesetAction::Rollback { rules, wait_seconds } => {
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
    }
}
