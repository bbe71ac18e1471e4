//! `rulehost diff`: a side-by-side differential run against another
//! implementation of the same rules (the legacy system of a migration).
//! Both sides read the same JSON Lines and write one record per input line;
//! records are paired by line and compared on what a decision *is* —
//! outcome, score, reasons, ledger effect, replay, error code and field —
//! after the declared representational equivalences. The report groups the
//! disagreements by kind with the first examples of each, and carries the
//! wall and CPU time of both sides.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// Examples kept per kind of disagreement.
pub const EXAMPLES_PER_KIND: usize = 5;

/// A declared representational difference: not a disagreement about the
/// decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Equivalence {
    /// A `null` score (the legacy system's, for rejects before risk
    /// scoring) equals a score of 0.
    NullScoreIsZero,
    /// Error records compare by code only (not by field).
    ErrorCodeOnly,
    /// Any two error records agree (codes and fields are each side's own
    /// vocabulary; the legacy Python's differ from RULES.md's).
    ErrorsAgree,
}

impl Equivalence {
    /// Every equivalence, in declaration order.
    pub const ALL: [Equivalence; 3] =
        [Equivalence::NullScoreIsZero, Equivalence::ErrorCodeOnly, Equivalence::ErrorsAgree];

    /// The spelling of `--equate` and of the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Equivalence::NullScoreIsZero => "null-score-is-zero",
            Equivalence::ErrorCodeOnly => "error-code-only",
            Equivalence::ErrorsAgree => "errors-agree",
        }
    }
}

/// How long one side took.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct SideTime {
    /// Wall time, in seconds.
    pub wall_s: f64,
    /// CPU time (user + system), in seconds.
    pub cpu_s: f64,
}

/// One example of a disagreement.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Example {
    /// 1-based input line.
    pub line: u64,
    /// The transaction id, when a side read it.
    pub id: Option<String>,
    /// rulehost's value.
    pub rulehost: Value,
    /// The other side's value.
    pub legacy: Value,
}

/// The disagreements of one kind.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Group {
    /// e.g. `outcome approve → review`, `reasons +HIGH_VELOCITY`, `score +150`.
    pub kind: String,
    /// Lines with this disagreement.
    pub count: u64,
    /// The first of them.
    pub examples: Vec<Example>,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    /// Lines compared.
    pub lines: u64,
    /// Lines on which both sides agree entirely.
    pub agreeing: u64,
    /// Lines with at least one disagreement.
    pub disagreeing: u64,
    /// Lines only one side wrote (a side stopped early or wrote extra).
    pub unpaired: u64,
    /// Disagreements by kind, most frequent first.
    pub groups: Vec<Group>,
    /// Equivalences applied.
    pub equivalences: Vec<String>,
    /// rulehost's time.
    pub rulehost: SideTime,
    /// The other side's time.
    pub legacy: SideTime,
}

impl Report {
    /// Whether the two sides agree on every line.
    pub fn agrees(&self) -> bool {
        self.disagreeing == 0 && self.unpaired == 0
    }

    /// A readable report.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} lines: {} agree, {} disagree{}",
            self.lines,
            self.agreeing,
            self.disagreeing,
            if self.unpaired > 0 { format!(", {} unpaired", self.unpaired) } else { String::new() }
        );
        if !self.equivalences.is_empty() {
            let _ = writeln!(s, "equivalences: {}", self.equivalences.join(", "));
        }
        let _ = writeln!(s, "{:<10} {:>9} {:>9}", "side", "wall s", "CPU s");
        for (name, t) in [("rulehost", self.rulehost), ("legacy", self.legacy)] {
            let _ = writeln!(s, "{name:<10} {:>9.3} {:>9.3}", t.wall_s, t.cpu_s);
        }
        for g in &self.groups {
            let _ = writeln!(s, "\n{:>8}  {}", g.count, g.kind);
            for e in &g.examples {
                let _ = writeln!(
                    s,
                    "          line {}{}: rulehost {} | legacy {}",
                    e.line,
                    e.id.as_deref().map(|i| format!(" ({i})")).unwrap_or_default(),
                    e.rulehost,
                    e.legacy
                );
            }
        }
        s
    }
}

