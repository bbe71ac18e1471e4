//! rulehost's integration tests: one binary, one module per concern.
//!
//! They run real Wasm components, so the rule and guest modules must be built
//! first (`scripts/test.sh` does it; or `scripts/build-rules.sh`).

mod analyst_errors;
mod backtest;
mod canary;
mod cli_test;
mod containment;
mod contracts;
mod crates;
mod deadline;
mod determinism;
mod diff;
mod fuzz_replay;
mod guide;
mod hardening;
mod input_errors;
mod isolation;
mod ledger;
mod ledger_cli;
mod ledger_postgres;
mod ledger_scale;
mod partitions;
mod pipeline;
mod postgres;
mod reload;
mod rules;
mod server;
mod service;
mod shadow;
mod support;
