//! `rulehost test`: runs cases files against modules and rule sets in the
//! production sandbox, reports each case with a diff, the budget each rule
//! used (fuel max and mean, peak memory, module size, closeness to the
//! budget). (The CLI writes the JUnit XML and rewrites expectations on
//! `--update`.)
//!
//! Rule-set layout it reads: `cases/<rule>.toml` (rule-level cases for the
//! rule named `<rule>` in the manifest, run with the manifest's parameters
//! and budget) and `cases/<scenario>/{accounts,transactions,expected}.jsonl`
//! (a stream through the whole pipeline with a fresh in-memory ledger,
//! compared line by line on everything but the rule-set and module hashes and
//! the fuel figures).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::cases::{BaseParams, CaseError, CaseFile, CaseOutcome, run_cases};
use crate::pipeline::Pipeline;
use crate::ruleset::{RuleSet, RuleSetError};
use rulehost_core::input::parse_accounts;
use rulehost_core::manifest::Budget;
use rulehost_ledger::{Ledger, MemoryLedger};
use rulehost_sandbox::Sandbox;

/// The folder of cases inside a rule set.
pub const CASES_DIR: &str = "cases";
/// Share of a budget above which a case is reported with a warning, in percent.
pub const BUDGET_WARN_PERCENT: u64 = 50;

