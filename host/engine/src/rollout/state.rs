//! What a rollout keeps across restarts: its phase, share, folders, guard
//! settings and transitions, as one JSON file written atomically.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{BUCKETS, GuardOverride, RolloutError};

/// Transitions kept in the state (older ones are only counted).
pub const TRANSITIONS_KEPT_MAX: usize = 256;
/// Format of the state file.
pub const STATE_FORMAT: u32 = 1;
/// Largest state file read at start, in bytes.
pub const STATE_BYTES_MAX: u64 = 4 << 20;

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// A candidate takes its share.
    Canary,
    /// Aborted (by an operator or the guard): the candidate is kept at 0%.
    Aborted,
    /// The candidate became live; the previous live version is kept for rollback.
    Promoted,
    /// A promotion was rolled back: the previous live version serves again,
    /// the demoted one is the candidate at 0%.
    RolledBack,
}

impl Phase {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Canary => "canary",
            Phase::Aborted => "aborted",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled-back",
        }
    }
}

/// What changed the rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// A candidate was configured.
    Start,
    /// An operator set the share.
    Share,
    /// The candidate became live.
    Promote,
    /// An operator aborted.
    Abort,
    /// The guard aborted.
    AutoAbort,
    /// A promotion was rolled back.
    Rollback,
}

impl Event {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Share => "share",
            Event::Promote => "promote",
            Event::Abort => "abort",
            Event::AutoAbort => "auto-abort",
            Event::Rollback => "rollback",
        }
    }
}

/// One transition, as logged, counted and kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// What happened.
    pub event: Event,
    /// The share before, in percent.
    pub from_share: u8,
    /// The share after.
    pub to_share: u8,
    /// The live version after.
    pub live: Option<String>,
    /// The candidate version after (none once promoted).
    pub candidate: Option<String>,
    /// Why, in words (the guard's numbers for an automatic abort).
    pub why: String,
}

/// A rule-set folder of the rollout and the version last seen in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Side {
    /// The folder (as given, canonicalized when it exists).
    pub dir: PathBuf,
    /// Its version when last recorded.
    pub version: String,
}

/// The rollout as stored in its state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// Where the rollout is.
    pub phase: Phase,
    /// The candidate's share, in percent.
    pub share: u8,
    /// The live rule set.
    pub live: Option<Side>,
    /// The candidate.
    pub candidate: Option<Side>,
    /// The live rule set before the last promotion (for rollback).
    pub previous: Option<Side>,
    /// Guard settings given by an operator.
    #[serde(default)]
    pub guard: GuardOverride,
    /// Transitions so far (all of them).
    pub transitions_total: u64,
    /// The last [`TRANSITIONS_KEPT_MAX`] transitions, oldest first.
    pub transitions: Vec<Transition>,
}

impl Saved {
    /// A rollout that has not started: a canary at `share` percent.
    pub fn fresh(share: u8, guard: GuardOverride) -> Saved {
        Saved {
            format: STATE_FORMAT,
            phase: Phase::Canary,
            share,
            live: None,
            candidate: None,
            previous: None,
            guard,
            transitions_total: 0,
            transitions: Vec::new(),
        }
    }
}

/// Reads a state file; `Ok(None)` when it does not exist.
pub fn load_state(path: &Path) -> Result<Option<Saved>, RolloutError> {
    let error = |message: String| RolloutError::State { path: path.to_owned(), message };
    let bytes = match rulehost_core::files::read_bounded(path, None, STATE_BYTES_MAX, "a rollout state file") {
        Ok(bytes) => bytes,
        Err(e) if !path.exists() => {
            drop(e);
            return Ok(None);
        }
        Err(e) => return Err(error(e.to_string())),
    };
    let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| error(format!("not a rollout state: {e}")))?;
    if saved.format != STATE_FORMAT {
        return Err(error(format!(
            "format {} is not {STATE_FORMAT}, the one this release reads; remove the file to start the rollout afresh",
            saved.format
        )));
    }
    if saved.share > BUCKETS {
        return Err(error(format!("share {} is not a percentage in 0..=100", saved.share)));
    }
    Ok(Some(saved))
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never a mix: a temporary file beside it, synced, renamed over it,
/// and the folder synced.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    let tmp = dir.join(name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
