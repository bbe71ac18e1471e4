//! Every shipped rule against its own `rules/<rule>/cases.toml`, through the
//! built Wasm module in the production sandbox (one data-driven runner).

use rulehost::cases::{CaseFile, run_cases};

use crate::support::{module, root, sandbox};

#[test]
fn every_shipped_rule_passes_its_cases() {
    let sandbox = sandbox();
    let mut failures = Vec::new();
    let mut total = 0;
    let mut rules: Vec<_> = std::fs::read_dir(root().join("rules")).unwrap().map(|e| e.unwrap().path()).collect();
    rules.sort();
    for dir in rules {
        let rule = dir.file_name().unwrap().to_string_lossy().into_owned();
        let cases_path = dir.join("cases.toml");
        let text = std::fs::read_to_string(&cases_path).unwrap_or_else(|e| panic!("{}: {e}", cases_path.display()));
        let file = CaseFile::parse(&cases_path.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(!file.cases.is_empty(), "{rule} has no cases");
        let bytes = std::fs::read(module(&format!("rule-{rule}"))).unwrap();
        let compiled = sandbox.load(&bytes).unwrap();
        for outcome in run_cases(&sandbox, &compiled, &file, &Default::default(), file.budget)
            .unwrap_or_else(|e| panic!("{rule}: {e}"))
        {
            total += 1;
            if !outcome.passed {
                failures
                    .push(format!("{rule} / {}: expected {}, got {}", outcome.name, outcome.expected, outcome.actual));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert!(total >= 40, "only {total} cases ran");
}

#[test]
fn a_wrong_expectation_fails_with_both_sides_shown() {
    let text = r#"
[defaults]
transaction = { id = "t", timestamp = "2026-01-05T10:00:00Z", kind = "payment", source = "s", destination = "d", amount = "10", currency = "USD" }
params = { high_risk_mcc = ["7995"] }
[[case]]
name = "deliberately wrong"
transaction = { merchant_category = "7995" }
expect = { score = 100 }
"#;
    let file = CaseFile::parse("inline", text).unwrap();
    let bytes = std::fs::read(module("rule-merchant-category")).unwrap();
    let sandbox = sandbox();
    let compiled = sandbox.load(&bytes).unwrap();
    let outcome = &run_cases(&sandbox, &compiled, &file, &Default::default(), file.budget).unwrap()[0];
    assert!(!outcome.passed);
    assert_eq!(outcome.expected, "score 100");
    assert_eq!(outcome.actual, "score 200 [\"HIGH_RISK_MCC\"]");
}

#[test]
fn malformed_cases_name_the_case_and_field() {
    let cases = [
        ("[[case]]\nname = \"x\"\nexpect = { score = 1, accept = true }\n", "case #1 `x`: expect"),
        ("[[case]]\nname = \"y\"\ntransaction = { amount = 5 }\nexpect = { accept = true }\n", "transaction.amount"),
        ("[[case]]\nname = \"z\"\nexpect = { failure = \"boom\" }\n", "expect.failure"),
        ("[[case]]\nname = \"w\"\nexpekt = 1\n", "expekt"),
    ];
    for (text, needle) in cases {
        let text = format!(
            "[defaults]\ntransaction = {{ id = \"t\", timestamp = \"2026-01-05T10:00:00Z\", kind = \"payment\", source = \"s\", destination = \"d\", amount = \"1\", currency = \"USD\" }}\n{text}"
        );
        let err = CaseFile::parse("f.toml", &text).err().expect("must fail").to_string();
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
}
