//! How a call ended: a wasmtime error sorted into the failure kinds of
//! RULES.md, or a raw result checked against the output contract.

use wasmtime::{Store, Trap};

use super::bindings::exports::rulehost::rules::rule as wit_rule;
use super::capabilities::CallState;
use super::{Failure, FailureKind, MESSAGE_BYTES_MAX, REASONS_MAX, Verdict};
use crate::manifest::RuleKind;

/// Whether a code is `[A-Z0-9_]{1,32}`.
pub fn is_valid_code(code: &str) -> bool {
    (1..=32).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Sorts a wasmtime error into the failure kinds of RULES.md.
pub(super) fn classify(store: &Store<CallState>, e: wasmtime::Error) -> Failure {
    let state = store.data();
    let stderr = state
        .stderr
        .as_ref()
        .map(|p| String::from_utf8_lossy(&p.contents()).trim().to_string())
        .filter(|s| !s.is_empty());
    let kind = if state.memory.exceeded {
        FailureKind::Memory
    } else {
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => FailureKind::Fuel,
            Some(Trap::Interrupt) => FailureKind::Deadline,
            _ => FailureKind::Trap,
        }
    };
    let mut message = match kind {
        FailureKind::Memory => format!("memory cap of {} bytes reached", state.memory.memory_bytes_max),
        FailureKind::Fuel => "fuel budget exhausted".to_string(),
        FailureKind::Deadline => "deadline exceeded".to_string(),
        _ => {
            let root = e.root_cause().to_string();
            match e.downcast_ref::<Trap>() {
                Some(t) => t.to_string(),
                None => root,
            }
        }
    };
    if let Some(stderr) = stderr {
        message.push_str(": ");
        message.push_str(&stderr);
    }
    Failure { kind, message }
}

fn invalid(message: String) -> Result<Verdict, Failure> {
    Err(Failure { kind: FailureKind::InvalidOutput, message })
}

/// Checks a raw result against the output contract.
pub(super) fn check_output(kind: RuleKind, v: wit_rule::Verdict) -> Result<Verdict, Failure> {
    match (kind, v) {
        (RuleKind::Validation, wit_rule::Verdict::Accept) => Ok(Verdict::Accept),
        (RuleKind::Validation, wit_rule::Verdict::Reject(r)) => {
            if !is_valid_code(&r.code) {
                return invalid(format!("reject code {:?} is not [A-Z0-9_]{{1,32}}", truncate(&r.code)));
            }
            if r.message.len() > MESSAGE_BYTES_MAX {
                return invalid(format!("reject message of {} bytes exceeds {MESSAGE_BYTES_MAX}", r.message.len()));
            }
            Ok(Verdict::Reject { code: r.code, message: r.message })
        }
        (RuleKind::Risk, wit_rule::Verdict::Score(s)) => {
            if s.score > 1000 {
                return invalid(format!("score {} is out of range 0..=1000", s.score));
            }
            if s.reasons.len() > REASONS_MAX {
                return invalid(format!("{} reasons exceed the limit of {REASONS_MAX}", s.reasons.len()));
            }
            if let Some(bad) = s.reasons.iter().find(|r| !is_valid_code(r)) {
                return invalid(format!("reason {:?} is not [A-Z0-9_]{{1,32}}", truncate(bad)));
            }
            Ok(Verdict::Score { score: s.score, reasons: s.reasons })
        }
        (RuleKind::Validation, wit_rule::Verdict::Score(_)) => invalid("a validation rule returned a score".into()),
        (RuleKind::Risk, _) => invalid("a risk rule returned accept/reject instead of a score".into()),
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
