//! The compact stored form of a decision: everything needed to answer an
//! idempotent replay byte for byte and to re-evaluate the decision later —
//! the transaction as received, the facts its rules read, the funds check's
//! answer and the per-rule trace — without repeating what is the same for a
//! whole rule-set version (its version string, rule names and module
//! versions live once in the [`Dictionary`]).
//!
//! The encoding is postcard (varints, no field names) over private wire
//! types; a record starts with its format byte so a later release can read
//! it or say plainly that it cannot.

// Input reaches this module (ARCHITECTURE.md, "No input reaches a panic"):
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use rulehost_core::decision::{Decision, LedgerEffect, Outcome, RuleResult, RuleTrace};
use rulehost_core::facts::HistoryStats;
use rulehost_core::manifest::OnError;
use rulehost_core::model::{Transaction, TransactionKind};
use rulehost_core::rule::{FailureKind, LogLevel, LogLine};

use super::Refusal;
use super::reads::{Read, RecordedFacts};

mod dictionary;
pub use dictionary::{Dictionary, DictionaryEntry};

/// Format byte of records written by this release.
pub const RECORD_FORMAT: u8 = 1;
/// Format byte of a decision migrated from schema 1: its fingerprint and
/// JSON only (that schema kept no input).
pub const RECORD_FORMAT_MIGRATED: u8 = 0;

/// What the funds and range check answered for a decision (RULES.md step 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The outcome moves no money; nothing was asked.
    NotAsked,
    /// The posting or hold was admitted.
    Admitted,
    /// Refused.
    Refused(Refusal),
}

/// A stored decision: what idempotency needs (fingerprint, decision) and,
/// for decisions made by this release, what a replay needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRecord {
    /// SHA-256 of the transaction's canonical form (idempotency).
    pub fingerprint: [u8; 32],
    /// The decision.
    pub decision: Arc<Decision>,
    /// The input and facts; `None` for a decision migrated from a ledger
    /// written before records kept them (schema 1).
    pub input: Option<RecordedInput>,
}

/// What a decision was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedInput {
    /// The transaction as received (typed; amounts keep their scale).
    pub tx: Transaction,
    /// Top-level fields beyond the known ones, as a JSON object, if any.
    pub extra: Option<String>,
    /// What the funds check answered.
    pub admission: Admission,
    /// Whether it counted in source history.
    pub counted: bool,
    /// What its rules read.
    pub facts: RecordedFacts,
}

impl RecordedInput {
    /// The transaction as one JSON object, as it was received (known
    /// fields typed, amounts with their scale, then any extra fields).
    pub fn transaction_json(&self) -> serde_json::Value {
        let tx = &self.tx;
        let mut map = serde_json::Map::new();
        map.insert("id".into(), tx.id.clone().into());
        map.insert("timestamp".into(), rulehost_core::input::format_timestamp(tx.timestamp).into());
        map.insert("kind".into(), kind_str(tx.kind).into());
        map.insert("source".into(), tx.source.clone().into());
        map.insert("destination".into(), tx.destination.clone().into());
        map.insert("amount".into(), tx.amount.to_string().into());
        map.insert("currency".into(), tx.currency.clone().into());
        for (key, value) in
            [("country", &tx.country), ("merchant_category", &tx.merchant_category), ("channel", &tx.channel)]
        {
            if let Some(v) = value {
                map.insert(key.into(), v.clone().into());
            }
        }
        if !tx.metadata.is_empty() {
            let meta: serde_json::Map<String, serde_json::Value> =
                tx.metadata.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
            map.insert("metadata".into(), meta.into());
        }
        if let Some(Ok(serde_json::Value::Object(extra))) =
            self.extra.as_deref().map(serde_json::from_str::<serde_json::Value>)
        {
            map.extend(extra);
        }
        map.into()
    }
}

fn kind_str(kind: TransactionKind) -> &'static str {
    match kind {
        TransactionKind::Payment => "payment",
        TransactionKind::Transfer => "transfer",
        TransactionKind::Deposit => "deposit",
        TransactionKind::Withdrawal => "withdrawal",
    }
}

/// A record that cannot be encoded or read back: a damaged store (or one
/// written by a later release).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stored decision record: {0}")]
pub struct RecordError(pub String);

// ---------------------------------------------------------------- the wire form

/// A decimal as (mantissa, scale with the sign of zero in bit 7): exact,
/// `-0` included, a few bytes for an amount.
#[derive(Serialize, Deserialize)]
struct WireDecimal(i128, u8);

