//! Input grammar: one JSON object per line, parsed into typed transactions
//! and accounts exactly as RULES.md "Settled details" specifies. Every error
//! names the line and the field; nothing here panics on bad input.

// Input reaches this module (ARCHITECTURE.md, "No input reaches a panic"):
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::borrow::Cow;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::{Account, AccountStatus, Nanos, Transaction, TransactionKind};

pub mod strict;

/// Significant digits an amount may have (the precision of `Decimal`).
pub const AMOUNT_DIGITS_MAX: usize = 28;
/// Fraction digits a timestamp may have.
pub const TIMESTAMP_FRACTION_DIGITS_MAX: usize = 9;

/// The code of an error record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// The line is not a JSON object.
    MalformedJson,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong type or grammar.
    InvalidField,
    /// The id was seen before with different content.
    IdempotencyConflict,
    /// The ledger could not commit the decision (its store failed); nothing
    /// was decided, and the transaction may be sent again.
    LedgerUnavailable,
    /// The source account's partition belongs to another host (several
    /// hosts share one ledger): send the transaction to its owner.
    PartitionNotOwned,
}

impl ErrorCode {
    /// The code as written in error records.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "MALFORMED_JSON",
            ErrorCode::MissingField => "MISSING_FIELD",
            ErrorCode::InvalidField => "INVALID_FIELD",
            ErrorCode::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            ErrorCode::LedgerUnavailable => "LEDGER_UNAVAILABLE",
            ErrorCode::PartitionNotOwned => "PARTITION_NOT_OWNED",
        }
    }
}

/// A line that could not be turned into a transaction (or account).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {} {}: {message}", code.as_str(), field.as_deref().unwrap_or("-"))]
pub struct InputError {
    /// 1-based line number.
    pub line: u64,
    /// The `id` field, when it could be read.
    pub id: Option<String>,
    /// What went wrong.
    pub code: ErrorCode,
    /// The offending field, when there is one (a path such as
    /// `metadata.channel` for a duplicate key below the top level).
    pub field: Option<Cow<'static, str>>,
    /// A human-readable explanation.
    pub message: String,
}

/// A well-formed transaction and the fingerprint of its content, used for
/// idempotency: equal fingerprints mean equal content under the settled
/// equality (decimal amounts, instants, key order ignored).
#[derive(Clone, Debug)]
pub struct ParsedTransaction {
    /// The typed transaction.
    pub tx: Transaction,
    /// SHA-256 of the canonical form of the whole object.
    pub fingerprint: [u8; 32],
    /// Top-level fields beyond the known ones, as a JSON object (kept with
    /// the stored decision), when there are any.
    pub extra: Option<Box<str>>,
}

