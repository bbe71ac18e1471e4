//! The host's rule sets under a canary rollout: which folder is live, which
//! is the candidate and which was live before the last promotion; restored
//! from the rollout state file at start; promotion and rollback.
//!
//! Each folder is a [`LiveRules`] (hot-reloaded when watched). Reload
//! events reach the host's subscribers and metrics only from the folder
//! that is live at the time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;

use super::BuildError;
use crate::metrics::Metrics;
use rulehost_engine::pipeline::{SharedLedger, lock};
use rulehost_engine::reload::{DEBOUNCE_MS_DEFAULT, LiveRules, ReloadEvent, RuleSource, Watcher};
use rulehost_engine::rollout::{GuardOverride, Rollout, RolloutError, Saved, Side, Transition};
use rulehost_engine::ruleset::RuleSet;
use rulehost_sandbox::Sandbox;

/// The rollout settings of a [`super::HostBuilder`].
#[derive(Clone, Debug, Default)]
pub(super) struct RolloutConfig {
    pub canary: Option<PathBuf>,
    pub share: u8,
    pub state_file: Option<PathBuf>,
    pub guard: GuardOverride,
}

/// Where the live, candidate and previous rule sets come from.
pub(super) struct Rules {
    live: Arc<ArcSwap<LiveRules>>,
    rollout: Option<HostRollout>,
    events: tokio::sync::broadcast::Sender<ReloadEvent>,
    /// Keeps the watchers running.
    _opener: Opener,
}

struct HostRollout {
    rollout: Arc<Rollout>,
    /// Held for the whole of an operator's request (they are serialised).
    sides: Mutex<Sides>,
}

#[derive(Default)]
struct Sides {
    candidate: Option<Arc<LiveRules>>,
    previous: Option<Arc<LiveRules>>,
}

/// Opens a rule-set folder as a [`LiveRules`], watched when asked, its
/// history window retained by the ledger.
struct Opener {
    sandbox: Arc<Sandbox>,
    ledger: SharedLedger,
    watch: bool,
    runtime: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    watchers: Mutex<Vec<Watcher>>,
    /// The rule set already loaded from its (canonical) folder, used by the
    /// first open of that folder instead of loading it again.
    preloaded: Mutex<Option<(PathBuf, RuleSet)>>,
}

impl Opener {
    fn open(&self, dir: &Path) -> Result<Arc<LiveRules>, BuildError> {
        let retain = self.ledger.clone();
        let on_swap: rulehost_engine::reload::OnSwap =
            Box::new(move |r: &RuleSet| lock(&retain).retain_history(r.history_window_seconds_max));
        let preloaded = {
            let mut slot = self.preloaded.lock().unwrap_or_else(|p| p.into_inner());
            if slot.as_ref().is_some_and(|(d, _)| *d == canonical(dir)) { slot.take().map(|(_, r)| r) } else { None }
        };
        let loaded = match preloaded {
            Some(ruleset) => LiveRules::with_loaded(self.sandbox.clone(), dir, ruleset, Some(on_swap)),
            None => LiveRules::load(self.sandbox.clone(), dir, Some(on_swap)),
        };
        let live = Arc::new(loaded.map_err(|e| BuildError::RuleSet { dir: dir.to_owned(), message: e.to_string() })?);
        if self.watch {
            let watcher = Watcher::start(live.clone(), std::time::Duration::from_millis(DEBOUNCE_MS_DEFAULT))
                .map_err(|e| BuildError::Other(e.to_string()))?;
            self.watchers.lock().unwrap_or_else(|p| p.into_inner()).push(watcher);
        }
        Ok(live)
    }

