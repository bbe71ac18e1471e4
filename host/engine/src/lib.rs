//! The engine: what decides transactions with a rule set, without a server
//! or a storage backend of its own.
//!
//! [`ruleset`] loads a rule-set folder into the [`rulehost_sandbox`];
//! [`pipeline`] runs a transaction through the pre-checks, the rules, the
//! aggregation and the ledger step (any [`rulehost_ledger::Ledger`]);
//! [`reload`] keeps a folder live and hot-reloads it; [`rollout`] splits
//! traffic between a live and a candidate rule set; [`run`] streams files
//! through a pipeline; [`cases`] and [`testrun`] run rule and rule-set test
//! cases; [`backtest`] and [`diff`] compare two implementations' decisions;
//! [`fuzzing`] holds the fuzz targets' properties.
//!
//! Depends on the core, the sandbox and the ledger trait; never on wasmtime
//! (only through the sandbox), SQLite, an HTTP stack or a CLI parser.

pub mod backtest;
pub mod cases;
pub mod diff;
pub mod fuzzing;
pub mod pipeline;
pub mod reload;
pub mod rollout;
pub mod ruleset;
pub mod run;
pub mod testrun;

/// The text of a panic's payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
