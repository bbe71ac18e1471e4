//! What a rule call can reach: the `host` capabilities answered from the
//! call's context, the memory cap, and the bounded log. Both execution paths
//! (a component instance, or a reset core instance) answer through these, so
//! a capability behaves the same whichever path runs the rule.

use rust_decimal::Decimal;
use wasmtime::ResourceLimiter;

use super::{CallContext, LOG_BYTES_PER_CALL_MAX, LOG_BYTES_PER_EVALUATION_MAX, LogLine, TABLE_ELEMENTS_MAX};
use rulehost_core::facts::{AccountFacts, HistoryQuery, HistoryStats};
use rulehost_core::model::{NANOS_PER_SECOND, Nanos};
use rulehost_core::params::ParamValue;
use rulehost_core::rule::LogLevel;

/// A capability call the guest may not make: it traps.
pub(super) fn guest_error(message: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::msg(message.into())
}

/// Memory the instance may hold, enforced on every growth.
pub(super) struct MemoryCap {
    /// The rule's budget, in bytes.
    pub(super) memory_bytes_max: usize,
    /// Bytes the host itself adds to the instance (the dirty map of a
    /// resettable instance), allowed on top of the budget.
    pub(super) allowance_bytes: usize,
    /// Bytes of all memories of the instance now.
    pub(super) total_bytes: usize,
    /// The most `total_bytes` reached during the current call.
    pub(super) peak_bytes: usize,
    /// Whether a growth was refused.
    pub(super) exceeded: bool,
}

impl MemoryCap {
    pub(super) fn new(memory_bytes_max: u64, allowance_bytes: usize) -> Self {
        MemoryCap {
            memory_bytes_max: usize::try_from(memory_bytes_max).unwrap_or(usize::MAX),
            allowance_bytes,
            total_bytes: 0,
            peak_bytes: 0,
            exceeded: false,
        }
    }

    /// Peak of the guest's own memory during the call, in bytes.
    pub(super) fn peak_guest_bytes(&self) -> u64 {
        self.peak_bytes.saturating_sub(self.allowance_bytes) as u64
    }

    /// Starts a call on an instance that already holds `total_bytes`.
    pub(super) fn begin_call(&mut self, memory_bytes_max: u64) {
        self.memory_bytes_max = usize::try_from(memory_bytes_max).unwrap_or(usize::MAX);
        self.peak_bytes = self.total_bytes;
        self.exceeded = false;
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.total_bytes.saturating_sub(current.min(self.total_bytes)).saturating_add(desired);
        if total > self.memory_bytes_max.saturating_add(self.allowance_bytes) {
            self.exceeded = true;
            return Ok(false);
        }
        self.total_bytes = total;
        self.peak_bytes = self.peak_bytes.max(total);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX)
    }
}

/// CPU time this thread has used, in nanoseconds.
pub(super) fn thread_cpu_nanos() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec to write to; CLOCK_THREAD_CPUTIME_ID
    // exists on every Linux this host supports. On failure `t` stays zero,
    // and deadlines then never expire (fuel still bounds every call).
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// The store data that carries a [`CallData`].
pub(super) trait HasCallData: 'static {
    fn call_data_mut(&mut self) -> &mut CallData;
}

/// Makes the epoch ticks check the call's deadline against the CPU time the
/// evaluating thread has spent on it: time the thread waits, is preempted
/// or instantiates the rule does not count, so a healthy rule meets its
/// deadline however busy the machine is. The ticks decide how often the
/// check runs (every [`super::EPOCH_TICK_MS`]); the clock is first read at
/// the first tick a call lives through, so calls shorter than a tick — all
/// healthy ones — never read it, and a call may use up to one tick of CPU
/// time beyond its deadline.
pub(super) fn check_deadline_by_cpu_time<T: HasCallData>(store: &mut wasmtime::Store<T>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let now = thread_cpu_nanos();
        let data = ctx.data_mut().call_data_mut();
        let start = *data.cpu_start_nanos.get_or_insert(now);
        Ok(if now.saturating_sub(start) >= data.deadline_nanos {
            wasmtime::UpdateDeadline::Interrupt
        } else {
            wasmtime::UpdateDeadline::Continue(1)
        })
    });
}

/// The per-call data both paths keep in their store: the capability
/// context, the memory cap, the bounded log and the deadline's clock.
pub(super) struct CallData {
    /// The context of the `evaluate` call in progress; `None` outside one
    /// (during instantiation and `describe`), when capabilities trap.
    pub(super) ctx: Option<CallContext>,
    /// The transaction's timestamp.
    pub(super) now: Nanos,
    pub(super) memory: MemoryCap,
    pub(super) logs: Vec<LogLine>,
    pub(super) log_bytes: usize,
    /// The thread's CPU time at the first epoch tick of the current call (or
    /// instantiation, or `describe`), in nanoseconds; `None` before it.
    pub(super) cpu_start_nanos: Option<u64>,
    /// The CPU time the call may use, in nanoseconds.
    pub(super) deadline_nanos: u64,
}

