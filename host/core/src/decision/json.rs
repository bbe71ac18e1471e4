//! The decision's JSON, written by hand: byte for byte what serializing the
//! `DecisionJson` shape with serde gives (the tests check it), at a fraction
//! of the cost — a decision is serialized once per transaction, on the path
//! every commit waits for.

use super::{Decision, RuleResult, RuleTrace};

/// Appends `s` as a JSON string. The common case — nothing to escape — is
/// one copy; anything else goes through serde_json's escaping.
fn string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // serde_json writes valid UTF-8 into the buffer; a failure cannot
        // happen for a `&str`, and would only leave the string out.
        if let Ok(escaped) = serde_json::to_string(s) {
            out.push_str(&escaped);
        }
    }
}

fn number(out: &mut String, n: u64) {
    let mut buf = itoa::Buffer::new();
    out.push_str(buf.format(n));
}

fn strings(out: &mut String, list: &[String]) {
    out.push('[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, s);
    }
    out.push(']');
}

fn trace(out: &mut String, t: &RuleTrace) {
    out.push_str("{\"rule\":");
    string(out, &t.rule);
    out.push_str(",\"version\":");
    string(out, &t.version);
    let result = match &t.result {
        RuleResult::Accept => "accept",
        RuleResult::Reject { .. } => "reject",
        RuleResult::Score { .. } => "score",
        RuleResult::Failed { .. } => "failed",
    };
    out.push_str(",\"result\":\"");
    out.push_str(result);
    out.push('"');
    if let RuleResult::Score { score, .. } = &t.result {
        out.push_str(",\"score\":");
        number(out, u64::from(*score));
    }
    out.push_str(",\"fuel\":");
    number(out, t.fuel);
    match &t.result {
        RuleResult::Accept => {}
        RuleResult::Score { reasons, .. } => {
            out.push_str(",\"reasons\":");
            strings(out, reasons);
        }
        RuleResult::Reject { code, message } => {
            out.push_str(",\"code\":");
            string(out, code);
            out.push_str(",\"message\":");
            string(out, message);
        }
        RuleResult::Failed { kind, message, on_error } => {
            out.push_str(",\"failure\":\"");
            out.push_str(kind.as_str());
            out.push_str("\",\"on_error\":\"");
            out.push_str(on_error.as_str());
            out.push_str("\",\"message\":");
            string(out, message);
        }
    }
    if !t.logs.is_empty() {
        out.push_str(",\"logs\":[");
        for (i, l) in t.logs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"level\":\"");
            out.push_str(l.level.as_str());
            out.push_str("\",\"message\":");
            string(out, &l.message);
            out.push('}');
        }
        out.push(']');
    }
    out.push('}');
}

/// The decision's JSON (see [`Decision::json`]).
pub(super) fn decision(d: &Decision) -> String {
    let mut out = String::with_capacity(160 + 110 * d.rules.len());
    out.push_str("{\"id\":");
    string(&mut out, &d.id);
    out.push_str(",\"outcome\":\"");
    out.push_str(d.outcome.as_str());
    out.push_str("\",\"score\":");
    number(&mut out, u64::from(d.score));
    out.push_str(",\"reasons\":");
    strings(&mut out, &d.reasons);
    out.push_str(",\"ruleset\":");
    string(&mut out, &d.ruleset);
    if let Some(tag) = &d.rollout {
        out.push_str(",\"rollout\":{\"arm\":\"");
        out.push_str(tag.arm.as_str());
        out.push_str("\",\"bucket\":");
        number(&mut out, u64::from(tag.bucket));
        out.push_str(",\"share\":");
        number(&mut out, u64::from(tag.share));
        out.push('}');
    }
    out.push_str(",\"rules\":[");
    for (i, t) in d.rules.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        trace(&mut out, t);
    }
    out.push_str("],\"ledger\":\"");
    out.push_str(d.ledger.as_str());
    out.push_str("\"}");
    out
}