/// Strips the single trailing `\r` a CRLF file leaves on each line.
pub fn trim_line(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

struct Fields<'a> {
    line: u64,
    id: Option<String>,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, code: ErrorCode, field: &'static str, message: impl Into<String>) -> InputError {
        InputError {
            line: self.line,
            id: self.id.clone(),
            code,
            field: Some(Cow::Borrowed(field)),
            message: message.into(),
        }
    }

    /// A required string; null counts as missing.
    fn string(&self, field: &'static str) -> Result<&str, InputError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Err(self.err(ErrorCode::MissingField, field, format!("`{field}` is required"))),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.err(
                ErrorCode::InvalidField,
                field,
                format!("`{field}` must be a string, got {}", kind_of(other)),
            )),
        }
    }

    /// An optional string; null counts as absent.
    fn opt_string(&self, field: &'static str) -> Result<Option<&str>, InputError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(
                ErrorCode::InvalidField,
                field,
                format!("`{field}` must be a string, got {}", kind_of(other)),
            )),
        }
    }

    fn string_map(&self, field: &'static str) -> Result<Vec<(String, String)>, InputError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(m)) => {
                let mut out = Vec::with_capacity(m.len());
                for (k, v) in m {
                    match v {
                        Value::String(s) => out.push((k.clone(), s.clone())),
                        other => {
                            return Err(self.err(
                                ErrorCode::InvalidField,
                                field,
                                format!("`{field}.{k}` must be a string, got {}", kind_of(other)),
                            ));
                        }
                    }
                }
                Ok(out)
            }
            Some(other) => Err(self.err(
                ErrorCode::InvalidField,
                field,
                format!("`{field}` must be an object of strings, got {}", kind_of(other)),
            )),
        }
    }

    fn amount(&self, field: &'static str) -> Result<Decimal, InputError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Err(self.err(ErrorCode::MissingField, field, format!("`{field}` is required"))),
            Some(Value::String(s)) => parse_amount(s).map_err(|m| self.err(ErrorCode::InvalidField, field, m)),
            Some(Value::Number(n)) => Err(self.err(
                ErrorCode::InvalidField,
                field,
                format!("`{field}` must be a decimal string such as \"{n}\", not a JSON number (numbers lose cents)"),
            )),
            Some(other) => Err(self.err(
                ErrorCode::InvalidField,
                field,
                format!("`{field}` must be a decimal string, got {}", kind_of(other)),
            )),
        }
    }

    fn timestamp(&self, field: &'static str) -> Result<Nanos, InputError> {
        let s = self.string(field)?;
        parse_timestamp(s).map_err(|m| self.err(ErrorCode::InvalidField, field, m))
    }

    fn opt_amount(&self, field: &'static str) -> Result<Option<Decimal>, InputError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            _ => self.amount(field).map(Some),
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses an amount string: `-?[0-9]+(\.[0-9]+)?`, at most 28 significant
/// digits. The scale is kept (`1.50` stays `1.50`).
pub fn parse_amount(s: &str) -> Result<Decimal, String> {
    let bad = || format!("{s:?} is not a decimal amount (expected digits with an optional fraction, e.g. \"125.50\")");
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return Err(bad());
    }
    let significant = int.trim_start_matches('0').len().saturating_add(match frac {
        Some(f) if int.trim_start_matches('0').is_empty() => f.trim_start_matches('0').len(),
        Some(f) => f.len(),
        None => 0,
    });
    if significant > AMOUNT_DIGITS_MAX {
        return Err(format!("{s:?} has {significant} significant digits, at most {AMOUNT_DIGITS_MAX} are allowed"));
    }
    Decimal::from_str_exact(s).map_err(|e| format!("{s:?} cannot be represented exactly: {e}"))
}

/// Parses an RFC 3339 timestamp with an explicit offset and a fraction of at
/// most 9 digits, as nanoseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Result<Nanos, String> {
    let bad =
        |why: &str| format!("{s:?} is not an RFC 3339 timestamp with an offset ({why}), e.g. \"2026-01-05T10:00:00Z\"");
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
        return Err(bad("date and time must be separated by `T`"));
    }
    if let Some(dot) = s.find('.') {
        let frac = s.get(dot.saturating_add(1)..).unwrap_or("").bytes().take_while(u8::is_ascii_digit).count();
        if frac > TIMESTAMP_FRACTION_DIGITS_MAX {
            return Err(bad("more than 9 fraction digits"));
        }
    }
    let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| bad(&e.to_string()))?;
    Ok(dt.unix_timestamp_nanos())
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC.
pub fn format_timestamp(nanos: Nanos) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|dt| dt.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| nanos.to_string())
}

fn parse_object(line_no: u64, text: &str) -> Result<Map<String, Value>, InputError> {
    let malformed =
        |message: String| InputError { line: line_no, id: None, code: ErrorCode::MalformedJson, field: None, message };
    if text.trim().is_empty() {
        return Err(malformed("empty line".into()));
    }
    match strict::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(malformed(format!("expected a JSON object, got {}", kind_of(&other)))),
        Err(strict::StrictError::Malformed(e)) => Err(malformed(format!("malformed JSON: {e}"))),
        Err(strict::StrictError::DuplicateKey(path)) => Err(InputError {
            line: line_no,
            id: None,
            code: ErrorCode::InvalidField,
            message: format!("`{path}` appears twice; give each key once (which value was meant cannot be guessed)"),
            field: Some(Cow::Owned(path)),
        }),
    }
}

