//! A hostile risk rule for the containment and isolation tests
//! (`tests/all/containment.rs`, `tests/all/isolation.rs`). The mode is the
//! transaction's metadata `mode` when present, else the `mode` parameter;
//! every mode must leave the host serving and other transactions unaffected.
//!
//! | mode | does |
//! | --- | --- |
//! | `ok` | scores 10 — `HOSTILE_OK` |
//! | `loop` | marks a static, then spins forever (stopped by fuel, or by the deadline under a huge fuel budget) |
//! | `memory` | marks a static, then allocates until the memory cap stops it |
//! | `panic` | marks a static, then panics (a trap) |
//! | `deep-trap` | recurses about 24 KiB deep, then traps there (the stack pointer is left low) |
//! | `grow` | grows memory by a page, writes a marker in it, scores 10 |
//! | `score` | returns score 5000 (out of range) |
//! | `reasons` | returns 20 000 reason codes (oversized output) |
//! | `bad-code` | returns a lower-case reason code (malformed) |
//! | `counter` | scores a static counter it increments each call (must stay 1) |
//! | `log` | logs far beyond the per-call and per-evaluation caps, then scores 0 |
//! | `history` | asks for a history window longer than it declared (a trap) |
//!
//! Before any mode runs, the rule probes for traces of earlier calls and adds
//! a `LEAK_*` reason for each it finds (a correct host gives every call the
//! post-instantiation state, so none ever appears):
//!
//! | reason | what survived |
//! | --- | --- |
//! | `LEAK_COUNTER` | a static counter incremented by every call |
//! | `LEAK_HEAP` | a heap block whose address every call keeps in a static |
//! | `LEAK_STACK` | a marker every call writes below its stack frame (an uninitialised stack read) |
//! | `LEAK_GROWN` | a marker `grow` writes in the page it grew |
//! | `LEAK_GLOBAL` | the stack-pointer global left low by `deep-trap` |
//! | `LEAK_TRAP` | a static set just before `panic` traps |
//! | `LEAK_FUEL` | a static set just before `loop` runs out of fuel |
//! | `LEAK_MEMORY` | a static set just before `memory` hits the cap |

#![cfg_attr(target_arch = "wasm32", no_std)]

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use rulehost_guest::prelude::*;
use rulehost_guest::{LogLevel, ParamType, RiskRule, RuleInfo, Score, Transaction, log, params};

/// The hostile rule.
pub struct Hostile;

/// A value no fresh instance holds anywhere in its memory.
const MAGIC: u64 = 0x5eed_1eac_dead_beef;

static CALLS: AtomicU32 = AtomicU32::new(0);
static HEAP: AtomicUsize = AtomicUsize::new(0);
static BEFORE_TRAP: AtomicU32 = AtomicU32::new(0);
static BEFORE_FUEL: AtomicU32 = AtomicU32::new(0);
static BEFORE_MEMORY: AtomicU32 = AtomicU32::new(0);

/// How far below the probe's frame the stack marker goes, in bytes.
const STACK_MARKER_DEPTH: usize = 8192;
/// The deepest a healthy call's probe frame sits below the stack top.
const HEALTHY_STACK_DEPTH: usize = 16 * 1024;

#[cfg(target_arch = "wasm32")]
mod memory {
    unsafe extern "C" {
        /// The top of the shadow stack (the stack pointer's initial value).
        static __stack_high: u8;
    }

    pub fn stack_top() -> usize {
        // Only the address of the linker symbol is taken.
        core::ptr::addr_of!(__stack_high) as usize
    }

    pub fn size_bytes() -> usize {
        core::arch::wasm32::memory_size(0) * 65536
    }

    pub fn grow_page() -> Option<usize> {
        let old = core::arch::wasm32::memory_grow(0, 1);
        (old != usize::MAX).then_some(old * 65536)
    }

    /// Reads a word anywhere in linear memory (the point of the probes:
    /// memory no Rust object owns, such as the stack below the current
    /// frame or a page grown by an earlier call).
    pub fn read(addr: usize) -> u64 {
        // SAFETY: Wasm linear memory is one flat, always-readable array;
        // `addr` is within it (callers check against `size_bytes`).
        unsafe { core::ptr::read_volatile(addr as *const u64) }
    }

    pub fn write(addr: usize, v: u64) {
        // SAFETY: as `read`.
        unsafe { core::ptr::write_volatile(addr as *mut u64, v) }
    }
}

