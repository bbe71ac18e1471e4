//! A `std` rule for the containment tests (`tests/all/containment.rs`): it
//! reads the clock, randomness, the environment and a file through `std`,
//! so its component imports WASI, which the host links deny-all. Being
//! `std`, it is not resettable and runs in a fresh component instance per
//! call; it also keeps a static counter, which must read 1 on every call.

use std::sync::atomic::{AtomicU32, Ordering};

use rulehost_guest::{RiskRule, RuleInfo, Score, Transaction};

/// The ambient-authority rule.
pub struct Ambient;

static CALLS: AtomicU32 = AtomicU32::new(0);

impl RiskRule for Ambient {
    fn declare() -> RuleInfo {
        RuleInfo::new()
    }

    fn score(tx: &Transaction) -> Score {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(7);
        let home = std::env::var("HOME").is_ok() as u64;
        let mut map = std::collections::HashMap::new();
        map.insert(tx.id.clone(), 1u8);
        let file = std::fs::read("/etc/passwd").is_ok() as u64;
        let s = (t + home * 100 + file * 200 + map.len() as u64) as u32;
        let score = Score::new(s.min(1000), "AMBIENT");
        if calls > 1 { score.add(1, "LEAK_COUNTER") } else { score }
    }
}

rulehost_guest::export_risk_rule!(Ambient);
