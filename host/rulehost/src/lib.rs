//! rulehost: a WebAssembly rules and risk-scoring host for payment systems,
//! with a native double-entry ledger — the crate an embedding service
//! depends on.
//!
//! It gathers the host's crates under one name (see ARCHITECTURE.md):
//! `rulehost-core` ([`model`], [`input`], [`manifest`], [`params`],
//! [`decision`], [`facts`], [`files`], [`summary`]), `rulehost-sandbox`
//! ([`sandbox`]), `rulehost-ledger` and `rulehost-ledger-sqlite`
//! ([`ledger`]), `rulehost-engine` ([`ruleset`], [`pipeline`], [`reload`],
//! [`rollout`], [`run`], [`cases`], [`testrun`], [`backtest`], [`diff`],
//! [`fuzzing`]) and `rulehost-server` ([`service`], [`server`],
//! [`metrics`]).
//!
//! The path of a transaction: [`input`] parses it, [`pipeline`] runs the
//! native pre-checks, the validation and risk rules of a
//! [`ruleset::RuleSet`] (each in the [`sandbox`] under its budget),
//! aggregates the scores, and applies the outcome to the [`ledger`];
//! [`decision`] shapes the record. [`run`] streams files through it;
//! [`service`] embeds it in a tokio service and [`server`] serves it over
//! HTTP. The `rulehost` command is the `rulehost-cli` package.

pub use rulehost_core::{decision, facts, files, input, lists, manifest, model, params, partition, rule, summary};
pub use rulehost_engine::{backtest, cases, diff, fuzzing, pipeline, reload, rollout, ruleset, run, testrun};
pub use rulehost_sandbox as sandbox;
pub use rulehost_server::{metrics, server, service};

/// The ledger: the storage trait, the in-memory ledger and the durable
/// front (`rulehost-ledger`), the SQLite store (`rulehost-ledger-sqlite`),
/// the PostgreSQL store (`rulehost-ledger-postgres`) and where a ledger
/// lives (`rulehost-server`'s `location`).
pub mod ledger {
    pub use rulehost_ledger::durable::{LedgerReader, Report};
    pub use rulehost_ledger::*;
    pub use rulehost_ledger_postgres::{PgReader, PostgresLedger};
    /// The PostgreSQL store's own names (its schema version, open errors).
    pub mod postgres {
        pub use rulehost_ledger_postgres::*;
    }
    pub use rulehost_ledger_sqlite::*;
    pub use rulehost_server::location::{LedgerLocation, LocationError, MEMORY_LEDGER};
}
