//! Decision records and error records, and their exact JSON shape
//! (PRODUCT.md "Data formats"). Key order is fixed by field order here.

use std::sync::Arc;

use serde::Serialize;

mod json;

use crate::input::InputError;
use crate::manifest::OnError;
use crate::rule::{FailureKind, LogLevel, LogLine};

/// The outcome of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Posted.
    Approve,
    /// Held for an operator.
    Review,
    /// Declined by risk.
    Decline,
    /// Rejected by a pre-check, validation, a failing rule, or funds.
    Reject,
    /// Bad input (error records only).
    Error,
}

impl Outcome {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approve => "approve",
            Outcome::Review => "review",
            Outcome::Decline => "decline",
            Outcome::Reject => "reject",
            Outcome::Error => "error",
        }
    }
}

/// What the ledger did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerEffect {
    /// A balanced transfer was posted.
    Posted,
    /// A pending hold was placed.
    Held,
    /// Nothing.
    None,
}

impl LedgerEffect {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerEffect::Posted => "posted",
            LedgerEffect::Held => "held",
            LedgerEffect::None => "none",
        }
    }
}

/// What one rule did, for the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleResult {
    /// Validation passed.
    Accept,
    /// Validation rejected.
    Reject {
        /// The code.
        code: String,
        /// The message.
        message: String,
    },
    /// A risk score.
    Score {
        /// 0..=1000.
        score: u32,
        /// Reasons.
        reasons: Vec<String>,
    },
    /// The call failed; `on_error` applied.
    Failed {
        /// Trap, fuel, deadline, memory or invalid-output.
        kind: FailureKind,
        /// Details.
        message: String,
        /// The policy applied.
        on_error: OnError,
    },
}

/// One entry of the per-rule trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleTrace {
    /// Rule name.
    pub rule: Arc<str>,
    /// Module content hash.
    pub version: Arc<str>,
    /// What happened.
    pub result: RuleResult,
    /// Fuel used (deterministic).
    pub fuel: u64,
    /// Log lines the rule recorded.
    pub logs: Vec<LogLine>,
}

/// The decision for one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Transaction id.
    pub id: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Aggregated score, 0..=1000.
    pub score: u32,
    /// Reason codes, in manifest order, without duplicates.
    pub reasons: Vec<String>,
    /// Rule-set version (content hash) that made the decision.
    pub ruleset: Arc<str>,
    /// While a canary candidate is configured: which arm decided and why
    /// (`rollout` in the JSON, absent otherwise).
    pub rollout: Option<crate::rollout::RolloutTag>,
    /// Per-rule trace, in the order the rules ran.
    pub rules: Vec<RuleTrace>,
    /// What the ledger did.
    pub ledger: LedgerEffect,
    /// The decision's JSON, made once on first use and shared by the output
    /// and the ledger store (not part of equality).
    pub json: JsonCache,
}

/// A lazily made JSON text; clones start empty, and it never affects equality.
#[derive(Default)]
pub struct JsonCache(std::sync::OnceLock<Arc<str>>);

impl Clone for JsonCache {
    fn clone(&self) -> Self {
        JsonCache::default()
    }
}

impl PartialEq for JsonCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for JsonCache {}

impl std::fmt::Debug for JsonCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonCache")
    }
}

/// One output line: a decision (possibly replayed) or an error.
#[derive(Clone, Debug)]
pub enum Record {
    /// A decision made now, or a stored one replayed.
    Decision {
        /// 1-based input line.
        line: u64,
        /// The decision.
        decision: Arc<Decision>,
        /// True when an identical transaction was decided before.
        replayed: bool,
    },
    /// A bad input line.
    Error(InputError),
}

impl Record {
    /// The outcome, for summaries.
    pub fn outcome(&self) -> Outcome {
        match self {
            Record::Decision { decision, .. } => decision.outcome,
            Record::Error(_) => Outcome::Error,
        }
    }

    /// Appends the record's JSON and a newline to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let result = match self {
            Record::Decision { line, decision, replayed } => {
                // `{"line":N,` + the decision's own JSON (made once, shared
                // with the ledger store) + `,"replayed":true` when replayed:
                // the same bytes as serializing `DecisionJson` with both.
                let json = decision.json();
                out.extend_from_slice(b"{\"line\":");
                out.extend_from_slice(line.to_string().as_bytes());
                out.push(b',');
                out.extend_from_slice(&json.as_bytes()[1..json.len() - 1]);
                if *replayed {
                    out.extend_from_slice(b",\"replayed\":true");
                }
                out.push(b'}');
                Ok(())
            }
            Record::Error(e) => serde_json::to_writer(&mut *out, &ErrorJson::new(e)),
        };
        result.expect("serializing to a Vec cannot fail");
        out.push(b'\n');
    }

    /// The record as a JSON string (no newline).
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        self.write_json(&mut out);
        out.pop();
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

