//! The path of one transaction: native pre-checks, validation rules, risk
//! rules, weighted aggregation, the ledger step, and the decision record —
//! RULES.md "Order of evaluation and aggregation", top to bottom.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::rollout::{Choice, Rollout, RolloutTag};
use crate::ruleset::{LoadedRule, RuleSet};
use rulehost_core::decision::{Decision, LedgerEffect, Outcome, Record};
use rulehost_core::facts::Facts;
use rulehost_core::input::{ErrorCode, InputError, ParsedTransaction, parse_transaction};
use rulehost_core::model::Transaction;
use rulehost_ledger::{Admission, Commit, Effect, Ledger, LedgerError, RecordedFacts};
mod evaluate;
mod reads;
mod replay;
mod shadow;

use evaluate::Evaluation;

use reads::{ReadSet, RecordingFacts, Versions};

pub use replay::{ReplayError, Replayed};
pub use shadow::{SHADOW_PAIRS_KEPT_MAX, Shadow, ShadowPair};

use rulehost_sandbox::{CallContext, CallOutcome, Sandbox, TxSession};

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

/// A transaction evaluated ahead of its turn.
pub struct Speculation {
    outcome: Speculated,
    /// Who the canary rollout chose to decide it (none without a rollout).
    choice: Option<Choice>,
}

enum Speculated {
    /// A pre-check rejected it (accounts are static, so this cannot go stale).
    Prechecked(&'static str),
    /// Rules ran against the ledger as of commit `start` (and the shadow
    /// candidate's beside them, on the same reads).
    Evaluated { evaluation: Evaluation, shadow: Option<(Arc<RuleSet>, Evaluation)>, reads: ReadSet, start: u64 },
}

/// Runs rule calls. The [`Sandbox`] is the production executor; the
/// benchmark supplies one that runs the same rule crates compiled natively,
/// as the reference limit.
pub trait RuleExecutor: Send + Sync {
    /// Starts the rule calls on one transaction.
    fn begin<'a>(&'a self, tx: &'a Transaction) -> Box<dyn RuleCalls + 'a>;

    /// Whether every verdict it returns already passed
    /// `sandbox::check_verdict` (the sandbox checks before lifting); the
    /// pipeline checks the verdicts of any other executor itself.
    fn checks_output(&self) -> bool {
        false
    }
}

/// The rule calls on one transaction.
pub trait RuleCalls {
    /// Calls `rule` with `ctx`.
    fn call(&mut self, rule: &LoadedRule, ctx: CallContext) -> CallOutcome;
}

impl RuleExecutor for Sandbox {
    fn begin<'a>(&'a self, tx: &'a Transaction) -> Box<dyn RuleCalls + 'a> {
        Box::new(self.session(tx))
    }

    fn checks_output(&self) -> bool {
        true
    }
}

impl RuleCalls for TxSession<'_> {
    fn call(&mut self, rule: &LoadedRule, ctx: CallContext) -> CallOutcome {
        self.evaluate(&rule.compiled, rule.kind, ctx)
    }
}

/// Sees every rule call and every committed decision (metrics).
pub trait Observer: Send + Sync {
    /// A rule call ended after `elapsed`.
    fn rule_call(&self, rule: &LoadedRule, elapsed: std::time::Duration, outcome: &CallOutcome);
    /// Transaction `tx` was decided (or replayed, or conflicted).
    fn decided(&self, tx: &Transaction, record: &Record);
    /// The shadow candidate decided beside a new live decision.
    fn shadow_decided(&self, _live: &Decision, _candidate: &Decision) {}
    /// A new decision was made by the arm of a canary rollout in `tag`.
    fn rollout_decided(&self, _tag: &RolloutTag) {}
}

/// Evaluates transactions against a rule set and records them in a ledger.
#[derive(Clone)]
pub struct Pipeline {
    executor: Arc<dyn RuleExecutor>,
    ledger: SharedLedger,
    versions: Arc<Mutex<Versions>>,
    observer: Option<Arc<dyn Observer>>,
    shadow: Option<Arc<Shadow>>,
    rollout: Option<Arc<Rollout>>,
}

impl Pipeline {
    /// A pipeline over `ledger`, running rules in `sandbox`.
    pub fn new(sandbox: Arc<Sandbox>, ledger: SharedLedger) -> Self {
        Self::with_executor(sandbox, ledger)
    }

    /// A pipeline over `ledger` with another rule executor.
    pub fn with_executor(executor: Arc<dyn RuleExecutor>, ledger: SharedLedger) -> Self {
        Pipeline { executor, ledger, versions: Arc::default(), observer: None, shadow: None, rollout: None }
    }

