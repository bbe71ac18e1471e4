//! The canonical ABI of `rulehost:rules@2.0.0`, for the core module run
//! directly: the host functions the module imports (arguments read from
//! and results written to guest memory exactly as `canon lower` would, with
//! the module's `cabi_realloc`), the transaction encoding handed to
//! `evaluate`, and the lifting of its verdict with the output contract
//! checked *before* anything is copied out.
//!
//! Layouts (offsets in bytes, little-endian), from the canonical ABI:
//! `decimal` = {hi: s64 @0, lo: u64 @8, scale: u8 @16}, size 24, align 8;
//! `option<param-value>` = {tag @0, case @8, payload @16}, size 40;
//! `history-stats` = {count @0, sum @8}, size 32; `option<account-facts>` =
//! {tag @0, id @8, currency @16, country @24, opened-at @32, status @48,
//! available @56}, size 80; `verdict` = {case @0, payload @4}, size 20,
//! align 4; strings and lists are (pointer u32, length u32).

use wasmtime::{Caller, Linker, Memory, TypedFunc};

mod lift;

pub(crate) use lift::{lift_rule_info, lift_verdict};

use super::super::capabilities::{CallData, decimal_from_parts, decimal_parts, guest_error, instant_parts};
use rulehost_core::model::{AccountStatus, Transaction, TransactionKind};
use rulehost_core::params::ParamValue;

/// The import module of the host interface.
pub(crate) const HOST: &str = "rulehost:rules/host@2.0.0";
/// The exported rule interface.
pub(crate) const RULE: &str = "rulehost:rules/rule@2.0.0";
/// The core export `evaluate` is lifted from.
pub(super) const EVALUATE_EXPORT: &str = "rulehost:rules/rule@2.0.0#evaluate";

impl super::super::capabilities::HasCallData for ResetState {
    fn call_data_mut(&mut self) -> &mut CallData {
        &mut self.data
    }
}

/// The store data of a resettable instance.
pub(crate) struct ResetState {
    pub(super) data: CallData,
    /// The guest's memory (set once the instance exists).
    pub(super) memory: Option<Memory>,
    /// The dirty map, where the host marks what it writes, as the guest's
    /// instrumented stores do.
    pub(super) dirty: Option<Memory>,
    /// The guest's `cabi_realloc` (taken out while it runs).
    pub(super) realloc: Option<TypedFunc<(u32, u32, u32, u32), u32>>,
    /// A buffer host functions reuse for facts on their way to the guest.
    pub(super) scratch: Vec<u8>,
}

fn trap(message: impl Into<String>) -> wasmtime::Error {
    guest_error(message)
}

/// `bytes[ptr..ptr + len]`, or the canonical ABI's out-of-bounds trap.
fn slice<'m>(mem: &'m [u8], ptr: u32, len: u32, what: &str) -> wasmtime::Result<&'m [u8]> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize).filter(|&e| e <= mem.len());
    match end {
        Some(end) => Ok(&mem[start..end]),
        None => Err(trap(format!("{what} pointer/length out of bounds of memory"))),
    }
}

fn read_str<'m>(mem: &'m [u8], ptr: u32, len: u32, what: &str) -> wasmtime::Result<&'m str> {
    std::str::from_utf8(slice(mem, ptr, len, what)?).map_err(|_| trap(format!("{what} is not valid UTF-8")))
}

fn load<const N: usize>(mem: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&mem[at..at + N]);
    out
}

/// Checks that `[ptr, ptr + size)` is in bounds and `ptr` aligned.
fn check_area(mem: &[u8], ptr: u32, size: u32, align: u32, what: &str) -> wasmtime::Result<usize> {
    if !ptr.is_multiple_of(align) {
        return Err(trap(format!("{what} pointer {ptr} is not aligned to {align}")));
    }
    slice(mem, ptr, size, what)?;
    Ok(ptr as usize)
}

/// Results written to guest memory, then copied in with one borrow.
struct Out {
    at: u32,
    /// Room for the largest result (`option<account-facts>`, 80 bytes).
    bytes: [u8; 80],
}

