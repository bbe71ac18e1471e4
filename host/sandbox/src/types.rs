//! What the rest of the host sees of a rule call: its inputs
//! ([`CallContext`]), its outcome (verdict or failure, fuel, memory, logs),
//! what a rule declares, and why a module could not be loaded. No wasmtime
//! type appears here.

use std::sync::Arc;

use rulehost_core::facts::Facts;
use rulehost_core::lists::Lists;
use rulehost_core::manifest::{Budget, RuleKind};
use rulehost_core::params::Params;
pub use rulehost_core::rule::{Failure, FailureKind, LogLine, Verdict};

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
    pub params: Vec<(String, rulehost_core::params::ParamType)>,
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
    pub lists: Arc<Lists>,
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
