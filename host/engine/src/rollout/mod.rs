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

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::reload::RuleSource;
use crate::ruleset::RuleSet;
use rulehost_core::decision::{Decision, Outcome, RuleResult};

mod guard;
mod state;

use guard::Window;
pub use rulehost_core::rollout::{
    Arm, BUCKETS, GUARD_MIN_DECISIONS_DEFAULT, GUARD_WINDOW_DECISIONS_DEFAULT, GUARD_WINDOW_DECISIONS_MAX, Guard,
    GuardOverride, RolloutTag, bucket, check_guard, parse_percent,
};
use state::write_atomically;
pub use state::{
    Event, Phase, STATE_BYTES_MAX, STATE_FORMAT, Saved, Side, TRANSITIONS_KEPT_MAX, Transition, load_state,
};

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

struct State {
    candidate: Option<Arc<dyn RuleSource>>,
    /// What the state file holds.
    saved: Saved,
    window: Window,
    decided: [u64; 2],
}

/// What an operator's request may change, to put back when its state
/// cannot be saved.
struct Snapshot {
    candidate: Option<Arc<dyn RuleSource>>,
    saved: Saved,
}

/// The (live, candidate, previous) folders of a rollout.
type Sides = (Option<Side>, Option<Side>, Option<Side>);

impl State {
    fn snapshot(&self) -> Snapshot {
        Snapshot { candidate: self.candidate.clone(), saved: self.saved.clone() }
    }

    /// A new phase at 0% with these sides.
    fn settle(&mut self, phase: Phase, (live, candidate, previous): Sides) {
        self.saved.share = 0;
        self.saved.phase = phase;
        self.window.clear();
        (self.saved.live, self.saved.candidate, self.saved.previous) = (live, candidate, previous);
    }