/// The `id` field when it is a non-empty string, for error records.
fn readable_id(map: &Map<String, Value>) -> Option<String> {
    match map.get("id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Every field a transaction's typed form holds.
const KNOWN_FIELDS: [&str; 11] = [
    "id",
    "timestamp",
    "kind",
    "source",
    "destination",
    "amount",
    "currency",
    "country",
    "merchant_category",
    "channel",
    "metadata",
];

/// Optional transaction fields: `null` means absent, also for idempotency.
const OPTIONAL_FIELDS: [&str; 4] = ["country", "merchant_category", "channel", "metadata"];

/// Parses one transaction line (`line_no` 1-based, `text` without `\n`).
pub fn parse_transaction(line_no: u64, text: &str) -> Result<ParsedTransaction, InputError> {
    let mut map = parse_object(line_no, trim_line(text))?;
    let id = readable_id(&map);
    let f = Fields { line: line_no, id, map: &map };
    let id = f.string("id")?;
    if id.is_empty() {
        return Err(f.err(ErrorCode::InvalidField, "id", "`id` must not be empty"));
    }
    let timestamp = f.timestamp("timestamp")?;
    let kind_text = f.string("kind")?;
    let kind = TransactionKind::parse(kind_text).ok_or_else(|| {
        f.err(
            ErrorCode::InvalidField,
            "kind",
            format!("unknown kind {kind_text:?}: expected payment, transfer, deposit or withdrawal"),
        )
    })?;
    let source = f.string("source")?;
    let destination = f.string("destination")?;
    let amount = f.amount("amount")?;
    let currency = f.string("currency")?;
    let country = f.opt_string("country")?;
    if let Some(c) = country
        && !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(f.err(ErrorCode::InvalidField, "country", format!("{c:?} is not two upper-case ASCII letters")));
    }
    let merchant_category = f.opt_string("merchant_category")?;
    let channel = f.opt_string("channel")?;
    let mut metadata = f.string_map("metadata")?;
    metadata.sort();
    let tx = Transaction {
        id: id.to_owned(),
        timestamp,
        kind,
        source: source.to_owned(),
        destination: destination.to_owned(),
        amount,
        currency: currency.to_owned(),
        country: country.map(str::to_owned),
        merchant_category: merchant_category.map(str::to_owned),
        channel: channel.map(str::to_owned),
        metadata,
    };
    // Canonical form for idempotency: decimal and instant values replace
    // their spellings, null optionals are dropped, and serde_json's sorted
    // map makes key order irrelevant.
    let normalized = if amount.is_zero() { Decimal::ZERO } else { amount.normalize() };
    map.insert("amount".into(), Value::String(normalized.to_string()));
    map.insert("timestamp".into(), Value::String(timestamp.to_string()));
    for field in OPTIONAL_FIELDS {
        if map.get(field) == Some(&Value::Null) {
            map.remove(field);
        }
    }
    #[allow(
        clippy::expect_used,
        reason = "a map of JSON values always serializes (string keys, no floats beyond JSON's)"
    )]
    let canonical = serde_json::to_vec(&map).expect("a JSON map always serializes");
    let extra: Map<String, Value> = map.into_iter().filter(|(k, _)| !KNOWN_FIELDS.contains(&k.as_str())).collect();
    let extra = (!extra.is_empty()).then(|| Value::Object(extra).to_string().into_boxed_str());
    Ok(ParsedTransaction { tx, fingerprint: Sha256::digest(&canonical).into(), extra })
}