impl CallData {
    pub(super) fn new(memory: MemoryCap, deadline_ms: u64) -> Self {
        CallData {
            ctx: None,
            now: 0,
            memory,
            logs: Vec::new(),
            log_bytes: 0,
            cpu_start_nanos: None,
            deadline_nanos: deadline_ms.saturating_mul(1_000_000),
        }
    }

    /// Starts the deadline's clock (of the work about to run).
    pub(super) fn restart_clock(&mut self) {
        self.cpu_start_nanos = None;
    }

    /// Starts an `evaluate` call.
    pub(super) fn begin(&mut self, ctx: CallContext, now: Nanos) {
        self.memory.begin_call(ctx.budget.memory_bytes_max);
        self.deadline_nanos = ctx.budget.deadline_ms.saturating_mul(1_000_000);
        self.cpu_start_nanos = None;
        self.ctx = Some(ctx);
        self.now = now;
        self.logs.clear();
        self.log_bytes = 0;
    }

    /// Ends the call: drops the context, returns the logs.
    pub(super) fn finish(&mut self) -> Vec<LogLine> {
        self.ctx = None;
        std::mem::take(&mut self.logs)
    }

    pub(super) fn ctx(&self) -> wasmtime::Result<&CallContext> {
        self.ctx.as_ref().ok_or_else(|| {
            guest_error(
                "host capabilities are only available during `evaluate` (not at instantiation or in `describe`)",
            )
        })
    }

    /// `param`: a whole scalar or list parameter (maps are read by entry).
    pub(super) fn param<'p>(params: &'p rulehost_core::params::Params, name: &str) -> Option<&'p ParamValue> {
        params.get(name).filter(|v| {
            matches!(v, ParamValue::Text(_) | ParamValue::Integer(_) | ParamValue::Decimal(_) | ParamValue::TextList(_))
        })
    }

    /// `history`, with the window checked against the rule's declaration.
    pub(super) fn history(
        &self,
        account: &str,
        window_seconds: u64,
        min: Option<Decimal>,
        max: Option<Decimal>,
    ) -> wasmtime::Result<HistoryStats> {
        let ctx = self.ctx()?;
        if window_seconds > ctx.history_window_seconds_max {
            return Err(guest_error(format!(
                "history window {window_seconds}s exceeds the rule's declared maximum {}s",
                ctx.history_window_seconds_max
            )));
        }
        let query = HistoryQuery {
            account,
            from_exclusive: self.now - i128::from(window_seconds) * NANOS_PER_SECOND,
            to_inclusive: self.now,
            min,
            max,
        };
        Ok(ctx.facts.history(&query))
    }

    /// `account`.
    pub(super) fn account(&self, id: &str) -> wasmtime::Result<Option<AccountFacts>> {
        Ok(self.ctx()?.facts.account(id))
    }

    /// `list-contains`, for a list the rule declared.
    pub(super) fn list_contains(&self, name: &str, value: &str) -> wasmtime::Result<bool> {
        let ctx = self.ctx()?;
        if !ctx.declared_lists.iter().any(|l| l == name) {
            return Err(guest_error(format!("list `{name}` is not declared by the rule")));
        }
        Ok(ctx.lists.contains(name, value))
    }

    /// `log`: records what fits in the per-call and per-evaluation caps.
    pub(super) fn log(&mut self, level: usize, message: &str) {
        let room = LOG_BYTES_PER_EVALUATION_MAX.saturating_sub(self.log_bytes).min(LOG_BYTES_PER_CALL_MAX);
        if room == 0 {
            return;
        }
        let mut cut = message.len().min(room);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        self.log_bytes += cut;
        let level = LogLevel::from_index(level).unwrap_or(LogLevel::Error);
        self.logs.push(LogLine { level, message: message[..cut].to_owned() });
    }
}

/// Splits a decimal into the WIT encoding: (mantissa-hi, mantissa-lo, scale).
pub(super) fn decimal_parts(d: Decimal) -> (i64, u64, u8) {
    let m = d.mantissa();
    ((m >> 64) as i64, m as u64, d.scale() as u8)
}

/// Rebuilds a decimal from the WIT encoding; `None` outside rust_decimal's
/// range.
pub(super) fn decimal_from_parts(hi: i64, lo: u64, scale: u8) -> Option<Decimal> {
    let m = (i128::from(hi) << 64) | i128::from(lo);
    Decimal::try_from_i128_with_scale(m, u32::from(scale)).ok()
}

/// An instant as (seconds, nanos) since the epoch.
pub(super) fn instant_parts(n: Nanos) -> (i64, u32) {
    (n.div_euclid(NANOS_PER_SECOND) as i64, n.rem_euclid(NANOS_PER_SECOND) as u32)
}
