//! Canary rollout: a candidate rule set decides for real for a share of
//! traffic chosen by a stable hash of the source account, so one customer
//! always meets one version and its velocity stays consistent.
//!
//! The state — the share, the phase, the folders of the live, candidate and
//! previous rule sets, the guard and the transitions — lives in a
//! [`Rollout`]; a host keeps it in a JSON file (written atomically on every
//! transition) so that all of it survives a restart. Every decision made
//! while a candidate is configured says which arm decided it and why (its
//! source's bucket against the share), beside the version that decided it.
//!
//! The guard aborts the canary by itself (share back to 0) when, over the
//! candidate's last `window` decisions, its rule-failure rate or its
//! decline/review rate exceeds a threshold. The window counts decisions, not
//! seconds, so an abort depends on the input alone, never on machine load.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decision::{Decision, Outcome, RuleResult};
use crate::reload::RuleSource;
use crate::ruleset::RuleSet;

/// Buckets a source account falls into; a share of `p` percent sends the
/// buckets `0..p` to the candidate.
pub const BUCKETS: u8 = 100;
/// Decisions in the guard's sliding window by default.
pub const GUARD_WINDOW_DECISIONS_DEFAULT: u32 = 1_000;
/// Largest guard window, in decisions.
pub const GUARD_WINDOW_DECISIONS_MAX: u32 = 1_000_000;
/// Candidate decisions the window needs before the guard judges, by default.
pub const GUARD_MIN_DECISIONS_DEFAULT: u32 = 100;
/// Transitions kept in the state (older ones are only counted).
pub const TRANSITIONS_KEPT_MAX: usize = 256;
/// Format of the state file.
pub const STATE_FORMAT: u32 = 1;
/// Largest state file read at start, in bytes.
pub const STATE_BYTES_MAX: u64 = 4 << 20;

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
        if let Some(r) = rate
            && (r.is_sign_negative() || r > Decimal::ONE_HUNDRED)
        {
            return Err((key, format!("{r} is not a percentage in 0..=100")));
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
    let value = Decimal::from_str(text.trim()).map_err(|e| format!("{text:?} is not a decimal: {e}"))?;
    if value.is_sign_negative() || value > Decimal::ONE_HUNDRED {
        return Err(format!("{value} is not a percentage in 0..=100"));
    }
    Ok(value)
}

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
    /// Every event, for metrics.
    pub const ALL: [Event; 6] =
        [Event::Start, Event::Share, Event::Promote, Event::Abort, Event::AutoAbort, Event::Rollback];

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