    /// The same pipeline under a canary rollout: the candidate decides the
    /// share of transactions the rollout gives it, the live rule set passed
    /// to each call the rest (see [`Rollout`]).
    pub fn with_rollout(mut self, rollout: Arc<Rollout>) -> Self {
        self.rollout = Some(rollout);
        self
    }

    /// The canary rollout, if any.
    pub fn rollout(&self) -> Option<&Arc<Rollout>> {
        self.rollout.as_ref()
    }

    /// Who decides `tx` under the rollout (`None` without one); the
    /// source's bucket is hashed once per transaction (`known` carries it).
    fn choose(&self, tx: &Transaction, known: Option<&Choice>) -> Option<Choice> {
        let rollout = self.rollout.as_ref()?;
        let bucket = known.map_or_else(|| crate::rollout::bucket(&tx.source), |c| c.tag.bucket);
        rollout.choose(bucket)
    }

    /// The same pipeline, reporting rule calls and decisions to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
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
        let speculation = self.speculate(ruleset, parsed);
        self.commit(ruleset, line, parsed, speculation)
    }

    /// Decides a run of lines, in order, evaluating up to `window` of them at
    /// once on `pool` and committing them one by one in input order. An
    /// evaluation that read an account or history a transaction before it
    /// changed is redone at its turn, so the records equal deciding the lines
    /// one by one.
    pub fn decide_many(
        &self,
        ruleset: &RuleSet,
        lines: &[(u64, Result<ParsedTransaction, InputError>)],
        pool: &rayon::ThreadPool,
        window: usize,
    ) -> Vec<Record> {
        use rayon::prelude::*;
        let mut records = Vec::with_capacity(lines.len());
        if pool.current_num_threads() <= 1 {
            // One evaluating thread: nothing to overlap, so decide each line
            // in turn on this thread (no hand-offs, nothing evaluated twice).
            for (line, parsed) in lines {
                records.push(match parsed {
                    Ok(p) => self.decide(ruleset, *line, p),
                    Err(e) => Record::Error(e.clone()),
                });
            }
            return records;
        }
        // Commits of one window overlap the evaluation of the next: while
        // one thread commits window k in order, the others evaluate window
        // k + 1 (whose reads a commit of window k makes stale are evaluated
        // again at their turn).
        let speculate = |chunk: &[(u64, Result<ParsedTransaction, InputError>)]| -> Vec<Option<Speculation>> {
            chunk.par_iter().map(|(_, parsed)| parsed.as_ref().ok().map(|p| self.speculate(ruleset, p))).collect()
        };
        let commit = |chunk: &[(u64, Result<ParsedTransaction, InputError>)],
                      speculations: Vec<Option<Speculation>>| {
            let mut done = Vec::with_capacity(chunk.len());
            let speculations = speculations.into_iter().chain(std::iter::repeat_with(|| None));
            for ((line, parsed), speculation) in chunk.iter().zip(speculations) {
                done.push(match (parsed, speculation) {
                    (Ok(p), Some(s)) => self.commit(ruleset, *line, p, s),
                    (Ok(p), None) => self.decide(ruleset, *line, p),
                    (Err(e), _) => Record::Error(e.clone()),
                });
            }
            done
        };
        let chunks: Vec<_> = lines.chunks(window.max(1)).collect();
        pool.install(|| {
            let mut next = chunks.first().map(|c| speculate(c));
            for (i, chunk) in chunks.iter().enumerate() {
                let speculations = next.take().unwrap_or_default();
                match chunks.get(i + 1) {
                    Some(following) => {
                        let (done, ahead) = rayon::join(|| commit(chunk, speculations), || speculate(following));
                        records.extend(done);
                        next = Some(ahead);
                    }
                    None => records.extend(commit(chunk, speculations)),
                }
            }
        });
        records
    }

    /// Runs the pre-checks and the rules against the ledger as it is now,
    /// without committing anything (steps 1c–4).
    pub fn speculate(&self, ruleset: &RuleSet, parsed: &ParsedTransaction) -> Speculation {
        let tx = &parsed.tx;
        let choice = self.choose(tx, None);
        let ruleset = Choice::rules(choice.as_ref(), ruleset);
        let _span = tracing::debug_span!("transaction", id = %tx.id, ruleset = %ruleset.version).entered();
        if let Some(code) = precheck(&**lock(&self.ledger), tx) {
            return Speculation { outcome: Speculated::Prechecked(code), choice };
        }
        let start = self.versions.lock().expect("versions lock").seq;
        let facts = Arc::new(RecordingFacts { ledger: self.ledger.clone(), reads: Mutex::default() });
        let shared: Arc<dyn Facts> = facts.clone();
        let evaluation = self.evaluate(ruleset, tx, &shared);
        let shadow = self.shadow.as_ref().map(|s| {
            let candidate = s.candidate.current();
            let evaluation = self.evaluate(&candidate, tx, &shared);
            (candidate, evaluation)
        });
        let reads = std::mem::take(&mut *facts.reads());
        Speculation { outcome: Speculated::Evaluated { evaluation, shadow, reads, start }, choice }
    }

    /// Commits a speculation in its turn (steps 1b and 5): replays and
    /// conflicts, the funds check, the ledger effect, the stored decision.
    /// A stale speculation is evaluated again first.
    pub fn commit(&self, ruleset: &RuleSet, line: u64, parsed: &ParsedTransaction, speculation: Speculation) -> Record {
        let tx = &parsed.tx;
        let mut speculation = speculation;
        loop {
            let mut ledger = lock(&self.ledger);
            if let Some(record) = replay(&**ledger, line, parsed) {
                drop(ledger);
                self.observe(tx, &record);
                return record;
            }
            let mut versions = self.versions.lock().expect("versions lock");
            // Who decides now: a share or candidate changed since the
            // speculation means it ran the wrong rules, so it runs again.
            let choice = self.choose(tx, speculation.choice.as_ref());
            let same_rules = Choice::same_rules(choice.as_ref(), speculation.choice.as_ref());
            let deciding = Choice::rules(choice.as_ref(), ruleset);
            let (evaluation, counted, shadow, recorded) = match speculation.outcome {
                Speculated::Prechecked(code) => {
                    let shadow = self
                        .shadow
                        .as_ref()
                        .map(|s| (s.candidate.current(), Evaluation::rejected(code.to_owned(), 0, Vec::new(), false)));
                    (Evaluation::rejected(code.to_owned(), 0, Vec::new(), false), false, shadow, Vec::new())
                }
                Speculated::Evaluated { evaluation, shadow, reads, start } => {
                    if !same_rules || !versions.unchanged_since(start, &reads) {
                        drop(versions);
                        drop(ledger);
                        speculation = self.speculate(ruleset, parsed);
                        continue;
                    }
                    let counted = evaluation.reached_risk;
                    (evaluation, counted, shadow, reads.recorded)
                }
            };
            // The candidate's decision, on the state the live one saw (before
            // the live effect is applied); it posts nothing.
            let shadow = shadow.map(|(candidate, e)| {
                let wanted = wanted_effect(e.outcome);
                let admission = match wanted {
                    Effect::Nothing => Admission::NotAsked,
                    w => match ledger.admit(&tx.source, &tx.destination, tx.amount, w) {
                        Ok(()) => Admission::Admitted,
                        Err(refusal) => Admission::Refused(refusal),
                    },
                };
                decision_of(tx, &candidate.version, None, e, admission)
            });
            if let Err(e) = ledger.keep_ruleset(&deciding.archive) {
                tracing::warn!(error = %e, ruleset = %deciding.version, "the rule set's files could not be kept");
            }
            let tag = choice.as_ref().map(|c| c.tag);
            let version = deciding.version.clone();
            let commit = Commit {
                tx,
                fingerprint: parsed.fingerprint,
                extra: parsed.extra.as_deref(),
                wanted: wanted_effect(evaluation.outcome),
                count_in_history: counted,
                facts: RecordedFacts::new(recorded),
                decide: Box::new(move |admission| decision_of(tx, &version, tag, evaluation, admission)),
            };
            let (record, effect) = finish(&mut **ledger, line, parsed, commit);
            if let (Record::Decision { replayed: false, decision: live, .. }, Some(effect)) = (&record, effect) {
                let live = live.clone();
                versions.record(tx, effect, counted);
                if let (Some(rollout), Some(choice)) = (&self.rollout, &choice) {
                    rollout.decided(choice, &live);
                    if let Some(o) = &self.observer {
                        o.rollout_decided(&choice.tag);
                    }
                }
                if let (Some(s), Some(candidate)) = (&self.shadow, shadow) {
                    if let Some(o) = &self.observer {
                        o.shadow_decided(&live, &candidate);
                    }
                    s.record(ShadowPair { line, currency: tx.currency.clone(), amount: tx.amount, live, candidate });
                }
            }
            drop(versions);
            drop(ledger);
            self.observe(tx, &record);
            return record;
        }
    }

    fn observe(&self, tx: &Transaction, record: &Record) {
        if let Some(o) = &self.observer {
            o.decided(tx, record);
        }
    }
}

