//! The component path: a rule run as a Wasm component by wasmtime's
//! component runtime, in a fresh instance for every call. It serves
//! `describe` for every rule, and `evaluate` for rules that are not
//! resettable (see `reset/`): `std` rules importing WASI, rules of another
//! shape, and rules of contract 1.0.0.
//!
//! Both contract versions are bound here (`v1`, `v2`); their `host`
//! interfaces are identical in meaning and implemented once, by a macro over
//! the generated types, on top of [`CallData`].

use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::capabilities::{CallData, decimal_from_parts, decimal_parts, guest_error, instant_parts};
use super::outcome::RawVerdict;
use super::{RuleDeclaration, STDERR_BYTES_MAX};
use rulehost_core::manifest::RuleKind;
use rulehost_core::model::{AccountStatus, Transaction, TransactionKind};
use rulehost_core::params::{ParamType, ParamValue};

pub(super) mod v1 {
    wasmtime::component::bindgen!({
        path: "../../wit/v1/rulehost.wit",
        world: "rule-world",
        imports: { default: trappable },
    });
}

pub(super) mod v2 {
    wasmtime::component::bindgen!({
        path: "../../wit/rulehost.wit",
        world: "rule-world",
        imports: { default: trappable },
    });
}

/// The store data of a component instance: the call data and a lazily built
/// deny-all WASI context.
pub(super) struct CallState {
    pub(super) data: CallData,
    wasi: Option<(WasiCtx, ResourceTable)>,
    pub(super) stderr: Option<MemoryOutputPipe>,
}

impl super::capabilities::HasCallData for CallState {
    fn call_data_mut(&mut self) -> &mut CallData {
        &mut self.data
    }
}

impl CallState {
    pub(super) fn new(data: CallData) -> Self {
        CallState { data, wasi: None, stderr: None }
    }

