//! Re-evaluating a stored decision (`rulehost ledger replay`): the same
//! transaction, its own rule-set version, and the facts it saw — the reads
//! its rules made, recorded with their answers, and the funds check's
//! answer — so the result must be the stored decision byte for byte.

use std::sync::Arc;

use super::{Pipeline, decision_of, evaluate::Evaluation, precheck_with, wanted_effect};
use crate::ruleset::RuleSet;
use rulehost_core::decision::Decision;
use rulehost_core::facts::Facts;
use rulehost_core::model::Account;
use rulehost_ledger::ReplayFacts;
use rulehost_ledger::{Admission, DecisionRecord, Effect};

/// The result of a replay.
#[derive(Debug)]
pub struct Replayed {
    /// The stored decision.
    pub stored: Arc<Decision>,
    /// The decision the replay made.
    pub replayed: Arc<Decision>,
    /// Whether their JSON is the same bytes.
    pub identical: bool,
    /// Reads the replay made that the original did not record (a rule that
    /// reads differently with the same input: not deterministic).
    pub unrecorded_reads: u64,
}

/// Why a decision cannot be replayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    /// The record has no input (migrated from a schema that kept none).
    #[error(
        "decision {0:?} was migrated from a ledger of schema 1, which kept no input: it answers replays and conflicts, but cannot be re-evaluated"
    )]
    NoInput(String),
    /// The rule set given is not the version that made the decision.
    #[error("decision {id:?} was made by rule-set version {wanted}, not {given}")]
    WrongVersion {
        /// The decision.
        id: String,
        /// The version that made it.
        wanted: String,
        /// The version given.
        given: String,
    },
}

impl Pipeline {
    /// Re-evaluates `record` with `ruleset` (its own version) against the
    /// facts it recorded; `accounts` are the static facts of the accounts
    /// it names (they never change once imported).
    pub fn replay(
        &self,
        ruleset: &RuleSet,
        record: &DecisionRecord,
        accounts: Vec<Account>,
    ) -> Result<Replayed, ReplayError> {
        let stored = record.decision.clone();
        let input = record.input.as_ref().ok_or_else(|| ReplayError::NoInput(stored.id.clone()))?;
        if *ruleset.version != *stored.ruleset {
            return Err(ReplayError::WrongVersion {
                id: stored.id.clone(),
                wanted: stored.ruleset.to_string(),
                given: ruleset.version.to_string(),
            });
        }
        let tx = &input.tx;
        let prechecked = precheck_with(|id| accounts.iter().find(|a| a.id == id), tx);
        let facts = Arc::new(ReplayFacts::new(input.facts.clone(), accounts.clone()));
        let evaluation = match prechecked {
            Some(code) => Evaluation::rejected(code.to_owned(), 0, Vec::new(), false),
            None => {
                let shared: Arc<dyn Facts> = facts.clone();
                self.evaluate(ruleset, tx, &shared)
            }
        };
        // The funds check is the fact the ledger answered then; an outcome
        // that asks for another effect than the original had no answer.
        let admission = match (wanted_effect(evaluation.outcome), input.admission) {
            (Effect::Nothing, _) => Admission::NotAsked,
            (_, Admission::NotAsked) => Admission::Admitted,
            (_, answer) => answer,
        };
        let replayed = decision_of(tx, &ruleset.version, stored.rollout, evaluation, admission);
        let identical = replayed.json() == stored.json();
        Ok(Replayed { stored, replayed, identical, unrecorded_reads: facts.missed() })
    }
}
