//! The rule-set manifest (`manifest.toml`): which rules run, in what order,
//! under what budget and policy, with which parameters. Parsed strictly:
//! unknown keys are errors, and every limit is validated here, once.

// Input reaches this module (ARCHITECTURE.md, "No input reaches a panic"):
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;

/// The file name of the manifest inside a rule-set folder.
pub const MANIFEST_FILE: &str = "manifest.toml";

/// Default fuel per rule call: about a millisecond of guest work. The shipped
/// rules use a few thousand.
pub const FUEL_MAX_DEFAULT: u64 = 1_000_000;
/// Default linear-memory cap per rule instance, in bytes (16 MiB).
pub const MEMORY_BYTES_MAX_DEFAULT: u64 = 16 << 20;
/// Default deadline per rule call, in milliseconds of the evaluating
/// thread's CPU time (time spent waiting or preempted does not count).
pub const DEADLINE_MS_DEFAULT: u64 = 50;
/// Largest fuel budget a manifest may ask for.
pub const FUEL_MAX_LIMIT: u64 = 10_000_000_000;
/// Largest memory cap a manifest may ask for, in bytes (1 GiB).
pub const MEMORY_BYTES_MAX_LIMIT: u64 = 1 << 30;
/// Largest deadline a manifest may ask for, in milliseconds.
pub const DEADLINE_MS_LIMIT: u64 = 10_000;
/// Default `review_at` threshold.
pub const REVIEW_AT_DEFAULT: u32 = 400;
/// Default `decline_at` threshold.
pub const DECLINE_AT_DEFAULT: u32 = 700;
/// Largest number of rules in one rule set.
pub const RULES_MAX: usize = 64;
/// Largest rule weight. With at most `RULES_MAX` rules scoring at most 1000
/// each, the weighted total stays below 6.4 × 10^7: it can never overflow.
pub const WEIGHT_MAX: u32 = 1000;
/// Most decimal places of a weight: with `WEIGHT_MAX`, every product and
/// sum of the aggregate is exact (no rounding can move the floor).
pub const WEIGHT_SCALE_MAX: u32 = 9;

/// A manifest error, naming the rule and key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The TOML did not parse or had unknown / mistyped keys.
    #[error("{file}: {message}")]
    Syntax {
        /// The manifest path.
        file: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{file}: {place}: {message}")]
    Invalid {
        /// The manifest path.
        file: String,
        /// `rule `name`` or `top level`, and the key.
        place: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// What a rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// Accepts or rejects.
    Validation,
    /// Scores 0..=1000.
    Risk,
}

impl RuleKind {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Validation => "validation",
            RuleKind::Risk => "risk",
        }
    }
}

/// What happens when a rule fails (trap, fuel, deadline, memory, invalid output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The rule contributes nothing; the outcome is at least `review`.
    #[default]
    Review,
    /// The outcome is `reject`.
    Reject,
    /// The rule is skipped.
    Ignore,
}

impl OnError {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Review => "review",
            OnError::Reject => "reject",
            OnError::Ignore => "ignore",
        }
    }
}

/// The budget of one rule call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Deterministic fuel units per call (≈ one per Wasm instruction).
    pub fuel_max: u64,
    /// Cap on the instance's linear memory, in bytes.
    pub memory_bytes_max: u64,
    /// Deadline per call, in milliseconds of the CPU time the call uses (the
    /// evaluating thread's; waiting and preemption do not count). A safety
    /// net behind fuel, checked every `sandbox::EPOCH_TICK_MS`.
    pub deadline_ms: u64,
}

impl Budget {
    /// Checks each value against its range; the error names the key
    /// (`budget.fuel_max`, …). Manifests and cases files share it.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=FUEL_MAX_LIMIT).contains(&self.fuel_max) {
            return Err(("budget.fuel_max", format!("{} is outside 1..={FUEL_MAX_LIMIT}", self.fuel_max)));
        }
        if !(65_536..=MEMORY_BYTES_MAX_LIMIT).contains(&self.memory_bytes_max) {
            return Err((
                "budget.memory_bytes_max",
                format!("{} is outside 65536..={MEMORY_BYTES_MAX_LIMIT} bytes", self.memory_bytes_max),
            ));
        }
        if !(1..=DEADLINE_MS_LIMIT).contains(&self.deadline_ms) {
            return Err(("budget.deadline_ms", format!("{} is outside 1..={DEADLINE_MS_LIMIT} ms", self.deadline_ms)));
        }
        Ok(())
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            fuel_max: FUEL_MAX_DEFAULT,
            memory_bytes_max: MEMORY_BYTES_MAX_DEFAULT,
            deadline_ms: DEADLINE_MS_DEFAULT,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    review_at: Option<u32>,
    decline_at: Option<u32>,
    #[serde(default)]
    shared: toml::Table,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
    rollout: Option<RawRollout>,
}