impl WireDecimal {
    fn of(d: Decimal) -> Self {
        let negative_zero = d.is_zero() && d.is_sign_negative();
        // A scale is at most 28: it fits in the low 7 bits.
        let scale = u8::try_from(d.scale()).unwrap_or(0) & 0x7f;
        WireDecimal(d.mantissa(), scale | if negative_zero { 0x80 } else { 0 })
    }

    fn decimal(&self) -> Result<Decimal, RecordError> {
        let mut d = Decimal::try_from_i128_with_scale(self.0, u32::from(self.1 & 0x7f))
            .map_err(|e| RecordError(format!("decimal: {e}")))?;
        if self.1 & 0x80 != 0 {
            d.set_sign_negative(true);
        }
        Ok(d)
    }
}

#[derive(Serialize, Deserialize)]
struct WireTx {
    id: String,
    timestamp: i128,
    kind: u8,
    source: String,
    destination: String,
    amount: WireDecimal,
    currency: String,
    country: Option<String>,
    merchant_category: Option<String>,
    channel: Option<String>,
    metadata: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
enum WireResult {
    Accept,
    Reject { code: String, message: String },
    Score { score: u32, reasons: Vec<String> },
    Failed { kind: u8, message: String, on_error: u8 },
}

#[derive(Serialize, Deserialize)]
struct WireTrace {
    rule: u32,
    result: WireResult,
    fuel: u64,
    logs: Vec<(u8, String)>,
}

/// Who an account read names: the transaction's own accounts by a tag.
#[derive(Serialize, Deserialize)]
enum WireWho {
    Source,
    Destination,
    Other(String),
}

#[derive(Serialize, Deserialize)]
enum WireRead {
    Account {
        who: WireWho,
        available: Option<WireDecimal>,
    },
    /// The window as offsets from the transaction's timestamp.
    History {
        who: WireWho,
        from_before: i128,
        to_before: i128,
        min: Option<WireDecimal>,
        max: Option<WireDecimal>,
        count: u64,
        sum: WireDecimal,
    },
}

#[derive(Serialize, Deserialize)]
struct Wire {
    format: u8,
    ruleset: u32,
    tx: WireTx,
    extra: Option<String>,
    fingerprint: [u8; 32],
    outcome: u8,
    score: u32,
    reasons: Vec<String>,
    rollout: Option<rulehost_core::rollout::RolloutTag>,
    rules: Vec<WireTrace>,
    ledger: u8,
    admission: u8,
    counted: bool,
    reads: Vec<WireRead>,
}

const KINDS: [TransactionKind; 4] =
    [TransactionKind::Payment, TransactionKind::Transfer, TransactionKind::Deposit, TransactionKind::Withdrawal];
const OUTCOMES: [Outcome; 5] = [Outcome::Approve, Outcome::Review, Outcome::Decline, Outcome::Reject, Outcome::Error];
const EFFECTS: [LedgerEffect; 3] = [LedgerEffect::Posted, LedgerEffect::Held, LedgerEffect::None];
const ON_ERROR: [OnError; 3] = [OnError::Review, OnError::Reject, OnError::Ignore];
const ADMISSIONS: [Admission; 5] = [
    Admission::NotAsked,
    Admission::Admitted,
    Admission::Refused(Refusal::InsufficientFunds),
    Admission::Refused(Refusal::BalanceOverflow),
    Admission::Refused(Refusal::AmountNotPositive),
];
/// The log levels a trace may carry, numbered as stored.
const LOG_LEVELS: [LogLevel; 5] = LogLevel::ALL;

fn index_of<T: PartialEq>(all: &[T], x: &T) -> u8 {
    all.iter().position(|y| y == x).and_then(|i| u8::try_from(i).ok()).unwrap_or(u8::MAX)
}

fn pick<T: Copy>(all: &[T], i: u8, what: &str) -> Result<T, RecordError> {
    all.get(usize::from(i)).copied().ok_or_else(|| RecordError(format!("unknown {what} {i}")))
}

fn who(tx: &Transaction, id: &str) -> WireWho {
    if id == tx.source {
        WireWho::Source
    } else if id == tx.destination {
        WireWho::Destination
    } else {
        WireWho::Other(id.to_owned())
    }
}

fn named(tx: &Transaction, w: WireWho) -> String {
    match w {
        WireWho::Source => tx.source.clone(),
        WireWho::Destination => tx.destination.clone(),
        WireWho::Other(s) => s,
    }
}

/// Encodes `record`, adding its rule-set version and rule names to
/// `dictionary` when new; returns the bytes and the number of the
/// dictionary entry that changed (to be stored with the record).
pub fn encode(record: &DecisionRecord, dictionary: &mut Dictionary) -> Result<(Vec<u8>, Option<u32>), RecordError> {
    let d = &record.decision;
    let Some(input) = &record.input else {
        let mut bytes = Vec::with_capacity(d.json().len().saturating_add(33));
        bytes.push(RECORD_FORMAT_MIGRATED);
        bytes.extend_from_slice(&record.fingerprint);
        bytes.extend_from_slice(d.json().as_bytes());
        return Ok((bytes, None));
    };
    let tx = &input.tx;
    let (ruleset, indexes, changed) = dictionary.intern(d)?;
    let rules = d
        .rules
        .iter()
        .zip(indexes)
        .map(|(t, rule)| WireTrace {
            rule,
            result: match &t.result {
                RuleResult::Accept => WireResult::Accept,
                RuleResult::Reject { code, message } => {
                    WireResult::Reject { code: code.clone(), message: message.clone() }
                }
                RuleResult::Score { score, reasons } => WireResult::Score { score: *score, reasons: reasons.clone() },
                RuleResult::Failed { kind, message, on_error } => WireResult::Failed {
                    kind: index_of(&FailureKind::ALL, kind),
                    message: message.clone(),
                    on_error: index_of(&ON_ERROR, on_error),
                },
            },
            fuel: t.fuel,
            logs: t.logs.iter().map(|l| (index_of(&LOG_LEVELS, &l.level), l.message.clone())).collect(),
        })
        .collect();
    let reads = input
        .facts
        .reads()
        .iter()
        .map(|r| match r {
            Read::Account { id, available } => {
                WireRead::Account { who: who(tx, id), available: available.map(WireDecimal::of) }
            }
            Read::History { account, from_exclusive, to_inclusive, min, max, stats } => WireRead::History {
                who: who(tx, account),
                from_before: tx.timestamp.saturating_sub(*from_exclusive),
                to_before: tx.timestamp.saturating_sub(*to_inclusive),
                min: min.map(WireDecimal::of),
                max: max.map(WireDecimal::of),
                count: stats.count,
                sum: WireDecimal::of(stats.sum),
            },
        })
        .collect();
    let wire = Wire {
        format: RECORD_FORMAT,
        ruleset,
        tx: WireTx {
            id: tx.id.clone(),
            timestamp: tx.timestamp,
            kind: index_of(&KINDS, &tx.kind),
            source: tx.source.clone(),
            destination: tx.destination.clone(),
            amount: WireDecimal::of(tx.amount),
            currency: tx.currency.clone(),
            country: tx.country.clone(),
            merchant_category: tx.merchant_category.clone(),
            channel: tx.channel.clone(),
            metadata: tx.metadata.clone(),
        },
        extra: input.extra.clone(),
        fingerprint: record.fingerprint,
        outcome: index_of(&OUTCOMES, &d.outcome),
        score: d.score,
        reasons: d.reasons.clone(),
        rollout: d.rollout,
        rules,
        ledger: index_of(&EFFECTS, &d.ledger),
        admission: index_of(&ADMISSIONS, &input.admission),
        counted: input.counted,
        reads,
    };
    let bytes = postcard::to_allocvec(&wire).map_err(|e| RecordError(format!("encoding: {e}")))?;
    Ok((bytes, changed))
}

/// Reads back what [`encode`] wrote.
pub fn decode(bytes: &[u8], dictionary: &Dictionary) -> Result<DecisionRecord, RecordError> {
    match bytes.first() {
        Some(&RECORD_FORMAT) => {}
        Some(&RECORD_FORMAT_MIGRATED) => {
            let fingerprint: [u8; 32] = bytes
                .get(1..33)
                .and_then(|f| f.try_into().ok())
                .ok_or_else(|| RecordError("migrated record without a fingerprint".into()))?;
            let json = std::str::from_utf8(bytes.get(33..).unwrap_or_default())
                .map_err(|e| RecordError(format!("migrated record: {e}")))?;
            let decision = Decision::from_stored_json(&Arc::from(json)).map_err(RecordError)?;
            return Ok(DecisionRecord { fingerprint, decision: Arc::new(decision), input: None });
        }
        Some(other) => {
            return Err(RecordError(format!(
                "format {other}; this build reads format {RECORD_FORMAT} (written by a later release?)"
            )));
        }
        None => return Err(RecordError("empty".into())),
    }
    let wire: Wire = postcard::from_bytes(bytes).map_err(|e| RecordError(format!("decoding: {e}")))?;
    let entry = dictionary
        .entry(wire.ruleset)
        .ok_or_else(|| RecordError(format!("names rule-set version {} that the store lacks", wire.ruleset)))?;
    let t = wire.tx;
    let tx = Transaction {
        id: t.id,
        timestamp: t.timestamp,
        kind: pick(&KINDS, t.kind, "transaction kind")?,
        source: t.source,
        destination: t.destination,
        amount: t.amount.decimal()?,
        currency: t.currency,
        country: t.country,
        merchant_category: t.merchant_category,
        channel: t.channel,
        metadata: t.metadata,
    };
    let mut rules = Vec::with_capacity(wire.rules.len());
    for w in wire.rules {
        let (rule, version) = entry
            .rules
            .get(w.rule as usize)
            .cloned()
            .ok_or_else(|| RecordError(format!("names rule {} that its version lacks", w.rule)))?;
        let result = match w.result {
            WireResult::Accept => RuleResult::Accept,
            WireResult::Reject { code, message } => RuleResult::Reject { code, message },
            WireResult::Score { score, reasons } => RuleResult::Score { score, reasons },
            WireResult::Failed { kind, message, on_error } => RuleResult::Failed {
                kind: pick(&FailureKind::ALL, kind, "failure kind")?,
                message,
                on_error: pick(&ON_ERROR, on_error, "on_error policy")?,
            },
        };
        let logs = w
            .logs
            .into_iter()
            .map(|(level, message)| Ok(LogLine { level: pick(&LOG_LEVELS, level, "log level")?, message }))
            .collect::<Result<Vec<_>, RecordError>>()?;
        rules.push(RuleTrace { rule, version, result, fuel: w.fuel, logs });
    }
    let mut reads = Vec::with_capacity(wire.reads.len());
    for r in wire.reads {
        reads.push(match r {
            WireRead::Account { who, available } => {
                Read::Account { id: named(&tx, who), available: available.map(|a| a.decimal()).transpose()? }
            }
            WireRead::History { who, from_before, to_before, min, max, count, sum } => Read::History {
                account: named(&tx, who),
                from_exclusive: tx.timestamp.saturating_sub(from_before),
                to_inclusive: tx.timestamp.saturating_sub(to_before),
                min: min.map(|m| m.decimal()).transpose()?,
                max: max.map(|m| m.decimal()).transpose()?,
                stats: HistoryStats { count, sum: sum.decimal()? },
            },
        });
    }
    let decision = Decision {
        id: tx.id.clone(),
        outcome: pick(&OUTCOMES, wire.outcome, "outcome")?,
        score: wire.score,
        reasons: wire.reasons,
        ruleset: entry.version.clone(),
        rollout: wire.rollout,
        rules,
        ledger: pick(&EFFECTS, wire.ledger, "ledger effect")?,
        json: Default::default(),
    };
    Ok(DecisionRecord {
        fingerprint: wire.fingerprint,
        decision: Arc::new(decision),
        input: Some(RecordedInput {
            tx,
            extra: wire.extra,
            admission: pick(&ADMISSIONS, wire.admission, "funds check answer")?,
            counted: wire.counted,
            // Encoded in canonical order; sorted again so a damaged record
            // cannot make lookups miss.
            facts: RecordedFacts::new(reads),
        }),
    })
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::ReplayFacts;
    use rulehost_core::decision::JsonCache;
    use rulehost_core::facts::{Facts, HistoryQuery};
    use rulehost_core::model::Account;

    fn record() -> DecisionRecord {
        let d = |s: &str| Decimal::from_str_exact(s).unwrap();
        let tx = Transaction {
            id: "tx-1".into(),
            timestamp: 1_767_225_600_123_456_789,
            kind: TransactionKind::Transfer,
            source: "acc-1".into(),
            destination: "acc-2".into(),
            amount: d("12.50"),
            currency: "EUR".into(),
            country: Some("DE".into()),
            merchant_category: None,
            channel: Some("web".into()),
            metadata: vec![("k".into(), "v".into())],
        };
        let trace = |rule: &str, result| RuleTrace {
            rule: rule.into(),
            version: "0123abcd".into(),
            result,
            fuel: 4242,
            logs: vec![LogLine { level: LogLevel::Warn, message: "é \"x\"".into() }],
        };
        let decision = Decision {
            id: "tx-1".into(),
            outcome: Outcome::Review,
            score: 450,
            reasons: vec!["RULE_FAILED".into(), "HIGH_VELOCITY".into()],
            ruleset: "feedbeef".into(),
            rollout: Some(rulehost_core::rollout::RolloutTag {
                arm: rulehost_core::rollout::Arm::Candidate,
                bucket: 7,
                share: 20,
            }),
            rules: vec![
                trace("amount", RuleResult::Accept),
                trace("v", RuleResult::Score { score: 400, reasons: vec!["HIGH_VELOCITY".into()] }),
                trace(
                    "bad",
                    RuleResult::Failed { kind: FailureKind::Fuel, message: "out".into(), on_error: OnError::Review },
                ),
                trace("r", RuleResult::Reject { code: "NO".into(), message: "m".into() }),
            ],
            ledger: LedgerEffect::Held,
            json: JsonCache::default(),
        };
        let input = RecordedInput {
            facts: RecordedFacts::new(vec![
                Read::History {
                    account: "acc-1".into(),
                    from_exclusive: tx.timestamp - 3_600_000_000_000,
                    to_inclusive: tx.timestamp,
                    min: Some(d("90")),
                    max: None,
                    stats: HistoryStats { count: 3, sum: d("271.5") },
                },
                Read::Account { id: "acc-2".into(), available: Some(d("-0.00")) },
                Read::Account { id: "other".into(), available: None },
                Read::Account { id: "acc-1".into(), available: Some(d("100")) },
                Read::Account { id: "acc-1".into(), available: Some(d("100")) },
            ]),
            tx,
            extra: Some("{\"note\":1}".into()),
            admission: Admission::Refused(Refusal::InsufficientFunds),
            counted: true,
        };
        DecisionRecord { fingerprint: [7; 32], decision: Arc::new(decision), input: Some(input) }
    }

    #[test]
    fn a_record_reads_back_exactly_and_its_json_is_the_same_bytes() {
        let r = record();
        let mut dict = Dictionary::default();
        let (bytes, changed) = encode(&r, &mut dict).unwrap();
        assert_eq!(changed, Some(0), "a new version is a dictionary change");
        let back = decode(&bytes, &dict).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.decision.json(), r.decision.json());
        assert!(back.decision.json().contains("\"rule\":\"bad\""));
        assert_eq!(back.input.as_ref().unwrap().facts.reads().len(), 4, "the duplicate read is kept once");
        let (again, changed) = encode(&r, &mut dict).unwrap();
        assert_eq!((again, changed), (bytes.clone(), None), "same bytes, nothing new to store");
        assert!(bytes.len() < 260, "compact: {} bytes", bytes.len());
    }