    /// Passes the reload events of `rules`, while it is the live one, to
    /// the host's subscribers and metrics.
    fn forward(
        &self,
        rules: &Arc<LiveRules>,
        live: &Arc<ArcSwap<LiveRules>>,
        events: &tokio::sync::broadcast::Sender<ReloadEvent>,
    ) {
        let mut from = rules.subscribe();
        let this = Arc::as_ptr(rules) as usize;
        let live: Weak<ArcSwap<LiveRules>> = Arc::downgrade(live);
        let (events, metrics) = (events.clone(), self.metrics.clone());
        self.runtime.spawn(async move {
            loop {
                match from.recv().await {
                    Ok(event) => {
                        let Some(live) = live.upgrade() else { break };
                        if Arc::as_ptr(&live.load()) as usize == this {
                            metrics.reload_event(&event);
                            let _ = events.send(event);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
}

fn side(rules: &LiveRules) -> Side {
    Side { dir: rules.dir().to_owned(), version: rules.current().version.to_string() }
}

fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned())
}

/// The default state file of a durable ledger: beside it.
pub(super) fn default_state_file(ledger: &Path) -> PathBuf {
    let mut name = ledger.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".rollout.json");
    ledger.with_file_name(name)
}

impl Rules {
    /// Opens the live folder (and, under a rollout, the candidate and the
    /// previous one); `first` is the rule set already loaded from `rules`,
    /// used if that folder is opened. A saved rollout state wins over `rules` and the
    /// configured candidate: a restart resumes where the rollout was. A
    /// `canary` folder the saved rollout has not seen starts a new canary.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
        sandbox: Arc<Sandbox>,
        ledger: SharedLedger,
        watch: bool,
        runtime: tokio::runtime::Handle,
        metrics: Arc<Metrics>,
        (rules, first): (PathBuf, RuleSet),
        config: &RolloutConfig,
    ) -> Result<Rules, BuildError> {
        let preloaded = Mutex::new(Some((canonical(&rules), first)));
        let opener = Opener { sandbox, ledger, watch, runtime, metrics, watchers: Mutex::default(), preloaded };
        let rules = rules.as_path();
        let state_error = |e: RolloutError| BuildError::Other(e.to_string());
        let saved = match &config.state_file {
            Some(path) => rulehost_engine::rollout::load_state(path).map_err(state_error)?,
            None => None,
        };
        let seen = |dir: &Path, saved: &Saved| {
            let dir = canonical(dir);
            [&saved.live, &saved.candidate, &saved.previous].into_iter().flatten().any(|s| canonical(&s.dir) == dir)
        };
        let new_canary = config.canary.as_ref().filter(|c| saved.as_ref().is_none_or(|s| !seen(c, s)));
        let live_dir = saved.as_ref().and_then(|s| s.live.as_ref()).map(|s| s.dir.clone());
        if let Some(dir) = &live_dir
            && canonical(dir) != canonical(rules)
        {
            tracing::info!(live = %dir.display(), given = %rules.display(), "the rollout state names the live rule set");
        }
        let live = opener.open(live_dir.as_deref().unwrap_or(rules))?;
        let events = tokio::sync::broadcast::channel(rulehost_engine::reload::RELOAD_EVENTS_BUFFERED).0;
        let shared = Arc::new(ArcSwap::new(live.clone()));
        opener.forward(&live, &shared, &events);
        let mut sides = Sides::default();
        if let Some(previous) = saved.as_ref().and_then(|s| s.previous.as_ref()) {
            let rules = opener.open(&previous.dir)?;
            opener.forward(&rules, &shared, &events);
            sides.previous = Some(rules);
        }
        let candidate_dir = match new_canary {
            Some(dir) => Some(dir.clone()),
            None => saved.as_ref().and_then(|s| s.candidate.as_ref()).map(|s| s.dir.clone()),
        };
        if let Some(dir) = &candidate_dir {
            let rules = opener.open(dir)?;
            opener.forward(&rules, &shared, &events);
            sides.candidate = Some(rules);
        }
        let rollout = if saved.is_none() && sides.candidate.is_none() {
            None
        } else {
            let mut state = saved.clone().unwrap_or_else(|| Saved::fresh(config.share, GuardOverride::default()));
            state.guard = config.guard.or(state.guard);
            if new_canary.is_some() {
                state.share = config.share;
            }
            if let Some(c) = &sides.candidate {
                state
                    .guard
                    .checked_over(c.current().guard.as_ref())
                    .map_err(|message| BuildError::RuleSet { dir: c.dir().to_owned(), message })?;
            }
            let candidate: Option<Arc<dyn RuleSource>> = sides.candidate.clone().map(|c| -> Arc<dyn RuleSource> { c });
            let metrics = opener.metrics.clone();
            let mut rollout = Rollout::restore(state, candidate)
                .on_transition(Box::new(move |t: &Transition| metrics.rollout_transition(t)));
            rollout.set_sides(
                Some(side(&live)),
                sides.candidate.as_deref().map(side),
                sides.previous.as_deref().map(side),
            );
            // Without a saved state, the candidate is the configured one.
            if new_canary.is_some() {
                rollout.started();
            }
            if let Some(path) = &config.state_file {
                rollout = rollout.keep_in(path).map_err(state_error)?;
            }
            Some(HostRollout { rollout: Arc::new(rollout), sides: Mutex::new(sides) })
        };
        Ok(Rules { live: shared, rollout, events, _opener: opener })
    }

    /// The live rule set's folder.
    pub(super) fn live(&self) -> Arc<LiveRules> {
        self.live.load_full()
    }

    /// The rollout, for the pipeline.
    pub(super) fn rollout(&self) -> Option<&Arc<Rollout>> {
        self.rollout.as_ref().map(|r| &r.rollout)
    }

    /// The host's reload events (of whichever folder is live).
    pub(super) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ReloadEvent> {
        self.events.subscribe()
    }

    /// The rollout's state and counts, with the live version as it is now.
    pub(super) fn status(&self) -> Option<serde_json::Value> {
        let r = self.rollout.as_ref()?;
        let mut status = r.rollout.status();
        status["live"] = serde_json::to_value(side(&self.live())).unwrap_or_default();
        Some(status)
    }

    fn host_rollout(&self) -> Result<&HostRollout, RolloutError> {
        self.rollout.as_ref().ok_or(RolloutError::NoCandidate("this host was started without a canary"))
    }

    /// Sets the candidate's share.
    pub(super) fn set_share(&self, percent: u64) -> Result<Transition, RolloutError> {
        let r = self.host_rollout()?;
        let _serial = r.sides.lock().unwrap_or_else(|p| p.into_inner());
        r.rollout.set_share(percent, "operator")
    }

    /// Aborts the canary.
    pub(super) fn abort(&self) -> Result<Transition, RolloutError> {
        let r = self.host_rollout()?;
        let _serial = r.sides.lock().unwrap_or_else(|p| p.into_inner());
        r.rollout.abort("operator")
    }

    /// The candidate becomes live; the live one is kept for rollback.
    pub(super) fn promote(&self) -> Result<Transition, RolloutError> {
        let r = self.host_rollout()?;
        let mut sides = r.sides.lock().unwrap_or_else(|p| p.into_inner());
        let candidate = sides.candidate.clone().ok_or(RolloutError::NoCandidate("nothing to promote"))?;
        let old = self.live();
        let t = r.rollout.promoted(Some(side(&candidate)), Some(side(&old)))?;
        self.live.store(candidate);
        sides.candidate = None;
        sides.previous = Some(old);
        Ok(t)
    }

    /// The rule set live before the last promotion serves again; the
    /// demoted one becomes the candidate at 0%.
    pub(super) fn rollback(&self) -> Result<Transition, RolloutError> {
        let r = self.host_rollout()?;
        let mut sides = r.sides.lock().unwrap_or_else(|p| p.into_inner());
        let previous = sides.previous.clone().ok_or(RolloutError::NothingToRollBack)?;
        let demoted = self.live();
        let as_source: Arc<dyn RuleSource> = demoted.clone();
        let t = r.rollout.rolled_back(as_source, Some(side(&previous)), Some(side(&demoted)))?;
        self.live.store(previous);
        sides.previous = None;
        sides.candidate = Some(demoted);
        Ok(t)
    }
}
