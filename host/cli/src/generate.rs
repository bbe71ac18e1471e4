//! A deterministic, seeded generator of realistic accounts and transactions
//! (`rulehost gen`): mostly benign traffic across six currencies, with
//! injected patterns that trigger every shipped rule, every pre-check and
//! every kind of bad input. The same seed and sizes give the same bytes.

use std::io::{self, Write};

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rust_decimal::Decimal;
use serde_json::json;

use rulehost::input::format_timestamp;
use rulehost::model::{NANOS_PER_SECOND, Nanos};

/// Accounts in the operator list `blocked-accounts` of the example rule set.
pub const BLOCKED_ACCOUNTS: [&str; 2] = ["acc-000666", "acc-001313"];

/// Most regular accounts `rulehost gen` makes (`--accounts`).
pub const ACCOUNTS_MAX: usize = 10_000_000;
/// Most transaction lines `rulehost gen` writes (`--transactions`).
pub const TRANSACTIONS_MAX: usize = 1_000_000_000;

/// Generator settings: what `rulehost gen` makes.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Seed of the ChaCha8 stream.
    pub seed: u64,
    /// Regular accounts (settlement accounts come on top).
    pub accounts: usize,
    /// Transaction lines (including bad lines and duplicates).
    pub transactions: usize,
    /// Fraction of lines carrying an injected pattern, in per-mille.
    pub anomalies_per_mille: u32,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig { seed: 42, accounts: 2_000, transactions: 200_000, anomalies_per_mille: 60 }
    }
}

struct Currency {
    code: &'static str,
    country: &'static str,
    /// Amounts are generated in minor units; this is the scale.
    minor: u32,
    /// The large threshold T in major units.
    large: i64,
    /// New-account amount in major units.
    new_account: i64,
    /// Typical payment size in major units.
    typical: i64,
    /// Share of accounts, in per-mille.
    share: u32,
}

const CURRENCIES: [Currency; 6] = [
    Currency { code: "USD", country: "US", minor: 2, large: 10_000, new_account: 1_000, typical: 100, share: 500 },
    Currency { code: "EUR", country: "DE", minor: 2, large: 10_000, new_account: 1_000, typical: 100, share: 200 },
    Currency { code: "GBP", country: "GB", minor: 2, large: 8_000, new_account: 800, typical: 80, share: 100 },
    Currency { code: "CHF", country: "CH", minor: 2, large: 10_000, new_account: 1_000, typical: 100, share: 50 },
    Currency {
        code: "JPY",
        country: "JP",
        minor: 0,
        large: 1_500_000,
        new_account: 150_000,
        typical: 15_000,
        share: 100,
    },
    Currency { code: "BHD", country: "BH", minor: 3, large: 4_000, new_account: 400, typical: 40, share: 50 },
];

const BENIGN_MCC: [&str; 6] = ["5411", "5812", "5999", "4111", "5732", "5541"];
const RISKY_MCC: [&str; 3] = ["7995", "6051", "4829"];
const CHANNELS: [&str; 3] = ["card", "web", "mobile"];
const FOREIGN: [&str; 4] = ["FR", "ES", "IT", "CA"];
const HIGH_RISK: [&str; 3] = ["RU", "BY", "VE"];
const SANCTIONED: [&str; 2] = ["KP", "IR"];

struct GenAccount {
    id: String,
    currency: usize,
    status: &'static str,
    opened_at: Nanos,
}

/// 2026-01-05T00:00:00Z: where the stream starts.
const START: Nanos = 1_767_571_200 * NANOS_PER_SECOND;
const DAY: Nanos = 86_400 * NANOS_PER_SECOND;
/// Earlier well-formed lines kept for replays and conflicting reuses.
const PREVIOUS_KEPT: usize = 64;

/// Writes `accounts.jsonl` and `transactions.jsonl` content for `config`.
pub fn generate(config: &GenConfig, accounts_out: &mut dyn Write, transactions_out: &mut dyn Write) -> io::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let accounts = write_accounts(&mut rng, config, accounts_out)?;
    let mut stream = Stream::new(rng, accounts);
    let mut written = 0usize;
    let mut previous: Vec<String> = Vec::new();
    while written < config.transactions {
        for line in stream.next_lines(config, &previous) {
            if written >= config.transactions {
                break;
            }
            writeln!(transactions_out, "{line}")?;
            written += 1;
            if previous.len() >= PREVIOUS_KEPT {
                previous.remove(0);
            }
            if line.starts_with("{\"") {
                previous.push(line);
            }
        }
    }
    Ok(())
}