    #[test]
    fn damaged_or_foreign_records_are_errors_not_panics() {
        let mut dict = Dictionary::default();
        let (bytes, _) = encode(&record(), &mut dict).unwrap();
        assert!(decode(&[], &dict).is_err());
        assert!(decode(&[9, 1, 2], &dict).unwrap_err().0.contains("later release"));
        assert!(decode(&bytes, &Dictionary::default()).is_err(), "a version the store lacks");
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut], &dict).is_err());
        }
        let migrated = DecisionRecord { input: None, ..record() };
        let (bytes, changed) = encode(&migrated, &mut dict).unwrap();
        assert_eq!((bytes[0], changed), (RECORD_FORMAT_MIGRATED, None));
        assert_eq!(decode(&bytes, &dict).unwrap(), migrated);
    }

    #[test]
    fn replay_facts_answer_what_was_read() {
        let r = record().input.unwrap();
        let accounts = vec![Account {
            id: "acc-1".into(),
            currency: "EUR".into(),
            country: "DE".into(),
            opened_at: 0,
            status: rulehost_core::model::AccountStatus::Active,
            overdraft_limit: Decimal::ZERO,
            opening_balance: Decimal::ZERO,
            tags: vec![],
        }];
        let facts = ReplayFacts::new(r.facts.clone(), accounts);
        assert_eq!(facts.account("acc-1").unwrap().available, Decimal::from(100));
        assert!(facts.account("other").is_none());
        assert_eq!(facts.missed(), 0);
        let q = HistoryQuery {
            account: "acc-1",
            from_exclusive: r.tx.timestamp - 3_600_000_000_000,
            to_inclusive: r.tx.timestamp,
            min: Some(Decimal::from(90)),
            max: None,
        };
        assert_eq!(facts.history(&q).count, 3);
        assert_eq!(facts.history(&HistoryQuery { min: None, ..q }).count, 0);
        assert_eq!(facts.missed(), 1);
    }
}