/// `[rollout]`: the automatic abort of this rule set as a canary candidate.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    abort_failure_percent: Option<toml::Value>,
    abort_flagged_percent: Option<toml::Value>,
    window_decisions: Option<u32>,
    min_decisions: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    kind: RuleKind,
    module: String,
    weight: Option<toml::Value>,
    #[serde(default)]
    budget: RawBudget,
    #[serde(default)]
    on_error: OnError,
    sha256: Option<String>,
    #[serde(default)]
    params: toml::Table,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    fuel_max: Option<u64>,
    memory_bytes_max: Option<u64>,
    deadline_ms: Option<u64>,
}

/// One rule entry of the manifest, validated.
#[derive(Clone, Debug)]
pub struct RuleEntry {
    /// Unique name, used in decisions and logs.
    pub name: String,
    /// Validation or risk.
    pub kind: RuleKind,
    /// Module path relative to the rule-set folder.
    pub module: String,
    /// Weight of the score (decimal, ≥ 0, default 1).
    pub weight: Decimal,
    /// Budget per call.
    pub budget: Budget,
    /// Failure policy.
    pub on_error: OnError,
    /// Optional pin of the module's SHA-256 (lower-case hex).
    pub sha256: Option<String>,
    /// Parameters: the rule's own table over the shared one (checked against
    /// the rule's declaration when the module loads).
    pub params: toml::Table,
    /// Names of the rule's own parameters (for "unknown key" checks).
    pub own_params: Vec<String>,
}

/// A parsed, validated manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// Total at or above which the outcome is at least `review`.
    pub review_at: u32,
    /// Total at or above which the outcome is `decline`.
    pub decline_at: u32,
    /// The rules, in manifest order.
    pub rules: Vec<RuleEntry>,
    /// `[rollout]`: the guard that aborts this rule set's canary.
    pub guard: Option<crate::rollout::Guard>,
}

/// A percentage of the manifest: an integer or a decimal string.
fn percent(value: &toml::Value) -> Result<Decimal, String> {
    match value {
        toml::Value::Integer(i) => crate::rollout::parse_percent(&i.to_string()),
        toml::Value::String(s) => crate::rollout::parse_percent(s),
        toml::Value::Float(f) => {
            Err(format!("write the percentage as a string (\"{f}\") or an integer: floats are inexact"))
        }
        other => Err(format!("expected a percentage, got {}", other.type_str())),
    }
}

impl Manifest {
    /// Parses and validates manifest text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| ManifestError::Syntax { file: file.into(), message: e.to_string() })?;
        let invalid = |place: String, message: String| ManifestError::Invalid { file: file.into(), place, message };
        let review_at = raw.review_at.unwrap_or(REVIEW_AT_DEFAULT);
        let decline_at = raw.decline_at.unwrap_or(DECLINE_AT_DEFAULT);
        if review_at > 1000 || decline_at > 1000 || review_at > decline_at {
            return Err(invalid(
                "top level".into(),
                format!("need 0 ≤ review_at ({review_at}) ≤ decline_at ({decline_at}) ≤ 1000"),
            ));
        }
        if raw.rules.is_empty() {
            return Err(invalid("top level".into(), "no [[rule]] entries".into()));
        }
        if raw.rules.len() > RULES_MAX {
            return Err(invalid("top level".into(), format!("{} rules, at most {RULES_MAX}", raw.rules.len())));
        }
        let mut names = BTreeMap::new();
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (i, r) in raw.rules.into_iter().enumerate() {
            let place = |key: &str| format!("rule `{}` (#{}) key `{key}`", r.name, i.saturating_add(1));
            if r.name.is_empty() || !r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(invalid(place("name"), "must be non-empty letters, digits, `-` or `_`".into()));
            }
            if names.insert(r.name.clone(), i).is_some() {
                return Err(invalid(place("name"), "duplicate rule name".into()));
            }
            if r.module.is_empty() || r.module.starts_with('/') || r.module.split(['/', '\\']).any(|p| p == "..") {
                return Err(invalid(
                    place("module"),
                    format!("{:?} must be a relative path inside the rule-set folder", r.module),
                ));
            }
            let weight = match &r.weight {
                None => Decimal::ONE,
                Some(toml::Value::Integer(i)) => Decimal::from(*i),
                Some(toml::Value::String(s)) => Decimal::from_str(s)
                    .map_err(|e| invalid(place("weight"), format!("{s:?} is not a decimal: {e}")))?,
                Some(toml::Value::Float(f)) => {
                    return Err(invalid(
                        place("weight"),
                        format!("write the weight as a string (\"{f}\") or an integer: floats are inexact"),
                    ));
                }
                Some(other) => {
                    return Err(invalid(
                        place("weight"),
                        format!("expected a decimal string, got {}", other.type_str()),
                    ));
                }
            };
            if weight.is_sign_negative() && !weight.is_zero() {
                return Err(invalid(place("weight"), "must not be negative".into()));
            }
            if weight > Decimal::from(WEIGHT_MAX) {
                return Err(invalid(place("weight"), format!("{weight} is larger than the limit of {WEIGHT_MAX}")));
            }
            if weight.normalize().scale() > WEIGHT_SCALE_MAX {
                return Err(invalid(
                    place("weight"),
                    format!("{weight} has more than {WEIGHT_SCALE_MAX} decimal places"),
                ));
            }
            let defaults = Budget::default();
            let budget = Budget {
                fuel_max: r.budget.fuel_max.unwrap_or(defaults.fuel_max),
                memory_bytes_max: r.budget.memory_bytes_max.unwrap_or(defaults.memory_bytes_max),
                deadline_ms: r.budget.deadline_ms.unwrap_or(defaults.deadline_ms),
            };
            budget.check().map_err(|(key, message)| invalid(place(key), message))?;
            if let Some(pin) = &r.sha256
                && !(pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            {
                return Err(invalid(place("sha256"), "must be 64 lower-case hex digits".into()));
            }
            let own_params = r.params.keys().cloned().collect();
            let mut params = raw.shared.clone();
            params.extend(r.params);
            rules.push(RuleEntry {
                name: r.name,
                kind: r.kind,
                module: r.module,
                weight,
                budget,
                on_error: r.on_error,
                sha256: r.sha256,
                params,
                own_params,
            });
        }
        let guard = match raw.rollout {
            None => None,
            Some(r) => {
                let place = |key: &str| format!("[rollout] key `{key}`");
                let defaults = crate::rollout::Guard::default();
                let guard = crate::rollout::Guard {
                    failure_percent: r
                        .abort_failure_percent
                        .as_ref()
                        .map(percent)
                        .transpose()
                        .map_err(|m| invalid(place("abort_failure_percent"), m))?,
                    flagged_percent: r
                        .abort_flagged_percent
                        .as_ref()
                        .map(percent)
                        .transpose()
                        .map_err(|m| invalid(place("abort_flagged_percent"), m))?,
                    window: r.window_decisions.unwrap_or(defaults.window),
                    min_decisions: r
                        .min_decisions
                        .unwrap_or(defaults.min_decisions.min(r.window_decisions.unwrap_or(defaults.window))),
                };
                crate::rollout::check_guard(&guard).map_err(|(key, message)| invalid(place(key), message))?;
                Some(guard)
            }
        };
        Ok(Manifest { review_at, decline_at, rules, guard })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[rule]]
