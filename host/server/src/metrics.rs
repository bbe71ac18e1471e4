//! Prometheus metrics of a running host (`GET /metrics`), kept with the
//! `prometheus-client` crate: decisions by outcome, per-rule call latency,
//! fuel and failures by kind, reloads, ledger commit latency, and requests
//! refused for overload.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use rulehost_core::decision::Record;
use rulehost_engine::pipeline::Observer;
use rulehost_engine::reload::ReloadEvent;
use rulehost_engine::ruleset::LoadedRule;
use rulehost_sandbox::CallOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabel {
    rule: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgreementLabel {
    live: &'static str,
    candidate: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmLabel {
    arm: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

type HistogramFamily = Family<RuleLabel, Histogram, fn() -> Histogram>;

fn rule_call_histogram() -> Histogram {
    // 2 µs … 65 ms.
    Histogram::new(exponential_buckets(2e-6, 2.0, 16))
}

/// The host's metrics.
pub struct Metrics {
    registry: Registry,
    decisions: Family<OutcomeLabel, Counter>,
    replays: Counter,
    rule_latency: HistogramFamily,
    rule_fuel: Family<RuleLabel, Counter>,
    rule_failures: Family<FailureLabel, Counter>,
    reloads: Counter,
    reload_failures: Counter,
    rollbacks: Counter,
    commit_latency: Histogram,
    commit_changes: Counter,
    refused: Family<ReasonLabel, Counter>,
    shadow: Family<AgreementLabel, Counter>,
    rollout_decisions: Family<ArmLabel, Counter>,
    rollout_transitions: Family<EventLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rulehost");
        let decisions = Family::<OutcomeLabel, Counter>::default();
        registry.register("decisions", "Transactions decided, by outcome (error: bad input)", decisions.clone());
        let replays = Counter::default();
        registry.register("replays", "Transactions answered with their stored decision", replays.clone());
        let rule_latency: HistogramFamily = Family::new_with_constructor(rule_call_histogram);
        registry.register("rule_call_duration_seconds", "Wall time of one rule call", rule_latency.clone());
        let rule_fuel = Family::<RuleLabel, Counter>::default();
        registry.register("rule_fuel", "Fuel used by a rule's calls", rule_fuel.clone());
        let rule_failures = Family::<FailureLabel, Counter>::default();
        registry.register(
            "rule_failures",
            "Rule calls that failed, by kind (trap, fuel, deadline, memory, invalid-output)",
            rule_failures.clone(),
        );
        let reloads = Counter::default();
        registry.register("reloads", "Rule-set versions that went live by reload", reloads.clone());
        let reload_failures = Counter::default();
        registry.register(
            "reload_failures",
            "Reloads refused (the previous version kept serving)",
            reload_failures.clone(),
        );
        let rollbacks = Counter::default();
        registry.register("rollbacks", "Rollbacks to the previous rule-set version", rollbacks.clone());
        let commit_latency = Histogram::new(exponential_buckets(50e-6, 2.0, 16));
        registry.register(
            "ledger_commit_duration_seconds",
            "Duration of one durable group commit (write + fsync)",
            commit_latency.clone(),
        );
        let commit_changes = Counter::default();
        registry.register("ledger_committed_changes", "Ledger changes made durable", commit_changes.clone());
        let refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "requests_refused",
            "HTTP requests refused before any work (overloaded, timeout, too large)",
            refused.clone(),
        );
        let shadow = Family::<AgreementLabel, Counter>::default();
        registry.register(
            "shadow_decisions",
            "Decisions of the shadow candidate beside the live ones, by (live, candidate) outcome",
            shadow.clone(),
        );
        let rollout_decisions = Family::<ArmLabel, Counter>::default();
        registry.register(
            "rollout_decisions",
            "New decisions under a canary rollout, by the arm that decided (live, candidate)",
            rollout_decisions.clone(),
        );
        let rollout_transitions = Family::<EventLabel, Counter>::default();
        registry.register(
            "rollout_transitions",
            "Canary rollout transitions, by event (start, share, promote, abort, auto-abort, rollback)",
            rollout_transitions.clone(),
        );
        Metrics {
            shadow,
            rollout_decisions,
            rollout_transitions,
            registry,
            decisions,
            replays,
            rule_latency,
            rule_fuel,
            rule_failures,
            reloads,
            reload_failures,
            rollbacks,
            commit_latency,
            commit_changes,
            refused,
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts a bad input line (an error record that never reached the pipeline).
    pub fn bad_input(&self) {
        self.decisions.get_or_create(&OutcomeLabel { outcome: "error" }).inc();
    }

    /// Counts a reload event.
    pub fn reload_event(&self, event: &ReloadEvent) {
        match event {
            ReloadEvent::Swapped { .. } => self.reloads.inc(),
            ReloadEvent::Refused { .. } => self.reload_failures.inc(),
            ReloadEvent::RolledBack { .. } => self.rollbacks.inc(),
        };
    }

    /// Counts a rollout transition.
    pub fn rollout_transition(&self, t: &rulehost_engine::rollout::Transition) {
        self.rollout_transitions.get_or_create(&EventLabel { event: t.event.as_str() }).inc();
    }

    /// Records a durable ledger commit.
    pub fn ledger_commit(&self, duration: Duration, changes: usize) {
        self.commit_latency.observe(duration.as_secs_f64());
        self.commit_changes.inc_by(changes as u64);
    }

    /// Counts a request refused before any work, by reason.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A hook for [`rulehost_ledger::StoreOptions::on_commit`].
    pub fn commit_hook(self: &Arc<Self>) -> rulehost_ledger::durable::CommitHook {
        let metrics = self.clone();
        Arc::new(move |duration, changes| metrics.ledger_commit(duration, changes))
    }
}

impl Observer for Metrics {
    fn rule_call(&self, rule: &LoadedRule, elapsed: Duration, outcome: &CallOutcome) {
        let label = RuleLabel { rule: rule.name.to_string() };
        self.rule_latency.get_or_create(&label).observe(elapsed.as_secs_f64());
        self.rule_fuel.get_or_create(&label).inc_by(outcome.fuel);
        if let Err(f) = &outcome.result {
            self.rule_failures.get_or_create(&FailureLabel { rule: label.rule, kind: f.kind.as_str() }).inc();
        }
    }

    fn decided(&self, record: &Record) {
        if let Record::Decision { replayed: true, .. } = record {
            self.replays.inc();
        }
        self.decisions.get_or_create(&OutcomeLabel { outcome: record.outcome().as_str() }).inc();
    }

    fn rollout_decided(&self, tag: &rulehost_engine::rollout::RolloutTag) {
        self.rollout_decisions.get_or_create(&ArmLabel { arm: tag.arm.as_str() }).inc();
    }

    fn shadow_decided(&self, live: &rulehost_core::decision::Decision, candidate: &rulehost_core::decision::Decision) {
        self.shadow
            .get_or_create(&AgreementLabel { live: live.outcome.as_str(), candidate: candidate.outcome.as_str() })
            .inc();
    }
}
