//! What a rule call can reach: the `host` capabilities answered from the
//! call's context, the per-call store data (memory cap, bounded log, lazily
//! built deny-all WASI), and the conversions between host types and WIT.

use rust_decimal::Decimal;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::rulehost::rules::{host as wit_host, types as wit};
use super::{
    CallContext, LOG_BYTES_PER_CALL_MAX, LOG_BYTES_PER_EVALUATION_MAX, LogLine, STDERR_BYTES_MAX, TABLE_ELEMENTS_MAX,
};
use crate::facts::HistoryQuery;
use crate::model::{AccountStatus, NANOS_PER_SECOND, Nanos, Transaction, TransactionKind};
use crate::params::ParamValue;

/// A transaction converted once for all the calls on it.
pub struct WitTransaction(pub(super) wit::Transaction);

impl WitTransaction {
    /// Converts a transaction to its WIT form.
    pub fn new(tx: &Transaction) -> Self {
        WitTransaction(wit::Transaction {
            id: tx.id.clone(),
            timestamp: to_wit_instant(tx.timestamp),
            kind: match tx.kind {
                TransactionKind::Payment => wit::TransactionKind::Payment,
                TransactionKind::Transfer => wit::TransactionKind::Transfer,
                TransactionKind::Deposit => wit::TransactionKind::Deposit,
                TransactionKind::Withdrawal => wit::TransactionKind::Withdrawal,
            },
            source: tx.source.clone(),
            destination: tx.destination.clone(),
            amount: to_wit_decimal(tx.amount),
            currency: tx.currency.clone(),
            country: tx.country.clone(),
            merchant_category: tx.merchant_category.clone(),
            channel: tx.channel.clone(),
            metadata: tx.metadata.clone(),
        })
    }

    pub(super) fn timestamp(&self) -> Nanos {
        let t = &self.0.timestamp;
        i128::from(t.seconds) * NANOS_PER_SECOND + i128::from(t.nanos)
    }
}

fn to_wit_decimal(d: Decimal) -> wit::Decimal {
    let m = d.mantissa();
    wit::Decimal { mantissa_hi: (m >> 64) as i64, mantissa_lo: m as u64, scale: d.scale() as u8 }
}

fn from_wit_decimal(d: &wit::Decimal) -> Option<Decimal> {
    let m = (i128::from(d.mantissa_hi) << 64) | i128::from(d.mantissa_lo);
    Decimal::try_from_i128_with_scale(m, u32::from(d.scale)).ok()
}

fn to_wit_instant(n: Nanos) -> wit::Instant {
    wit::Instant { seconds: n.div_euclid(NANOS_PER_SECOND) as i64, nanos: n.rem_euclid(NANOS_PER_SECOND) as u32 }
}

/// The per-call store data: the capability context, the memory cap, and a
/// lazily built deny-all WASI context.
pub struct CallState {
    pub(super) ctx: Option<CallContext>,
    pub(super) now: Nanos,
    pub(super) memory: MemoryCap,
    pub(super) logs: Vec<LogLine>,
    pub(super) log_bytes: usize,
    pub(super) wasi: Option<(WasiCtx, ResourceTable)>,
    pub(super) stderr: Option<MemoryOutputPipe>,
}