    fn put_back(&mut self, s: Snapshot) {
        self.candidate = s.candidate;
        self.saved = s.saved;
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
    /// The rule set that decides under `choice` (the candidate's, or `live`).
    pub fn rules<'a>(choice: Option<&'a Choice>, live: &'a RuleSet) -> &'a RuleSet {
        choice.and_then(|c| c.candidate.as_deref()).unwrap_or(live)
    }

    /// Whether two choices (made with or without a rollout) evaluate with
    /// the same rule set.
    pub fn same_rules(a: Option<&Choice>, b: Option<&Choice>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => {
                a.tag.arm == b.tag.arm
                    && a.candidate.as_ref().map(|r| &r.version) == b.candidate.as_ref().map(|r| &r.version)
            }
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
    rulehost_core::input::format_timestamp(nanos)
}

impl Rollout {
    /// A rollout of `candidate` at `share` percent (clamped to 100), its
    /// guard settings over the candidate manifest's. Keeps no file.
    pub fn new(candidate: Arc<dyn RuleSource>, share: u8, guard: GuardOverride) -> Rollout {
        let rollout = Rollout::restore(Saved::fresh(share, guard), Some(candidate));
        rollout.started();
        rollout
    }

    /// Records that the candidate configured now starts its canary at the
    /// share set (a `start` transition).
    pub fn started(&self) {
        let mut state = self.lock();
        let share = state.saved.share;
        state.saved.phase = Phase::Canary;
        let version = state.candidate.as_ref().map(|c| c.current().version.to_string()).unwrap_or_default();
        let _ = self.transition(&mut state, Event::Start, 0, format!("candidate {version} at {share}%"), None);
    }

    /// A rollout restored from (or to be kept in) a state file; `candidate`
    /// is the candidate's rule set when the saved state has one.
    pub fn restore(mut saved: Saved, candidate: Option<Arc<dyn RuleSource>>) -> Rollout {
        saved.share = if candidate.is_some() { saved.share.min(BUCKETS) } else { 0 };
        Rollout {
            state: Mutex::new(State { candidate, saved, window: Window::default(), decided: [0, 0] }),
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
        (state.saved.live, state.saved.candidate, state.saved.previous) = (live, candidate, previous);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data, consistent after every statement that
        // could panic; a poisoned lock keeps serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who decides a transaction whose source account is in `bucket` (see
    /// [`bucket`]): `None` without a candidate.
    pub fn choose(&self, bucket: u8) -> Option<Choice> {
        let state = self.lock();
        let candidate = state.candidate.as_ref()?;
        let share = state.saved.share;
        Some(if bucket < share {
            Choice { tag: RolloutTag { arm: Arm::Candidate, bucket, share }, candidate: Some(candidate.current()) }
        } else {
            Choice { tag: RolloutTag { arm: Arm::Live, bucket, share }, candidate: None }
        })
    }

    /// Counts a new decision made under `choice`; a candidate's decision
    /// feeds the guard, which may abort the canary (a transition, saved and
    /// passed to the listener).
    pub fn decided(&self, choice: &Choice, decision: &Decision) {
        let mut state = self.lock();
        let arm = usize::from(choice.tag.arm == Arm::Candidate);
        state.decided[arm] = state.decided[arm].saturating_add(1);
        let Some(rules) = choice.candidate.as_ref() else { return };
        let guard = state.saved.guard.over(rules.guard.as_ref());
        if guard.failure_percent.is_none() && guard.flagged_percent.is_none() {
            return;
        }
        let failed = decision.rules.iter().any(|t| matches!(t.result, RuleResult::Failed { .. }));
        let flagged = matches!(decision.outcome, Outcome::Decline | Outcome::Review);
        state.window.push(&rules.version, failed, flagged, guard.window);
        // A decision taken before an abort, committed after it, judges nothing.
        if state.saved.phase != Phase::Canary || state.saved.share == 0 {
            return;
        }
        let Some(why) = state.window.verdict(&guard) else { return };
        let from = state.saved.share;
        state.saved.share = 0;
        state.saved.phase = Phase::Aborted;
        state.window.clear();
        tracing::warn!(candidate = %rules.version, %why, "canary aborted by its guard");
        // The abort stands even if it cannot be saved (logged in `transition`).
        let _ = self.transition(&mut state, Event::AutoAbort, from, why, None);
    }

    /// Sets the candidate's share (an operator's request); a share above 0
    /// (re)starts the canary.
    pub fn set_share(&self, share: u64, why: &str) -> Result<Transition, RolloutError> {
        let share = u8::try_from(share).ok().filter(|s| *s <= BUCKETS).ok_or(RolloutError::Share(share))?;
        let mut state = self.lock();
        if state.candidate.is_none() {
            return Err(RolloutError::NoCandidate("set one with --canary DIR"));
        }
        let from = state.saved.share;
        let before = state.snapshot();
        state.saved.share = share;
        if share > 0 {
            state.saved.phase = Phase::Canary;
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
        let from = state.saved.share;
        let before = state.snapshot();
        state.saved.share = 0;
        state.saved.phase = Phase::Aborted;
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
        let from = state.saved.share;
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
    /// `undo` and refused; an automatic one (`undo` none) stands (the
    /// candidate stops deciding either way) and the failure is logged.
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
            to_share: state.saved.share,
            live: state.saved.live.as_ref().map(|s| s.version.clone()),
            candidate: state.candidate.as_ref().map(|c| c.current().version.to_string()),
            why,
        };
        let kept = &mut state.saved.transitions;
        kept.push(t.clone());
        let excess = kept.len().saturating_sub(TRANSITIONS_KEPT_MAX);
        kept.drain(..excess);
        state.saved.transitions_total = state.saved.transitions_total.saturating_add(1);
        if let Err(e) = self.save(state) {
            if let Some(before) = undo {
                state.put_back(before);
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

    fn save(&self, state: &State) -> Result<(), RolloutError> {
        let Some(path) = &self.file else { return Ok(()) };
        let text = serde_json::to_vec_pretty(&state.saved)
            .map_err(|e| RolloutError::State { path: path.clone(), message: e.to_string() })?;
        write_atomically(path, &text)
            .map_err(|e| RolloutError::State { path: path.clone(), message: format!("writing: {e}") })
    }

    /// The state as stored.
    pub fn saved_state(&self) -> Saved {
        self.lock().saved.clone()
    }

    /// The status: the stored state, the guard in force, decisions by arm
    /// since start and the guard window's counts.
    pub fn status(&self) -> serde_json::Value {
        let state = self.lock();
        let saved = &state.saved;
        let rules = state.candidate.as_ref().map(|c| c.current());
        let guard = saved.guard.over(rules.as_ref().and_then(|r| r.guard.as_ref()));
        serde_json::json!({
            "phase": saved.phase.as_str(),
            "share": saved.share,
            "candidate": rules.as_ref().map(|r| serde_json::json!({
                "version": &*r.version,
                "dir": saved.candidate.as_ref().map(|s| s.dir.display().to_string()),
            })),
            "live": saved.live,
            "previous": saved.previous,
            "guard": {
                "abort_failure_percent": guard.failure_percent.map(|p| p.to_string()),
                "abort_flagged_percent": guard.flagged_percent.map(|p| p.to_string()),
                "window_decisions": guard.window,
                "min_decisions": guard.min_decisions,
                "window": { "decisions": state.window.flags.len(), "failed": state.window.failed, "flagged": state.window.flagged },
            },
            "decided": { "live": state.decided[0], "candidate": state.decided[1] },
            "transitions_total": saved.transitions_total,
            "transitions": saved.transitions,
        })
    }

    /// The share now, in percent.
    pub fn share(&self) -> u8 {
        self.lock().saved.share
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        self.lock().saved.phase
    }

    /// New decisions by arm since start: (live, candidate).
    pub fn decided_counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.decided[0], state.decided[1])
    }
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
}