    /// What the guest wrote to stderr (panics print there), if anything.
    pub(super) fn stderr_text(&self) -> Option<String> {
        self.stderr
            .as_ref()
            .map(|p| String::from_utf8_lossy(&p.contents()).trim().to_string())
            .filter(|s| !s.is_empty())
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

/// Implements one contract version's `host` interface on [`CallState`].
macro_rules! host_impl {
    ($v:ident) => {
        impl $v::rulehost::rules::types::Host for CallState {}

        impl $v::rulehost::rules::host::Host for CallState {
            fn param(&mut self, name: String) -> wasmtime::Result<Option<$v::rulehost::rules::types::ParamValue>> {
                let params = self.data.ctx()?.params.clone();
                use $v::rulehost::rules::types::ParamValue as W;
                Ok(CallData::param(&params, &name).and_then(|v| {
                    Some(match v {
                        ParamValue::Text(s) => W::Text(s.clone()),
                        ParamValue::Integer(i) => W::Integer(*i),
                        ParamValue::Decimal(d) => W::Decimal(to_wit_decimal!($v, *d)),
                        ParamValue::TextList(l) => W::TextList(l.clone()),
                        _ => return None,
                    })
                }))
            }

            fn param_entry(
                &mut self,
                name: String,
                key: String,
            ) -> wasmtime::Result<Option<$v::rulehost::rules::types::ParamValue>> {
                use $v::rulehost::rules::types::ParamValue as W;
                Ok(self.data.ctx()?.params.entry(&name, &key).and_then(|v| match v {
                    ParamValue::Text(s) => Some(W::Text(s)),
                    ParamValue::Integer(i) => Some(W::Integer(i)),
                    ParamValue::Decimal(d) => Some(W::Decimal(to_wit_decimal!($v, d))),
                    _ => None,
                }))
            }

            fn history(
                &mut self,
                account: String,
                window_seconds: u64,
                min: Option<$v::rulehost::rules::types::Decimal>,
                max: Option<$v::rulehost::rules::types::Decimal>,
            ) -> wasmtime::Result<$v::rulehost::rules::types::HistoryStats> {
                let bound = |d: Option<$v::rulehost::rules::types::Decimal>| {
                    d.map(|d| {
                        decimal_from_parts(d.mantissa_hi, d.mantissa_lo, d.scale)
                            .ok_or_else(|| guest_error("history bound is not a valid decimal"))
                    })
                    .transpose()
                };
                let stats = self.data.history(&account, window_seconds, bound(min)?, bound(max)?)?;
                Ok($v::rulehost::rules::types::HistoryStats { count: stats.count, sum: to_wit_decimal!($v, stats.sum) })
            }

            fn account(&mut self, id: String) -> wasmtime::Result<Option<$v::rulehost::rules::types::AccountFacts>> {
                use $v::rulehost::rules::types as w;
                Ok(self.data.account(&id)?.map(|a| {
                    let (seconds, nanos) = instant_parts(a.opened_at);
                    w::AccountFacts {
                        id: a.id,
                        currency: a.currency,
                        country: a.country,
                        opened_at: w::Instant { seconds, nanos },
                        status: match a.status {
                            AccountStatus::Active => w::AccountStatus::Active,
                            AccountStatus::Frozen => w::AccountStatus::Frozen,
                            AccountStatus::Closed => w::AccountStatus::Closed,
                        },
                        available: to_wit_decimal!($v, a.available),
                    }
                }))
            }

            fn list_contains(&mut self, name: String, value: String) -> wasmtime::Result<bool> {
                self.data.list_contains(&name, &value)
            }

            fn log(&mut self, level: $v::rulehost::rules::types::LogLevel, message: String) -> wasmtime::Result<()> {
                self.data.log(level as usize, &message);
                Ok(())
            }
        }
    };
}

macro_rules! to_wit_decimal {
    ($v:ident, $d:expr) => {{
        let (mantissa_hi, mantissa_lo, scale) = decimal_parts($d);
        $v::rulehost::rules::types::Decimal { mantissa_hi, mantissa_lo, scale }
    }};
}

host_impl!(v1);
host_impl!(v2);

/// A component linked against one contract version, ready to instantiate.
#[derive(Clone)]
pub(super) enum ComponentRule {
    /// `rulehost:rules@1.0.0`.
    V1(v1::RuleWorldPre<CallState>),
    /// `rulehost:rules@2.0.0`.
    V2(v2::RuleWorldPre<CallState>),
}

/// The declaration in either version's form, converted.
macro_rules! declaration {
    ($v:ident, $info:expr) => {{
        use $v::exports::rulehost::rules::rule as r;
        use $v::rulehost::rules::types as w;
        let info: r::RuleInfo = $info;
        RuleDeclaration {
            kind: match info.kind {
                r::RuleKind::Validation => RuleKind::Validation,
                r::RuleKind::Risk => RuleKind::Risk,
            },
            params: info
                .params
                .into_iter()
                .map(|p| {
                    let ty = match p.type_ {
                        w::ParamType::Text => ParamType::Text,
                        w::ParamType::Integer => ParamType::Integer,
                        w::ParamType::Decimal => ParamType::Decimal,
                        w::ParamType::TextList => ParamType::TextList,
                        w::ParamType::IntegerMap => ParamType::IntegerMap,
                        w::ParamType::DecimalMap => ParamType::DecimalMap,
                        w::ParamType::TextMap => ParamType::TextMap,
                    };
                    (p.name, ty)
                })
                .collect(),
            lists: info.lists,
            history_window_seconds_max: info.history_window_seconds_max,
        }
    }};
}

macro_rules! raw_verdict {
    ($v:ident, $verdict:expr) => {{
        use $v::exports::rulehost::rules::rule as r;
        match $verdict {
            r::Verdict::Accept => RawVerdict::Accept,
            r::Verdict::Reject(x) => RawVerdict::Reject { code: x.code, message: x.message },
            r::Verdict::Score(s) => RawVerdict::Score { score: s.score, reasons: s.reasons },
        }
    }};
}

impl ComponentRule {
    /// Instantiates afresh and calls `describe`.
    /// Instantiates and calls `describe`; the error says which of the two failed
    /// (`true`: instantiation, e.g. a start function that loops).
    pub(super) fn describe(&self, store: &mut Store<CallState>) -> Result<RuleDeclaration, (bool, wasmtime::Error)> {
        let inst = |e| (true, e);
        let call = |e| (false, e);
        Ok(match self {
            ComponentRule::V1(pre) => {
                let w = pre.instantiate(&mut *store).map_err(inst)?;
                declaration!(v1, w.rulehost_rules_rule().call_describe(&mut *store).map_err(call)?)
            }
            ComponentRule::V2(pre) => {
                let w = pre.instantiate(&mut *store).map_err(inst)?;
                declaration!(v2, w.rulehost_rules_rule().call_describe(&mut *store).map_err(call)?)
            }
        })
    }

    /// Instantiates afresh and calls `evaluate` on `tx`.
    pub(super) fn evaluate(&self, store: &mut Store<CallState>, tx: &PreparedTx<'_>) -> wasmtime::Result<RawVerdict> {
        Ok(match self {
            ComponentRule::V1(pre) => {
                let w = pre.instantiate(&mut *store)?;
                store.data_mut().data.restart_clock();
                raw_verdict!(v1, w.rulehost_rules_rule().call_evaluate(&mut *store, tx.v1())?)
            }
            ComponentRule::V2(pre) => {
                let w = pre.instantiate(&mut *store)?;
                store.data_mut().data.restart_clock();
                raw_verdict!(v2, w.rulehost_rules_rule().call_evaluate(&mut *store, tx.encoded())?)
            }
        })
    }
}

/// A transaction prepared once for all the calls on it: its 2.0.0
/// encoding, and its 1.0.0 record when a 1.0.0 rule needs it.
pub(super) struct PreparedTx<'a> {
    pub(super) tx: &'a Transaction,
    encoded: std::cell::OnceCell<Vec<u8>>,
    v1: std::cell::OnceCell<v1::rulehost::rules::types::Transaction>,
}

impl<'a> PreparedTx<'a> {
    pub(super) fn new(tx: &'a Transaction) -> Self {
        PreparedTx { tx, encoded: Default::default(), v1: Default::default() }
    }