/// A decision's JSON; an output record puts `line` before it and
/// `replayed` after it (see `Record::write_json`). The shape as serde writes
/// it: `json.rs` writes the same bytes by hand, and the tests hold it to this.
#[cfg(test)]
#[derive(Serialize)]
struct DecisionJson<'a> {
    id: &'a str,
    outcome: Outcome,
    score: u32,
    reasons: &'a [String],
    ruleset: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<crate::rollout::RolloutTag>,
    rules: Vec<TraceJson<'a>>,
    ledger: LedgerEffect,
}

#[cfg(test)]
impl<'a> DecisionJson<'a> {
    fn new(d: &'a Decision) -> Self {
        DecisionJson {
            id: &d.id,
            outcome: d.outcome,
            score: d.score,
            reasons: &d.reasons,
            ruleset: &d.ruleset,
            rollout: d.rollout,
            rules: d.rules.iter().map(TraceJson::new).collect(),
            ledger: d.ledger,
        }
    }
}

impl Decision {
    /// The decision's JSON as stored and served: the output record without
    /// `line` and `replayed`. Made once, then shared.
    pub fn json(&self) -> &str {
        self.shared_json()
    }

    /// [`Decision::json`], as the shared text the ledger keeps.
    pub fn shared_json(&self) -> &Arc<str> {
        self.json.0.get_or_init(|| json::decision(self).into())
    }

    /// A decision read back from its stored JSON, with that JSON as its own
    /// (so a replay writes exactly the stored bytes).
    pub fn from_stored_json(text: &Arc<str>) -> Result<Decision, String> {
        let decision = Decision::from_json(text)?;
        let _ = decision.json.0.set(text.clone());
        Ok(decision)
    }

    /// [`Decision::json`], owned.
    pub fn to_json(&self) -> String {
        self.json().to_owned()
    }