/// Why a test run could not run (as opposed to cases failing).
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file was refused before it was read (special file, over its limit).
    #[error(transparent)]
    File(#[from] rulehost_core::files::FileError),
    /// A cases file is malformed.
    #[error(transparent)]
    Cases(#[from] CaseError),
    /// The rule set does not load.
    #[error(transparent)]
    RuleSet(#[from] RuleSetError),
    /// The module does not load.
    #[error("{path}: {source}")]
    Module {
        /// The module.
        path: PathBuf,
        /// Why.
        source: rulehost_sandbox::LoadError,
    },
    /// A scenario's input is malformed.
    #[error("{path}: {message}")]
    Scenario {
        /// The scenario file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Reads a cases or scenario file: a regular file of at most
/// `files::CASES_BYTES_MAX` bytes.
pub fn read(path: &Path) -> Result<String, TestError> {
    Ok(rulehost_core::files::read_text_bounded(
        path,
        None,
        rulehost_core::files::CASES_BYTES_MAX,
        "a cases or scenario file",
    )?)
}

/// The cases of one rule and what they used.
pub struct RuleReport {
    /// Rule name.
    pub rule: String,
    /// The cases file.
    pub cases_path: PathBuf,
    /// Module size in bytes.
    pub module_bytes: u64,
    /// The budget the cases ran under.
    pub budget: Budget,
    /// One outcome per case.
    pub outcomes: Vec<CaseOutcome>,
}

/// A stream through the whole pipeline.
pub struct ScenarioReport {
    /// Scenario folder name.
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// Lines compared.
    pub lines: usize,
    /// `(line, expected, actual)` for each differing line.
    pub mismatches: Vec<(usize, String, String)>,
    /// The actual output (for `--update`).
    pub actual: String,
}

/// Everything one `rulehost test` ran.
#[derive(Default)]
pub struct TestReport {
    /// Rule-level results.
    pub rules: Vec<RuleReport>,
    /// Rule-set-level results.
    pub scenarios: Vec<ScenarioReport>,
}

impl TestReport {
    /// (passed, failed) over cases and scenarios.
    pub fn counts(&self) -> (usize, usize) {
        let mut passed = 0;
        let mut failed = 0;
        for r in &self.rules {
            for o in &r.outcomes {
                if o.passed { passed += 1 } else { failed += 1 }
            }
        }
        for s in &self.scenarios {
            if s.mismatches.is_empty() { passed += 1 } else { failed += 1 }
        }
        (passed, failed)
    }
}

/// Runs a cases file against one module (its own budget section, or the
/// manifest defaults).
pub fn test_module(sandbox: &Sandbox, module: &Path, cases: &Path) -> Result<TestReport, TestError> {
    let bytes =
        rulehost_core::files::read_bounded(module, None, rulehost_core::files::MODULE_BYTES_MAX, "a rule module")?;
    let file = CaseFile::parse(&cases.display().to_string(), &read(cases)?)?;
    let module_err = |source| TestError::Module { path: module.to_owned(), source };
    let compiled = sandbox.load(&bytes).map_err(module_err)?;
    let outcomes = run_cases(sandbox, &compiled, &file, &BaseParams::default(), file.budget)?;
    let rule = module.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(TestReport {
        rules: vec![RuleReport {
            rule,
            cases_path: cases.to_owned(),
            module_bytes: bytes.len() as u64,
            budget: file.budget,
            outcomes,
        }],
        scenarios: Vec::new(),
    })
}

/// A decision line without what changes with every build of an unchanged
/// rule (the rule-set and module hashes, fuel figures): scenarios pin what
/// the rule set decides and why, so a rebuilt or re-pinned module, or a
/// reload of one, does not fail them.
fn comparable(line: &str) -> serde_json::Value {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(line) else {
        return serde_json::Value::String(line.to_owned());
    };
    if let Some(o) = v.as_object_mut() {
        o.remove("ruleset");
        if let Some(rules) = o.get_mut("rules").and_then(|r| r.as_array_mut()) {
            for r in rules.iter_mut().filter_map(|r| r.as_object_mut()) {
                r.remove("version");
                r.remove("fuel");
            }
        }
    }
    v
}

/// Runs every cases file a rule set carries.
pub fn test_ruleset(sandbox: &Arc<Sandbox>, dir: &Path) -> Result<TestReport, TestError> {
    let ruleset = RuleSet::load(sandbox, dir)?;
    test_loaded(sandbox, &ruleset)
}

/// Runs the cases a loaded rule set carries (in its folder), with its own
/// parameters and budgets: the smoke run a reload passes before going live.
pub fn test_loaded(sandbox: &Arc<Sandbox>, ruleset: &RuleSet) -> Result<TestReport, TestError> {
    let dir = &ruleset.dir;
    let mut report = TestReport::default();
    for rule in &ruleset.rules {
        let path = dir.join(CASES_DIR).join(format!("{}.toml", rule.name));
        if !path.exists() {
            continue;
        }
        let file = CaseFile::parse(&path.display().to_string(), &read(&path)?)?;
        let base = BaseParams { table: rule.manifest_params.clone(), own: rule.own_params.clone() };
        let outcomes = run_cases(sandbox, &rule.compiled, &file, &base, rule.budget)?;
        report.rules.push(RuleReport {
            rule: rule.name.to_string(),
            cases_path: path,
            module_bytes: rule.module_bytes as u64,
            budget: rule.budget,
            outcomes,
        });
    }
    let mut scenarios: Vec<PathBuf> = match std::fs::read_dir(dir.join(CASES_DIR)) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect(),
        Err(_) => Vec::new(),
    };
    scenarios.sort();
    for scenario in scenarios {
        report.scenarios.push(run_scenario(sandbox, ruleset, &scenario)?);
    }
    Ok(report)
}

fn run_scenario(sandbox: &Arc<Sandbox>, ruleset: &RuleSet, dir: &Path) -> Result<ScenarioReport, TestError> {
    let accounts_path = dir.join("accounts.jsonl");
    let accounts = parse_accounts(&read(&accounts_path)?)
        .map_err(|e| TestError::Scenario { path: accounts_path.clone(), message: e.to_string() })?;
    let mut ledger = MemoryLedger::default();
    ledger
        .import_accounts(&accounts)
        .map_err(|e| TestError::Scenario { path: accounts_path, message: e.to_string() })?;
    ledger.retain_history(ruleset.history_window_seconds_max);
    let pipeline = Pipeline::new(sandbox.clone(), Arc::new(Mutex::new(Box::new(ledger))));
    let transactions = read(&dir.join("transactions.jsonl"))?;
    let mut out = Vec::new();
    let mut lines: Vec<&str> = transactions.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    for (i, line) in lines.iter().enumerate() {
        pipeline.decide_line(ruleset, i as u64 + 1, line).write_json(&mut out);
    }
    let actual = String::from_utf8(out).expect("records are UTF-8");
    let expected = std::fs::read_to_string(dir.join("expected.jsonl")).unwrap_or_default();
    let mut mismatches = Vec::new();
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    for i in 0..e.len().max(a.len()) {
        let (want, got) = (e.get(i).copied().unwrap_or("<missing>"), a.get(i).copied().unwrap_or("<missing>"));
        if comparable(want) != comparable(got) {
            mismatches.push((i + 1, want.to_owned(), got.to_owned()));
        }
    }
    Ok(ScenarioReport {
        name: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        dir: dir.to_owned(),
        lines: a.len(),
        mismatches,
        actual,
    })
}

fn percent(used: u64, max: u64) -> u64 {
    (used.saturating_mul(100)).checked_div(max).unwrap_or(0)
}

/// The human-readable report: a line per case (with a diff when it fails),
/// budget use per rule, warnings, and a closing `N passed, N failed` line.
pub fn render(report: &TestReport) -> String {
    let mut s = String::new();
    for r in &report.rules {
        let _ = writeln!(s, "rule {} ({})", r.rule, r.cases_path.display());
        for o in &r.outcomes {
            if o.passed {
                let _ = writeln!(s, "  ok    {:<48} fuel {}", o.name, o.fuel);
            } else {
                let _ = writeln!(
                    s,
                    "  FAIL  {}\n          expected: {}\n          actual:   {}",
                    o.name, o.expected, o.actual
                );
            }
        }
        let fuel_max = r.outcomes.iter().map(|o| o.fuel).max().unwrap_or(0);
        let fuel_mean = r.outcomes.iter().map(|o| o.fuel).sum::<u64>() / (r.outcomes.len().max(1) as u64);
        let memory = r.outcomes.iter().map(|o| o.memory_bytes).max().unwrap_or(0);
        let wall_us = r.outcomes.iter().map(|o| o.elapsed_us).max().unwrap_or(0);
        let _ = writeln!(
            s,
            "  fuel max {fuel_max} ({}% of {}), mean {fuel_mean}; memory peak {} KiB ({}% of {} KiB); slowest call {wall_us} µs ({}% of {} ms); module {} KiB",
            percent(fuel_max, r.budget.fuel_max),
            r.budget.fuel_max,
            memory / 1024,
            percent(memory, r.budget.memory_bytes_max),
            r.budget.memory_bytes_max / 1024,
            percent(wall_us, r.budget.deadline_ms.saturating_mul(1000)),
            r.budget.deadline_ms,
            r.module_bytes.div_ceil(1024),
        );
        for o in &r.outcomes {
            let fuel = percent(o.fuel, r.budget.fuel_max);
            let mem = percent(o.memory_bytes, r.budget.memory_bytes_max);
            let wall = percent(o.elapsed_us, r.budget.deadline_ms.saturating_mul(1000));
            for (what, p) in [("fuel", fuel), ("memory", mem), ("deadline", wall)] {
                if p > BUDGET_WARN_PERCENT {
                    let _ = writeln!(s, "  warning: case `{}` used {p}% of its {what} budget", o.name);
                }
            }
        }
    }
    for sc in &report.scenarios {
        if sc.mismatches.is_empty() {
            let _ = writeln!(s, "scenario {}: ok ({} lines)", sc.name, sc.lines);
        } else {
            let _ = writeln!(s, "scenario {}: FAIL ({} of {} lines differ)", sc.name, sc.mismatches.len(), sc.lines);
            for (line, want, got) in sc.mismatches.iter().take(5) {
                let _ = writeln!(s, "  line {line}\n    expected: {want}\n    actual:   {got}");
            }
        }
    }
    let (passed, failed) = report.counts();
    let _ = writeln!(s, "{passed} passed, {failed} failed");
    s
}