name = "a"
kind = "risk"
module = "a.wasm"
"#;

    #[test]
    fn defaults_apply() {
        let m = Manifest::parse("m", MINIMAL).unwrap();
        assert_eq!((m.review_at, m.decline_at), (400, 700));
        assert_eq!(m.rules[0].weight, Decimal::ONE);
        assert_eq!(m.rules[0].budget, Budget::default());
        assert_eq!(m.rules[0].on_error, OnError::Review);
    }

    #[test]
    fn errors_name_the_place() {
        let cases = [
            ("review_at = 800\n", "review_at"),
            ("bogus = 1\n", "bogus"),
            ("[[rule]]\nname='a'\nkind='risk'\nmodule='a.wasm'\nweigth=2\n", "weigth"),
            ("[[rule]]\nname='a'\nkind='scoring'\nmodule='a.wasm'\n", "scoring"),
            ("[[rule]]\nname='a'\nkind='risk'\nmodule='a.wasm'\nweight=1.5\n", "floats are inexact"),
            (
                "[[rule]]\nname='a'\nkind='risk'\nmodule='a.wasm'\nweight='9999999999999999999999999999'\n",
                "larger than the limit of 1000",
            ),
            ("[[rule]]\nname='a'\nkind='risk'\nmodule='a.wasm'\nweight=1001\n", "larger than the limit of 1000"),
            ("[[rule]]\nname='a'\nkind='risk'\nmodule='a.wasm'\nweight='0.0000000001'\n", "decimal places"),
            ("[[rule]]\nname='a'\nkind='risk'\nmodule='../a.wasm'\n", "rule `a` (#1) key `module`"),
            ("[[rule]]\nname='a'\nkind='risk'\nmodule='a.wasm'\n[rule.budget]\nfuel_max=0\n", "budget.fuel_max"),
            (
                "[[rule]]\nname='a'\nkind='risk'\nmodule='a.wasm'\n[[rule]]\nname='a'\nkind='risk'\nmodule='b.wasm'\n",
                "duplicate",
            ),
            ("[[rule]]\nname='a'\nkind='risk'\nmodule='a.wasm'\nsha256='xyz'\n", "sha256"),
        ];
        for (text, needle) in cases {
            let text = if text.starts_with("review_at") || text.starts_with("bogus") {
                format!("{text}{MINIMAL}")
            } else {
                text.to_string()
            };
            let err = Manifest::parse("m", &text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }

    #[test]
    fn own_params_override_shared() {
        let text = "[shared]\nx = 1\ny = 2\n[[rule]]\nname='a'\nkind='risk'\nmodule='a.wasm'\n[rule.params]\ny = 3\n";
        let m = Manifest::parse("m", text).unwrap();
        assert_eq!(m.rules[0].params["x"].as_integer(), Some(1));
        assert_eq!(m.rules[0].params["y"].as_integer(), Some(3));
        assert_eq!(m.rules[0].own_params, vec!["y".to_string()]);
    }
}