/// Why a rollout request was refused or its state not kept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RolloutError {
    /// No candidate to act on.
    #[error("there is no candidate rule set: {0}")]
    NoCandidate(&'static str),
    /// Nothing to roll back to.
    #[error("there is no promotion to roll back")]
    NothingToRollBack,
    /// A share outside 0..=100.
    #[error("share {0} is not a percentage in 0..=100")]
    Share(u64),
    /// The state file could not be read or written.
    #[error("rollout state {path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The guard's sliding window over the candidate's decisions.
#[derive(Default)]
struct Window {
    /// (failed a rule, declined or reviewed), newest last.
    flags: VecDeque<(bool, bool)>,
    failed: u64,
    flagged: u64,
    /// The candidate version the window counts (a reload starts afresh).
    version: Option<Arc<str>>,
}

impl Window {
    fn clear(&mut self) {
        *self = Window::default();
    }

    fn push(&mut self, version: &Arc<str>, failed: bool, flagged: bool, size: u32) {
        if self.version.as_deref() != Some(&**version) {
            self.clear();
            self.version = Some(version.clone());
        }
        self.flags.push_back((failed, flagged));
        self.failed = self.failed.saturating_add(u64::from(failed));
        self.flagged = self.flagged.saturating_add(u64::from(flagged));
        while self.flags.len() > size as usize {
            if let Some((f, g)) = self.flags.pop_front() {
                self.failed = self.failed.saturating_sub(u64::from(f));
                self.flagged = self.flagged.saturating_sub(u64::from(g));
            }
        }
    }

    /// Why the guard fires, if it does: a count over the window strictly
    /// above `percent` of its length (exact: `count * 100 > percent * len`).
    fn verdict(&self, guard: &Guard) -> Option<String> {
        let len = self.flags.len() as u64;
        if len < u64::from(guard.min_decisions) {
            return None;
        }
        let over = |count: u64, percent: Option<Decimal>| {
            percent.filter(|p| Decimal::from(count) * Decimal::ONE_HUNDRED > *p * Decimal::from(len))
        };
        if let Some(p) = over(self.failed, guard.failure_percent) {
            return Some(format!(
                "rule-failure rate {}/{len} decisions is above {p}% (guard window {})",
                self.failed, guard.window
            ));
        }
        if let Some(p) = over(self.flagged, guard.flagged_percent) {
            return Some(format!(
                "decline/review rate {}/{len} decisions is above {p}% (guard window {})",
                self.flagged, guard.window
            ));
        }
        None
    }
}

struct State {
    candidate: Option<Arc<dyn RuleSource>>,
    phase: Phase,
    share: u8,
    live_side: Option<Side>,
    candidate_side: Option<Side>,
    previous_side: Option<Side>,
    guard: GuardOverride,
    window: Window,
    decided: [u64; 2],
    transitions: VecDeque<Transition>,
    transitions_total: u64,
}

/// What an operator's request may change, to put back when its state
/// cannot be saved.
struct Snapshot {
    candidate: Option<Arc<dyn RuleSource>>,
    phase: Phase,
    share: u8,
    sides: (Option<Side>, Option<Side>, Option<Side>),
}

impl State {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            candidate: self.candidate.clone(),
            phase: self.phase,
            share: self.share,
            sides: (self.live_side.clone(), self.candidate_side.clone(), self.previous_side.clone()),
        }
    }

    /// A new phase at 0% with these (live, candidate, previous) sides.
    fn settle(&mut self, phase: Phase, sides: (Option<Side>, Option<Side>, Option<Side>)) {
        self.share = 0;
        self.phase = phase;
        self.window.clear();
        (self.live_side, self.candidate_side, self.previous_side) = sides;
    }

    fn put_back(&mut self, s: Snapshot) {
        self.candidate = s.candidate;
        self.phase = s.phase;
        self.share = s.share;
        (self.live_side, self.candidate_side, self.previous_side) = s.sides;
    }
}

/// Called with every transition (metrics and logs).
pub type OnTransition = Box<dyn Fn(&Transition) + Send + Sync>;

/// A canary rollout: the candidate, its share, the guard, the transitions.
/// Shared by the pipeline (which asks it who decides each transaction and
/// tells it what was decided) and the host's admin API.
pub struct Rollout {
    state: Mutex<State>,
    file: Option<PathBuf>,
    on_transition: Option<OnTransition>,
}

/// The rule set chosen for one transaction.
#[derive(Clone)]
pub struct Choice {
    /// Who decides, and why.
    pub tag: RolloutTag,
    /// The candidate's rule set when the candidate decides.
    pub candidate: Option<Arc<RuleSet>>,
}

impl Choice {
    /// Whether `other` evaluates with the same rule set.
    pub fn same_rules(&self, other: &Choice) -> bool {
        self.tag.arm == other.tag.arm
            && match (&self.candidate, &other.candidate) {
                (Some(a), Some(b)) => a.version == b.version,
                (None, None) => true,
                _ => false,
            }
    }
}

fn now_rfc3339() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| i128::try_from(d.as_nanos()).unwrap_or(0))
        .unwrap_or(0);
    crate::input::format_timestamp(nanos)
}

impl Rollout {
    /// A rollout of `candidate` at `share` percent (clamped to 100), its
    /// guard settings over the candidate manifest's. Keeps no file.
    pub fn new(candidate: Arc<dyn RuleSource>, share: u8, guard: GuardOverride) -> Rollout {
        let fresh = Saved {
            format: STATE_FORMAT,
            phase: Phase::Canary,
            share,
            live: None,
            candidate: None,
            previous: None,
            guard,
            transitions_total: 0,
            transitions: Vec::new(),
        };
        let rollout = Rollout::restore(fresh, Some(candidate));
        rollout.started();
        rollout
    }

    /// Records that the candidate configured now starts its canary at the
    /// share set (a `start` transition).
    pub fn started(&self) {
        let mut state = self.lock();
        let share = state.share;
        state.phase = Phase::Canary;
        let version = state.candidate.as_ref().map(|c| c.current().version.to_string()).unwrap_or_default();
        let _ = self.transition(&mut state, Event::Start, 0, format!("candidate {version} at {share}%"), None);
    }

