//! Lifting what a rule returns — `evaluate`'s verdict and `describe`'s
//! declaration — from its memory, as the canonical ABI lifts them, with the
//! output contract's bounds checked before anything is copied.

use super::{DECLARED_ITEMS_MAX, DECLARED_NAME_BYTES_MAX, check_area, load, read_str, slice, trap};
use crate::outcome::{CODE_BYTES_MAX, RawVerdict, truncate};
use crate::{Failure, FailureKind, MESSAGE_BYTES_MAX, REASONS_MAX};

/// A result that breaks the output contract.
fn refused(message: String) -> wasmtime::Result<Result<RawVerdict, Failure>> {
    Ok(Err(Failure { kind: FailureKind::InvalidOutput, message }))
}

/// Lifts the verdict `evaluate` returned at `ret`: out-of-bounds pointers,
/// bad discriminants and invalid UTF-8 trap (`Err`), as lifting does; sizes
/// beyond the output contract are refused (`Ok(Err(invalid-output))`)
/// before any of the guest's strings is copied.
pub(crate) fn lift_verdict(mem: &[u8], ret: u32) -> wasmtime::Result<Result<RawVerdict, Failure>> {
    let at = check_area(mem, ret, 20, 4, "return")?;
    let word = |offset: usize| u32::from_le_bytes(load(mem, at + offset));
    match mem[at] {
        0 => Ok(Ok(RawVerdict::Accept)),
        1 => {
            let (code, code_len, message, message_len) = (word(4), word(8), word(12), word(16));
            if code_len as usize > CODE_BYTES_MAX {
                let shown = String::from_utf8_lossy(slice(mem, code, CODE_BYTES_MAX as u32, "code")?).into_owned();
                return refused(format!("reject code {:?}… is not [A-Z0-9_]{{1,32}}", truncate(&shown)));
            }
            if message_len as usize > MESSAGE_BYTES_MAX {
                slice(mem, message, message_len, "message")?;
                return refused(format!("reject message of {message_len} bytes exceeds {MESSAGE_BYTES_MAX}"));
            }
            let code = read_str(mem, code, code_len, "code")?.to_owned();
            let message = read_str(mem, message, message_len, "message")?.to_owned();
            Ok(Ok(RawVerdict::Reject { code, message }))
        }
        2 => {
            let (score, list, count) = (word(4), word(8), word(12));
            if !list.is_multiple_of(4) {
                return Err(trap("list pointer is not aligned"));
            }
            let pairs = slice(
                mem,
                list,
                count.checked_mul(8).ok_or_else(|| trap("list pointer/length out of bounds of memory"))?,
                "list",
            )?;
            if count as usize > REASONS_MAX {
                return refused(format!("{count} reasons exceed the limit of {REASONS_MAX}"));
            }
            let mut reasons = Vec::with_capacity(count as usize);
            for pair in pairs.chunks_exact(8) {
                let p = u32::from_le_bytes(load(pair, 0));
                let l = u32::from_le_bytes(load(pair, 4));
                if l as usize > CODE_BYTES_MAX {
                    let shown = String::from_utf8_lossy(slice(mem, p, CODE_BYTES_MAX as u32, "reason")?).into_owned();
                    return refused(format!("reason {:?}… is not [A-Z0-9_]{{1,32}}", truncate(&shown)));
                }
                reasons.push(read_str(mem, p, l, "reason")?.to_owned());
            }
            Ok(Ok(RawVerdict::Score { score, reasons }))
        }
        _ => Err(trap("invalid variant discriminant")),
    }
}

/// Lifts the `rule-info` `describe` returned at `ret` (`{kind: u8 @0,
/// params: list @4, lists: list @12, history-window-seconds-max: u64 @24}`,
/// a param-spec `{name: string @0, type: u8 @8}` of 12 bytes): traps as
/// lifting does on bad pointers, discriminants and UTF-8, and refuses more
/// than [`DECLARED_ITEMS_MAX`] items or names over
/// [`DECLARED_NAME_BYTES_MAX`] bytes before copying anything.
pub(crate) fn lift_rule_info(mem: &[u8], ret: u32) -> wasmtime::Result<Result<crate::RuleDeclaration, String>> {
    use rulehost_core::manifest::RuleKind;
    use rulehost_core::params::ParamType;
    let at = check_area(mem, ret, 32, 8, "return")?;
    let word = |base: usize, offset: usize| u32::from_le_bytes(load(mem, base + offset));
    let kind = match mem[at] {
        0 => RuleKind::Validation,
        1 => RuleKind::Risk,
        _ => return Err(trap("invalid enum discriminant")),
    };
    let list = |offset: usize, item: u32, what: &str| -> wasmtime::Result<Result<(usize, usize), String>> {
        let (ptr, count) = (word(at, offset), word(at, offset + 4));
        if !ptr.is_multiple_of(4) {
            return Err(trap("list pointer is not aligned"));
        }
        let bytes = count.checked_mul(item).ok_or_else(|| trap("list pointer/length out of bounds of memory"))?;
        slice(mem, ptr, bytes, "list")?;
        if count > DECLARED_ITEMS_MAX {
            return Ok(Err(format!("it declares {count} {what}, at most {DECLARED_ITEMS_MAX}")));
        }
        Ok(Ok((ptr as usize, count as usize)))
    };
    let name = |ptr: u32, len: u32, what: &str| -> wasmtime::Result<Result<String, String>> {
        if len > DECLARED_NAME_BYTES_MAX {
            slice(mem, ptr, len, what)?;
            return Ok(Err(format!("a declared {what} name has {len} bytes, at most {DECLARED_NAME_BYTES_MAX}")));
        }
        Ok(Ok(read_str(mem, ptr, len, what)?.to_owned()))
    };
    let (params_at, params_count) = match list(4, 12, "parameters")? {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    let mut params = Vec::with_capacity(params_count);
    for i in 0..params_count {
        let base = params_at + i * 12;
        let name = match name(word(base, 0), word(base, 4), "parameter")? {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        let ty = match mem[base + 8] {
            0 => ParamType::Text,
            1 => ParamType::Integer,
            2 => ParamType::Decimal,
            3 => ParamType::TextList,
            4 => ParamType::IntegerMap,
            5 => ParamType::DecimalMap,
            6 => ParamType::TextMap,
            _ => return Err(trap("invalid enum discriminant")),
        };
        params.push((name, ty));
    }
    let (lists_at, lists_count) = match list(12, 8, "lists")? {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    let mut lists = Vec::with_capacity(lists_count);
    for i in 0..lists_count {
        let base = lists_at + i * 8;
        match name(word(base, 0), word(base, 4), "list")? {
            Ok(n) => lists.push(n),
            Err(e) => return Ok(Err(e)),
        }
    }
    let history_window_seconds_max = u64::from_le_bytes(load(mem, at + 24));
    Ok(Ok(crate::RuleDeclaration { kind, params, lists, history_window_seconds_max }))
}
