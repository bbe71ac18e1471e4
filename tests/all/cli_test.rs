//! `rulehost test` and `rulehost new-rule`, through the real binary.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{module, root};

fn rulehost(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rulehost")).args(args).current_dir(dir).output().expect("run rulehost")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn example_ruleset_passes_all_its_cases() {
    let out = rulehost(&["test", "--ruleset", "examples/ruleset"], &root());
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("scenario smoke: ok"), "{t}");
    assert!(t.lines().any(|l| l.ends_with(" passed, 0 failed")), "{t}");
}

const VELOCITY_WRONG: &str = r#"
[defaults]
transaction = { id = "t", timestamp = "2026-01-05T10:00:00Z", kind = "payment", source = "src", destination = "dst", amount = "10", currency = "USD" }

[[case]]
name = "five earlier"   # a comment that --update keeps
history = [{ source = "src", timestamp = "2026-01-05T09:30:00Z", amount = "1", count = 5 }]
expect = { score = 400 }
"#;

#[test]
fn failing_case_shows_a_diff_exits_1_and_update_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(&cases, VELOCITY_WRONG).unwrap();
    let wasm = module("rule-velocity");
    let args = ["test", wasm.to_str().unwrap(), "--cases", cases.to_str().unwrap()];
    let out = rulehost(&args, dir.path());
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL  five earlier"), "{t}");
    assert!(t.contains("expected: score 400") && t.contains("actual:   score 150 [\"HIGH_VELOCITY\"]"), "{t}");
    assert!(t.contains("0 passed, 1 failed"), "{t}");

    let mut update = args.to_vec();
    update.push("--update");
    assert_eq!(rulehost(&update, dir.path()).status.code(), Some(0));
    let rewritten = std::fs::read_to_string(&cases).unwrap();
    assert!(rewritten.contains("a comment that --update keeps"), "{rewritten}");
    assert!(rewritten.contains(r#"expect = { score = 150, reasons = ["HIGH_VELOCITY"] }"#), "{rewritten}");
    assert_eq!(rulehost(&args, dir.path()).status.code(), Some(0));
}

#[test]
fn a_rule_over_budget_is_reported_as_such_not_as_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        r#"
[defaults]
transaction = { id = "t", timestamp = "2026-01-05T10:00:00Z", kind = "payment", source = "s", destination = "d", amount = "1", currency = "USD" }
[defaults.budget]
fuel_max = 100000
[[case]]
name = "spins"
params = { mode = "loop" }
expect = { score = 10 }
[[case]]
name = "behaves"
params = { mode = "ok" }
expect = { score = 10, reasons = ["HOSTILE_OK"] }
[[case]]
name = "expected to run out"
params = { mode = "loop" }
expect = { failure = "fuel" }
"#,
    )
    .unwrap();
    let wasm = module("guest-hostile");
    let junit = dir.path().join("report.xml");
    let out = rulehost(
        &["test", wasm.to_str().unwrap(), "--cases", cases.to_str().unwrap(), "--junit", junit.to_str().unwrap()],
        dir.path(),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("actual:   failure fuel: fuel budget exhausted"), "{t}");
    assert!(t.contains("warning: case `spins` used 100% of its fuel budget"), "{t}");
    assert!(t.contains("2 passed, 1 failed"), "{t}");

    // The JUnit report parses and says the same.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("valid XML");
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), 3);
    let failed: Vec<_> = cases.iter().filter(|c| c.children().any(|n| n.has_tag_name("failure"))).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attribute("name"), Some("spins"));
    let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
    assert_eq!(suite.attribute("failures"), Some("1"));
}

#[test]
fn malformed_cases_file_names_the_place_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nname = \"bad amount\"\ntransaction = { id = \"t\", timestamp = \"2026-01-05T10:00:00Z\", kind = \"payment\", source = \"s\", destination = \"d\", amount = \"1.2.3\", currency = \"USD\" }\nexpect = { accept = true }\n",
    )
    .unwrap();
    let wasm = module("rule-velocity");
    let out = rulehost(&["test", wasm.to_str().unwrap(), "--cases", cases.to_str().unwrap()], dir.path());
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("case #1 `bad amount`: transaction.amount"), "{t}");

    std::fs::write(&cases, "[[case]]\nname = \"x\"\nexpect = { accept = true\n").unwrap();
    let out = rulehost(&["test", wasm.to_str().unwrap(), "--cases", cases.to_str().unwrap()], dir.path());
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("line 3"), "TOML errors carry the line: {t}");
}

#[test]
fn scaffolded_rules_build_and_pass_their_tests() {
    let dir = tempfile::tempdir().unwrap();
    for (name, kind) in [("big-spender", "risk"), ("block-atm", "validation")] {
        let out = rulehost(&["new-rule", name, "--kind", kind, "--dir", dir.path().to_str().unwrap()], dir.path());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let crate_dir = dir.path().join(name);
        // The scaffold's own target dir; dependencies come from the local cache.
        let cargo = |args: &[&str]| {
            let o = Command::new(env!("CARGO")).args(args).arg("--offline").current_dir(&crate_dir).output().unwrap();
            assert!(o.status.success(), "cargo {args:?} in {name}: {}", text(&o));
        };
        cargo(&["test", "-q"]);
        cargo(&["build", "-q", "--release", "--target", "wasm32-wasip2"]);
        let wasm = crate_dir.join(format!("target/wasm32-wasip2/release/rule_{}.wasm", name.replace('-', "_")));
        let out = rulehost(&["test", wasm.to_str().unwrap(), "--cases", "cases.toml"], &crate_dir);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("2 passed, 0 failed"));
    }
    let out = rulehost(&["new-rule", "Bad_Name", "--kind", "risk"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("must be lower-case"));
}

/// A relative `--cache-dir` is taken from the working directory (wasmtime
/// itself wants an absolute one).
#[test]
fn a_relative_cache_dir_is_taken_from_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let rules = root().join("examples/ruleset");
    let out = rulehost(&["check", "--rules", rules.to_str().unwrap(), "--cache-dir", "compiled"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(std::fs::read_dir(dir.path().join("compiled")).unwrap().next().is_some(), "the cache was written");
}