/// What a record says, normalised: rulehost's nested error object and a
/// flat one read the same.
#[derive(Debug, PartialEq)]
struct Said {
    id: Option<String>,
    outcome: Value,
    score: Value,
    reasons: Value,
    ledger: Value,
    replayed: Value,
    code: Value,
    field: Value,
}

fn said(record: &Value, equivalences: &[Equivalence]) -> Said {
    let get = |k: &str| record.get(k).cloned().unwrap_or(Value::Null);
    let error = record.get("error").filter(|e| e.is_object());
    let from_error = |k: &str| error.and_then(|e| e.get(k)).cloned().unwrap_or_else(|| get(k));
    let is_error = get("outcome") == "error";
    let mut score = get("score");
    if equivalences.contains(&Equivalence::NullScoreIsZero) && score.is_null() && !is_error {
        score = Value::from(0);
    }
    Said {
        id: record.get("id").and_then(Value::as_str).map(str::to_owned),
        outcome: get("outcome"),
        score: if is_error { Value::Null } else { score },
        reasons: if is_error { Value::Null } else { get("reasons") },
        ledger: if is_error { Value::Null } else { get("ledger") },
        // rulehost writes `replayed` only when true.
        replayed: if is_error { Value::Null } else { record.get("replayed").cloned().unwrap_or(Value::Bool(false)) },
        code: if is_error && !equivalences.contains(&Equivalence::ErrorsAgree) {
            from_error("code")
        } else {
            Value::Null
        },
        field: if is_error
            && !equivalences.iter().any(|e| matches!(e, Equivalence::ErrorCodeOnly | Equivalence::ErrorsAgree))
        {
            from_error("field")
        } else {
            Value::Null
        },
    }
}

/// The kinds of disagreement between two records of one line.
fn disagreements(ours: &Said, theirs: &Said) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    let pair = |a: &Value, b: &Value| format!("{} → {}", show(a), show(b));
    if ours.outcome != theirs.outcome {
        out.push((
            format!("outcome {}", pair(&ours.outcome, &theirs.outcome)),
            ours.outcome.clone(),
            theirs.outcome.clone(),
        ));
        // Everything else follows from a different outcome.
        return out;
    }
    if ours.code != theirs.code || ours.field != theirs.field {
        let a = serde_json::json!({ "code": ours.code, "field": ours.field });
        let b = serde_json::json!({ "code": theirs.code, "field": theirs.field });
        out.push((format!("error {}", pair(&a, &b)), a, b));
    }
    if ours.reasons != theirs.reasons {
        let list = |v: &Value| -> Vec<String> {
            v.as_array().map(|a| a.iter().map(|r| r.as_str().unwrap_or("?").to_owned()).collect()).unwrap_or_default()
        };
        let (a, b) = (list(&ours.reasons), list(&theirs.reasons));
        let gained: Vec<String> = a.iter().filter(|r| !b.contains(r)).map(|r| format!("+{r}")).collect();
        let lost: Vec<String> = b.iter().filter(|r| !a.contains(r)).map(|r| format!("-{r}")).collect();
        let kind = if gained.is_empty() && lost.is_empty() {
            "reasons in another order".to_owned()
        } else {
            format!("reasons {}", [gained, lost].concat().join(" "))
        };
        out.push((kind, ours.reasons.clone(), theirs.reasons.clone()));
    }
    if ours.score != theirs.score {
        let kind = match (ours.score.as_i64(), theirs.score.as_i64()) {
            (Some(a), Some(b)) => format!("score {:+}", a.saturating_sub(b)),
            _ => format!("score {}", pair(&ours.score, &theirs.score)),
        };
        out.push((kind, ours.score.clone(), theirs.score.clone()));
    }
    if ours.ledger != theirs.ledger {
        out.push((
            format!("ledger {}", pair(&ours.ledger, &theirs.ledger)),
            ours.ledger.clone(),
            theirs.ledger.clone(),
        ));
    }
    if ours.replayed != theirs.replayed {
        out.push((
            format!("replayed {}", pair(&ours.replayed, &theirs.replayed)),
            ours.replayed.clone(),
            theirs.replayed.clone(),
        ));
    }
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Compares two outputs line by line. `ours` and `theirs` are JSON Lines;
/// a line of either that is not JSON compares as its text. A trailing line
/// of the other side that is not a record of an input line (the legacy
/// `--balances` line) is ignored.
pub fn compare(ours: &str, theirs: &str, equivalences: &[Equivalence]) -> Report {
    let parse = |l: &str| serde_json::from_str::<Value>(l).unwrap_or_else(|_| Value::String(l.to_owned()));
    let ours: Vec<Value> = ours.lines().map(parse).collect();
    let theirs: Vec<Value> =
        theirs.lines().map(parse).filter(|v| v.get("balances").is_none() || v.get("outcome").is_some()).collect();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let (mut agreeing, mut disagreeing) = (0u64, 0u64);
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        let line = (i as u64).saturating_add(1);
        let (sa, sb) = (said(a, equivalences), said(b, equivalences));
        let found = disagreements(&sa, &sb);
        if found.is_empty() {
            agreeing = agreeing.saturating_add(1);
            continue;
        }
        disagreeing = disagreeing.saturating_add(1);
        for (kind, x, y) in found {
            let g = groups.entry(kind.clone()).or_insert_with(|| Group { kind, count: 0, examples: Vec::new() });
            g.count = g.count.saturating_add(1);
            if g.examples.len() < EXAMPLES_PER_KIND {
                g.examples.push(Example { line, id: sa.id.clone().or_else(|| sb.id.clone()), rulehost: x, legacy: y });
            }
        }
    }
    let lines = ours.len().max(theirs.len()) as u64;
    let unpaired = ours.len().abs_diff(theirs.len()) as u64;
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    Report {
        lines,
        agreeing,
        disagreeing,
        unpaired,
        groups,
        equivalences: equivalences.iter().map(|e| e.as_str().to_owned()).collect(),
        rulehost: SideTime::default(),
        legacy: SideTime::default(),
    }
}