    /// A rollout restored from (or to be kept in) a state file; `candidate`
    /// is the candidate's rule set when the saved state has one.
    pub fn restore(saved: Saved, candidate: Option<Arc<dyn RuleSource>>) -> Rollout {
        let share = if candidate.is_some() { saved.share.min(BUCKETS) } else { 0 };
        Rollout {
            state: Mutex::new(State {
                candidate,
                phase: saved.phase,
                share,
                live_side: saved.live,
                candidate_side: saved.candidate,
                previous_side: saved.previous,
                guard: saved.guard,
                window: Window::default(),
                decided: [0, 0],
                transitions: saved.transitions.into_iter().collect(),
                transitions_total: saved.transitions_total,
            }),
            file: None,
            on_transition: None,
        }
    }

    /// Keeps the state in `file` from now on (written at once, then on every
    /// transition).
    pub fn keep_in(mut self, file: impl Into<PathBuf>) -> Result<Rollout, RolloutError> {
        self.file = Some(file.into());
        let state = self.lock();
        self.save(&state)?;
        drop(state);
        Ok(self)
    }

    /// Calls `f` with every later transition.
    pub fn on_transition(mut self, f: OnTransition) -> Rollout {
        self.on_transition = Some(f);
        self
    }

    /// Records the folders of the live, candidate and previous rule sets (for
    /// the state file and the status).
    pub fn set_sides(&self, live: Option<Side>, candidate: Option<Side>, previous: Option<Side>) {
        let mut state = self.lock();
        state.live_side = live;
        state.candidate_side = candidate;
        state.previous_side = previous;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data, consistent after every statement that
        // could panic; a poisoned lock keeps serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who decides a transaction from `source`: `None` without a candidate.
    pub fn choose(&self, source: &str) -> Option<Choice> {
        let state = self.lock();
        let candidate = state.candidate.as_ref()?;
        let bucket = bucket(source);
        if bucket < state.share {
            let rules = candidate.current();
            Some(Choice { tag: RolloutTag { arm: Arm::Candidate, bucket, share: state.share }, candidate: Some(rules) })
        } else {
            Some(Choice { tag: RolloutTag { arm: Arm::Live, bucket, share: state.share }, candidate: None })
        }
    }

    /// Counts a new decision made under `choice`; a candidate's decision
    /// feeds the guard, which may abort the canary (the transition is
    /// returned, already saved).
    pub fn decided(&self, choice: &Choice, decision: &Decision) -> Option<Transition> {
        let mut state = self.lock();
        let arm = usize::from(choice.tag.arm == Arm::Candidate);
        state.decided[arm] = state.decided[arm].saturating_add(1);
        let rules = choice.candidate.as_ref()?;
        let guard = state.guard.over(rules.guard.as_ref());
        if guard.failure_percent.is_none() && guard.flagged_percent.is_none() {
            return None;
        }
        let failed = decision.rules.iter().any(|t| matches!(t.result, RuleResult::Failed { .. }));
        let flagged = matches!(decision.outcome, Outcome::Decline | Outcome::Review);
        state.window.push(&rules.version, failed, flagged, guard.window);
        // A decision taken before an abort, committed after it, judges nothing.
        if state.phase != Phase::Canary || state.share == 0 {
            return None;
        }
        let why = state.window.verdict(&guard)?;
        let from = state.share;
        state.share = 0;
        state.phase = Phase::Aborted;
        state.window.clear();
        tracing::warn!(candidate = %rules.version, %why, "canary aborted by its guard");
        self.transition(&mut state, Event::AutoAbort, from, why, None).ok()
    }

    /// Sets the candidate's share (an operator's request); a share above 0
    /// (re)starts the canary.
    pub fn set_share(&self, share: u64, why: &str) -> Result<Transition, RolloutError> {
        let share = u8::try_from(share).ok().filter(|s| *s <= BUCKETS).ok_or(RolloutError::Share(share))?;
        let mut state = self.lock();
        if state.candidate.is_none() {
            return Err(RolloutError::NoCandidate("set one with --canary DIR"));
        }
        let from = state.share;
        let before = state.snapshot();
        state.share = share;
        if share > 0 {
            state.phase = Phase::Canary;
            if from == 0 {
                state.window.clear();
            }
        }
        let t = self.transition(&mut state, Event::Share, from, why.to_owned(), Some(before))?;
        Ok(t)
    }

    /// Aborts the canary: share 0, the candidate kept.
    pub fn abort(&self, why: &str) -> Result<Transition, RolloutError> {
        let mut state = self.lock();
        if state.candidate.is_none() {
            return Err(RolloutError::NoCandidate("nothing to abort"));
        }
        let from = state.share;
        let before = state.snapshot();
        state.share = 0;
        state.phase = Phase::Aborted;
        state.window.clear();
        self.transition(&mut state, Event::Abort, from, why.to_owned(), Some(before))
    }

    /// Records a promotion the host made: the candidate is live now, `live`
    /// (the new live side) and `previous` kept; no candidate remains.
    pub fn promoted(&self, live: Option<Side>, previous: Option<Side>) -> Result<Transition, RolloutError> {
        let mut state = self.lock();
        let before = state.snapshot();
        let Some(candidate) = state.candidate.take() else {
            return Err(RolloutError::NoCandidate("nothing to promote"));
        };
        let version = candidate.current().version.to_string();
        let from = state.share;
        state.settle(Phase::Promoted, (live, None, previous));
        self.transition(&mut state, Event::Promote, from, format!("{version} is live"), Some(before))
    }

    /// Records a rollback of a promotion: `live` serves again and the
    /// demoted rule set is the candidate at 0%.
    pub fn rolled_back(
        &self,
        demoted: Arc<dyn RuleSource>,
        live: Option<Side>,
        candidate: Option<Side>,
    ) -> Result<Transition, RolloutError> {
        let mut state = self.lock();
        let before = state.snapshot();
        let version = demoted.current().version.to_string();
        state.candidate = Some(demoted);
        state.settle(Phase::RolledBack, (live, candidate, None));
        self.transition(&mut state, Event::Rollback, 0, format!("{version} demoted to candidate at 0%"), Some(before))
    }

    /// Appends a transition, saves the state and tells the listener. When
    /// the state cannot be saved, an operator's request is undone to
    /// `undo` and refused; an automatic one stands (the candidate stops
    /// deciding either way) and the failure is logged.
    fn transition(
        &self,
        state: &mut State,
        event: Event,
        from_share: u8,
        why: String,
        undo: Option<Snapshot>,
    ) -> Result<Transition, RolloutError> {
        let t = Transition {
            at: now_rfc3339(),
            event,
            from_share,
            to_share: state.share,
            live: state.live_side.as_ref().map(|s| s.version.clone()),
            candidate: state.candidate.as_ref().map(|c| c.current().version.to_string()),
            why,
        };
        state.transitions.push_back(t.clone());
        while state.transitions.len() > TRANSITIONS_KEPT_MAX {
            state.transitions.pop_front();
        }
        state.transitions_total = state.transitions_total.saturating_add(1);
        if let Err(e) = self.save(state) {
            if let Some(before) = undo {
                state.put_back(before);
                state.transitions.pop_back();
                state.transitions_total = state.transitions_total.saturating_sub(1);
                return Err(e);
            }
            tracing::error!(error = %e, "the rollout state was not saved");
        }
        tracing::info!(event = event.as_str(), from = from_share, to = t.to_share, why = %t.why, "rollout");
        if let Some(f) = &self.on_transition {
            f(&t);
        }
        Ok(t)
    }

    fn saved(state: &State) -> Saved {
        Saved {
            format: STATE_FORMAT,
            phase: state.phase,
            share: state.share,
            live: state.live_side.clone(),
            candidate: state.candidate_side.clone(),
            previous: state.previous_side.clone(),
            guard: state.guard,
            transitions_total: state.transitions_total,
            transitions: state.transitions.iter().cloned().collect(),
        }
    }

    fn save(&self, state: &State) -> Result<(), RolloutError> {
        let Some(path) = &self.file else { return Ok(()) };
        let text = serde_json::to_vec_pretty(&Self::saved(state))
            .map_err(|e| RolloutError::State { path: path.clone(), message: e.to_string() })?;
        write_atomically(path, &text)
            .map_err(|e| RolloutError::State { path: path.clone(), message: format!("writing: {e}") })
    }

    /// The state as stored.
    pub fn saved_state(&self) -> Saved {
        Self::saved(&self.lock())
    }

    /// The status: the stored state, the guard in force, decisions by arm
    /// since start and the guard window's counts.
    pub fn status(&self) -> serde_json::Value {
        let state = self.lock();
        let rules = state.candidate.as_ref().map(|c| c.current());
        let guard = state.guard.over(rules.as_ref().and_then(|r| r.guard.as_ref()));
        serde_json::json!({
            "phase": state.phase.as_str(),
            "share": state.share,
            "candidate": rules.as_ref().map(|r| serde_json::json!({
                "version": &*r.version,
                "dir": state.candidate_side.as_ref().map(|s| s.dir.display().to_string()),
            })),
            "live": state.live_side.as_ref().map(|s| serde_json::json!({ "version": s.version, "dir": s.dir.display().to_string() })),
            "previous": state.previous_side.as_ref().map(|s| serde_json::json!({ "version": s.version, "dir": s.dir.display().to_string() })),
            "guard": {
                "abort_failure_percent": guard.failure_percent.map(|p| p.to_string()),
                "abort_flagged_percent": guard.flagged_percent.map(|p| p.to_string()),
                "window_decisions": guard.window,
                "min_decisions": guard.min_decisions,
                "window": { "decisions": state.window.flags.len(), "failed": state.window.failed, "flagged": state.window.flagged },
            },
            "decided": { "live": state.decided[0], "candidate": state.decided[1] },
            "transitions_total": state.transitions_total,
            "transitions": state.transitions.iter().collect::<Vec<_>>(),
        })
    }

    /// The share now, in percent.
    pub fn share(&self) -> u8 {
        self.lock().share
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// New decisions by arm since start: (live, candidate).
    pub fn decided_counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.decided[0], state.decided[1])
    }
}

