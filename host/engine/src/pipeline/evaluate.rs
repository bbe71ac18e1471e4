//! Steps 2–4 of one transaction: the validation rules, then the risk rules,
//! each rule's `on_error`, and the weighted aggregation into an outcome.

use std::sync::Arc;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::{Pipeline, RULE_FAILED, RuleCalls, SCORE_MAX};
use crate::ruleset::{LoadedRule, RuleSet};
use rulehost_core::decision::{Outcome, RuleResult, RuleTrace};
use rulehost_core::facts::Facts;
use rulehost_core::manifest::{OnError, RuleKind};
use rulehost_core::model::Transaction;
use rulehost_sandbox::{CallContext, CallOutcome, Failure, FailureKind, Verdict, check_verdict};

impl Pipeline {
    /// One rule call, timed for the observer and traced as a span. Every
    /// verdict meets the output contract here, whatever executor ran it
    /// (checked once: by the sandbox, or here for any other executor); one
    /// outside it becomes an `invalid-output` failure.
    fn call(&self, calls: &mut dyn RuleCalls, rule: &LoadedRule, ctx: CallContext) -> CallOutcome {
        let _span = tracing::debug_span!("rule", rule = %rule.name, version = %rule.version).entered();
        let mut out = match &self.observer {
            None => calls.call(rule, ctx),
            Some(o) => {
                let started = std::time::Instant::now();
                let out = calls.call(rule, ctx);
                o.rule_call(rule, started.elapsed(), &out);
                out
            }
        };
        if !self.executor.checks_output()
            && let Ok(verdict) = &out.result
            && let Err(failure) = check_verdict(rule.kind, verdict)
        {
            out.result = Err(failure);
        }
        out
    }

    fn context(rule: &LoadedRule, ruleset: &RuleSet, facts: &Arc<dyn Facts>) -> CallContext {
        CallContext {
            params: rule.params.clone(),
            lists: ruleset.lists.clone(),
            declared_lists: rule.lists.clone(),
            history_window_seconds_max: rule.history_window_seconds_max,
            facts: facts.clone(),
            budget: rule.budget,
        }
    }

    /// Runs validation then risk rules and aggregates (steps 2–4).
    pub(super) fn evaluate(&self, ruleset: &RuleSet, tx: &Transaction, facts: &Arc<dyn Facts>) -> Evaluation {
        let mut calls = self.executor.begin(tx);
        let mut traces = Vec::with_capacity(ruleset.rules.len());
        let mut reasons = Reasons::default();
        let mut forced_review = false;

        for rule in ruleset.rules.iter().filter(|r| r.kind == RuleKind::Validation) {
            let out = self.call(&mut *calls, rule, Self::context(rule, ruleset, facts));
            match &out.result {
                Ok(Verdict::Reject { code, message }) => {
                    traces.push(rule_trace(
                        rule,
                        RuleResult::Reject { code: code.clone(), message: message.clone() },
                        &out,
                    ));
                    return Evaluation::rejected(code.clone(), 0, traces, false);
                }
                Ok(Verdict::Accept) => traces.push(rule_trace(rule, RuleResult::Accept, &out)),
                // `call` turned a score from a validation rule into a failure.
                Ok(Verdict::Score { .. }) | Err(_) => {
                    if on_failure(rule, &failure_of(&out), &out, &mut traces, &mut reasons, &mut forced_review) {
                        return Evaluation::rejected(RULE_FAILED.into(), 0, traces, false);
                    }
                }
            }
        }

        let mut total = Decimal::ZERO;
        for rule in ruleset.rules.iter().filter(|r| r.kind == RuleKind::Risk) {
            let out = self.call(&mut *calls, rule, Self::context(rule, ruleset, facts));
            match &out.result {
                Ok(Verdict::Score { score, reasons: rs }) => {
                    // Weights are bounded at load (manifest::WEIGHT_MAX), so
                    // this cannot overflow; saturating keeps it so for any
                    // rule set built by hand. Every term is ≥ 0.
                    let term = rule.weight.checked_mul(Decimal::from(*score)).unwrap_or(Decimal::MAX);
                    total = total.checked_add(term).unwrap_or(Decimal::MAX);
                    if *score > 0 {
                        rs.iter().for_each(|r| reasons.push(r));
                    }
                    traces.push(rule_trace(rule, RuleResult::Score { score: *score, reasons: rs.clone() }, &out));
                }
                // `call` turned any other verdict of a risk rule into a failure.
                Ok(Verdict::Accept | Verdict::Reject { .. }) | Err(_) => {
                    if on_failure(rule, &failure_of(&out), &out, &mut traces, &mut reasons, &mut forced_review) {
                        return Evaluation::rejected(RULE_FAILED.into(), clamp(total), traces, true);
                    }
                }
            }
        }

        let score = clamp(total);
        let outcome = if score >= ruleset.decline_at {
            Outcome::Decline
        } else if score >= ruleset.review_at || forced_review {
            Outcome::Review
        } else {
            Outcome::Approve
        };
        Evaluation { outcome, score, reasons: reasons.0, traces, reached_risk: true }
    }
}

/// The failure of a call that did not give its kind's verdict.
fn failure_of(out: &CallOutcome) -> Failure {
    match &out.result {
        Err(f) => f.clone(),
        Ok(_) => {
            Failure { kind: FailureKind::InvalidOutput, message: "the verdict does not fit the rule's kind".into() }
        }
    }
}

/// The trace entry of one call.
fn rule_trace(rule: &LoadedRule, result: RuleResult, out: &CallOutcome) -> RuleTrace {
    RuleTrace { rule: rule.name.clone(), version: rule.version.clone(), result, fuel: out.fuel, logs: out.logs.clone() }
}

/// Records a failed call in the trace and applies the rule's `on_error`
/// (RULES.md step 4); true when the policy rejects the transaction.
fn on_failure(
    rule: &LoadedRule,
    failure: &Failure,
    out: &CallOutcome,
    traces: &mut Vec<RuleTrace>,
    reasons: &mut Reasons,
    forced_review: &mut bool,
) -> bool {
    let result = RuleResult::Failed { kind: failure.kind, message: failure.message.clone(), on_error: rule.on_error };
    traces.push(rule_trace(rule, result, out));
    match rule.on_error {
        OnError::Review => {
            *forced_review = true;
            reasons.push(RULE_FAILED);
            false
        }
        OnError::Reject => true,
        OnError::Ignore => false,
    }
}

/// `min(1000, floor(total))`.
fn clamp(total: Decimal) -> u32 {
    total.floor().to_u32().unwrap_or(SCORE_MAX).min(SCORE_MAX)
}

/// Reasons in first-seen order without duplicates.
#[derive(Default)]
struct Reasons(Vec<String>);

impl Reasons {
    fn push(&mut self, r: &str) {
        if !self.0.iter().any(|x| x == r) {
            self.0.push(r.to_owned());
        }
    }
}

/// What the rules made of a transaction, before the ledger step.
pub(super) struct Evaluation {
    pub(super) outcome: Outcome,
    pub(super) score: u32,
    pub(super) reasons: Vec<String>,
    pub(super) traces: Vec<RuleTrace>,
    pub(super) reached_risk: bool,
}

impl Evaluation {
    pub(super) fn rejected(code: String, score: u32, traces: Vec<RuleTrace>, reached_risk: bool) -> Self {
        Evaluation { outcome: Outcome::Reject, score, reasons: vec![code], traces, reached_risk }
    }
}
