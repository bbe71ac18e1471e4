//! The host's crate boundaries (ARCHITECTURE.md, "Crates"): what each crate
//! of `host/` must never depend on, read from `cargo tree` and the lock file
//! of this checkout, so a forbidden dependency fails here the day it is
//! added; and the third-party runtimes each stay inside the one crate that
//! owns them.

use std::collections::BTreeSet;
use std::process::Command;

use crate::support::root;

/// Runtimes and front ends no library crate may pull in.
const FRONT_ENDS: &[&str] =
    &["clap", "indicatif", "quick-junit", "toml_edit", "mimalloc", "reqwest", "tracing-subscriber"];

/// (crate, packages that must not be anywhere in its normal dependency tree,
/// besides [`FRONT_ENDS`]).
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "rulehost-core",
        &["wasmtime", "wasmtime-wasi", "rusqlite", "libsqlite3-sys", "tokio", "axum", "hyper", "notify", "rayon"],
    ),
    ("rulehost-sandbox", &["rusqlite", "libsqlite3-sys", "axum", "hyper", "rulehost-ledger", "rulehost-engine"]),
    ("rulehost-ledger", &["wasmtime", "rusqlite", "libsqlite3-sys", "postgres", "axum", "hyper", "rulehost-sandbox"]),
    ("rulehost-ledger-sqlite", &["wasmtime", "postgres", "axum", "hyper", "rulehost-sandbox", "rulehost-engine"]),
    (
        "rulehost-ledger-postgres",
        &["wasmtime", "rusqlite", "libsqlite3-sys", "axum", "hyper", "rulehost-sandbox", "rulehost-engine"],
    ),
    (
        "rulehost-engine",
        &["rusqlite", "libsqlite3-sys", "postgres", "axum", "hyper", "rulehost-ledger-sqlite", "rulehost-server"],
    ),
    ("rulehost-server", &[]),
    ("rulehost", &[]),
    // The Python package calls the library in-process, never over HTTP.
    ("rulehost-python", &["reqwest"]),
];

/// (package, the only host crates that may name it as a direct dependency).
const OWNED: &[(&str, &[&str])] = &[
    ("wasmtime", &["rulehost-sandbox"]),
    ("wasmtime-wasi", &["rulehost-sandbox"]),
    ("rusqlite", &["rulehost-ledger-sqlite"]),
    ("postgres", &["rulehost-ledger-postgres"]),
    ("axum", &["rulehost-server"]),
    ("prometheus-client", &["rulehost-server"]),
    ("pyo3", &["rulehost-python"]),
];

/// The packages of `krate`'s normal dependency tree (`depth` levels deep,
/// or all of it), by name.
fn tree(krate: &str, depth: Option<u32>) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root()).args(["tree", "--offline", "--locked", "-e", "normal", "--prefix", "none", "-p", krate]);
    cmd.args(["--format", "{p}"]);
    if let Some(d) = depth {
        cmd.args(["--depth", &d.to_string()]);
    }
    let out = cmd.output().expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree -p {krate}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != krate)
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_crate_depends_on_what_it_must_not() {
    let mut broken = Vec::new();
    for (krate, forbidden) in FORBIDDEN {
        let deps = tree(krate, None);
        assert!(deps.contains("rulehost-core") || *krate == "rulehost-core", "{krate} builds on the core: {deps:?}");
        for bad in forbidden.iter().chain(FRONT_ENDS) {
            if deps.contains(*bad) {
                broken.push(format!("{krate} depends on {bad}"));
            }
        }
    }
    assert!(broken.is_empty(), "forbidden dependencies (ARCHITECTURE.md, Crates): {broken:#?}");
}

#[test]
fn each_runtime_is_named_by_the_one_crate_that_owns_it() {
    let crates = ["rulehost-core", "rulehost-sandbox", "rulehost-ledger", "rulehost-ledger-sqlite", "rulehost-engine"];
    let crates = crates.iter().chain(&["rulehost-ledger-postgres"]);
    let crates = crates.chain(&["rulehost-server", "rulehost", "rulehost-python"]);
    for krate in crates {
        let direct = tree(krate, Some(1));
        for (package, owners) in OWNED {
            assert!(
                !direct.contains(*package) || owners.contains(krate),
                "{krate} depends on {package} directly; only {owners:?} may"
            );
        }
    }
}

/// No source of a host crate names a wasmtime, SQLite or PostgreSQL type but the crate
/// that owns it: the other crates cannot depend on them (above), and this
/// keeps a re-export from smuggling one through an API.
#[test]
fn wasmtime_sqlite_and_postgres_types_stay_in_their_crates() {
    let host = root().join("host");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&host).expect("host/") {
        let dir = entry.expect("entry").path();
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let mut stack = vec![dir.join("src")];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for e in entries {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).expect("source");
                    for (needle, owner) in
                        [("wasmtime", "sandbox"), ("rusqlite", "ledger-sqlite"), ("postgres", "ledger-postgres")]
                    {
                        let named = text.lines().any(|l| {
                            let code = l.split("//").next().unwrap_or_default();
                            names_crate(code, needle)
                        });
                        if named && name != owner {
                            found.push(format!("{} names {needle}", p.display()));
                        }
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// Whether `code` names crate `needle` as a path root (`needle::…` or
/// `use needle`), not as the tail of another path (`rulehost_ledger_postgres::`,
/// `ledger::postgres::`).
fn names_crate(code: &str, needle: &str) -> bool {
    code.match_indices(needle).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let root = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
        root && (code[at + needle.len()..].starts_with("::") || code[..at].ends_with("use "))
    })
}
