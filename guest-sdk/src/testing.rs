//! An in-memory fake of the host capabilities, for native unit tests of rules.
//!
//! ```
//! use rulehost_guest::testing::{FakeHost, dec, ts};
//! use rulehost_guest::{RiskRule, RuleInfo, Score, Transaction, ParamType, params};
//!
//! struct BigSpender;
//! impl RiskRule for BigSpender {
//!     fn declare() -> RuleInfo { RuleInfo::new().param("limit", ParamType::Decimal) }
//!     fn score(tx: &Transaction) -> Score {
//!         if tx.amount >= params::decimal("limit") { Score::new(300, "BIG") } else { Score::zero() }
//!     }
//! }
//!
//! let host = FakeHost::new().decimal("limit", "100");
//! let tx = Transaction::payment("t1", ts("2026-01-05T10:00:00Z"), "a", "b", dec("100.00"), "USD");
//! assert_eq!(host.score::<BigSpender>(&tx), Score::new(300, "BIG"));
//! ```
//!
//! The fake answers exactly as the host does: history windows are
//! `(t − window, t]` against the evaluated transaction's timestamp, amount
//! ranges are `[min, max)`, and reading an undeclared parameter or list, or a
//! window longer than declared, panics (the host would trap).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::str::FromStr;

use crate::native::{NativeHost, ParamValue};
use crate::{
    Account, AccountStatus, Decimal, HistoryStats, LogLevel, RiskRule, RuleInfo, Score, Timestamp, Transaction,
    Validation, ValidationRule,
};

/// Parses a decimal literal; panics on a malformed one (test helper).
pub fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_else(|e| panic!("bad decimal {s:?}: {e}"))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (test helper; UTC only).
pub fn ts(s: &str) -> Timestamp {
    fn fail(s: &str) -> ! {
        panic!("bad timestamp {s:?}: expected YYYY-MM-DDTHH:MM:SS[.f]Z")
    }
    let bad = || fail(s);
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || *b.last().unwrap() != b'Z'
    {
        bad();
    }
    let num = |r: std::ops::Range<usize>| -> i64 { s[r].parse().unwrap_or_else(|_| fail(s)) };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let secs = num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    let frac = &s[19..s.len() - 1];
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits = frac.strip_prefix('.').unwrap_or_else(|| fail(s));
        if digits.is_empty() || digits.len() > 9 {
            bad();
        }
        digits.parse::<u32>().unwrap_or_else(|_| fail(s)) * 10u32.pow(9 - digits.len() as u32)
    };
    // Days from civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Timestamp { seconds: days * 86_400 + secs, nanos }
}

/// An active account with a zero balance (test helper).
pub fn account(id: &str, currency: &str, country: &str, opened_at: &str) -> Account {
    Account {
        id: id.to_owned(),
        currency: currency.to_owned(),
        country: country.to_owned(),
        opened_at: ts(opened_at),
        status: AccountStatus::Active,
        available: Decimal::ZERO,
    }
}

#[derive(Clone, Debug)]
enum Param {
    Value(ParamValue),
    Map(HashMap<String, ParamValue>),
}

#[derive(Clone, Debug)]
struct Earlier {
    source: String,
    timestamp: Timestamp,
    amount: Decimal,
}

/// The facts a rule may ask for, set up by a test.
#[derive(Clone, Debug, Default)]
pub struct FakeHost {
    params: HashMap<String, Param>,
    accounts: HashMap<String, Account>,
    history: Vec<Earlier>,
    lists: HashMap<String, HashSet<String>>,
}

/// The fake answering a running rule: the host's facts plus the rule's
/// declaration and the evaluated transaction's time.
struct Session {
    host: FakeHost,
    info: RuleInfo,
    now: Timestamp,
    logs: RefCell<Vec<(LogLevel, String)>>,
}

impl FakeHost {
    /// A host with no parameters, accounts, history or lists.
    pub fn new() -> Self {
        Self::default()
    }

    fn value(mut self, name: &str, v: ParamValue) -> Self {
        self.params.insert(name.to_owned(), Param::Value(v));
        self
    }

    fn map(mut self, name: &str, entries: impl IntoIterator<Item = (String, ParamValue)>) -> Self {
        self.params.insert(name.to_owned(), Param::Map(entries.into_iter().collect()));
        self
    }

    /// Sets a `text` parameter.
    pub fn text(self, name: &str, v: &str) -> Self {
        self.value(name, ParamValue::Text(v.to_owned()))
    }

    /// Sets an `integer` parameter.
    pub fn integer(self, name: &str, v: i64) -> Self {
        self.value(name, ParamValue::Integer(v))
    }

    /// Sets a `decimal` parameter from its literal.
    pub fn decimal(self, name: &str, v: &str) -> Self {
        self.value(name, ParamValue::Decimal(dec(v)))
    }

