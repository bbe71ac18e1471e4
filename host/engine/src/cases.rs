//! Rule-level test cases: a transaction, the facts the host capabilities
//! should answer (accounts, history, lists, parameters) and the expected
//! result, run against a compiled module in the production sandbox under the
//! production budgets. The file format is TOML an analyst can write by hand:
//!
//! ```toml
//! [defaults]                       # merged into every case
//! transaction = { id = "t", timestamp = "2026-01-05T10:00:00Z", kind = "payment",
//!                 source = "src", destination = "dst", amount = "10.00", currency = "USD" }
//! params = { large_threshold = { USD = "10000" } }
//! lists = { blocked-accounts = ["acc-bad"] }
//! accounts = [{ id = "src", currency = "USD", country = "US",
//!               opened_at = "2025-01-01T00:00:00Z", status = "active", available = "1000" }]
//! [defaults.budget]                # optional; the manifest defaults otherwise
//! fuel_max = 1000000
//!
//! [[case]]
//! name = "at the threshold"
//! transaction = { amount = "10000" }             # fields over the default transaction
//! history = [{ source = "src", timestamp = "2026-01-05T09:30:00Z", amount = "9500", count = 2 }]
//! expect = { score = 300, reasons = ["LARGE_AMOUNT"] }
//! # or: expect = { accept = true } | { reject = "CODE" } | { failure = "fuel" }
//! ```

// Input reaches this module (ARCHITECTURE.md, "No input reaches a panic"):
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::ruleset::Lists;
use rulehost_core::facts::{AccountFacts, Facts, HistoryQuery, HistoryStats};
use rulehost_core::input::{parse_amount, parse_timestamp, parse_transaction};
use rulehost_core::manifest::{Budget, DEADLINE_MS_DEFAULT, FUEL_MAX_DEFAULT, MEMORY_BYTES_MAX_DEFAULT};
use rulehost_core::model::{AccountStatus, Transaction};
use rulehost_core::params::Params;
use rulehost_ledger::History;
use rulehost_sandbox::{CallContext, CompiledRule, FailureKind, LoadError, Sandbox, Verdict};

/// Earlier transactions one history entry may stand for.
pub const HISTORY_COUNT_MAX: u64 = 100_000;

/// A cases file that could not be read, naming the case and field.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The TOML did not parse (the message carries line and column).
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// Parser message.
        message: String,
    },
    /// The `[defaults]` table is invalid.
    #[error("{file}: [defaults] {field}: {message}")]
    Defaults {
        /// The file.
        file: String,
        /// The offending key.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A case is invalid.
    #[error("{file}: case #{index} `{name}`: {field}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based case number.
        index: usize,
        /// Case name.
        name: String,
        /// The offending field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The module could not be loaded.
    #[error("{0}")]
    Module(#[from] LoadError),
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    fuel_max: Option<u64>,
    memory_bytes_max: Option<u64>,
    deadline_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    transaction: toml::Table,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    lists: HashMap<String, Vec<String>>,
    accounts: Option<Vec<RawAccount>>,
    #[serde(default)]
    history: Vec<RawHistory>,
    #[serde(default)]
    budget: RawBudget,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    id: String,
    currency: String,
    country: String,
    opened_at: String,
    #[serde(default = "active")]
    status: String,
    #[serde(default = "zero")]
    available: String,
}

fn active() -> String {
    "active".into()
}

fn zero() -> String {
    "0".into()
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    source: String,
    timestamp: String,
    amount: String,
    #[serde(default = "one")]
    count: u64,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    accept: Option<bool>,
    reject: Option<String>,
    score: Option<u32>,
    reasons: Option<Vec<String>>,
    failure: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    transaction: toml::Table,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    lists: HashMap<String, Vec<String>>,
    accounts: Option<Vec<RawAccount>>,
    history: Option<Vec<RawHistory>>,
    expect: RawExpect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default, rename = "case")]
    cases: Vec<RawCase>,
}

/// What a case expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Validation accepts.
    Accept,
    /// Validation rejects with this code.
    Reject(String),
    /// Risk scores this, with exactly these reasons when given.
    Score {
        /// Expected score.
        score: u32,
        /// Expected reasons, when checked.
        reasons: Option<Vec<String>>,
    },
    /// The call fails with this kind.
    Failure(FailureKind),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Accept => write!(f, "accept"),
            Expect::Reject(code) => write!(f, "reject {code}"),
            Expect::Score { score, reasons: Some(r) } => write!(f, "score {score} {r:?}"),
            Expect::Score { score, reasons: None } => write!(f, "score {score}"),
            Expect::Failure(kind) => write!(f, "failure {}", kind.as_str()),
        }
    }
}

