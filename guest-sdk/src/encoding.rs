//! The transaction encoding of `rulehost:rules@2.0.0` (see `rule.evaluate`
//! in `wit/rulehost.wit`): one byte buffer the host writes into the rule's
//! memory with a single allocation, decoded here into a [`Transaction`].
//!
//! Compiled natively as well, so the host's tests can check that what the
//! host encodes is what a rule decodes.

use alloc::string::String;
use alloc::vec::Vec;

use crate::{Decimal, Timestamp, Transaction, TransactionKind};

/// Bytes before the strings.
pub const HEADER_BYTES: usize = 36;
/// Bit of the presence byte: `country` is present.
pub const HAS_COUNTRY: u8 = 1;
/// Bit of the presence byte: `merchant_category` is present.
pub const HAS_MERCHANT_CATEGORY: u8 = 2;
/// Bit of the presence byte: `channel` is present.
pub const HAS_CHANNEL: u8 = 4;

/// The string at `*pos` (a `u32` length, then the bytes); advances `pos`.
/// Strings from the host are UTF-8 by contract (`wit/rulehost.wit`,
/// `rule.evaluate`: the host encodes Rust strings), as the canonical ABI
/// trusts a caller's strings; only untrusted bytes are checked.
#[inline(always)]
fn string(bytes: &[u8], pos: &mut usize, trusted: bool) -> Option<String> {
    let len = u32::from_le_bytes(le(bytes.get(*pos..)?, 0)?) as usize;
    let start = *pos + 4;
    let text = bytes.get(start..start.checked_add(len)?)?;
    *pos = start + len;
    if !trusted {
        core::str::from_utf8(text).ok()?;
    }
    Some(owned_utf8(text))
}

/// A `String` holding `bytes`, which are UTF-8: one allocation of exactly
/// their length and one copy (the shortest path through the allocator; this
/// runs for every string of every call).
#[inline(always)]
fn owned_utf8(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let layout = core::alloc::Layout::from_size_align(bytes.len(), 1);
    let Ok(layout) = layout else { return String::from_utf8_lossy(bytes).into_owned() };
    // SAFETY: `layout` has a non-zero size; the block is checked for null,
    // filled with `bytes.len()` bytes of UTF-8 (the caller's contract), and
    // handed to `String` with the capacity it was allocated with.
    unsafe {
        let ptr = alloc::alloc::alloc(layout);
        if ptr.is_null() {
            alloc::alloc::handle_alloc_error(layout);
        }
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len());
        String::from_raw_parts(ptr, bytes.len(), bytes.len())
    }
}

#[inline(always)]
fn le<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Decodes a transaction; `None` when the bytes do not follow the encoding.
pub fn decode(bytes: &[u8]) -> Option<Transaction> {
    decode_with(bytes, false)
}

/// Decodes a transaction the host handed to `evaluate`: as [`decode`], but
/// trusting the contract that its strings are UTF-8 (checking them would be
/// most of the cost of a call).
pub fn decode_from_host(bytes: &[u8]) -> Option<Transaction> {
    decode_with(bytes, true)
}

