//! The `rulehost` command's own pieces beside its commands (`src/main.rs`):
//! the seeded sample generator ([`generate`]), `rulehost new-rule`
//! ([`scaffold`]) and what `rulehost test` writes besides its report
//! ([`testreport`]: JUnit XML, `--update`).

pub mod generate;
pub mod scaffold;
pub mod testreport;