/// Reads a state file; `Ok(None)` when it does not exist.
pub fn load_state(path: &Path) -> Result<Option<Saved>, RolloutError> {
    let error = |message: String| RolloutError::State { path: path.to_owned(), message };
    let bytes = match crate::files::read_bounded(path, None, STATE_BYTES_MAX, "a rollout state file") {
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
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        // Fixed by the algorithm: a change here re-buckets every customer.
        assert_eq!(bucket("acc-000001"), bucket("acc-000001"));
        let mut counts = [0u32; BUCKETS as usize];
        for i in 0..100_000 {
            counts[usize::from(bucket(&format!("acc-{i:06}")))] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn the_window_judges_exactly() {
        let guard =
            Guard { failure_percent: Some(Decimal::from(10)), flagged_percent: None, window: 20, min_decisions: 10 };
        let v: Arc<str> = "v1".into();
        let mut w = Window::default();
        for i in 0..10 {
            w.push(&v, i == 0, false, guard.window);
        }
        // 1 of 10 is exactly 10%: not above.
        assert_eq!(w.verdict(&guard), None);
        w.push(&v, true, false, guard.window);
        assert!(w.verdict(&guard).unwrap().contains("2/11"));
        // Old decisions leave the window.
        for _ in 0..20 {
            w.push(&v, false, false, guard.window);
        }
        assert_eq!((w.flags.len(), w.failed), (20, 0));
        // Another version starts afresh.
        w.push(&"v2".into(), true, false, guard.window);
        assert_eq!((w.flags.len(), w.failed), (1, 1));
    }

    #[test]
    fn a_state_file_is_refused_with_its_name_when_unreadable_and_round_trips_when_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollout.json");
        assert_eq!(load_state(&path), Ok(None), "absent: no rollout yet");
        std::fs::write(&path, "{not json").unwrap();
        let e = load_state(&path).unwrap_err().to_string();
        assert!(e.contains("rollout.json") && e.contains("not a rollout state"), "{e}");
        let candidate: Arc<dyn RuleSource> = Arc::new(DummySource);
        let r = Rollout::new(candidate.clone(), 20, GuardOverride::default()).keep_in(&path).unwrap();
        r.set_share(50, "test").unwrap();
        assert_eq!(r.set_share(101, "test"), Err(RolloutError::Share(101)));
        let saved = load_state(&path).unwrap().unwrap();
        assert_eq!((saved.share, saved.phase, saved.transitions.len()), (50, Phase::Canary, 2));
        let mut future = saved.clone();
        future.format = STATE_FORMAT + 1;
        std::fs::write(&path, serde_json::to_vec(&future).unwrap()).unwrap();
        assert!(load_state(&path).unwrap_err().to_string().contains("remove the file"));
    }

    /// A rule source that is never asked for rules beyond its version.
    struct DummySource;

    impl RuleSource for DummySource {
        fn current(&self) -> Arc<RuleSet> {
            static SET: std::sync::OnceLock<Arc<RuleSet>> = std::sync::OnceLock::new();
            SET.get_or_init(|| Arc::new(RuleSet::empty_for_tests("v-test"))).clone()
        }
    }

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