/// The accounts: `config.accounts` regular ones (at least 16) in the
/// currencies' shares, some frozen, closed, young or nearly empty; then one
/// settlement account per currency with a huge overdraft (deposits come
/// from there).
fn write_accounts(rng: &mut ChaCha8Rng, config: &GenConfig, out: &mut dyn Write) -> io::Result<Vec<GenAccount>> {
    let mut accounts = Vec::with_capacity(config.accounts.min(ACCOUNTS_MAX));
    for i in 1..=config.accounts.max(16) {
        let pick = rng.random_range(0..1000u32);
        let mut acc = 0;
        let mut seen = 0;
        for (c, cur) in CURRENCIES.iter().enumerate() {
            seen += cur.share;
            if pick < seen {
                acc = c;
                break;
            }
        }
        let cur = &CURRENCIES[acc];
        let roll = rng.random_range(0..1000u32);
        let status = match roll {
            0..20 => "frozen",
            20..30 => "closed",
            _ => "active",
        };
        // About 5% of accounts open during the stream's first week.
        let opened_at = if rng.random_bool(0.05) {
            START + rng.random_range(0..7 * DAY)
        } else {
            START - rng.random_range(30 * DAY..900 * DAY)
        };
        let id = format!("acc-{i:06}");
        // Some accounts start nearly empty so insufficient funds happen.
        let opening_major = if rng.random_bool(0.03) {
            rng.random_range(0..5) * cur.typical / 10
        } else {
            rng.random_range(20..200) * cur.typical
        };
        let record = json!({
            "id": id,
            "currency": cur.code,
            "country": cur.country,
            "opened_at": format_timestamp(opened_at),
            "status": status,
            "overdraft_limit": "0",
            "opening_balance": Decimal::new(opening_major, 0).to_string(),
        });
        writeln!(out, "{record}")?;
        accounts.push(GenAccount { id, currency: acc, status, opened_at });
    }
    for cur in &CURRENCIES {
        let record = json!({
            "id": format!("settle-{}", cur.code),
            "currency": cur.code,
            "country": cur.country,
            "opened_at": "2020-01-01T00:00:00Z",
            "status": "active",
            "overdraft_limit": "1000000000000",
        });
        writeln!(out, "{record}")?;
    }
    Ok(accounts)
}

/// The transaction stream's state: the random stream, the clock, the last
/// id, and the accounts (with the active ones of each currency).
struct Stream {
    rng: ChaCha8Rng,
    now: Nanos,
    seq: u64,
    accounts: Vec<GenAccount>,
    by_currency: Vec<Vec<usize>>,
}

/// One benign payment, before any pattern is injected into it.
struct Payment {
    tx: serde_json::Value,
    currency: usize,
    destination: usize,
    amount: Decimal,
}

