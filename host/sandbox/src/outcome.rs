//! How a call ended: a wasmtime error sorted into the failure kinds of
//! RULES.md, or a raw result checked against the output contract. One
//! contract for both execution paths.

use wasmtime::Trap;

use super::capabilities::MemoryCap;
use super::{Failure, FailureKind, MESSAGE_BYTES_MAX, REASONS_MAX, Verdict};
use rulehost_core::manifest::RuleKind;

/// Bytes of a reason or rejection code.
pub const CODE_BYTES_MAX: usize = 32;

/// Whether a code is `[A-Z0-9_]{1,32}`.
pub fn is_valid_code(code: &str) -> bool {
    (1..=CODE_BYTES_MAX).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// A result as the guest returned it, before the output contract.
#[derive(Debug)]
pub(super) enum RawVerdict {
    Accept,
    Reject { code: String, message: String },
    Score { score: u32, reasons: Vec<String> },
}

/// Sorts a wasmtime error into the failure kinds of RULES.md.
pub(super) fn classify(e: &wasmtime::Error, memory: &MemoryCap, stderr: Option<String>) -> Failure {
    let kind = if memory.exceeded {
        FailureKind::Memory
    } else {
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => FailureKind::Fuel,
            Some(Trap::Interrupt) => FailureKind::Deadline,
            _ => FailureKind::Trap,
        }
    };
    let mut message = match kind {
        FailureKind::Memory => format!("memory cap of {} bytes reached", memory.memory_bytes_max),
        FailureKind::Fuel => "fuel budget exhausted".to_string(),
        FailureKind::Deadline => "deadline exceeded".to_string(),
        _ => match e.downcast_ref::<Trap>() {
            Some(t) => t.to_string(),
            None => e.root_cause().to_string(),
        },
    };
    if let Some(stderr) = stderr {
        message.push_str(": ");
        message.push_str(&stderr);
    }
    Failure { kind, message }
}

/// Checks a raw result against the output contract.
pub(super) fn check_output(kind: RuleKind, v: RawVerdict) -> Result<Verdict, Failure> {
    let verdict = match v {
        RawVerdict::Accept => Verdict::Accept,
        RawVerdict::Reject { code, message } => Verdict::Reject { code, message },
        RawVerdict::Score { score, reasons } => Verdict::Score { score, reasons },
    };
    check_verdict(kind, &verdict)?;
    Ok(verdict)
}

/// The output contract of RULES.md step 4, for any executor's verdict: the
/// kind's shape, a score in 0..=1000, at most `REASONS_MAX` valid codes, a
/// valid reject code and a bounded message. The pipeline applies it to
/// every call, whoever ran it.
pub fn check_verdict(kind: RuleKind, v: &Verdict) -> Result<(), Failure> {
    let refused = |message: String| Err(Failure { kind: FailureKind::InvalidOutput, message });
    match (kind, v) {
        (RuleKind::Validation, Verdict::Accept) => Ok(()),
        (RuleKind::Validation, Verdict::Reject { code, message }) => {
            if !is_valid_code(code) {
                return refused(format!("reject code {:?} is not [A-Z0-9_]{{1,32}}", truncate(code)));
            }
            if message.len() > MESSAGE_BYTES_MAX {
                return refused(format!("reject message of {} bytes exceeds {MESSAGE_BYTES_MAX}", message.len()));
            }
            Ok(())
        }
        (RuleKind::Risk, Verdict::Score { score, reasons }) => {
            if *score > 1000 {
                return refused(format!("score {score} is out of range 0..=1000"));
            }
            if reasons.len() > REASONS_MAX {
                return refused(format!("{} reasons exceed the limit of {REASONS_MAX}", reasons.len()));
            }
            if let Some(bad) = reasons.iter().find(|r| !is_valid_code(r)) {
                return refused(format!("reason {:?} is not [A-Z0-9_]{{1,32}}", truncate(bad)));
            }
            Ok(())
        }
        (RuleKind::Validation, Verdict::Score { .. }) => refused("a validation rule returned a score".into()),
        (RuleKind::Risk, _) => refused("a risk rule returned accept/reject instead of a score".into()),
    }
}

/// At most 40 bytes of `s`, cut at a character boundary (for messages).
pub fn truncate(s: &str) -> &str {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