/// The ledger effect an outcome asks for: approve posts, review holds.
fn wanted_effect(outcome: Outcome) -> Effect {
    match outcome {
        Outcome::Approve => Effect::Post,
        Outcome::Review => Effect::Hold,
        _ => Effect::Nothing,
    }
}

/// The decision of an evaluation given the funds check's answer (step 5).
fn decision_of(
    tx: &Transaction,
    version: &Arc<str>,
    rollout: Option<RolloutTag>,
    evaluation: Evaluation,
    admission: Admission,
) -> Arc<Decision> {
    let (mut outcome, mut reasons) = (evaluation.outcome, evaluation.reasons);
    let mut effect = Effect::Nothing;
    match admission {
        Admission::Admitted => effect = wanted_effect(outcome),
        Admission::Refused(refusal) => {
            outcome = Outcome::Reject;
            reasons = vec![refusal.code().to_owned()];
        }
        Admission::NotAsked => {}
    }
    Arc::new(Decision {
        id: tx.id.clone(),
        outcome,
        score: evaluation.score,
        reasons,
        ruleset: version.clone(),
        rollout,
        rules: evaluation.traces,
        ledger: match effect {
            Effect::Post => LedgerEffect::Posted,
            Effect::Hold => LedgerEffect::Held,
            Effect::Nothing => LedgerEffect::None,
        },
        json: Default::default(),
    })
}

