//! The end-of-run summary: counts per outcome, per reason, per error code,
//! rule failures, and throughput.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::decision::{Outcome, Record, RuleResult};

/// Totals of a run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Lines read.
    pub lines: u64,
    /// Records per outcome.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Decisions per reason code (fresh decisions only).
    pub reasons: BTreeMap<String, u64>,
    /// Error records per code.
    pub errors: BTreeMap<&'static str, u64>,
    /// Replayed decisions.
    pub replayed: u64,
    /// Rule failures per `rule:kind`.
    pub rule_failures: BTreeMap<String, u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Summary {
    /// Counts one record.
    pub fn add(&mut self, record: &Record) {
        self.lines += 1;
        *self.outcomes.entry(record.outcome().as_str()).or_default() += 1;
        match record {
            Record::Error(e) => *self.errors.entry(e.code.as_str()).or_default() += 1,
            Record::Decision { replayed: true, .. } => self.replayed += 1,
            Record::Decision { decision, .. } => {
                for r in &decision.reasons {
                    *self.reasons.entry(r.clone()).or_default() += 1;
                }
                for t in &decision.rules {
                    if let RuleResult::Failed { kind, .. } = &t.result {
                        *self.rule_failures.entry(format!("{}:{}", t.rule, kind.as_str())).or_default() += 1;
                    }
                }
            }
        }
    }

    /// Error records.
    pub fn error_count(&self) -> u64 {
        self.outcomes.get(Outcome::Error.as_str()).copied().unwrap_or(0)
    }

    /// Lines per second.
    pub fn throughput(&self) -> f64 {
        self.lines as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "lines: {}  ({:.3} s, {:.0} lines/s)", self.lines, self.elapsed.as_secs_f64(), self.throughput())?;
        write!(f, "outcomes:")?;
        for (k, v) in &self.outcomes {
            write!(f, "  {k} {v}")?;
        }
        writeln!(f, "  (replayed {})", self.replayed)?;
        if !self.reasons.is_empty() {
            write!(f, "reasons:")?;
            for (k, v) in &self.reasons {
                write!(f, "  {k} {v}")?;
            }
            writeln!(f)?;
        }
        if !self.errors.is_empty() {
            write!(f, "errors:")?;
            for (k, v) in &self.errors {
                write!(f, "  {k} {v}")?;
            }
            writeln!(f)?;
        }
        if !self.rule_failures.is_empty() {
            write!(f, "rule failures:")?;
            for (k, v) in &self.rule_failures {
                write!(f, "  {k} {v}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
