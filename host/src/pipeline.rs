//! The path of one transaction: native pre-checks, validation rules, risk
//! rules, weighted aggregation, the ledger step, and the decision record —
//! RULES.md "Order of evaluation and aggregation", top to bottom.

use std::sync::{Arc, Mutex, MutexGuard};

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::decision::{Decision, LedgerEffect, Outcome, Record, RuleResult, RuleTrace};
use crate::facts::{AccountFacts, Facts, HistoryQuery, HistoryStats};
use crate::input::{ErrorCode, InputError, ParsedTransaction, parse_transaction};
use crate::ledger::{Commit, Effect, Ledger, LedgerError};
use crate::manifest::{OnError, RuleKind};
use crate::model::Transaction;
use crate::ruleset::{LoadedRule, RuleSet};
use crate::sandbox::{CallContext, CallOutcome, Sandbox, TxSession, Verdict, WitTransaction};

/// Reason of a failed rule under `on_error = review|reject`.
pub const RULE_FAILED: &str = "RULE_FAILED";
/// Reason when funds do not cover an approve or review.
pub const INSUFFICIENT_FUNDS: &str = "INSUFFICIENT_FUNDS";
/// Pre-check: unknown source or destination.
pub const ACCOUNT_UNKNOWN: &str = "ACCOUNT_UNKNOWN";
/// Pre-check: source equals destination.
pub const SAME_ACCOUNT: &str = "SAME_ACCOUNT";
/// Pre-check: an account's currency differs from the transaction's.
pub const CURRENCY_MISMATCH: &str = "CURRENCY_MISMATCH";
/// Highest aggregated score.
pub const SCORE_MAX: u32 = 1000;

/// A ledger shared between the pipeline and the rule calls it makes.
pub type SharedLedger = Arc<Mutex<Box<dyn Ledger>>>;

/// Locks the ledger. A panic while holding the lock is a programmer error
/// (an invariant assertion); the state is not trusted afterwards, so this
/// propagates it.
pub fn lock(ledger: &SharedLedger) -> MutexGuard<'_, Box<dyn Ledger>> {
    ledger.lock().expect("ledger lock poisoned by an invariant failure")
}

/// Answers rule calls' `account` and `history` from the shared ledger.
struct LedgerFacts(SharedLedger);

impl Facts for LedgerFacts {
    fn account(&self, id: &str) -> Option<AccountFacts> {
        let ledger = lock(&self.0);
        let a = ledger.account(id)?;
        let balances = ledger.balances(id)?;
        Some(AccountFacts {
            id: a.id.clone(),
            currency: a.currency.clone(),
            country: a.country.clone(),
            opened_at: a.opened_at,
            status: a.status,
            available: balances.available,
        })
    }

    fn history(&self, query: &HistoryQuery<'_>) -> HistoryStats {
        lock(&self.0).history(query)
    }
}

/// Runs rule calls. The [`Sandbox`] is the production executor; the
/// benchmark supplies one that runs the same rule crates compiled natively,
/// as the reference limit.
pub trait RuleExecutor: Send + Sync {
    /// Starts the rule calls on one transaction (given also in WIT form).
    fn begin<'a>(&'a self, tx: &'a Transaction, wit: &'a WitTransaction) -> Box<dyn RuleCalls + 'a>;
}

/// The rule calls on one transaction.
pub trait RuleCalls {
    /// Calls `rule` with `ctx`.
    fn call(&mut self, rule: &LoadedRule, ctx: CallContext) -> CallOutcome;
}

impl RuleExecutor for Sandbox {
    fn begin<'a>(&'a self, _tx: &'a Transaction, wit: &'a WitTransaction) -> Box<dyn RuleCalls + 'a> {
        Box::new(self.session(wit))
    }
}

impl RuleCalls for TxSession<'_> {
    fn call(&mut self, rule: &LoadedRule, ctx: CallContext) -> CallOutcome {
        self.evaluate(&rule.compiled, rule.kind, ctx)
    }
}

/// Evaluates transactions against a rule set and records them in a ledger.
#[derive(Clone)]
pub struct Pipeline {
    executor: Arc<dyn RuleExecutor>,
    ledger: SharedLedger,
    facts: Arc<dyn Facts>,
}