/// Native builds (unit tests of the crate) have no linear memory to probe.
#[cfg(not(target_arch = "wasm32"))]
mod memory {
    pub fn stack_top() -> usize {
        0
    }
    pub fn size_bytes() -> usize {
        0
    }
    pub fn grow_page() -> Option<usize> {
        None
    }
    pub fn read(_: usize) -> u64 {
        0
    }
    pub fn write(_: usize, _: u64) {}
}

/// Looks for every trace an earlier call could have left, and leaves its own.
#[inline(never)]
fn probe() -> Vec<&'static str> {
    let mut leaks = Vec::new();
    if CALLS.fetch_add(1, Ordering::Relaxed) != 0 {
        leaks.push("LEAK_COUNTER");
    }
    if HEAP.load(Ordering::Relaxed) != 0 {
        leaks.push("LEAK_HEAP");
    }
    let block = Box::leak(Box::new(MAGIC));
    HEAP.store(core::ptr::from_mut(block) as usize, Ordering::Relaxed);

    let frame = 0u64;
    let here = core::ptr::addr_of!(frame) as usize;
    if memory::stack_top() != 0 {
        if memory::stack_top().saturating_sub(here) > HEALTHY_STACK_DEPTH {
            leaks.push("LEAK_GLOBAL");
        }
        let below = here.saturating_sub(STACK_MARKER_DEPTH) & !7;
        if memory::read(below) == MAGIC {
            leaks.push("LEAK_STACK");
        }
        memory::write(below, MAGIC);
    }
    let size = memory::size_bytes();
    if size >= 65536 && memory::read(size - 65536) == MAGIC {
        leaks.push("LEAK_GROWN");
    }
    for (flag, reason) in [(&BEFORE_TRAP, "LEAK_TRAP"), (&BEFORE_FUEL, "LEAK_FUEL"), (&BEFORE_MEMORY, "LEAK_MEMORY")] {
        if flag.load(Ordering::Relaxed) != 0 {
            leaks.push(reason);
        }
    }
    leaks
}

/// Recurses `depth` frames of 1 KiB, then traps at the bottom.
#[inline(never)]
fn dive(depth: u32) -> u64 {
    let mut frame = [0u8; 1024];
    frame[depth as usize % 1024] = depth as u8;
    let frame = core::hint::black_box(frame);
    if depth == 0 {
        #[cfg(target_arch = "wasm32")]
        core::arch::wasm32::unreachable();
        #[cfg(not(target_arch = "wasm32"))]
        panic!("deep trap");
    }
    dive(depth - 1) + u64::from(frame[0])
}

fn with_leaks(mut score: Score, leaks: &[&str]) -> Score {
    for leak in leaks {
        score = score.add(1, leak);
    }
    score
}

impl RiskRule for Hostile {
    fn declare() -> RuleInfo {
        RuleInfo::new().param("mode", ParamType::Text).history_window_seconds(60)
    }

    fn score(tx: &Transaction) -> Score {
        let leaks = probe();
        let mode = match tx.metadata.iter().find(|(k, _)| k == "mode") {
            Some((_, v)) => v.clone(),
            None => params::text("mode"),
        };
        match mode.as_str() {
            "ok" => with_leaks(Score::new(10, "HOSTILE_OK"), &leaks),
            "loop" => {
                BEFORE_FUEL.store(1, Ordering::Relaxed);
                let mut x = 0u64;
                loop {
                    x = core::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                BEFORE_MEMORY.store(1, Ordering::Relaxed);
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::with_capacity(1 << 20));
                    core::hint::black_box(&hoard);
                }
            }
            "panic" => {
                BEFORE_TRAP.store(1, Ordering::Relaxed);
                panic!("hostile rule panics on {}", tx.id)
            }
            "deep-trap" => Score::new(dive(24) as u32, "UNREACHABLE"),
            "grow" => {
                if let Some(page) = memory::grow_page() {
                    memory::write(page, MAGIC);
                }
                with_leaks(Score::new(10, "HOSTILE_GREW"), &leaks)
            }
            "score" => Score::new(5000, "TOO_HIGH"),
            "reasons" => Score { score: 1, reasons: (0..20_000).map(|i| format!("R{i}")).collect() },
            "bad-code" => Score::new(1, "not-a-code"),
            "counter" => {
                let n = CALLS.load(Ordering::Relaxed);
                Score::new(n.min(1000), "COUNTER")
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
rulehost_guest::no_std_runtime!();