impl Out {
    fn new(at: u32, _size: usize) -> Self {
        Out { at, bytes: [0; 80] }
    }
    fn put(&mut self, offset: usize, bytes: &[u8]) {
        self.bytes[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    fn u8(&mut self, offset: usize, v: u8) {
        self.bytes[offset] = v;
    }
    fn u32(&mut self, offset: usize, v: u32) {
        self.put(offset, &v.to_le_bytes());
    }
    fn u64(&mut self, offset: usize, v: u64) {
        self.put(offset, &v.to_le_bytes());
    }
    fn decimal(&mut self, offset: usize, d: rust_decimal::Decimal) {
        let (hi, lo, scale) = decimal_parts(d);
        self.u64(offset, hi as u64);
        self.u64(offset + 8, lo);
        self.u8(offset + 16, scale);
    }
}

/// Copies `bytes` to guest address `at` (in bounds: checked by the caller)
/// and records the write for the reset.
fn write(
    caller: &mut Caller<'_, ResetState>,
    memory: Memory,
    at: u32,
    bytes: &[u8],
    what: &str,
) -> wasmtime::Result<()> {
    let mem = memory.data_mut(&mut *caller);
    let start = at as usize;
    let end = start
        .checked_add(bytes.len())
        .filter(|&e| e <= mem.len())
        .ok_or_else(|| trap(format!("{what} pointer/length out of bounds of memory")))?;
    mem[start..end].copy_from_slice(bytes);
    mark(caller, start, end)
}

/// Records that the host wrote guest memory `[start, end)`.
fn mark(caller: &mut Caller<'_, ResetState>, start: usize, end: usize) -> wasmtime::Result<()> {
    if start >= end {
        return Ok(());
    }
    let dirty = caller.data().dirty.ok_or_else(|| trap("internal: no dirty map"))?;
    let map = dirty.data_mut(&mut *caller);
    let chunk = super::CHUNK_BYTES as usize;
    // The map covers every chunk the memory can have (`instrument.rs`); a
    // write it could not record must not happen unrecorded.
    let marks = map.get_mut(start / chunk..=(end - 1) / chunk).ok_or_else(|| trap("internal: dirty map too small"))?;
    marks.fill(1);
    Ok(())
}

/// Writes only the bytes the canonical ABI writes: the fields of `out`
/// named by `fields` (offset, length).
fn write_fields(
    caller: &mut Caller<'_, ResetState>,
    memory: Memory,
    out: &Out,
    fields: &[(usize, usize)],
) -> wasmtime::Result<()> {
    // The area was bounds-checked by the caller (`check_area`); check again
    // rather than trust it, then write every field and mark the area once.
    let base = out.at as usize;
    let span = fields.iter().map(|(o, l)| o + l).max().unwrap_or(0);
    let mem = memory.data_mut(&mut *caller);
    let area = base
        .checked_add(span)
        .and_then(|end| mem.get_mut(base..end))
        .ok_or_else(|| trap("result pointer/length out of bounds of memory"))?;
    for &(offset, len) in fields {
        area[offset..offset + len].copy_from_slice(&out.bytes[offset..offset + len]);
    }
    mark(caller, base, base + span)
}

/// Allocates `size` bytes aligned to `align` in the guest with its
/// `cabi_realloc`, as the canonical ABI does for every string and list.
fn alloc(caller: &mut Caller<'_, ResetState>, memory: Memory, align: u32, size: u32) -> wasmtime::Result<u32> {
    // Taken out of the store data for the call (the guest may call host
    // functions again from inside it, which then find none and trap).
    let realloc = caller.data_mut().realloc.take().ok_or_else(|| trap("cabi_realloc re-entered"))?;
    let result = realloc.call(&mut *caller, (0, 0, align, size));
    caller.data_mut().realloc = Some(realloc);
    let ptr = result?;
    if !ptr.is_multiple_of(align) {
        return Err(trap("realloc return: result not aligned"));
    }
    let mem_len = memory.data_size(&*caller);
    if (ptr as usize).checked_add(size as usize).is_none_or(|end| end > mem_len) {
        return Err(trap("realloc return: beyond end of memory"));
    }
    Ok(ptr)
}

/// A string stored in fresh guest memory: (pointer, length).
fn store_string(caller: &mut Caller<'_, ResetState>, memory: Memory, s: &str) -> wasmtime::Result<(u32, u32)> {
    let len = u32::try_from(s.len()).map_err(|_| trap("string too long for the guest"))?;
    let ptr = alloc(caller, memory, 1, len)?;
    write(caller, memory, ptr, s.as_bytes(), "string")?;
    Ok((ptr, len))
}

/// A `list<string>` stored in fresh guest memory: (pointer, length).
fn store_strings(caller: &mut Caller<'_, ResetState>, memory: Memory, list: &[String]) -> wasmtime::Result<(u32, u32)> {
    let len = u32::try_from(list.len()).map_err(|_| trap("list too long for the guest"))?;
    let bytes = len.checked_mul(8).ok_or_else(|| trap("list too long for the guest"))?;
    let array = alloc(caller, memory, 4, bytes)?;
    let mut pairs = Vec::with_capacity(bytes as usize);
    for s in list {
        let (p, l) = store_string(caller, memory, s)?;
        pairs.extend_from_slice(&p.to_le_bytes());
        pairs.extend_from_slice(&l.to_le_bytes());
    }
    write(caller, memory, array, &pairs, "list")?;
    Ok((array, len))
}

fn guest_memory(caller: &Caller<'_, ResetState>) -> wasmtime::Result<Memory> {
    caller.data().memory.ok_or_else(|| trap("host capabilities are only available during `evaluate`"))
}

/// Writes an `option<param-value>` at `ret`.
fn lower_param(
    caller: &mut Caller<'_, ResetState>,
    memory: Memory,
    ret: u32,
    value: Option<&ParamValue>,
) -> wasmtime::Result<()> {
    check_area(memory.data(&*caller), ret, 40, 8, "return")?;
    let mut out = Out::new(ret, 40);
    out.u8(0, 1);
    let fields: &[(usize, usize)] = match value {
        None => {
            out.u8(0, 0);
            &[(0, 1)]
        }
        Some(ParamValue::Text(s)) => {
            let (p, l) = store_string(caller, memory, s)?;
            out.u8(8, 0);
            out.u32(16, p);
            out.u32(20, l);
            &[(0, 1), (8, 1), (16, 8)]
        }
        Some(ParamValue::Integer(i)) => {
            out.u8(8, 1);
            out.u64(16, *i as u64);
            &[(0, 1), (8, 1), (16, 8)]
        }
        Some(ParamValue::Decimal(d)) => {
            out.u8(8, 2);
            out.decimal(16, *d);
            &[(0, 1), (8, 1), (16, 17)]
        }
        Some(ParamValue::TextList(list)) => {
            let (p, l) = store_strings(caller, memory, list)?;
            out.u8(8, 3);
            out.u32(16, p);
            out.u32(20, l);
            &[(0, 1), (8, 1), (16, 8)]
        }
        // Maps are read entry by entry: callers pass only the four kinds
        // above, and anything else reads as absent.
        Some(_) => {
            out.u8(0, 0);
            &[(0, 1)]
        }
    };
    write_fields(caller, memory, &out, fields)
}

/// An `option<decimal>` argument, flattened.
fn lift_option_decimal(tag: u32, hi: i64, lo: i64, scale: u32) -> wasmtime::Result<Option<rust_decimal::Decimal>> {
    match tag {
        0 => Ok(None),
        1 => decimal_from_parts(hi, lo as u64, scale as u8)
            .map(Some)
            .ok_or_else(|| trap("history bound is not a valid decimal")),
        _ => Err(trap("invalid option discriminant")),
    }
}

/// Defines the host functions a resettable module may import.
pub(super) fn add_to_linker(linker: &mut Linker<ResetState>) -> anyhow::Result<()> {
    let err = |e: wasmtime::Error| anyhow::anyhow!("linking the host interface: {e}");
    linker
        .func_wrap(HOST, "param", |mut caller: Caller<'_, ResetState>, name: u32, name_len: u32, ret: u32| {
            let memory = guest_memory(&caller)?;
            let params = caller.data().data.ctx()?.params.clone();
            let value = CallData::param(&params, read_str(memory.data(&caller), name, name_len, "name")?);
            lower_param(&mut caller, memory, ret, value)
        })
        .map_err(err)?;
    linker
        .func_wrap(
            HOST,
            "param-entry",
            |mut caller: Caller<'_, ResetState>, name: u32, name_len: u32, key: u32, key_len: u32, ret: u32| {
                let memory = guest_memory(&caller)?;
                let value = {
                    let mem = memory.data(&caller);
                    let name = read_str(mem, name, name_len, "name")?;
                    let key = read_str(mem, key, key_len, "key")?;
                    caller.data().data.ctx()?.params.entry(name, key)
                };
                let value = value
                    .filter(|v| matches!(v, ParamValue::Text(_) | ParamValue::Integer(_) | ParamValue::Decimal(_)));
                lower_param(&mut caller, memory, ret, value.as_ref())
            },
        )
        .map_err(err)?;
    linker
        .func_wrap(
            HOST,
            "history",
            |mut caller: Caller<'_, ResetState>,
             account: u32,
             account_len: u32,
             window_seconds: i64,
             min_tag: u32,
             min_hi: i64,
             min_lo: i64,
             min_scale: u32,
             max_tag: u32,
             max_hi: i64,
             max_lo: i64,
             max_scale: u32,
             ret: u32| {
                let memory = guest_memory(&caller)?;
                let min = lift_option_decimal(min_tag, min_hi, min_lo, min_scale)?;
                let max = lift_option_decimal(max_tag, max_hi, max_lo, max_scale)?;
                let stats = {
                    let mem = memory.data(&caller);
                    let account = read_str(mem, account, account_len, "account")?;
                    check_area(mem, ret, 32, 8, "return")?;
                    caller.data().data.history(account, window_seconds as u64, min, max)?
                };
                let mut out = Out::new(ret, 32);
                out.u64(0, stats.count);
                out.decimal(8, stats.sum);
                write_fields(&mut caller, memory, &out, &[(0, 25)])
            },
        )
        .map_err(err)?;
    linker
        .func_wrap(HOST, "account", |mut caller: Caller<'_, ResetState>, id: u32, id_len: u32, ret: u32| {
            let memory = guest_memory(&caller)?;
            let facts = caller.data().data.ctx()?.facts.clone();
            // The facts are copied into a reused buffer while the ledger is
            // borrowed, then written to the guest: no guest code runs while
            // the ledger is held.
            let mut scratch = std::mem::take(&mut caller.data_mut().scratch);
            scratch.clear();
            let mut fixed = None;
            {
                let mem = memory.data(&caller);
                let id = read_str(mem, id, id_len, "id")?;
                check_area(mem, ret, 80, 8, "return")?;
                facts.with_account(id, &mut |a| {
                    if let Some(a) = a {
                        scratch.extend_from_slice(a.id.as_bytes());
                        scratch.extend_from_slice(a.currency.as_bytes());
                        scratch.extend_from_slice(a.country.as_bytes());
                        fixed = Some((a.id.len(), a.currency.len(), a.opened_at, a.status, a.available));
                    }
                });
            }
            let mut out = Out::new(ret, 80);
            let result = match fixed {
                None => write_fields(&mut caller, memory, &out, &[(0, 1)]),
                Some((id_len, currency_len, opened_at, status, available)) => (|| {
                    let (id, rest) = scratch.split_at(id_len);
                    let (currency, country) = rest.split_at(currency_len);
                    fn text(b: &[u8]) -> wasmtime::Result<&str> {
                        std::str::from_utf8(b).map_err(|_| trap("internal: account facts not UTF-8"))
                    }
                    let (id_p, id_l) = store_string(&mut caller, memory, text(id)?)?;
                    let (cur_p, cur_l) = store_string(&mut caller, memory, text(currency)?)?;
                    let (cty_p, cty_l) = store_string(&mut caller, memory, text(country)?)?;
                    let (seconds, nanos) = instant_parts(opened_at);
                    out.u8(0, 1);
                    out.u32(8, id_p);
                    out.u32(12, id_l);
                    out.u32(16, cur_p);
                    out.u32(20, cur_l);
                    out.u32(24, cty_p);
                    out.u32(28, cty_l);
                    out.u64(32, seconds as u64);
                    out.u32(40, nanos);
                    out.u8(
                        48,
                        match status {
                            AccountStatus::Active => 0,
                            AccountStatus::Frozen => 1,
                            AccountStatus::Closed => 2,
                        },
                    );
                    out.decimal(56, available);
                    write_fields(&mut caller, memory, &out, &[(0, 1), (8, 36), (48, 1), (56, 17)])
                })(),
            };
            caller.data_mut().scratch = scratch;
            result
        })
        .map_err(err)?;
    linker
        .func_wrap(
            HOST,
            "list-contains",
            |caller: Caller<'_, ResetState>, name: u32, name_len: u32, value: u32, value_len: u32| {
                let memory = guest_memory(&caller)?;
                let mem = memory.data(&caller);
                let name = read_str(mem, name, name_len, "name")?;
                let value = read_str(mem, value, value_len, "value")?;
                Ok(u32::from(caller.data().data.list_contains(name, value)?))
            },
        )
        .map_err(err)?;
    linker
        .func_wrap(HOST, "log", |mut caller: Caller<'_, ResetState>, level: u32, message: u32, message_len: u32| {
            if level as usize >= rulehost_core::rule::LogLevel::ALL.len() {
                return Err(trap("invalid enum discriminant"));
            }
            let memory = guest_memory(&caller)?;
            let (mem, state) = memory.data_and_store_mut(&mut caller);
            let message = read_str(mem, message, message_len, "message")?;
            state.data.log(level as usize, message);
            Ok(())
        })
        .map_err(err)?;
    Ok(())
}

