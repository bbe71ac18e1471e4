//! The fuzz targets' properties (`rulehost::fuzzing`) on every test run:
//! the seed fixtures, every input that ever broke a target
//! (`fuzz/regressions/<target>/`), and a proptest stream of random and
//! mutated inputs. libFuzzer itself runs with `scripts/fuzz.sh` (its
//! instrumented build of wasmtime takes longer than CI allows).

use std::path::PathBuf;

use proptest::prelude::*;
use rulehost::fuzzing::{self, StreamOp};

use crate::support::{TempRuleSet, root};

fn files(dir: &str) -> Vec<Vec<u8>> {
    let dir = root().join(dir);
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths.into_iter().filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md")) {
            out.push(std::fs::read(&p).unwrap());
        }
    }
    out
}

fn lines(path: &str) -> Vec<Vec<u8>> {
    std::fs::read_to_string(root().join(path)).unwrap().lines().map(|l| l.as_bytes().to_vec()).collect()
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut seeds = files(&format!("fuzz/regressions/{target}"));
    match target {
        "transaction" => {
            seeds.extend(lines("tests/fixtures/pipeline/transactions.jsonl"));
            seeds.extend(lines("examples/ruleset/cases/smoke/transactions.jsonl"));
        }
        "accounts" => {
            seeds.push(std::fs::read(root().join("tests/fixtures/pipeline/accounts.jsonl")).unwrap());
            seeds.push(std::fs::read(root().join("examples/ruleset/cases/smoke/accounts.jsonl")).unwrap());
        }
        "manifest" => seeds.push(std::fs::read(root().join("examples/ruleset/manifest.toml")).unwrap()),
        "cases" => {
            for rule in std::fs::read_dir(root().join("rules")).unwrap() {
                seeds.push(std::fs::read(rule.unwrap().path().join("cases.toml")).unwrap());
            }
        }
        _ => {}
    }
    seeds
}

/// A seed with a few bytes overwritten, inserted or cut: the kind of input
/// a fuzzer starts from.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds(target);
    (0..seeds.len(), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..8)).prop_map(
        move |(i, edits)| {
            let mut s = seeds[i].clone();
            for (at, byte, how) in edits {
                let at = if s.is_empty() { 0 } else { at.index(s.len()) };
                match how {
                    0 if !s.is_empty() => s[at] = byte,
                    1 => s.insert(at, byte),
                    _ if !s.is_empty() => {
                        s.remove(at);
                    }
                    _ => {}
                }
            }
            s
        },
    )
}

#[test]
fn every_seed_and_regression_keeps_every_property() {
    for target in ["transaction", "accounts", "manifest", "cases"] {
        let check = match target {
            "transaction" => fuzzing::transaction,
            "accounts" => fuzzing::accounts,
            "manifest" => fuzzing::manifest,
            _ => fuzzing::cases,
        };
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "{target} has seeds");
        for s in seeds {
            check(&s);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: proptest::test_runner::RngSeed::Fixed(7),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_transactions_keep_the_parser_properties(data in mutated("transaction")) {
        fuzzing::transaction(&data);
    }

    #[test]
    fn mutated_accounts_keep_the_ledger_properties(data in mutated("accounts")) {
        fuzzing::accounts(&data);
    }

    #[test]
    fn mutated_manifests_keep_their_limits(data in mutated("manifest")) {
        fuzzing::manifest(&data);
    }

    #[test]
    fn mutated_cases_keep_their_limits(data in mutated("cases")) {
        fuzzing::cases(&data);
    }

    #[test]
    fn random_bytes_never_panic_a_parser(data in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::transaction(&data);
        fuzzing::accounts(&data);
        fuzzing::manifest(&data);
        fuzzing::cases(&data);
    }
}

fn amount() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u32..100_000).prop_map(|c| rust_decimal::Decimal::new(c.into(), 2).to_string()),
        Just("9999999999999999999999999999".to_string()),
        Just("0".to_string()),
        Just("-5".to_string()),
        (0u128..10u128.pow(28), 0u32..29)
            .prop_map(|(d, s)| rust_decimal::Decimal::from_i128_with_scale(d as i128, s).to_string()),
    ]
}

fn op() -> impl Strategy<Value = StreamOp> {
    prop_oneof![
        4 => (0u8..12, 0u8..4, 0u8..4, amount(), 0u16..1100)
            .prop_map(|(id, source, destination, amount, score)| StreamOp::Transfer { id, source, destination, amount, score }),
        1 => (0u8..12, any::<bool>()).prop_map(|(id, approve)| StreamOp::Resolve { id, approve }),
    ]
}

#[test]
fn random_streams_keep_the_ledger_model() {
    let set = TempRuleSet::new("[[rule]]\nname = \"velocity\"\nkind = \"risk\"\nmodule = \"modules/velocity.wasm\"\n");
    let ruleset = set.load();
    // A fixed seed keeps CI repeatable; FUZZ_REPLAY_CASES and
    // FUZZ_REPLAY_SEED explore further.
    let cases = std::env::var("FUZZ_REPLAY_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    let seed = std::env::var("FUZZ_REPLAY_SEED").ok().and_then(|c| c.parse().ok()).unwrap_or(11);
    let config = ProptestConfig {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let accounts = prop::array::uniform4((amount(), amount().prop_map(|a| a.trim_start_matches('-').to_owned())));
    runner
        .run(&(accounts, prop::collection::vec(op(), 0..40)), |(accounts, ops)| {
            fuzzing::stream(&ruleset, &accounts, &ops);
            Ok(())
        })
        .unwrap();
}