/// Parses one account line of `accounts.jsonl`.
pub fn parse_account(line_no: u64, text: &str) -> Result<Account, InputError> {
    let map = parse_object(line_no, trim_line(text))?;
    let id = readable_id(&map);
    let f = Fields { line: line_no, id, map: &map };
    let id = f.string("id")?;
    if id.is_empty() {
        return Err(f.err(ErrorCode::InvalidField, "id", "`id` must not be empty"));
    }
    if id.starts_with(crate::model::SYSTEM_ACCOUNT_PREFIX) {
        return Err(f.err(
            ErrorCode::InvalidField,
            "id",
            format!(
                "{id:?}: ids starting with `{}` are reserved for the ledger's own accounts",
                crate::model::SYSTEM_ACCOUNT_PREFIX
            ),
        ));
    }
    let currency = f.string("currency")?;
    if iso_currency::Currency::from_code(currency).is_none() {
        return Err(f.err(
            ErrorCode::InvalidField,
            "currency",
            format!("{currency:?} is not an ISO 4217 currency code (three upper-case letters such as \"USD\")"),
        ));
    }
    let country = f.string("country")?;
    if !(country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(f.err(
            ErrorCode::InvalidField,
            "country",
            format!("{country:?} is not two upper-case ASCII letters"),
        ));
    }
    let opened_at = f.timestamp("opened_at")?;
    let status = f.string("status")?;
    let Some(status) = AccountStatus::parse(status) else {
        return Err(f.err(
            ErrorCode::InvalidField,
            "status",
            format!("unknown status {status:?}: expected active, frozen or closed"),
        ));
    };
    let overdraft_limit = f.amount("overdraft_limit")?;
    if overdraft_limit.is_sign_negative() && !overdraft_limit.is_zero() {
        return Err(f.err(ErrorCode::InvalidField, "overdraft_limit", "must not be negative"));
    }
    let opening_balance = f.opt_amount("opening_balance")?.unwrap_or(Decimal::ZERO);
    let mut tags = f.string_map("tags")?;
    tags.sort();
    Ok(Account {
        id: id.to_owned(),
        currency: currency.to_owned(),
        country: country.to_owned(),
        opened_at,
        status,
        overdraft_limit,
        opening_balance,
        tags,
    })
}

/// Reads every account of an `accounts.jsonl` text; the first bad line fails
/// the whole import (nothing of a failed batch is used). Blank lines are
/// skipped. Duplicate ids are errors.
pub fn parse_accounts(text: &str) -> Result<Vec<Account>, InputError> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line_no = (i as u64).saturating_add(1);
        if trim_line(line).trim().is_empty() {
            continue;
        }
        let account = parse_account(line_no, line)?;
        if !seen.insert(account.id.clone()) {
            return Err(InputError {
                line: line_no,
                id: Some(account.id.clone()),
                code: ErrorCode::InvalidField,
                field: Some(Cow::Borrowed("id")),
                message: format!("duplicate account id {:?}", account.id),
            });
        }
        out.push(account);
    }
    Ok(out)
}

impl FromStr for TransactionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TransactionKind::parse(s).ok_or_else(|| format!("unknown kind {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_grammar() {
        for ok in [
            "0",
            "-0",
            "125.50",
            "125.505",
            "-3",
            "0000123.45",
            "1234567890123456789012345678",
            "0.0000000000000000000000000001",
        ] {
            assert!(parse_amount(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-",
            "+1",
            "1e3",
            ".5",
            "5.",
            " 1",
            "1 ",
            "1,5",
            "0x10",
            "12345678901234567890123456789",
            "1.0000000000000000000000000000",
            "--1",
            "NaN",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_amount("1.50").unwrap().scale(), 2);
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_timestamp("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse_timestamp("1970-01-01T00:00:00.123456789Z"), Ok(123_456_789));
        for bad in [
            "1970-01-01T00:00:00",
            "1970-01-01 00:00:00Z",
            "1970-01-01T00:00:00.1234567891Z",
            "yesterday",
            "1970-01-01",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn idempotency_fingerprint_ignores_spelling() {
        let a = parse_transaction(1, r#"{"id":"t","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"1.50","currency":"USD","country":null,"x":{"p":1,"q":2}}"#).unwrap();
        let b = parse_transaction(2, r#"{"x":{"q":2,"p":1},"amount":"1.5","currency":"USD","destination":"b","source":"a","kind":"payment","timestamp":"2026-01-05T11:00:00+01:00","id":"t"}"#).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        let c = parse_transaction(3, r#"{"id":"t","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"1.51","currency":"USD"}"#).unwrap();
        assert_ne!(a.fingerprint, c.fingerprint);
        let z1 = parse_transaction(4, r#"{"id":"t","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"-0","currency":"USD"}"#).unwrap();
        let z2 = parse_transaction(5, r#"{"id":"t","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a","destination":"b","amount":"0.00","currency":"USD"}"#).unwrap();
        assert_eq!(z1.fingerprint, z2.fingerprint);
    }
}