/// Step 1b: an id already decided is replayed (same content) or a conflict.
fn replay(ledger: &dyn Ledger, line: u64, parsed: &ParsedTransaction) -> Option<Record> {
    let conflict = |message: String| {
        Record::Error(InputError {
            line,
            id: Some(parsed.tx.id.clone()),
            code: ErrorCode::IdempotencyConflict,
            field: Some("id".into()),
            message,
        })
    };
    match ledger.decision(&parsed.tx.id) {
        Ok(None) => None,
        Ok(Some(stored)) if stored.fingerprint == parsed.fingerprint => {
            Some(Record::Decision { line, decision: stored.decision, replayed: true })
        }
        Ok(Some(_)) => {
            Some(conflict(format!("transaction {:?} was already decided with different content", parsed.tx.id)))
        }
        // Not decided again (nothing may post twice), and said plainly.
        Err(e) => Some(conflict(format!(
            "transaction {:?} may have been decided before, but its stored decision cannot be read: {e}",
            parsed.tx.id
        ))),
    }
}

/// Step 1c: the native pre-checks, in order.
fn precheck(ledger: &dyn Ledger, tx: &Transaction) -> Option<&'static str> {
    precheck_with(|id| ledger.account(id), tx)
}

/// [`precheck`] with accounts from `account`.
fn precheck_with<'a>(
    account: impl Fn(&str) -> Option<&'a rulehost_core::model::Account>,
    tx: &Transaction,
) -> Option<&'static str> {
    let (Some(source), Some(destination)) = (account(&tx.source), account(&tx.destination)) else {
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

/// Commits and turns the result into the output record (with the effect
/// applied, for a new decision). A concurrent decision of the same id
/// (possible when callers race) becomes a replay or conflict, exactly as if
/// it had come first; a ledger that cannot commit is an error record naming
/// why (nothing was decided).
fn finish(
    ledger: &mut dyn Ledger,
    line: u64,
    parsed: &ParsedTransaction,
    commit: Commit<'_>,
) -> (Record, Option<Effect>) {
    match ledger.commit(commit) {
        Ok(c) => (Record::Decision { line, decision: c.decision, replayed: false }, Some(c.effect)),
        Err(LedgerError::DuplicateDecision(_)) => match replay(ledger, line, parsed) {
            Some(record) => (record, None),
            None => (unavailable(line, parsed, "the ledger reported a duplicate it cannot show"), None),
        },
        Err(e @ LedgerError::NotOwner { .. }) => (
            Record::Error(InputError {
                line,
                id: Some(parsed.tx.id.clone()),
                code: ErrorCode::PartitionNotOwned,
                field: Some("source".into()),
                message: format!("transaction {:?} was not decided here: {e}", parsed.tx.id),
            }),
            None,
        ),
        Err(e) => (unavailable(line, parsed, &e.to_string()), None),
    }
}

/// The error record of a transaction the ledger could not commit.
fn unavailable(line: u64, parsed: &ParsedTransaction, why: &str) -> Record {
    Record::Error(InputError {
        line,
        id: Some(parsed.tx.id.clone()),
        code: ErrorCode::LedgerUnavailable,
        field: None,
        message: format!("transaction {:?} was not decided: the ledger could not commit it: {why}", parsed.tx.id),
    })
}
