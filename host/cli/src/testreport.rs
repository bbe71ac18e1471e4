//! What `rulehost test` writes besides its text report: JUnit XML, and the
//! cases files rewritten with the actual results on `--update`.

use rulehost::cases::Expect;
use rulehost::testrun::{self, TestError, TestReport};

/// JUnit XML: a test suite per rule and one for the scenarios.
pub fn junit(report: &TestReport) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut out = Report::new("rulehost test");
    for r in &report.rules {
        let mut suite = TestSuite::new(r.rule.as_str());
        for o in &r.outcomes {
            let status = if o.passed {
                TestCaseStatus::success()
            } else {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                st.set_message(format!("expected {}, got {}", o.expected, o.actual));
                st
            };
            let mut case = TestCase::new(o.name.as_str(), status);
            case.set_classname(r.rule.as_str());
            case.set_time(std::time::Duration::from_micros(o.elapsed_us));
            suite.add_test_case(case);
        }
        out.add_test_suite(suite);
    }
    if !report.scenarios.is_empty() {
        let mut suite = TestSuite::new("scenarios");
        for sc in &report.scenarios {
            let status = if sc.mismatches.is_empty() {
                TestCaseStatus::success()
            } else {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let (line, want, got) = &sc.mismatches[0];
                st.set_message(format!(
                    "{} lines differ; first at line {line}: expected {want}, got {got}",
                    sc.mismatches.len()
                ));
                st
            };
            suite.add_test_case(TestCase::new(sc.name.as_str(), status));
        }
        out.add_test_suite(suite);
    }
    out.to_string().unwrap_or_default()
}

/// Rewrites every failing expectation with the actual result (like a
/// snapshot tool's update), keeping the files' comments and layout.
pub fn update(report: &TestReport) -> Result<usize, TestError> {
    let mut changed = 0;
    for r in &report.rules {
        if r.outcomes.iter().all(|o| o.passed) {
            continue;
        }
        let text = testrun::read(&r.cases_path)?;
        let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| TestError::Scenario {
            path: r.cases_path.clone(),
            message: e.to_string(),
        })?;
        let Some(cases) = doc.get_mut("case").and_then(|c| c.as_array_of_tables_mut()) else {
            return Err(TestError::Scenario {
                path: r.cases_path.clone(),
                message: "--update rewrites cases written as [[case]] tables; this file writes them another way \
                          (e.g. `case = [{ … }]`): convert them to [[case]] tables first"
                    .into(),
            });
        };
        for (table, o) in cases.iter_mut().zip(&r.outcomes) {
            if o.passed {
                continue;
            }
            table["expect"] = toml_edit::value(expect_table(&o.actual_expect));
            changed += 1;
        }
        std::fs::write(&r.cases_path, doc.to_string())
            .map_err(|source| TestError::Io { path: r.cases_path.clone(), source })?;
    }
    for sc in &report.scenarios {
        if !sc.mismatches.is_empty() {
            let path = sc.dir.join("expected.jsonl");
            std::fs::write(&path, &sc.actual).map_err(|source| TestError::Io { path, source })?;
            changed += 1;
        }
    }
    Ok(changed)
}

fn expect_table(e: &Expect) -> toml_edit::InlineTable {
    let mut t = toml_edit::InlineTable::new();
    match e {
        Expect::Accept => {
            t.insert("accept", true.into());
        }
        Expect::Reject(code) => {
            t.insert("reject", code.as_str().into());
        }
        Expect::Score { score, reasons } => {
            t.insert("score", i64::from(*score).into());
            if let Some(r) = reasons {
                t.insert("reasons", toml_edit::Value::Array(r.iter().map(String::as_str).collect()));
            }
        }
        Expect::Failure(kind) => {
            t.insert("failure", kind.as_str().into());
        }
    }
    t
}
