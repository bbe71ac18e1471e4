//! `rulehost new-rule`: a rule crate that builds and passes its tests as
//! generated — sample implementation, native unit tests, a cases file, the
//! build settings of the shipped rules, and the commands in its README.

use std::path::{Path, PathBuf};

use rulehost::manifest::RuleKind;

/// Why scaffolding failed.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not usable as a crate name.
    #[error("rule name {0:?} must be lower-case letters, digits and `-`, starting with a letter")]
    Name(String),
    /// The folder exists.
    #[error("{0} already exists; choose another name or folder")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The SDK this binary was built with (`guest-sdk/` of its source tree).
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(|p| p.join("guest-sdk"))
        .unwrap_or_else(|| PathBuf::from("guest-sdk"))
}

fn upper_camel(name: &str) -> String {
    name.split('-').map(|p| p[..1].to_uppercase() + &p[1..]).collect()
}

/// Writes a new rule crate `name` of `kind` into `parent/name`, depending on
/// the SDK at `sdk`. Returns the folder.
pub fn new_rule(parent: &Path, name: &str, kind: RuleKind, sdk: &Path) -> Result<PathBuf, ScaffoldError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !valid {
        return Err(ScaffoldError::Name(name.to_owned()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let ty = upper_camel(name);
    let code = name.replace('-', "_").to_uppercase();
    let crate_name = format!("rule-{name}");
    let sdk = std::path::absolute(sdk).unwrap_or_else(|_| sdk.to_owned());
    let files: Vec<(&str, String)> = vec![
        ("Cargo.toml", cargo_toml(&crate_name, &sdk)),
        (".cargo/config.toml", CARGO_CONFIG.to_owned()),
        (".gitignore", "/target\n".to_owned()),
        (
            "src/lib.rs",
            match kind {
                RuleKind::Risk => risk_lib(name, &ty, &code),
                RuleKind::Validation => validation_lib(name, &ty, &code),
            },
        ),
        (
            "cases.toml",
            match kind {
                RuleKind::Risk => risk_cases(&code),
                RuleKind::Validation => validation_cases(&code),
            },
        ),
        ("README.md", readme(name, &crate_name, kind)),
    ];
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|source| ScaffoldError::Io { path: p.to_owned(), source })?;
        }
        std::fs::write(&path, text).map_err(|source| ScaffoldError::Io { path, source })?;
    }
    Ok(dir)
}

fn cargo_toml(crate_name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{crate_name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
rulehost-guest = {{ path = "{}" }}

# Its own workspace: builds wherever the folder lives.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#,
        sdk.display()
    )
}

const CARGO_CONFIG: &str = r#"# A 64 KiB shadow stack keeps the rule's memory small and its calls cheap.
[target.wasm32-wasip2]
rustflags = ["-C", "link-arg=-zstack-size=65536"]
"#;

fn risk_lib(name: &str, ty: &str, code: &str) -> String {
    format!(
        r#"//! `{name}`: a risk rule. Scores 100 when the amount reaches the currency's
//! `threshold` parameter — `{code}`.

#![cfg_attr(target_arch = "wasm32", no_std)]

use rulehost_guest::{{ParamType, RiskRule, RuleInfo, Score, Transaction, params}};

/// The `{name}` risk rule.
pub struct {ty};

impl RiskRule for {ty} {{
    fn declare() -> RuleInfo {{
        RuleInfo::new().param("threshold", ParamType::DecimalMap)
    }}

    fn score(tx: &Transaction) -> Score {{
        match params::decimal_entry("threshold", &tx.currency) {{
            Some(threshold) if tx.amount >= threshold => Score::new(100, "{code}"),
            _ => Score::zero(),
        }}
    }}
}}

rulehost_guest::export_risk_rule!({ty});
rulehost_guest::no_std_runtime!();

#[cfg(test)]
mod tests {{
    use super::*;
    use rulehost_guest::testing::{{FakeHost, dec, ts}};

    #[test]
    fn scores_at_and_above_the_threshold() {{
        let host = FakeHost::new().decimal_map("threshold", &[("USD", "500")]);
        for (amount, expected) in [("499.99", 0), ("500", 100), ("9000", 100)] {{
            let tx = Transaction::payment("t", ts("2026-01-05T10:00:00Z"), "a", "b", dec(amount), "USD");
            assert_eq!(host.score::<{ty}>(&tx).score, expected, "{{amount}}");
        }}
    }}
}}
"#
    )
}

