//! Bad input: each kind of malformed line gives exactly the right error
//! record (line, code, field), and the lines around it are decided normally.

use crate::support::{TempRuleSet, run, value};

const ACCOUNTS: &str = r#"{"id":"a","currency":"USD","country":"US","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"0","opening_balance":"1000"}
{"id":"b","currency":"USD","country":"US","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"0"}
"#;

const GOOD: &str = r#"{"id":"ok","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"1.00","currency":"USD"}"#;

#[test]
fn each_malformed_line_names_its_line_and_field() {
    // (line, expected code, expected field)
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("", "MALFORMED_JSON", None),
        ("   ", "MALFORMED_JSON", None),
        ("{\"id\":", "MALFORMED_JSON", None),
        ("42", "MALFORMED_JSON", None),
        ("[1,2]", "MALFORMED_JSON", None),
        (r#"{"timestamp":"2026-01-05T10:00:00Z"}"#, "MISSING_FIELD", Some("id")),
        (r#"{"id":""}"#, "INVALID_FIELD", Some("id")),
        (r#"{"id":7}"#, "INVALID_FIELD", Some("id")),
        (r#"{"id":"x","kind":"payment"}"#, "MISSING_FIELD", Some("timestamp")),
        (r#"{"id":"x","timestamp":"2026-01-05T10:00:00","kind":"payment"}"#, "INVALID_FIELD", Some("timestamp")),
        (
            r#"{"id":"x","timestamp":"2026-01-05T10:00:00.1234567891Z","kind":"payment"}"#,
            "INVALID_FIELD",
            Some("timestamp"),
        ),
        (r#"{"id":"x","timestamp":"2026-01-05T10:00:00Z","kind":"refund"}"#, "INVALID_FIELD", Some("kind")),
        (
            r#"{"id":"x","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":null}"#,
            "MISSING_FIELD",
            Some("source"),
        ),
        (
            r#"{"id":"x","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":1.5,"currency":"USD"}"#,
            "INVALID_FIELD",
            Some("amount"),
        ),
        (
            r#"{"id":"x","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"+1","currency":"USD"}"#,
            "INVALID_FIELD",
            Some("amount"),
        ),
        (
            r#"{"id":"x","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":".5","currency":"USD"}"#,
            "INVALID_FIELD",
            Some("amount"),
        ),
        (
            r#"{"id":"x","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"5.","currency":"USD"}"#,
            "INVALID_FIELD",
            Some("amount"),
        ),
        (
            r#"{"id":"x","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"1","currency":"USD","country":"USA"}"#,
            "INVALID_FIELD",
            Some("country"),
        ),
        (
            r#"{"id":"x","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"1","currency":"USD","metadata":["a"]}"#,
            "INVALID_FIELD",
            Some("metadata"),
        ),
        (
            r#"{"id":"x","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"1","currency":"USD","channel":5}"#,
            "INVALID_FIELD",
            Some("channel"),
        ),
    ];
    let mut input = vec![GOOD.to_string()];
    input.extend(cases.iter().map(|(l, _, _)| l.to_string()));
    input.push(GOOD.replace("\"ok\"", "\"ok2\""));
    let set = TempRuleSet::example();
    let (records, _) = run(&set.load(), ACCOUNTS, &input.join("\n"));
    assert_eq!(records.len(), cases.len() + 2, "one record per line");
    assert_eq!(value(&records[0])["outcome"], "approve");
    assert_eq!(value(records.last().unwrap())["outcome"], "approve", "processing continues after errors");
    for (i, (line, code, field)) in cases.iter().enumerate() {
        let v = value(&records[i + 1]);
        assert_eq!(v["line"], i + 2, "{line}");
        assert_eq!(v["outcome"], "error", "{line}: {v}");
        assert_eq!(v["error"]["code"], *code, "{line}: {v}");
        assert_eq!(v["error"]["field"], serde_json::json!(field), "{line}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // An error is not a decision: the id can still be decided afterwards.
    let again = format!("{}\n{}", r#"{"id":"x","kind":"payment"}"#, GOOD.replace("\"ok\"", "\"x\""));
    let (records, _) = run(&set.load(), ACCOUNTS, &again);
    assert_eq!(value(&records[1])["outcome"], "approve");
}