fn decode_with(bytes: &[u8], trusted: bool) -> Option<Transaction> {
    if bytes.len() < HEADER_BYTES {
        return None;
    }
    let seconds = i64::from_le_bytes(le(bytes, 0)?);
    let nanos = u32::from_le_bytes(le(bytes, 8)?);
    let kind = match bytes[12] {
        0 => TransactionKind::Payment,
        1 => TransactionKind::Transfer,
        2 => TransactionKind::Deposit,
        3 => TransactionKind::Withdrawal,
        _ => return None,
    };
    let scale = u32::from(bytes[13]);
    let present = bytes[14];
    let lo = u64::from_le_bytes(le(bytes, 16)?);
    let hi = i64::from_le_bytes(le(bytes, 24)?);
    let mantissa = (i128::from(hi) << 64) | i128::from(lo);
    let amount = Decimal::try_from_i128_with_scale(mantissa, scale).ok()?;
    let metadata_len = u32::from_le_bytes(le(bytes, 32)?) as usize;
    let mut pos = HEADER_BYTES;
    let id = string(bytes, &mut pos, trusted)?;
    let source = string(bytes, &mut pos, trusted)?;
    let destination = string(bytes, &mut pos, trusted)?;
    let currency = string(bytes, &mut pos, trusted)?;
    let mut optional = |bit: u8| -> Option<Option<String>> {
        if present & bit == 0 { Some(None) } else { string(bytes, &mut pos, trusted).map(Some) }
    };
    let country = optional(HAS_COUNTRY)?;
    let merchant_category = optional(HAS_MERCHANT_CATEGORY)?;
    let channel = optional(HAS_CHANNEL)?;
    // Each entry takes at least 8 bytes, so a count beyond that is malformed
    // and is refused before anything is allocated for it.
    if metadata_len > (bytes.len() - pos) / 8 {
        return None;
    }
    let mut metadata = Vec::with_capacity(metadata_len);
    for _ in 0..metadata_len {
        let key = string(bytes, &mut pos, trusted)?;
        let value = string(bytes, &mut pos, trusted)?;
        metadata.push((key, value));
    }
    if pos != bytes.len() {
        return None;
    }
    Some(Transaction {
        id,
        timestamp: Timestamp { seconds, nanos },
        kind,
        source,
        destination,
        amount,
        currency,
        country,
        merchant_category,
        channel,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn sample(present: u8, strings: &[&str], metadata: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&1_767_607_200i64.to_le_bytes());
        out.extend_from_slice(&5u32.to_le_bytes());
        out.push(1);
        out.push(2);
        out.push(present);
        out.push(0);
        out.extend_from_slice(&12_550u64.to_le_bytes());
        out.extend_from_slice(&0i64.to_le_bytes());
        out.extend_from_slice(&metadata.to_le_bytes());
        for s in strings {
            put(&mut out, s);
        }
        out
    }

    #[test]
    fn decodes_every_field() {
        let bytes = sample(HAS_COUNTRY | HAS_CHANNEL, &["t1", "a", "b", "USD", "US", "card", "k", "v"], 1);
        let tx = decode(&bytes).unwrap();
        assert_eq!(tx.id, "t1");
        assert_eq!(tx.timestamp, Timestamp { seconds: 1_767_607_200, nanos: 5 });
        assert_eq!(tx.kind, TransactionKind::Transfer);
        assert_eq!((tx.source.as_str(), tx.destination.as_str(), tx.currency.as_str()), ("a", "b", "USD"));
        assert_eq!(tx.amount, Decimal::new(12_550, 2));
        assert_eq!(tx.amount.scale(), 2);
        assert_eq!(tx.country.as_deref(), Some("US"));
        assert_eq!(tx.merchant_category, None);
        assert_eq!(tx.channel.as_deref(), Some("card"));
        assert_eq!(tx.metadata, [("k".into(), "v".into())]);
    }

    #[test]
    fn refuses_malformed_bytes() {
        let good = sample(0, &["t1", "a", "b", "USD"], 0);
        assert!(decode(&good).is_some());
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_none(), "truncated at {n}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_none());
        let mut kind = good.clone();
        kind[12] = 4;
        assert!(decode(&kind).is_none());
        let mut scale = good.clone();
        scale[13] = 29;
        assert!(decode(&scale).is_none());
        let huge_metadata = sample(0, &["t1", "a", "b", "USD"], u32::MAX);
        assert!(decode(&huge_metadata).is_none());
        let not_utf8 = sample(0, &["t1", "a", "b", "\u{fffd}"], 0);
        let mut bad = not_utf8.clone();
        let at = bad.len() - 3;
        bad[at] = 0xff;
        assert!(decode(&bad).is_none());
    }
}