fn validation_lib(name: &str, ty: &str, code: &str) -> String {
    format!(
        r#"//! `{name}`: a validation rule. Rejects transactions whose channel is in the
//! `blocked_channels` parameter — `{code}`.

#![cfg_attr(target_arch = "wasm32", no_std)]

use rulehost_guest::prelude::*;
use rulehost_guest::{{ParamType, RuleInfo, Transaction, Validation, ValidationRule, params}};

/// The `{name}` validation rule.
pub struct {ty};

impl ValidationRule for {ty} {{
    fn declare() -> RuleInfo {{
        RuleInfo::new().param("blocked_channels", ParamType::TextList)
    }}

    fn validate(tx: &Transaction) -> Validation {{
        match &tx.channel {{
            Some(c) if params::text_list("blocked_channels").contains(c) => {{
                Validation::reject("{code}", format!("channel {{c}} is blocked"))
            }}
            _ => Validation::Accept,
        }}
    }}
}}

rulehost_guest::export_validation_rule!({ty});
rulehost_guest::no_std_runtime!();

#[cfg(test)]
mod tests {{
    use super::*;
    use rulehost_guest::testing::{{FakeHost, dec, ts}};

    #[test]
    fn rejects_blocked_channels_only() {{
        let host = FakeHost::new().text_list("blocked_channels", &["atm"]);
        let mut tx = Transaction::payment("t", ts("2026-01-05T10:00:00Z"), "a", "b", dec("10"), "USD");
        assert_eq!(host.validate::<{ty}>(&tx), Validation::Accept);
        tx.channel = Some("atm".into());
        assert!(matches!(host.validate::<{ty}>(&tx), Validation::Reject {{ .. }}));
    }}
}}
"#
    )
}

fn risk_cases(code: &str) -> String {
    format!(
        r#"# Cases for `rulehost test`: a transaction, the facts, the expected result.
[defaults]
transaction = {{ id = "t", timestamp = "2026-01-05T10:00:00Z", kind = "payment", source = "a", destination = "b", amount = "10.00", currency = "USD" }}
params = {{ threshold = {{ USD = "500" }} }}

[[case]]
name = "small payment"
expect = {{ score = 0, reasons = [] }}

[[case]]
name = "at the threshold"
transaction = {{ amount = "500.00" }}
expect = {{ score = 100, reasons = ["{code}"] }}
"#
    )
}

fn validation_cases(code: &str) -> String {
    format!(
        r#"# Cases for `rulehost test`: a transaction, the facts, the expected result.
[defaults]
transaction = {{ id = "t", timestamp = "2026-01-05T10:00:00Z", kind = "payment", source = "a", destination = "b", amount = "10.00", currency = "USD", channel = "card" }}
params = {{ blocked_channels = ["atm"] }}

[[case]]
name = "card is fine"
expect = {{ accept = true }}

[[case]]
name = "atm is blocked"
transaction = {{ channel = "atm" }}
expect = {{ reject = "{code}" }}
"#
    )
}

fn readme(name: &str, crate_name: &str, kind: RuleKind) -> String {
    let file = crate_name.replace('-', "_");
    format!(
        r#"# {name}

A rulehost {} rule.

    cargo test                                                     # native unit tests
    cargo build --release --target wasm32-wasip2                   # the component
    rulehost test target/wasm32-wasip2/release/{file}.wasm --cases cases.toml

Ship it: copy the `.wasm` into the rule set's `modules/`, add a `[[rule]]`
entry to its `manifest.toml`, and copy `cases.toml` to `cases/{name}.toml`
so `rulehost test --ruleset DIR` runs it with the rule set's parameters.
"#,
        kind.as_str()
    )
}
