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

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn string(&mut self) -> Option<String> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        let bytes = self.take(len)?;
        core::str::from_utf8(bytes).ok().map(String::from)
    }
}

fn le<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Decodes a transaction; `None` when the bytes do not follow the encoding
/// (the host never sends such bytes; the SDK traps on them).
pub fn decode(bytes: &[u8]) -> Option<Transaction> {
    if bytes.len() < HEADER_BYTES {
        return None;
    }
    let seconds = i64::from_le_bytes(le(bytes, 0));
    let nanos = u32::from_le_bytes(le(bytes, 8));
    let kind = match bytes[12] {
        0 => TransactionKind::Payment,
        1 => TransactionKind::Transfer,
        2 => TransactionKind::Deposit,
        3 => TransactionKind::Withdrawal,
        _ => return None,
    };
    let scale = u32::from(bytes[13]);
    let present = bytes[14];
    let lo = u64::from_le_bytes(le(bytes, 16));
    let hi = i64::from_le_bytes(le(bytes, 24));
    let mantissa = (i128::from(hi) << 64) | i128::from(lo);
    let amount = Decimal::try_from_i128_with_scale(mantissa, scale).ok()?;
    let metadata_len = u32::from_le_bytes(le(bytes, 32)) as usize;
    let mut r = Reader { bytes: &bytes[HEADER_BYTES..] };
    let id = r.string()?;
    let source = r.string()?;
    let destination = r.string()?;
    let currency = r.string()?;
    let mut optional =
        |bit: u8| -> Option<Option<String>> { if present & bit == 0 { Some(None) } else { r.string().map(Some) } };
    let country = optional(HAS_COUNTRY)?;
    let merchant_category = optional(HAS_MERCHANT_CATEGORY)?;
    let channel = optional(HAS_CHANNEL)?;
    // Each entry takes at least 8 bytes, so a count beyond that is malformed
    // and is refused before anything is allocated for it.
    if metadata_len > r.bytes.len() / 8 {
        return None;
    }
    let mut metadata = Vec::with_capacity(metadata_len);
    for _ in 0..metadata_len {
        let key = r.string()?;
        let value = r.string()?;
        metadata.push((key, value));
    }
    if !r.bytes.is_empty() {
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
