//! What a decision and a manifest say about a canary rollout: the stable
//! bucket of a source account, which arm decided ([`RolloutTag`]), and the
//! guard's thresholds ([`Guard`], from a manifest's `[rollout]` table and
//! the operator's settings). The rollout's state and its sliding window live
//! in the engine.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Decisions in the guard's sliding window by default.
pub const GUARD_WINDOW_DECISIONS_DEFAULT: u32 = 1_000;
/// Largest guard window, in decisions.
pub const GUARD_WINDOW_DECISIONS_MAX: u32 = 1_000_000;
/// Candidate decisions the window needs before the guard judges, by default.
pub const GUARD_MIN_DECISIONS_DEFAULT: u32 = 100;

/// The automatic abort: thresholds over the candidate's last `window`
/// decisions. A rate is a percentage (a decimal, `0..=100`); the guard fires
/// when a rate is strictly above its threshold, once the window holds
/// `min_decisions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// Highest share of decisions with a failed rule call.
    pub failure_percent: Option<Decimal>,
    /// Highest share of decisions declined or sent to review.
    pub flagged_percent: Option<Decimal>,
    /// Decisions in the window.
    pub window: u32,
    /// Decisions the window needs before the guard judges.
    pub min_decisions: u32,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            failure_percent: None,
            flagged_percent: None,
            window: GUARD_WINDOW_DECISIONS_DEFAULT,
            min_decisions: GUARD_MIN_DECISIONS_DEFAULT,
        }
    }
}

/// Guard settings given by an operator (command line, builder); each one set
/// wins over the candidate manifest's `[rollout]` table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardOverride {
    /// See [`Guard::failure_percent`].
    pub failure_percent: Option<Decimal>,
    /// See [`Guard::flagged_percent`].
    pub flagged_percent: Option<Decimal>,
    /// See [`Guard::window`].
    pub window: Option<u32>,
    /// See [`Guard::min_decisions`].
    pub min_decisions: Option<u32>,
}

impl GuardOverride {
    /// These settings, each one unset taken from `under`.
    pub fn or(self, under: GuardOverride) -> GuardOverride {
        GuardOverride {
            failure_percent: self.failure_percent.or(under.failure_percent),
            flagged_percent: self.flagged_percent.or(under.flagged_percent),
            window: self.window.or(under.window),
            min_decisions: self.min_decisions.or(under.min_decisions),
        }
    }

    /// The guard in force over a candidate's manifest guard, checked; the
    /// error names the setting.
    pub fn checked_over(&self, manifest: Option<&Guard>) -> Result<Guard, String> {
        let guard = self.over(manifest);
        check_guard(&guard).map_err(|(key, message)| format!("canary guard: {key}: {message}"))?;
        Ok(guard)
    }

    /// The guard in force: these settings over the manifest's.
    pub fn over(&self, manifest: Option<&Guard>) -> Guard {
        let base = manifest.copied().unwrap_or_default();
        Guard {
            failure_percent: self.failure_percent.or(base.failure_percent),
            flagged_percent: self.flagged_percent.or(base.flagged_percent),
            window: self.window.unwrap_or(base.window),
            min_decisions: self.min_decisions.unwrap_or(base.min_decisions),
        }
    }
}

/// Checks a guard's numbers; the error names the setting.
pub fn check_guard(g: &Guard) -> Result<(), (&'static str, String)> {
    for (key, rate) in [("abort_failure_percent", g.failure_percent), ("abort_flagged_percent", g.flagged_percent)] {
        if let Some(r) = rate {
            percentage(r).map_err(|message| (key, message))?;
        }
    }
    if g.window == 0 || g.window > GUARD_WINDOW_DECISIONS_MAX {
        return Err(("window_decisions", format!("{} is not in 1..={GUARD_WINDOW_DECISIONS_MAX}", g.window)));
    }
    if g.min_decisions == 0 || g.min_decisions > g.window {
        return Err(("min_decisions", format!("{} is not in 1..=window_decisions ({})", g.min_decisions, g.window)));
    }
    Ok(())
}

/// Parses a percentage written as an integer or a decimal string (never a
/// float: it would be inexact).
pub fn parse_percent(text: &str) -> Result<Decimal, String> {
    percentage(Decimal::from_str(text.trim()).map_err(|e| format!("{text:?} is not a decimal: {e}"))?)
}

/// `value` when it is a percentage, `0..=100`.
fn percentage(value: Decimal) -> Result<Decimal, String> {
    if value.is_sign_negative() || value > Decimal::ONE_HUNDRED {
        return Err(format!("{value} is not a percentage in 0..=100"));
    }
    Ok(value)
}

/// Buckets a source account falls into; a share of `p` percent sends the
/// buckets `0..p` to the candidate.
pub const BUCKETS: u8 = 100;
/// The stable bucket, `0..BUCKETS`, of a source account: the first eight
/// bytes of SHA-256 of its id, big-endian, modulo [`BUCKETS`]. The same on
/// every machine and in every release.
pub fn bucket(source: &str) -> u8 {
    let digest = Sha256::digest(source.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder is below BUCKETS, so it fits a u8.
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u8
}

/// Which rule set decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    /// The live rule set.
    Live,
    /// The canary candidate.
    Candidate,
}

impl Arm {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Live => "live",
            Arm::Candidate => "candidate",
        }
    }
}

/// Why a decision was made by the version that made it: its source's bucket
/// against the share at the time (`candidate` exactly when `bucket < share`).
/// Recorded in the decision as `"rollout":{"arm":…,"bucket":…,"share":…}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutTag {
    /// Who decided.
    pub arm: Arm,
    /// The source account's bucket.
    pub bucket: u8,
    /// The candidate's share, in percent.
    pub share: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_are_checked() {
        let mut g = Guard::default();
        assert!(check_guard(&g).is_ok());
        g.failure_percent = Some(Decimal::from(101));
        assert_eq!(check_guard(&g).unwrap_err().0, "abort_failure_percent");
        g.failure_percent = None;
        g.min_decisions = g.window + 1;
        assert_eq!(check_guard(&g).unwrap_err().0, "min_decisions");
        assert!(parse_percent("12.5").is_ok());
        assert!(parse_percent("-1").is_err());
        assert!(parse_percent("x").is_err());
    }
}
