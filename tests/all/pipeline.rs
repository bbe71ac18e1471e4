//! The whole pipeline against a fixture: the example rule set, fixture
//! accounts, a transaction stream covering every outcome, every pre-check,
//! replays, conflicts, funds checks and holds — compared byte for byte with
//! `tests/fixtures/pipeline/expected.jsonl`.

use rulehost::ledger::HoldState;
use rust_decimal::Decimal;

use crate::support::{TempRuleSet, check, jsonl, root, run, value};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/fixtures/pipeline").join(name)).unwrap()
}

#[test]
fn fixture_stream_gives_the_expected_decisions() {
    let set = TempRuleSet::example();
    let ruleset = set.load();
    let (records, _) = run(&ruleset, &fixture("accounts.jsonl"), &fixture("transactions.jsonl"));
    check(&root().join("tests/fixtures/pipeline/expected.jsonl"), &jsonl(&records));
}

#[test]
fn fixture_stream_covers_what_it_claims() {
    let set = TempRuleSet::example();
    let ruleset = set.load();
    let (records, ledger) = run(&ruleset, &fixture("accounts.jsonl"), &fixture("transactions.jsonl"));
    let by_id = |id: &str| {
        records
            .iter()
            .map(value)
            .find(|v| v["id"] == id && v.get("replayed").is_none())
            .unwrap_or_else(|| panic!("{id}"))
    };
    let outcome = |id: &str| by_id(id)["outcome"].as_str().unwrap().to_owned();
    let reasons = |id: &str| by_id(id)["reasons"].clone();

    assert_eq!(outcome("t01-approve"), "approve");
    assert_eq!(by_id("t01-approve")["ledger"], "posted");
    assert_eq!(reasons("t02-foreign"), serde_json::json!(["FOREIGN_COUNTRY"]));
    assert_eq!(outcome("t03-review"), "review");
    assert_eq!(by_id("t03-review")["ledger"], "held");
    assert_eq!(reasons("t03-review"), serde_json::json!(["FOREIGN_COUNTRY", "HIGH_RISK_COUNTRY", "HIGH_RISK_MCC"]));
    assert_eq!(outcome("t04-decline"), "decline");
    assert_eq!(by_id("t04-decline")["score"], 800, "large 300 + geo 100 + 200 + mcc 200");
    assert_eq!(by_id("t04-decline")["ledger"], "none");
    assert_eq!(reasons("t05-bad-places"), serde_json::json!(["AMOUNT_INVALID"]));
    assert_eq!(reasons("t06-sanctioned-country"), serde_json::json!(["SANCTIONED"]));
    assert_eq!(reasons("t07-blocked-account"), serde_json::json!(["SANCTIONED"]));
    assert_eq!(reasons("t08-frozen"), serde_json::json!(["ACCOUNT_INACTIVE"]));
    assert_eq!(reasons("t09-unknown"), serde_json::json!(["ACCOUNT_UNKNOWN"]));
    assert_eq!(reasons("t10-same"), serde_json::json!(["SAME_ACCOUNT"]));
    assert_eq!(reasons("t11-currency"), serde_json::json!(["CURRENCY_MISMATCH"]));
    // A replay (line 12) returns the stored decision; a conflicting reuse (line 13) is an error.
    let replay = value(&records[11]);
    assert_eq!(replay["replayed"], true);
    assert_eq!(replay["line"], 12);
    let mut original = value(&records[0]);
    original["line"] = 12.into();
    original["replayed"] = true.into();
    assert_eq!(replay, original);
    assert_eq!(value(&records[12])["error"]["code"], "IDEMPOTENCY_CONFLICT");
    // Funds: on approve and on review.
    assert_eq!(reasons("t14-poor-approve"), serde_json::json!(["INSUFFICIENT_FUNDS"]));
    assert_eq!(reasons("t15-poor-review"), serde_json::json!(["INSUFFICIENT_FUNDS"]));
    assert_eq!(by_id("t15-poor-review")["score"], 500, "the computed total is kept");
    // Holds reduce available: 12000 − 7000 held leaves 5000.
    assert_eq!(by_id("t16-hold")["ledger"], "held");
    assert_eq!(reasons("t17-after-hold"), serde_json::json!(["INSUFFICIENT_FUNDS"]));
    assert_eq!(by_id("t18-exact-available")["ledger"], "posted");
    assert_eq!(reasons("t19-new-account"), serde_json::json!(["NEW_ACCOUNT_LARGE"]));
    // Velocity: the 6th of a burst sees 5 earlier (150); the rejected one does not count.
    assert_eq!(by_id("t20-v05")["score"], 0);
    assert_eq!(by_id("t20-v06")["score"], 150);
    assert_eq!(outcome("t20-v07-rejected"), "reject");
    assert_eq!(by_id("t20-v11")["score"], 150, "10 earlier minus the rejected one = 9");
    assert_eq!(by_id("t20-v12")["score"], 400);
    assert_eq!(outcome("t20-v12"), "review");
    assert_eq!(by_id("t21-s2")["score"], 0);
    assert_eq!(reasons("t21-s3"), serde_json::json!(["STRUCTURING"]));
    assert_eq!(outcome("t22-deposit"), "approve");
    assert_eq!(outcome("t23-poor-now-ok"), "approve");
    assert_eq!(outcome("t26-crlf"), "approve");
    assert_eq!(outcome("t99-after-errors"), "approve");

    let ledger = ledger.lock().unwrap();
    let holdy = ledger.balances("holdy").unwrap();
    assert_eq!(
        (holdy.posted, holdy.pending, holdy.available),
        (Decimal::new(7000, 0), Decimal::new(7000, 0), Decimal::ZERO)
    );
    let holds = ledger.holds().unwrap();
    assert!(holds.iter().any(|h| h.id == "t16-hold" && h.state == HoldState::Pending));
    assert!(!holds.iter().any(|h| h.id == "t15-poor-review"), "no hold without funds");
}
