//! Both contract versions in one rule set: a rule built against
//! `rulehost:rules@1.0.0` (`tests/guests/contract-v1`) loads and decides
//! beside the shipped 2.0.0 rules, each on its own path.

use rulehost::sandbox::Isolation;

use crate::support::{TempRuleSet, run, value};

const ACCOUNTS: &str = r#"{"id":"a","currency":"USD","country":"US","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"0","opening_balance":"1000"}
{"id":"b","currency":"USD","country":"DE","opened_at":"2025-01-01T00:00:00Z","status":"active","overdraft_limit":"0"}
"#;

#[test]
fn a_one_and_a_two_rule_decide_side_by_side() {
    let set = TempRuleSet::new(
        r#"
[[rule]]
name = "legacy"
kind = "risk"
module = "modules/contract-v1.wasm"
[rule.params]
mcc = ["7995"]

[[rule]]
name = "geo-mismatch"
kind = "risk"
module = "modules/geo-mismatch.wasm"
[rule.params]
high_risk_countries = ["RU"]
"#,
    );
    let ruleset = set.load();
    assert_eq!(ruleset.rules[0].compiled.contract(), "1.0.0");
    assert!(matches!(ruleset.rules[0].compiled.isolation(), Isolation::Fresh(_)));
    assert_eq!(ruleset.rules[1].compiled.contract(), "2.0.0");
    assert_eq!(ruleset.rules[1].compiled.isolation(), Isolation::Reset);
    let lines = [
        r#"{"id":"t1","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"10.00","currency":"USD","country":"FR","merchant_category":"7995"}"#,
        r#"{"id":"t2","timestamp":"2026-01-05T10:01:00Z","kind":"payment","source":"a","destination":"b","amount":"10.00","currency":"USD","country":"US","merchant_category":"5411"}"#,
        r#"{"id":"t3","timestamp":"2026-01-05T10:02:00Z","kind":"transfer","source":"a","destination":"b","amount":"10.00","currency":"USD","country":"RU"}"#,
    ];
    let (records, _) = run(&ruleset, ACCOUNTS, &lines.join("\n"));
    let got: Vec<(serde_json::Value, serde_json::Value)> = records
        .iter()
        .map(|r| {
            let v = value(r);
            (v["rules"][0]["reasons"].clone(), v["rules"][1]["reasons"].clone())
        })
        .collect();
    use serde_json::json;
    assert_eq!(
        got,
        [
            (json!(["V1_FOREIGN", "V1_MCC"]), json!(["FOREIGN_COUNTRY"])),
            (json!([]), json!([])),
            (json!(["V1_FOREIGN"]), json!(["FOREIGN_COUNTRY", "HIGH_RISK_COUNTRY"])),
        ]
    );
    assert_eq!(value(&records[0])["score"], 175);
}