impl Stream {
    fn new(rng: ChaCha8Rng, accounts: Vec<GenAccount>) -> Stream {
        let by_currency = (0..CURRENCIES.len())
            .map(|c| {
                accounts
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.currency == c && a.status == "active")
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        Stream { rng, now: START, seq: 0, accounts, by_currency }
    }

    /// A random active account of currency `c`.
    fn active(&mut self, c: usize) -> usize {
        let pool = &self.by_currency[c];
        if pool.is_empty() { 0 } else { pool[self.rng.random_range(0..pool.len())] }
    }

    fn next_id(&mut self) -> String {
        self.seq += 1;
        format!("tx-{:08}", self.seq)
    }

    /// The next lines: one benign payment, or (for `anomalies_per_mille`)
    /// the lines of an injected pattern built on it.
    fn next_lines(&mut self, config: &GenConfig, previous: &[String]) -> Vec<String> {
        let mut payment = self.payment();
        let mut lines = Vec::new();
        if self.rng.random_range(0..1000u32) < config.anomalies_per_mille {
            let pattern = self.rng.random_range(0..24u32);
            lines = self.inject(pattern, &mut payment, previous);
        }
        if lines.is_empty() {
            lines.push(payment.tx.to_string());
        }
        lines
    }

    /// A benign payment between two active accounts of one currency.
    fn payment(&mut self) -> Payment {
        self.now += self.rng.random_range(0..2 * NANOS_PER_SECOND);
        let c = if self.rng.random_bool(0.5) { 0 } else { self.rng.random_range(0..CURRENCIES.len()) };
        let cur = &CURRENCIES[c];
        let src = self.active(c);
        let mut dst = self.active(c);
        if dst == src {
            dst = self.by_currency[c].iter().copied().find(|&d| d != src).unwrap_or(dst);
        }
        let scale = 10i64.pow(cur.minor);
        let typical_minor = cur.typical * scale;
        let amount = Decimal::new(self.rng.random_range(typical_minor / 20..typical_minor * 3), cur.minor);
        let tx = json!({
            "id": self.next_id(),
            "timestamp": format_timestamp(self.now),
            "kind": "payment",
            "source": self.accounts[src].id,
            "destination": self.accounts[dst].id,
            "amount": amount.to_string(),
            "currency": cur.code,
            "country": cur.country,
            "merchant_category": BENIGN_MCC[self.rng.random_range(0..BENIGN_MCC.len())],
            "channel": CHANNELS[self.rng.random_range(0..CHANNELS.len())],
        });
        Payment { tx, currency: c, destination: dst, amount }
    }

    /// Injects pattern `pattern` (0..24) into `payment`: the lines it makes
    /// (empty when the pattern only changed the payment, which is then
    /// written as it is).
    fn inject(&mut self, pattern: u32, payment: &mut Payment, previous: &[String]) -> Vec<String> {
        let (c, dst, amount) = (payment.currency, payment.destination, payment.amount);
        let cur = &CURRENCIES[c];
        let tx = &mut payment.tx;
        let mut lines = Vec::new();
        match pattern {
            // A burst: the same source 12 times within a few minutes.
            0 | 1 => {
                for _ in 0..12 {
                    self.now += self.rng.random_range(0..20 * NANOS_PER_SECOND);
                    tx["id"] = self.next_id().into();
                    tx["timestamp"] = format_timestamp(self.now).into();
                    lines.push(tx.to_string());
                }
            }
            // Structuring: three payments just under T within hours.
            2 | 3 => {
                for _ in 0..3 {
                    self.now += self.rng.random_range(0..3600 * NANOS_PER_SECOND);
                    let band = Decimal::new(cur.large * self.rng.random_range(91..100), 2);
                    tx["id"] = self.next_id().into();
                    tx["timestamp"] = format_timestamp(self.now).into();
                    tx["amount"] = band.round_dp(cur.minor).to_string().into();
                    tx["kind"] = "transfer".into();
                    lines.push(tx.to_string());
                }
            }
            4 => tx["amount"] = Decimal::new(cur.large + self.rng.random_range(0..cur.large), 0).to_string().into(),
            5 => {
                if let Some(young) = self
                    .accounts
                    .iter()
                    .position(|a| a.currency == c && a.status == "active" && a.opened_at > START - DAY)
                {
                    tx["source"] = self.accounts[young].id.clone().into();
                    if young == dst {
                        let other = self.active(c);
                        tx["destination"] = self.accounts[other].id.clone().into();
                    }
                }
                tx["amount"] = Decimal::new(cur.new_account * 2, 0).to_string().into();
            }
            6 => tx["country"] = SANCTIONED[self.rng.random_range(0..SANCTIONED.len())].into(),
            7 => tx["source"] = BLOCKED_ACCOUNTS[self.rng.random_range(0..BLOCKED_ACCOUNTS.len())].into(),
            8 => tx["country"] = HIGH_RISK[self.rng.random_range(0..HIGH_RISK.len())].into(),
            9 => tx["country"] = FOREIGN[self.rng.random_range(0..FOREIGN.len())].into(),
            10 => tx["merchant_category"] = RISKY_MCC[self.rng.random_range(0..RISKY_MCC.len())].into(),
            11 => {
                if let Some(frozen) = self.accounts.iter().position(|a| a.status != "active") {
                    let fc = self.accounts[frozen].currency;
                    tx["source"] = self.accounts[frozen].id.clone().into();
                    let other = self.active(fc);
                    tx["destination"] = self.accounts[other].id.clone().into();
                    tx["currency"] = CURRENCIES[fc].code.into();
                }
            }
            // Far more than any opening balance.
            12 => tx["amount"] = Decimal::new(cur.large * 4, 0).to_string().into(),
            13 => tx["destination"] = "acc-unknown".into(),
            14 => tx["destination"] = tx["source"].clone(),
            15 => tx["currency"] = CURRENCIES[(c + 1) % CURRENCIES.len()].code.into(),
            16 => tx["amount"] = format!("{}.{}", cur.typical, "5".repeat(cur.minor as usize + 1)).into(),
            17 => tx["amount"] = "0".into(),
            // A deposit from settlement.
            18 => {
                tx["kind"] = "deposit".into();
                tx["source"] = format!("settle-{}", cur.code).into();
            }
            // Bad input of every kind.
            19 => lines.push(self.bad_line(tx, amount)),
            // An exact replay of an earlier line, or a conflicting reuse of its id.
            20 | 21 => {
                if let Some(prev) = previous.last() {
                    lines.push(prev.clone());
                    // A malformed earlier line is repeated but not reused with another amount.
                    if pattern == 21
                        && let Ok(serde_json::Value::Object(mut v)) = serde_json::from_str(prev)
                    {
                        v.insert("amount".into(), "1.00".into());
                        lines.push(serde_json::Value::Object(v).to_string());
                    }
                }
            }
            22 => tx["currency"] = "XXX".into(),
            _ => tx["amount"] = Decimal::new(cur.large * 6, 0).to_string().into(),
        }
        lines
    }

    /// One bad line of a random kind: broken JSON, an empty line, a number
    /// for the amount, an unknown kind, a bad timestamp, a missing field.
    fn bad_line(&mut self, tx: &serde_json::Value, amount: Decimal) -> String {
        match self.rng.random_range(0..6u32) {
            0 => "{\"id\": \"broken".to_string(),
            1 => String::new(),
            2 => tx.to_string().replace(&format!("\"amount\":\"{amount}\""), &format!("\"amount\":{amount}")),
            3 => tx.to_string().replace("\"kind\":\"payment\"", "\"kind\":\"refund\""),
            4 => tx
                .to_string()
                .replace(&format!("\"timestamp\":\"{}\"", format_timestamp(self.now)), "\"timestamp\":\"yesterday\""),
            _ => {
                let mut t = tx.clone();
                if let Some(fields) = t.as_object_mut() {
                    fields.remove("currency");
                }
                t.to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of anomaly, often: a conflicting reuse of an id right
    /// after a malformed line (which is never reused) must not stop it.
    #[test]
    fn anomalies_only_streams_generate_whole() {
        for seed in 0..8 {
            let config = GenConfig { seed, transactions: 5_000, accounts: 50, anomalies_per_mille: 1000 };
            let (mut a, mut t) = (Vec::new(), Vec::new());
            generate(&config, &mut a, &mut t).unwrap();
            assert_eq!(t.iter().filter(|b| **b == b'\n').count(), 5_000);
        }
    }

    #[test]
    fn same_seed_same_bytes_and_exact_count() {
        let config = GenConfig { transactions: 3_000, accounts: 100, ..GenConfig::default() };
        let run = || {
            let (mut a, mut t) = (Vec::new(), Vec::new());
            generate(&config, &mut a, &mut t).unwrap();
            (a, t)
        };
        let (a1, t1) = run();
        let (a2, t2) = run();
        assert_eq!(a1, a2);
        assert_eq!(t1, t2);
        assert_eq!(t1.iter().filter(|b| **b == b'\n').count(), 3_000);
        let other = GenConfig { seed: 7, ..config };
        let mut t3 = Vec::new();
        generate(&other, &mut Vec::new(), &mut t3).unwrap();
        assert_ne!(t1, t3);
    }
}
