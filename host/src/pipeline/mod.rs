//! The path of one transaction: native pre-checks, validation rules, risk
//! rules, weighted aggregation, the ledger step, and the decision record —
//! RULES.md "Order of evaluation and aggregation", top to bottom.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::decision::{Decision, LedgerEffect, Outcome, Record};
use crate::facts::Facts;
use crate::input::{ErrorCode, InputError, ParsedTransaction, parse_transaction};
use crate::ledger::{Commit, Effect, Ledger, LedgerError};
use crate::model::Transaction;
use crate::rollout::{Choice, Rollout, RolloutTag};
use crate::ruleset::{LoadedRule, RuleSet};
mod evaluate;
mod reads;
mod shadow;

use evaluate::Evaluation;

use reads::{ReadSet, RecordingFacts, Versions};

pub use shadow::{SHADOW_PAIRS_KEPT_MAX, Shadow, ShadowPair};

use crate::sandbox::{CallContext, CallOutcome, Sandbox, TxSession};

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
    /// A transaction was decided (or replayed, or conflicted).
    fn decided(&self, record: &Record);
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
                self.observe(&record);
                return record;
            }
            let mut versions = self.versions.lock().expect("versions lock");
            // Who decides now: a share or candidate changed since the
            // speculation means it ran the wrong rules, so it runs again.
            let choice = self.choose(tx, speculation.choice.as_ref());
            let same_rules = Choice::same_rules(choice.as_ref(), speculation.choice.as_ref());
            let deciding = Choice::rules(choice.as_ref(), ruleset);
            let (evaluation, counted, shadow) = match speculation.outcome {
                Speculated::Prechecked(code) => {
                    let shadow = self
                        .shadow
                        .as_ref()
                        .map(|s| (s.candidate.current(), Evaluation::rejected(code.to_owned(), 0, Vec::new(), false)));
                    (Evaluation::rejected(code.to_owned(), 0, Vec::new(), false), false, shadow)
                }
                Speculated::Evaluated { evaluation, shadow, reads, start } => {
                    if !same_rules || !versions.unchanged_since(start, &reads) {
                        drop(versions);
                        drop(ledger);
                        speculation = self.speculate(ruleset, parsed);
                        continue;
                    }
                    let counted = evaluation.reached_risk;
                    (evaluation, counted, shadow)
                }
            };
            // The candidate's decision, on the state the live one saw (before
            // the live effect is applied); it posts nothing.
            let shadow = shadow.map(|(candidate, e)| decision_of(&**ledger, tx, &candidate.version, None, e).0);
            let tag = choice.as_ref().map(|c| c.tag);
            let (decision, effect) = decision_of(&**ledger, tx, &deciding.version, tag, evaluation);
            let live = decision.clone();
            let commit = Commit { tx, fingerprint: parsed.fingerprint, decision, effect, count_in_history: counted };
            let record = finish(&mut **ledger, line, parsed, commit);
            if matches!(record, Record::Decision { replayed: false, .. }) {
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
            self.observe(&record);
            return record;
        }
    }

    fn observe(&self, record: &Record) {
        if let Some(o) = &self.observer {
            o.decided(record);
        }
    }
}

/// The decision of an evaluation and the ledger effect it asks for (step 5:
/// the funds and range check, without applying anything).
fn decision_of(
    ledger: &dyn Ledger,
    tx: &Transaction,
    version: &Arc<str>,
    rollout: Option<RolloutTag>,
    evaluation: Evaluation,
) -> (Arc<Decision>, Effect) {
    let (mut outcome, mut reasons) = (evaluation.outcome, evaluation.reasons);
    let mut effect = Effect::Nothing;
    if matches!(outcome, Outcome::Approve | Outcome::Review) {
        let wanted = if outcome == Outcome::Approve { Effect::Post } else { Effect::Hold };
        match ledger.admit(&tx.source, &tx.destination, tx.amount, wanted) {
            Ok(()) => effect = wanted,
            Err(refusal) => {
                outcome = Outcome::Reject;
                reasons = vec![refusal.code().to_owned()];
            }
        }
    }
    let decision = Arc::new(Decision {
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
    });
    (decision, effect)
}

/// Step 1b: an id already decided is replayed (same content) or a conflict.
fn replay(ledger: &dyn Ledger, line: u64, parsed: &ParsedTransaction) -> Option<Record> {
    let stored = ledger.decision(&parsed.tx.id)?;
    Some(if stored.fingerprint == parsed.fingerprint {
        match stored.decision() {
            Ok(decision) => Record::Decision { line, decision, replayed: true },
            // Not decided again (nothing may post twice), and said plainly.
            Err(e) => Record::Error(InputError {
                line,
                id: Some(parsed.tx.id.clone()),
                code: ErrorCode::IdempotencyConflict,
                field: Some("id".into()),
                message: format!(
                    "transaction {:?} was decided before, but its stored decision is unreadable: {e}",
                    parsed.tx.id
                ),
            }),
        }
    } else {
        Record::Error(InputError {
            line,
            id: Some(parsed.tx.id.clone()),
            code: ErrorCode::IdempotencyConflict,
            field: Some("id".into()),
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