/// The core export `describe` is lifted from.
pub(super) const DESCRIBE_EXPORT: &str = "rulehost:rules/rule@2.0.0#describe";
/// Parameters and lists a rule may declare, each.
pub const DECLARED_ITEMS_MAX: u32 = 256;
/// Bytes of a declared parameter or list name.
pub const DECLARED_NAME_BYTES_MAX: u32 = 256;

/// Encodes a transaction for `evaluate` (see `wit/rulehost.wit`).
pub(crate) fn encode_transaction(tx: &Transaction) -> Vec<u8> {
    let strings = [&tx.id, &tx.source, &tx.destination, &tx.currency];
    let optional = [&tx.country, &tx.merchant_category, &tx.channel];
    let size = 36
        + strings.iter().map(|s| 4 + s.len()).sum::<usize>()
        + optional.iter().filter_map(|s| s.as_ref()).map(|s| 4 + s.len()).sum::<usize>()
        + tx.metadata.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    let (seconds, nanos) = instant_parts(tx.timestamp);
    out.extend_from_slice(&seconds.to_le_bytes());
    out.extend_from_slice(&nanos.to_le_bytes());
    out.push(match tx.kind {
        TransactionKind::Payment => 0,
        TransactionKind::Transfer => 1,
        TransactionKind::Deposit => 2,
        TransactionKind::Withdrawal => 3,
    });
    let (hi, lo, scale) = decimal_parts(tx.amount);
    out.push(scale);
    let present = optional.iter().enumerate().fold(0u8, |acc, (i, s)| acc | (u8::from(s.is_some()) << i));
    out.push(present);
    out.push(0);
    out.extend_from_slice(&lo.to_le_bytes());
    out.extend_from_slice(&hi.to_le_bytes());
    out.extend_from_slice(&(tx.metadata.len() as u32).to_le_bytes());
    let mut put = |s: &str| {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    for s in strings {
        put(s);
    }
    for s in optional.into_iter().flatten() {
        put(s);
    }
    for (k, v) in &tx.metadata {
        put(k);
        put(v);
    }
    out
}