    /// Reads back what [`Decision::to_json`] wrote.
    pub fn from_json(text: &str) -> Result<Decision, String> {
        let d: DecisionIn = serde_json::from_str(text).map_err(|e| format!("stored decision: {e}"))?;
        let rules = d.rules.into_iter().map(TraceIn::into_trace).collect::<Result<Vec<_>, String>>()?;
        Ok(Decision {
            id: d.id,
            outcome: d.outcome,
            score: d.score,
            reasons: d.reasons,
            ruleset: d.ruleset.into(),
            rollout: d.rollout,
            rules,
            ledger: d.ledger,
            json: JsonCache::default(),
        })
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionIn {
    id: String,
    outcome: Outcome,
    score: u32,
    reasons: Vec<String>,
    ruleset: String,
    #[serde(default)]
    rollout: Option<crate::rollout::RolloutTag>,
    rules: Vec<TraceIn>,
    ledger: LedgerEffect,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceIn {
    rule: String,
    version: String,
    result: String,
    score: Option<u32>,
    fuel: u64,
    reasons: Option<Vec<String>>,
    code: Option<String>,
    failure: Option<String>,
    on_error: Option<String>,
    message: Option<String>,
    #[serde(default)]
    logs: Vec<LogIn>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogIn {
    level: String,
    message: String,
}

impl TraceIn {
    fn into_trace(self) -> Result<RuleTrace, String> {
        let missing = |field: &str| format!("stored trace of {:?} lacks {field}", self.rule);
        let result = match self.result.as_str() {
            "accept" => RuleResult::Accept,
            "reject" => RuleResult::Reject {
                code: self.code.clone().ok_or_else(|| missing("code"))?,
                message: self.message.clone().ok_or_else(|| missing("message"))?,
            },
            "score" => RuleResult::Score {
                score: self.score.ok_or_else(|| missing("score"))?,
                reasons: self.reasons.clone().ok_or_else(|| missing("reasons"))?,
            },
            "failed" => {
                let failure = self.failure.as_deref().ok_or_else(|| missing("failure"))?;
                let on_error = self.on_error.as_deref().ok_or_else(|| missing("on_error"))?;
                RuleResult::Failed {
                    kind: FailureKind::ALL
                        .into_iter()
                        .find(|k| k.as_str() == failure)
                        .ok_or_else(|| format!("unknown failure kind {failure:?}"))?,
                    message: self.message.clone().ok_or_else(|| missing("message"))?,
                    on_error: [OnError::Review, OnError::Reject, OnError::Ignore]
                        .into_iter()
                        .find(|o| o.as_str() == on_error)
                        .ok_or_else(|| format!("unknown on_error {on_error:?}"))?,
                }
            }
            other => return Err(format!("unknown rule result {other:?}")),
        };
        let logs = self
            .logs
            .into_iter()
            .map(|l| {
                let level = LogLevel::parse(&l.level).ok_or_else(|| format!("unknown log level {:?}", l.level))?;
                Ok(LogLine { level, message: l.message })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(RuleTrace { rule: self.rule.into(), version: self.version.into(), result, fuel: self.fuel, logs })
    }
}

#[cfg(test)]
#[derive(Serialize)]
struct TraceJson<'a> {
    rule: &'a str,
    version: &'a str,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<u32>,
    fuel: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasons: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    logs: Vec<LogJson<'a>>,
}

#[cfg(test)]
#[derive(Serialize)]
struct LogJson<'a> {
    level: &'static str,
    message: &'a str,
}

#[cfg(test)]
impl<'a> TraceJson<'a> {
    fn new(t: &'a RuleTrace) -> Self {
        let mut j = TraceJson {
            rule: &t.rule,
            version: &t.version,
            result: "",
            score: None,
            fuel: t.fuel,
            reasons: None,
            code: None,
            failure: None,
            on_error: None,
            message: None,
            logs: t.logs.iter().map(|l| LogJson { level: l.level.as_str(), message: &l.message }).collect(),
        };
        match &t.result {
            RuleResult::Accept => j.result = "accept",
            RuleResult::Reject { code, message } => {
                j.result = "reject";
                j.code = Some(code);
                j.message = Some(message);
            }
            RuleResult::Score { score, reasons } => {
                j.result = "score";
                j.score = Some(*score);
                j.reasons = Some(reasons);
            }
            RuleResult::Failed { kind, message, on_error } => {
                j.result = "failed";
                j.failure = Some(kind.as_str());
                j.on_error = Some(on_error.as_str());
                j.message = Some(message);
            }
        }
        j
    }
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outcome: Outcome,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    field: Option<&'a str>,
    message: &'a str,
}

impl<'a> ErrorJson<'a> {
    fn new(e: &'a InputError) -> Self {
        ErrorJson {
            line: e.line,
            id: e.id.as_deref(),
            outcome: Outcome::Error,
            error: ErrorBody { code: e.code.as_str(), field: e.field.as_deref(), message: &e.message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::OnError;
    use crate::rule::{FailureKind, LogLevel, LogLine};

    fn trace(result: RuleResult, logs: Vec<LogLine>) -> RuleTrace {
        RuleTrace { rule: "geo\"x".into(), version: "0123abcd".into(), result, fuel: 4242, logs }
    }

    #[test]
    fn the_hand_written_json_is_what_serde_writes() {
        let results = [
            RuleResult::Accept,
            RuleResult::Reject { code: "SANCTIONED".into(), message: "country \u{1} \"KP\" \\ é".into() },
            RuleResult::Score { score: 200, reasons: vec!["A".into(), "B_2".into()] },
            RuleResult::Score { score: 0, reasons: vec![] },
            RuleResult::Failed {
                kind: FailureKind::Deadline,
                message: "deadline\nexceeded".into(),
                on_error: OnError::Review,
            },
        ];
        for (i, result) in results.into_iter().enumerate() {
            let logs =
                if i % 2 == 0 { vec![] } else { vec![LogLine { level: LogLevel::Warn, message: "tab\there".into() }] };
            let d = Decision {
                id: format!("tx-\"{i}\""),
                outcome: [Outcome::Approve, Outcome::Review, Outcome::Decline, Outcome::Reject][i % 4],
                score: i as u32 * 100,
                reasons: vec!["RULE_FAILED".into()],
                ruleset: "abc".into(),
                rollout: (i % 2 == 1).then_some(crate::rollout::RolloutTag {
                    arm: [crate::rollout::Arm::Live, crate::rollout::Arm::Candidate][i % 4 / 2],
                    bucket: i as u8,
                    share: 20,
                }),
                rules: vec![trace(result.clone(), logs.clone()), trace(RuleResult::Accept, vec![])],
                ledger: [LedgerEffect::Posted, LedgerEffect::Held, LedgerEffect::None][i % 3],
                json: JsonCache::default(),
            };
            let by_serde = serde_json::to_string(&DecisionJson::new(&d)).unwrap();
            assert_eq!(json::decision(&d), by_serde);
            assert_eq!(Decision::from_json(&by_serde).unwrap(), d);
        }
    }
}
