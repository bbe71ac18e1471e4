//! The core of rulehost: the domain and its data formats, with no runtime.
//!
//! [`model`] (transactions, accounts, instants), [`input`] (the input
//! grammar, error codes, the idempotency fingerprint), [`manifest`] and
//! [`params`] (a rule set's manifest and typed parameters), [`lists`]
//! (operator lists), [`rule`] (what a rule call ends in), [`facts`] (the
//! read-only view of the ledger a rule's capabilities use), [`decision`]
//! (decision and error records and their exact JSON), [`rollout`] (the
//! canary's tag and guard), [`summary`] (counts of a run) and [`files`]
//! (reading what operators hand the host, within named limits).
//!
//! It must never depend on wasmtime, SQLite, tokio or an HTTP stack: every
//! other crate of the host builds on it, and `tests/all/crates.rs` fails
//! when one of those appears in its dependency tree.

pub mod decision;
pub mod facts;
pub mod files;
pub mod input;
pub mod lists;
pub mod manifest;
pub mod model;
pub mod params;
pub mod partition;
pub mod rollout;
pub mod rule;
pub mod summary;