    /// Sets a `text-list` parameter.
    pub fn text_list(self, name: &str, v: &[&str]) -> Self {
        self.value(name, ParamValue::TextList(v.iter().map(|s| (*s).to_owned()).collect()))
    }

    /// Sets a `decimal-map` parameter from `(key, literal)` pairs.
    pub fn decimal_map(self, name: &str, entries: &[(&str, &str)]) -> Self {
        self.map(name, entries.iter().map(|(k, v)| ((*k).to_owned(), ParamValue::Decimal(dec(v)))))
    }

    /// Sets an `integer-map` parameter.
    pub fn integer_map(self, name: &str, entries: &[(&str, i64)]) -> Self {
        self.map(name, entries.iter().map(|(k, v)| ((*k).to_owned(), ParamValue::Integer(*v))))
    }

    /// Sets a `text-map` parameter.
    pub fn text_map(self, name: &str, entries: &[(&str, &str)]) -> Self {
        self.map(name, entries.iter().map(|(k, v)| ((*k).to_owned(), ParamValue::Text((*v).to_owned()))))
    }

    /// Adds an account.
    pub fn account(mut self, account: Account) -> Self {
        self.accounts.insert(account.id.clone(), account);
        self
    }

    /// Records an earlier transaction of `source` (as source) in history.
    pub fn earlier(mut self, source: &str, timestamp: &str, amount: &str) -> Self {
        self.history.push(Earlier { source: source.to_owned(), timestamp: ts(timestamp), amount: dec(amount) });
        self
    }

    /// Records `count` earlier transactions of `source`, all at `timestamp`.
    pub fn earlier_n(mut self, count: usize, source: &str, timestamp: &str, amount: &str) -> Self {
        for _ in 0..count {
            self = self.earlier(source, timestamp, amount);
        }
        self
    }

    /// Sets an operator list.
    pub fn list(mut self, name: &str, values: &[&str]) -> Self {
        self.lists.insert(name.to_owned(), values.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    fn run<T>(&self, info: RuleInfo, now: Timestamp, f: impl FnOnce() -> T) -> T {
        let session = Rc::new(Session { host: self.clone(), info, now, logs: RefCell::new(Vec::new()) });
        crate::native::with_host(session, f)
    }

    /// Runs a validation rule on `tx` against this host.
    pub fn validate<R: ValidationRule>(&self, tx: &Transaction) -> Validation {
        self.run(R::declare(), tx.timestamp, || R::validate(tx))
    }

    /// Runs a risk rule on `tx` against this host.
    pub fn score<R: RiskRule>(&self, tx: &Transaction) -> Score {
        self.run(R::declare(), tx.timestamp, || R::score(tx))
    }
}

impl Session {
    fn declared(&self, name: &str) {
        assert!(
            self.info.params.iter().any(|(n, _)| n == name),
            "rule reads parameter `{name}` it did not declare in RuleInfo"
        );
    }
}

impl NativeHost for Session {
    fn param(&self, name: &str) -> Option<ParamValue> {
        self.declared(name);
        match self.host.params.get(name) {
            Some(Param::Value(v)) => Some(v.clone()),
            _ => None,
        }
    }

    fn param_entry(&self, name: &str, key: &str) -> Option<ParamValue> {
        self.declared(name);
        match self.host.params.get(name) {
            Some(Param::Map(m)) => m.get(key).cloned(),
            _ => panic!("parameter `{name}` is not a map"),
        }
    }

    fn history(&self, account: &str, window_seconds: u64, range: Option<(Decimal, Decimal)>) -> HistoryStats {
        assert!(
            window_seconds <= self.info.history_window_seconds_max,
            "history window {window_seconds}s exceeds the declared maximum {}s",
            self.info.history_window_seconds_max
        );
        let now = self.now.as_nanos();
        let from = now - i128::from(window_seconds) * Timestamp::NANOS_PER_SECOND;
        let mut stats = HistoryStats::default();
        for e in &self.host.history {
            let t = e.timestamp.as_nanos();
            let in_window = e.source == account && t > from && t <= now;
            let in_range = range.is_none_or(|(min, max)| e.amount >= min && e.amount < max);
            if in_window && in_range {
                stats.count += 1;
                stats.sum += e.amount;
            }
        }
        stats
    }

    fn account(&self, id: &str) -> Option<Account> {
        self.host.accounts.get(id).cloned()
    }

    fn list_contains(&self, list: &str, value: &str) -> bool {
        assert!(self.info.lists.iter().any(|l| l == list), "rule reads list `{list}` it did not declare in RuleInfo");
        self.host.lists.get(list).is_some_and(|l| l.contains(value))
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_parses_utc_instants() {
        assert_eq!(ts("1970-01-01T00:00:00Z").seconds, 0);
        assert_eq!(ts("2026-01-05T10:00:00Z").seconds, 1_767_607_200);
        assert_eq!(ts("2000-03-01T00:00:00.5Z"), Timestamp { seconds: 951_868_800, nanos: 500_000_000 });
    }
}