impl Pipeline {
    /// A pipeline over `ledger`, running rules in `sandbox`.
    pub fn new(sandbox: Arc<Sandbox>, ledger: SharedLedger) -> Self {
        Self::with_executor(sandbox, ledger)
    }

    /// A pipeline over `ledger` with another rule executor.
    pub fn with_executor(executor: Arc<dyn RuleExecutor>, ledger: SharedLedger) -> Self {
        let facts = Arc::new(LedgerFacts(ledger.clone()));
        Pipeline { executor, ledger, facts }
    }

    /// The ledger.
    pub fn ledger(&self) -> &SharedLedger {
        &self.ledger
    }

    /// Decides one input line (1-based `line`, without its `\n`).
    pub fn decide_line(&self, ruleset: &RuleSet, line: u64, text: &str) -> Record {
        match parse_transaction(line, text) {
            Ok(parsed) => self.decide(ruleset, line, &parsed),
            Err(e) => Record::Error(e),
        }
    }

    /// Decides one parsed transaction.
    pub fn decide(&self, ruleset: &RuleSet, line: u64, parsed: &ParsedTransaction) -> Record {
        let tx = &parsed.tx;
        {
            let mut ledger = lock(&self.ledger);
            if let Some(record) = replay(&**ledger, line, parsed) {
                return record;
            }
            if let Some(code) = precheck(&**ledger, tx) {
                let decision = Arc::new(Decision {
                    id: tx.id.clone(),
                    outcome: Outcome::Reject,
                    score: 0,
                    reasons: vec![code.to_owned()],
                    ruleset: ruleset.version.as_str().into(),
                    rules: Vec::new(),
                    ledger: LedgerEffect::None,
                });
                let commit = Commit {
                    tx,
                    fingerprint: parsed.fingerprint,
                    decision: decision.clone(),
                    effect: Effect::Nothing,
                    count_in_history: false,
                };
                return finish(&mut **ledger, line, parsed, commit);
            }
        }

        let evaluation = self.evaluate(ruleset, tx);

        let mut ledger = lock(&self.ledger);
        let (mut outcome, mut reasons) = (evaluation.outcome, evaluation.reasons);
        let mut effect = Effect::Nothing;
        if matches!(outcome, Outcome::Approve | Outcome::Review) {
            if ledger.has_funds(&tx.source, tx.amount) {
                effect = if outcome == Outcome::Approve { Effect::Post } else { Effect::Hold };
            } else {
                outcome = Outcome::Reject;
                reasons = vec![INSUFFICIENT_FUNDS.to_owned()];
            }
        }
        let decision = Arc::new(Decision {
            id: tx.id.clone(),
            outcome,
            score: evaluation.score,
            reasons,
            ruleset: ruleset.version.as_str().into(),
            rules: evaluation.traces,
            ledger: match effect {
                Effect::Post => LedgerEffect::Posted,
                Effect::Hold => LedgerEffect::Held,
                Effect::Nothing => LedgerEffect::None,
            },
        });
        let commit =
            Commit { tx, fingerprint: parsed.fingerprint, decision, effect, count_in_history: evaluation.reached_risk };
        finish(&mut **ledger, line, parsed, commit)
    }

    fn context(&self, rule: &LoadedRule, ruleset: &RuleSet) -> CallContext {
        CallContext {
            params: rule.params.clone(),
            lists: ruleset.lists.clone(),
            declared_lists: rule.lists.clone(),
            history_window_seconds_max: rule.history_window_seconds_max,
            facts: self.facts.clone(),
            budget: rule.budget,
        }
    }