/// CPU time (user + system) of this process and of its waited-for
/// children, in seconds.
pub fn cpu_seconds() -> (f64, f64) {
    let usage = |who| {
        // SAFETY: getrusage fills the struct it is given; zeroed is a valid start.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a rusage and a valid `who`.
        unsafe { libc::getrusage(who, &mut u) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    };
    (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_CHILDREN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn representational_differences_are_equivalent_only_when_declared() {
        let ours = r#"{"line":1,"id":"x","outcome":"reject","score":0,"reasons":["ACCOUNT_UNKNOWN"],"ledger":"none","replayed":false}
{"line":2,"outcome":"error","error":{"code":"INVALID_FIELD","field":"timestamp","message":"…"}}
"#;
        let theirs = r#"{"line":1,"id":"x","outcome":"reject","score":null,"reasons":["ACCOUNT_UNKNOWN"],"ledger":"none","replayed":false}
{"line":2,"outcome":"error","code":"INVALID_FIELD","field":"timestamp","message":"other words"}
{"balances":{}}
"#;
        let strict = compare(ours, theirs, &[]);
        assert_eq!((strict.agreeing, strict.disagreeing, strict.unpaired), (1, 1, 0));
        assert_eq!(strict.groups[0].kind, "score 0 → null");
        assert!(compare(ours, theirs, &[Equivalence::NullScoreIsZero]).agrees());
    }

    #[test]
    fn disagreements_are_grouped_by_kind() {
        let r = |line: u64, outcome: &str, score: u32, reasons: &str| {
            format!(
                r#"{{"line":{line},"id":"t{line}","outcome":"{outcome}","score":{score},"reasons":{reasons},"ledger":"none","replayed":false}}"#
            )
        };
        let ours = [
            r(1, "review", 400, r#"["HIGH_VELOCITY"]"#),
            r(2, "approve", 150, r#"["HIGH_VELOCITY"]"#),
            r(3, "approve", 0, "[]"),
        ]
        .join("\n");
        let theirs = [r(1, "approve", 150, r#"["HIGH_VELOCITY"]"#), r(2, "approve", 0, "[]"), r(3, "approve", 0, "[]")]
            .join("\n");
        let report = compare(&ours, &theirs, &[]);
        assert_eq!((report.agreeing, report.disagreeing), (1, 2));
        let kinds: Vec<(&str, u64)> = report.groups.iter().map(|g| (g.kind.as_str(), g.count)).collect();
        assert_eq!(kinds, vec![("outcome review → approve", 1), ("reasons +HIGH_VELOCITY", 1), ("score +150", 1)]);
        assert_eq!(report.groups[0].examples[0].line, 1);
        assert!(report.render().contains("outcome review → approve"));
    }
}
