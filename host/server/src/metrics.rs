//! Prometheus metrics of a running host (`GET /metrics`), kept with the
//! `prometheus-client` crate: decisions by outcome, per-rule call latency,
//! fuel and failures by kind, reloads, ledger commit latency, requests
//! refused for overload, and on a ledger several hosts share, the
//! partitions this host owns and its decisions per partition.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    partition: u16,
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
    /// Whether the ledger is shared (partition metrics are kept).
    partitioned: std::sync::atomic::AtomicBool,
    partition_owned: Family<PartitionLabel, Gauge>,
    partition_decisions: Family<PartitionLabel, Counter>,
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
        let metrics = Metrics {
            decisions: Family::default(),
            replays: Counter::default(),
            rule_latency: Family::new_with_constructor(rule_call_histogram),
            rule_fuel: Family::default(),
            rule_failures: Family::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            rollbacks: Counter::default(),
            commit_latency: Histogram::new(exponential_buckets(50e-6, 2.0, 16)),
            commit_changes: Counter::default(),
            refused: Family::default(),
            shadow: Family::default(),
            rollout_decisions: Family::default(),
            rollout_transitions: Family::default(),
            partitioned: std::sync::atomic::AtomicBool::new(false),
            partition_owned: Family::default(),
            partition_decisions: Family::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register("decisions", "Transactions decided, by outcome (error: bad input)", m.decisions.clone());
        registry.register("replays", "Transactions answered with their stored decision", m.replays.clone());
        registry.register("rule_call_duration_seconds", "Wall time of one rule call", m.rule_latency.clone());
        registry.register("rule_fuel", "Fuel used by a rule's calls", m.rule_fuel.clone());
        registry.register(
            "rule_failures",
            "Rule calls that failed, by kind (trap, fuel, deadline, memory, invalid-output)",
            m.rule_failures.clone(),
        );
        registry.register("reloads", "Rule-set versions that went live by reload", m.reloads.clone());
        registry.register(
            "reload_failures",
            "Reloads refused (the previous version kept serving)",
            m.reload_failures.clone(),
        );
        registry.register("rollbacks", "Rollbacks to the previous rule-set version", m.rollbacks.clone());
        registry.register(
            "ledger_commit_duration_seconds",
            "Duration of one durable group commit (write + fsync)",
            m.commit_latency.clone(),
        );
        registry.register("ledger_committed_changes", "Ledger changes made durable", m.commit_changes.clone());
        registry.register(
            "requests_refused",
            "HTTP requests refused before any work (overloaded, timeout, too large)",
            m.refused.clone(),
        );
        registry.register(
            "shadow_decisions",
            "Decisions of the shadow candidate beside the live ones, by (live, candidate) outcome",
            m.shadow.clone(),
        );
        registry.register(
            "rollout_decisions",
            "New decisions under a canary rollout, by the arm that decided (live, candidate)",
            m.rollout_decisions.clone(),
        );
        registry.register(
            "rollout_transitions",
            "Canary rollout transitions, by event (start, share, promote, abort, auto-abort, rollback)",
            m.rollout_transitions.clone(),
        );
        registry.register(
            "partition_owned",
            "On a shared ledger: 1 for each partition of source accounts this host decides now, 0 for the others",
            m.partition_owned.clone(),
        );
        registry.register(
            "partition_decisions",
            "On a shared ledger: transactions answered, by the partition of their source account",
            m.partition_decisions.clone(),
        );
        Metrics { registry, ..metrics }
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

    /// Whether the ledger is shared (partition metrics are kept).
    pub fn is_partitioned(&self) -> bool {
        self.partitioned.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records which partitions this host owns (`None`: the ledger is not
    /// shared, and no partition metrics are kept).
    pub fn partitions_owned(&self, owned: Option<&[u16]>) {
        let Some(owned) = owned else { return };
        self.partitioned.store(true, std::sync::atomic::Ordering::Relaxed);
        for partition in 0..rulehost_core::partition::PARTITIONS {
            let gauge = self.partition_owned.get_or_create(&PartitionLabel { partition });
            gauge.set(i64::from(owned.contains(&partition)));
        }
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

    fn decided(&self, tx: &rulehost_core::model::Transaction, record: &Record) {
        if let Record::Decision { replayed: true, .. } = record {
            self.replays.inc();
        }
        if self.partitioned.load(std::sync::atomic::Ordering::Relaxed) {
            let partition = rulehost_core::partition::partition(&tx.source);
            self.partition_decisions.get_or_create(&PartitionLabel { partition }).inc();
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