/// One case, parsed and validated (parameters are checked against the
/// rule's declaration when the cases run).
pub struct Case {
    /// Name shown in reports.
    pub name: String,
    /// The transaction.
    pub transaction: Transaction,
    /// The rule's parameters (defaults merged).
    pub params: toml::Table,
    /// Accounts the `account` capability knows.
    pub accounts: HashMap<String, AccountFacts>,
    /// Earlier transactions the `history` capability counts.
    pub history: Vec<(String, i128, Decimal, u64)>,
    /// Operator lists.
    pub lists: HashMap<String, HashSet<String>>,
    /// The expected result.
    pub expect: Expect,
}

/// A parsed cases file.
pub struct CaseFile {
    /// The budget every case runs under.
    pub budget: Budget,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

impl CaseFile {
    /// Parses cases text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<CaseFile, CaseError> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| CaseError::Syntax { file: file.into(), message: e.to_string() })?;
        let d = raw.defaults;
        let budget = Budget {
            fuel_max: d.budget.fuel_max.unwrap_or(FUEL_MAX_DEFAULT),
            memory_bytes_max: d.budget.memory_bytes_max.unwrap_or(MEMORY_BYTES_MAX_DEFAULT),
            deadline_ms: d.budget.deadline_ms.unwrap_or(DEADLINE_MS_DEFAULT),
        };
        budget.check().map_err(|(key, message)| CaseError::Defaults {
            file: file.into(),
            field: key.into(),
            message,
        })?;
        let mut cases = Vec::with_capacity(raw.cases.len());
        for (i, c) in raw.cases.into_iter().enumerate() {
            let invalid = |field: &str, message: String| CaseError::Invalid {
                file: file.into(),
                index: i.saturating_add(1),
                name: c.name.clone(),
                field: field.into(),
                message,
            };
            let mut tx_table = d.transaction.clone();
            tx_table.extend(c.transaction.clone());
            let json = serde_json::to_string(&tx_table).map_err(|e| invalid("transaction", e.to_string()))?;
            let transaction = parse_transaction(1, &json)
                .map_err(|e| invalid(&format!("transaction.{}", e.field.as_deref().unwrap_or("?")), e.message))?
                .tx;
            let mut params = d.params.clone();
            params.extend(c.params.clone());
            let mut accounts = HashMap::new();
            for a in c.accounts.as_ref().or(d.accounts.as_ref()).into_iter().flatten() {
                let facts = AccountFacts {
                    id: a.id.clone(),
                    currency: a.currency.clone(),
                    country: a.country.clone(),
                    opened_at: parse_timestamp(&a.opened_at).map_err(|m| invalid("accounts.opened_at", m))?,
                    status: match a.status.as_str() {
                        "active" => AccountStatus::Active,
                        "frozen" => AccountStatus::Frozen,
                        "closed" => AccountStatus::Closed,
                        other => {
                            return Err(invalid(
                                "accounts.status",
                                format!("{other:?}: expected active, frozen or closed"),
                            ));
                        }
                    },
                    available: parse_amount(&a.available).map_err(|m| invalid("accounts.available", m))?,
                };
                accounts.insert(a.id.clone(), facts);
            }
            let mut history = Vec::new();
            for h in c.history.as_ref().unwrap_or(&d.history) {
                if h.count > HISTORY_COUNT_MAX {
                    return Err(invalid("history.count", format!("{} exceeds {HISTORY_COUNT_MAX}", h.count)));
                }
                let t = parse_timestamp(&h.timestamp).map_err(|m| invalid("history.timestamp", m))?;
                let amount = parse_amount(&h.amount).map_err(|m| invalid("history.amount", m))?;
                history.push((h.source.clone(), t, amount, h.count));
            }
            let mut lists: HashMap<String, HashSet<String>> =
                d.lists.iter().map(|(k, v)| (k.clone(), v.iter().cloned().collect())).collect();
            lists.extend(c.lists.iter().map(|(k, v)| (k.clone(), v.iter().cloned().collect())));
            let e = &c.expect;
            let given = [e.accept.is_some(), e.reject.is_some(), e.score.is_some(), e.failure.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                return Err(invalid("expect", "give exactly one of accept, reject, score or failure".into()));
            }
            let expect = if e.accept == Some(true) {
                Expect::Accept
            } else if let Some(code) = &e.reject {
                Expect::Reject(code.clone())
            } else if let Some(score) = e.score {
                Expect::Score { score, reasons: e.reasons.clone() }
            } else if let Some(kind) = &e.failure {
                Expect::Failure(FailureKind::parse(kind).ok_or_else(|| {
                    invalid(
                        "expect.failure",
                        format!("{kind:?}: expected trap, fuel, deadline, memory or invalid-output"),
                    )
                })?)
            } else {
                return Err(invalid("expect.accept", "must be true".into()));
            };
            cases.push(Case { name: c.name, transaction, params, accounts, history, lists, expect });
        }
        Ok(CaseFile { budget, cases })
    }
}

