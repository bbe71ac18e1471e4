//! rulehost: a WebAssembly rules and risk-scoring host for payment systems,
//! with a native double-entry ledger.
//!
//! The path of a transaction: [`input`] parses it, [`pipeline`] runs the
//! native pre-checks, the validation and risk rules of a [`ruleset::RuleSet`]
//! (each in the [`sandbox`] under its budget), aggregates the scores, and
//! applies the outcome to the [`ledger`]; [`decision`] shapes the record.
//! [`run`] streams files through it; [`service`] embeds it in a tokio
//! service and [`server`] serves it over HTTP. See ARCHITECTURE.md.

#![warn(missing_docs)]

pub mod backtest;
pub mod cases;
pub mod decision;
pub mod diff;
pub mod facts;
pub mod files;
pub mod fuzzing;
pub mod generate;
pub mod input;
pub mod ledger;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod params;
pub mod pipeline;
pub mod reload;
pub mod rollout;
pub mod ruleset;
pub mod run;
pub mod sandbox;
pub mod scaffold;
pub mod server;
pub mod service;
pub mod summary;
pub mod testrun;