    /// The `rulehost:rules@2.0.0` encoding.
    pub(super) fn encoded(&self) -> &[u8] {
        self.encoded.get_or_init(|| super::reset::encode_transaction(self.tx))
    }

    fn v1(&self) -> &v1::rulehost::rules::types::Transaction {
        self.v1.get_or_init(|| {
            use v1::rulehost::rules::types as w;
            let tx = self.tx;
            let (seconds, nanos) = instant_parts(tx.timestamp);
            w::Transaction {
                id: tx.id.clone(),
                timestamp: w::Instant { seconds, nanos },
                kind: match tx.kind {
                    TransactionKind::Payment => w::TransactionKind::Payment,
                    TransactionKind::Transfer => w::TransactionKind::Transfer,
                    TransactionKind::Deposit => w::TransactionKind::Deposit,
                    TransactionKind::Withdrawal => w::TransactionKind::Withdrawal,
                },
                source: tx.source.clone(),
                destination: tx.destination.clone(),
                amount: to_wit_decimal!(v1, tx.amount),
                currency: tx.currency.clone(),
                country: tx.country.clone(),
                merchant_category: tx.merchant_category.clone(),
                channel: tx.channel.clone(),
                metadata: tx.metadata.clone(),
            }
        })
    }
}

/// Links both contract versions' `host` interfaces and deny-all WASI.
pub(super) fn add_to_linker(linker: &mut wasmtime::component::Linker<CallState>) -> anyhow::Result<()> {
    use wasmtime::component::HasSelf;
    wasmtime_wasi::p2::add_to_linker_sync(linker).map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
    v1::RuleWorld::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
        .map_err(|e| anyhow::anyhow!("linking host 1.0.0: {e}"))?;
    v2::RuleWorld::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
        .map_err(|e| anyhow::anyhow!("linking host 2.0.0: {e}"))?;
    Ok(())
}
