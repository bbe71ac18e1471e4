//! What the rest of the host sees of a rule call: its inputs
//! ([`CallContext`]), its outcome (verdict or failure, fuel, memory, logs),
//! what a rule declares, and why a module could not be loaded. No wasmtime
//! type appears here.

use std::sync::Arc;

use crate::facts::Facts;
use crate::manifest::{Budget, RuleKind};
use crate::params::Params;

/// Why a rule call failed. These are the failure kinds of RULES.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The guest trapped (panic, unreachable, bad host call).
    Trap,
    /// The fuel budget ran out.
    Fuel,
    /// The call used more CPU time than its deadline allows.
    Deadline,
    /// The memory cap was hit.
    Memory,
    /// The result broke the output contract.
    InvalidOutput,
}

impl FailureKind {
    /// Every kind, in declaration order.
    pub const ALL: [FailureKind; 5] =
        [FailureKind::Trap, FailureKind::Fuel, FailureKind::Deadline, FailureKind::Memory, FailureKind::InvalidOutput];

    /// The spelling in decision records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Fuel => "fuel",
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::InvalidOutput => "invalid-output",
        }
    }
}

/// A failed call: its kind and a message for the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// Details for the analyst.
    pub message: String,
}

/// What a rule returned, validated against the output contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Validation passed.
    Accept,
    /// Validation rejected with a code.
    Reject {
        /// `[A-Z0-9_]{1,32}`.
        code: String,
        /// Explanation, at most `MESSAGE_BYTES_MAX` bytes.
        message: String,
    },
    /// A risk score.
    Score {
        /// 0..=1000.
        score: u32,
        /// Valid codes, at most `REASONS_MAX`.
        reasons: Vec<String>,
    },
}

/// A log line a rule recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// `trace` … `error`.
    pub level: &'static str,
    /// The message, possibly cut to the per-call cap.
    pub message: String,
}

/// The outcome of one call: the verdict or failure, the fuel it used, and its
/// log lines.
#[derive(Clone, Debug)]
pub struct CallOutcome {
    /// Verdict or failure.
    pub result: Result<Verdict, Failure>,
    /// Fuel consumed by instantiation and the call (deterministic).
    pub fuel: u64,
    /// Peak linear memory of the instance, in bytes.
    pub memory_bytes: u64,
    /// Log lines, within the caps.
    pub logs: Vec<LogLine>,
}

/// What a rule declares about itself (its `describe` export).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleDeclaration {
    /// Validation or risk.
    pub kind: RuleKind,
    /// Declared parameters and their types.
    pub params: Vec<(String, crate::params::ParamType)>,
    /// Declared operator lists.
    pub lists: Vec<String>,
    /// Longest history window, in seconds.
    pub history_window_seconds_max: u64,
}

/// The inputs of one call besides the transaction.
pub struct CallContext {
    /// The rule's parameters.
    pub params: Arc<Params>,
    /// The rule set's lists.
    pub lists: Arc<crate::ruleset::Lists>,
    /// Lists the rule declared.
    pub declared_lists: Arc<[String]>,
    /// Longest history window the rule declared, in seconds.
    pub history_window_seconds_max: u64,
    /// Accounts and history, as of this transaction.
    pub facts: Arc<dyn Facts>,
    /// The budget.
    pub budget: Budget,
}

/// Errors loading a module into the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid component (or a core module was given).
    #[error("not a valid Wasm component: {0}")]
    Compile(String),
    /// The component's imports or exports do not match a `rulehost:rules` contract.
    #[error("incompatible with the rulehost WIT contract: {0}")]
    Incompatible(String),
    /// Instantiating it failed (its start function trapped, ran out of
    /// fuel or time, or asked for more memory than its cap).
    #[error("instantiating it failed ({}): {}", .0.kind.as_str(), .0.message)]
    Instantiate(Failure),
    /// Calling `describe` failed.
    #[error("its `describe` export failed ({}): {}", .0.kind.as_str(), .0.message)]
    Describe(Failure),
}