    /// Runs validation then risk rules and aggregates (steps 2–4).
    fn evaluate(&self, ruleset: &RuleSet, tx: &Transaction) -> Evaluation {
        let wit_tx = WitTransaction::new(tx);
        let mut calls = self.executor.begin(tx, &wit_tx);
        let mut traces = Vec::with_capacity(ruleset.rules.len());
        let mut reasons = Reasons::default();
        let mut forced_review = false;
        let trace = |rule: &LoadedRule, result: RuleResult, out: &CallOutcome| RuleTrace {
            rule: rule.name.as_str().into(),
            version: rule.version.as_str().into(),
            result,
            fuel: out.fuel,
            logs: out.logs.clone(),
        };

        for rule in ruleset.rules.iter().filter(|r| r.kind == RuleKind::Validation) {
            let out = calls.call(rule, self.context(rule, ruleset));
            match &out.result {
                Ok(Verdict::Reject { code, message }) => {
                    traces.push(trace(rule, RuleResult::Reject { code: code.clone(), message: message.clone() }, &out));
                    return Evaluation::rejected(code.clone(), 0, traces, false);
                }
                Ok(_) => traces.push(trace(rule, RuleResult::Accept, &out)),
                Err(f) => {
                    traces.push(trace(
                        rule,
                        RuleResult::Failed { kind: f.kind, message: f.message.clone(), on_error: rule.on_error },
                        &out,
                    ));
                    match rule.on_error {
                        OnError::Review => {
                            forced_review = true;
                            reasons.push(RULE_FAILED);
                        }
                        OnError::Reject => {
                            return Evaluation::rejected(RULE_FAILED.into(), 0, traces, false);
                        }
                        OnError::Ignore => {}
                    }
                }
            }
        }

        let mut total = Decimal::ZERO;
        for rule in ruleset.rules.iter().filter(|r| r.kind == RuleKind::Risk) {
            let out = calls.call(rule, self.context(rule, ruleset));
            match &out.result {
                Ok(Verdict::Score { score, reasons: rs }) => {
                    total += rule.weight * Decimal::from(*score);
                    if *score > 0 {
                        rs.iter().for_each(|r| reasons.push(r));
                    }
                    traces.push(trace(rule, RuleResult::Score { score: *score, reasons: rs.clone() }, &out));
                }
                Ok(_) => unreachable!("the sandbox checks risk rules return scores"),
                Err(f) => {
                    traces.push(trace(
                        rule,
                        RuleResult::Failed { kind: f.kind, message: f.message.clone(), on_error: rule.on_error },
                        &out,
                    ));
                    match rule.on_error {
                        OnError::Review => {
                            forced_review = true;
                            reasons.push(RULE_FAILED);
                        }
                        OnError::Reject => {
                            return Evaluation::rejected(RULE_FAILED.into(), clamp(total), traces, true);
                        }
                        OnError::Ignore => {}
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

struct Evaluation {
    outcome: Outcome,
    score: u32,
    reasons: Vec<String>,
    traces: Vec<RuleTrace>,
    reached_risk: bool,
}

impl Evaluation {
    fn rejected(code: String, score: u32, traces: Vec<RuleTrace>, reached_risk: bool) -> Self {
        Evaluation { outcome: Outcome::Reject, score, reasons: vec![code], traces, reached_risk }
    }
}

/// Step 1b: an id already decided is replayed (same content) or a conflict.
fn replay(ledger: &dyn Ledger, line: u64, parsed: &ParsedTransaction) -> Option<Record> {
    let stored = ledger.decision(&parsed.tx.id)?;
    Some(if stored.fingerprint == parsed.fingerprint {
        Record::Decision { line, decision: stored.decision.clone(), replayed: true }
    } else {
        Record::Error(InputError {
            line,
            id: Some(parsed.tx.id.clone()),
            code: ErrorCode::IdempotencyConflict,
            field: Some("id"),
            message: format!("transaction {:?} was already decided with different content", parsed.tx.id),
        })
    })
}

/// Step 1c: the native pre-checks, in order.
fn precheck(ledger: &dyn Ledger, tx: &Transaction) -> Option<&'static str> {
    let (Some(source), Some(destination)) = (ledger.account(&tx.source), ledger.account(&tx.destination)) else {
        return Some(ACCOUNT_UNKNOWN);
    };
    if tx.source == tx.destination {
        return Some(SAME_ACCOUNT);
    }
    if source.currency != tx.currency || destination.currency != tx.currency {
        return Some(CURRENCY_MISMATCH);
    }
    None
}

/// Commits and turns the result into the output record. A concurrent
/// decision of the same id (possible when callers race) becomes a replay
/// or conflict, exactly as if it had come first.
fn finish(ledger: &mut dyn Ledger, line: u64, parsed: &ParsedTransaction, commit: Commit<'_>) -> Record {
    let decision = commit.decision.clone();
    match ledger.commit(commit) {
        Ok(()) => Record::Decision { line, decision, replayed: false },
        Err(LedgerError::DuplicateDecision(_)) => {
            replay(ledger, line, parsed).expect("a duplicate has a stored decision")
        }
        Err(e) => panic!("ledger refused a checked commit: {e}"),
    }
}