pub(super) struct MemoryCap {
    pub(super) memory_bytes_max: usize,
    pub(super) total_bytes: usize,
    pub(super) peak_bytes: usize,
    pub(super) exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.total_bytes - current.min(self.total_bytes) + desired;
        if total > self.memory_bytes_max {
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

/// Deterministic stand-ins for WASI's clocks and randomness: time stands at
/// the Unix epoch and "random" bytes are a fixed pattern. Stateless, so
/// nothing carries over between calls.
mod deny_all {
    use std::convert::Infallible;
    use std::time::Duration;
    use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

    pub struct FrozenClock;
    impl HostWallClock for FrozenClock {
        fn resolution(&self) -> Duration {
            Duration::from_nanos(1)
        }
        fn now(&self) -> Duration {
            Duration::ZERO
        }
    }
    impl HostMonotonicClock for FrozenClock {
        fn resolution(&self) -> u64 {
            1
        }
        fn now(&self) -> u64 {
            0
        }
    }

    pub struct FixedBytes;
    impl rand_core::TryRng for FixedBytes {
        type Error = Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Infallible> {
            Ok(0x5eed_5eed)
        }
        fn try_next_u64(&mut self) -> Result<u64, Infallible> {
            Ok(0x5eed_5eed_5eed_5eed)
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
            dst.fill(0x5e);
            Ok(())
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let stderr = &mut self.stderr;
        let (ctx, table) = self.wasi.get_or_insert_with(|| {
            let pipe = MemoryOutputPipe::new(STDERR_BYTES_MAX);
            *stderr = Some(pipe.clone());
            let mut b = WasiCtx::builder();
            b.stderr(pipe)
                .wall_clock(deny_all::FrozenClock)
                .monotonic_clock(deny_all::FrozenClock)
                .secure_random(deny_all::FixedBytes)
                .insecure_random(deny_all::FixedBytes)
                .insecure_random_seed(0);
            (b.build(), ResourceTable::new())
        });
        WasiCtxView { ctx, table }
    }
}

impl wit::Host for CallState {}

fn guest_error(message: String) -> wasmtime::Error {
    wasmtime::Error::msg(message)
}

impl CallState {
    fn call_ctx(&self) -> &CallContext {
        self.ctx.as_ref().expect("capabilities are only linked into evaluation calls")
    }
}

impl wit_host::Host for CallState {
    fn param(&mut self, name: String) -> wasmtime::Result<Option<wit::ParamValue>> {
        Ok(self.call_ctx().params.get(&name).and_then(to_wit_param))
    }

    fn param_entry(&mut self, name: String, key: String) -> wasmtime::Result<Option<wit::ParamValue>> {
        Ok(self.call_ctx().params.entry(&name, &key).as_ref().and_then(to_wit_param))
    }

    fn history(
        &mut self,
        account: String,
        window_seconds: u64,
        min: Option<wit::Decimal>,
        max: Option<wit::Decimal>,
    ) -> wasmtime::Result<wit::HistoryStats> {
        let ctx = self.call_ctx();
        if window_seconds > ctx.history_window_seconds_max {
            return Err(guest_error(format!(
                "history window {window_seconds}s exceeds the rule's declared maximum {}s",
                ctx.history_window_seconds_max
            )));
        }
        let bound = |d: Option<wit::Decimal>| -> wasmtime::Result<Option<Decimal>> {
            d.map(|d| from_wit_decimal(&d).ok_or_else(|| guest_error("history bound is not a valid decimal".into())))
                .transpose()
        };
        let query = HistoryQuery {
            account: &account,
            from_exclusive: self.now - i128::from(window_seconds) * NANOS_PER_SECOND,
            to_inclusive: self.now,
            min: bound(min)?,
            max: bound(max)?,
        };
        let stats = ctx.facts.history(&query);
        Ok(wit::HistoryStats { count: stats.count, sum: to_wit_decimal(stats.sum) })
    }

    fn account(&mut self, id: String) -> wasmtime::Result<Option<wit::AccountFacts>> {
        Ok(self.call_ctx().facts.account(&id).map(|a| wit::AccountFacts {
            id: a.id,
            currency: a.currency,
            country: a.country,
            opened_at: to_wit_instant(a.opened_at),
            status: match a.status {
                AccountStatus::Active => wit::AccountStatus::Active,
                AccountStatus::Frozen => wit::AccountStatus::Frozen,
                AccountStatus::Closed => wit::AccountStatus::Closed,
            },
            available: to_wit_decimal(a.available),
        }))
    }

    fn list_contains(&mut self, name: String, value: String) -> wasmtime::Result<bool> {
        let ctx = self.call_ctx();
        if !ctx.declared_lists.contains(&name) {
            return Err(guest_error(format!("list `{name}` is not declared by the rule")));
        }
        Ok(ctx.lists.contains(&name, &value))
    }

    fn log(&mut self, level: wit::LogLevel, message: String) -> wasmtime::Result<()> {
        let room = LOG_BYTES_PER_EVALUATION_MAX.saturating_sub(self.log_bytes).min(LOG_BYTES_PER_CALL_MAX);
        if room == 0 {
            return Ok(());
        }
        let mut cut = message.len().min(room);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        self.log_bytes += cut;
        let level = match level {
            wit::LogLevel::Trace => "trace",
            wit::LogLevel::Debug => "debug",
            wit::LogLevel::Info => "info",
            wit::LogLevel::Warn => "warn",
            wit::LogLevel::Error => "error",
        };
        self.logs.push(LogLine { level, message: message[..cut].to_owned() });
        Ok(())
    }
}

fn to_wit_param(v: &ParamValue) -> Option<wit::ParamValue> {
    Some(match v {
        ParamValue::Text(s) => wit::ParamValue::Text(s.clone()),
        ParamValue::Integer(i) => wit::ParamValue::Integer(*i),
        ParamValue::Decimal(d) => wit::ParamValue::Decimal(to_wit_decimal(*d)),
        ParamValue::TextList(l) => wit::ParamValue::TextList(l.clone()),
        // Maps are read entry by entry through `param-entry`.
        ParamValue::IntegerMap(_) | ParamValue::DecimalMap(_) | ParamValue::TextMap(_) => {
            return None;
        }
    })
}