/// The facts of one case.
struct CaseFacts {
    accounts: HashMap<String, AccountFacts>,
    history: History,
}

impl Facts for CaseFacts {
    fn account(&self, id: &str) -> Option<AccountFacts> {
        self.accounts.get(id).cloned()
    }

    fn history(&self, query: &HistoryQuery<'_>) -> HistoryStats {
        self.history.query(query)
    }
}

/// How one case went.
#[derive(Clone, Debug)]
pub struct CaseOutcome {
    /// Case name.
    pub name: String,
    /// Whether actual matched expected.
    pub passed: bool,
    /// What was expected.
    pub expected: String,
    /// What happened (with the failure message, if the call failed).
    pub actual: String,
    /// What happened, as an expectation (for `--update`).
    pub actual_expect: Expect,
    /// Wall time of the call, in microseconds.
    pub elapsed_us: u64,
    /// Fuel used.
    pub fuel: u64,
    /// Peak linear memory of the instance, in bytes.
    pub memory_bytes: u64,
}

/// Parameters the cases start from: a rule set's manifest entry (its shared
/// and own parameters) when testing a rule set, none for a lone module.
#[derive(Clone, Debug, Default)]
pub struct BaseParams {
    /// Parameters (shared merged with own).
    pub table: toml::Table,
    /// The rule's own keys (checked against its declaration).
    pub own: Vec<String>,
}

/// Runs every case of `file` against a compiled rule under `budget`.
pub fn run_cases(
    sandbox: &Sandbox,
    rule: &CompiledRule,
    file: &CaseFile,
    base: &BaseParams,
    budget: Budget,
) -> Result<Vec<CaseOutcome>, CaseError> {
    let declared = sandbox.describe(rule, &budget)?;
    let mut outcomes = Vec::with_capacity(file.cases.len());
    for (i, case) in file.cases.iter().enumerate() {
        let mut own: Vec<String> = case.params.keys().cloned().collect();
        own.extend(base.own.iter().cloned());
        let mut table = base.table.clone();
        table.extend(case.params.clone());
        let params = Params::build(&table, &own, &declared.params).map_err(|message| CaseError::Invalid {
            file: String::new(),
            index: i.saturating_add(1),
            name: case.name.clone(),
            field: "params".into(),
            message,
        })?;
        let mut history = History::new(u64::MAX / 4, 0);
        for (source, t, amount, count) in &case.history {
            for _ in 0..*count {
                history.record(source, *t, *amount);
            }
        }
        let lists = Lists::from_sets(case.lists.clone());
        let ctx = CallContext {
            params: Arc::new(params),
            lists: Arc::new(lists),
            declared_lists: declared.lists.clone().into(),
            history_window_seconds_max: declared.history_window_seconds_max,
            facts: Arc::new(CaseFacts { accounts: case.accounts.clone(), history }),
            budget,
        };
        let started = std::time::Instant::now();
        let out = sandbox.evaluate(rule, declared.kind, ctx, &case.transaction);
        let elapsed_us = started.elapsed().as_micros() as u64;
        let actual = match &out.result {
            Ok(Verdict::Accept) => Expect::Accept,
            Ok(Verdict::Reject { code, .. }) => Expect::Reject(code.clone()),
            Ok(Verdict::Score { score, reasons }) => Expect::Score { score: *score, reasons: Some(reasons.clone()) },
            Err(f) => Expect::Failure(f.kind),
        };
        let passed = match (&case.expect, &actual) {
            (Expect::Score { score, reasons: None }, Expect::Score { score: s, .. }) => score == s,
            (expected, actual) => expected == actual,
        };
        let mut actual_text = actual.to_string();
        if let Err(f) = &out.result {
            actual_text = format!("{actual_text}: {}", f.message);
        }
        outcomes.push(CaseOutcome {
            name: case.name.clone(),
            passed,
            expected: case.expect.to_string(),
            actual: actual_text,
            actual_expect: actual,
            elapsed_us,
            fuel: out.fuel,
            memory_bytes: out.memory_bytes,
        });
    }
    Ok(outcomes)
}
