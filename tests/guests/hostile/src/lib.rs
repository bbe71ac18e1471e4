//! A hostile risk rule for the containment tests (`tests/all/containment.rs`).
//! The `mode` parameter picks the misbehaviour; every mode must leave the
//! host serving and other transactions unaffected.
//!
//! | mode | does |
//! | --- | --- |
//! | `ok` | scores 10 — `HOSTILE_OK` |
//! | `loop` | spins forever (stopped by fuel, or by the deadline under a huge fuel budget) |
//! | `memory` | allocates until the memory cap stops it |
//! | `panic` | panics (a trap) |
//! | `score` | returns score 5000 (out of range) |
//! | `reasons` | returns 20 000 reason codes (oversized output) |
//! | `bad-code` | returns a lower-case reason code (malformed) |
//! | `counter` | scores a global counter it increments each call (must stay 1) |
//! | `ambient` | reads the clock, randomness and environment through std (deny-all WASI) and scores what it saw |
//! | `log` | logs far beyond the per-call and per-evaluation caps, then scores 0 |
//! | `history` | asks for a history window longer than it declared (a trap) |

use std::sync::atomic::{AtomicU32, Ordering};

use rulehost_guest::{LogLevel, ParamType, RiskRule, RuleInfo, Score, Transaction, log, params};

/// The hostile rule.
pub struct Hostile;

static CALLS: AtomicU32 = AtomicU32::new(0);

impl RiskRule for Hostile {
    fn declare() -> RuleInfo {
        RuleInfo::new().param("mode", ParamType::Text).history_window_seconds(60)
    }

    fn score(tx: &Transaction) -> Score {
        match params::text("mode").as_str() {
            "ok" => Score::new(10, "HOSTILE_OK"),
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("hostile rule panics on {}", tx.id),
            "score" => Score::new(5000, "TOO_HIGH"),
            "reasons" => Score { score: 1, reasons: (0..20_000).map(|i| format!("R{i}")).collect() },
            "bad-code" => Score::new(1, "not-a-code"),
            "counter" => {
                let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                Score::new(n.min(1000), "COUNTER")
            }
            "ambient" => {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(7);
                let home = std::env::var("HOME").is_ok() as u64;
                let mut map = std::collections::HashMap::new();
                map.insert(tx.id.clone(), 1u8);
                let file = std::fs::read("/etc/passwd").is_ok() as u64;
                let s = (t + home * 100 + file * 200 + map.len() as u64) as u32;
                Score::new(s.min(1000), "AMBIENT")
            }
            "log" => {
                for i in 0..1000 {
                    log(LogLevel::Info, &format!("line {i} {}", "x".repeat(1000)));
                }
                Score::zero()
            }
            "history" => {
                rulehost_guest::history(&tx.source, 3600, None);
                Score::zero()
            }
            other => panic!("unknown mode {other}"),
        }
    }
}

rulehost_guest::export_risk_rule!(Hostile);
