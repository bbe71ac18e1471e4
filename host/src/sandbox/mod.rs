//! The Wasm sandbox: the one place that knows wasmtime. It configures the
//! engine (fuel, epoch deadlines, pooling allocator), links the `host`
//! capabilities and deny-all WASI, and runs one rule call under its budget,
//! classifying every way a call can fail.
//!
//! Isolation model: a fresh component instance in a fresh `Store` for every
//! call, instantiated from a pre-linked `InstancePre` with the pooling
//! allocator and copy-on-write memory images. No guest state survives a call,
//! so a decision never depends on what a rule saw before. ARCHITECTURE.md
//! records the measurements behind this choice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use crate::facts::Facts;
use crate::manifest::{Budget, RuleKind};
use crate::model::Nanos;
use crate::params::Params;

mod capabilities;
mod outcome;

use capabilities::MemoryCap;
pub use capabilities::{CallState, WitTransaction};
pub use outcome::is_valid_code;
use outcome::{check_output, classify};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "rule-world",
        imports: { default: trappable },
    });
}

use bindings::exports::rulehost::rules::rule as wit_rule;
use bindings::rulehost::rules::types as wit;

/// How often the epoch ticks, in milliseconds: the resolution of deadlines.
pub const EPOCH_TICK_MS: u64 = 1;
/// Bytes one `log` call may record; longer messages are cut.
pub const LOG_BYTES_PER_CALL_MAX: usize = 512;
/// Bytes of log all calls of one evaluation may record; the rest is dropped.
pub const LOG_BYTES_PER_EVALUATION_MAX: usize = 4096;
/// Reason codes one risk result may carry.
pub const REASONS_MAX: usize = 16;
/// Bytes of a rejection message.
pub const MESSAGE_BYTES_MAX: usize = 1024;
/// Bytes of guest stderr kept for a failure message (panics print there).
pub const STDERR_BYTES_MAX: usize = 2048;
/// Table elements an instance may grow to.
pub const TABLE_ELEMENTS_MAX: usize = 100_000;
/// Concurrent instances the pooling allocator reserves slots for.
pub const POOLED_INSTANCES_MAX: u32 = 256;
/// Bytes of each pooled memory and table reset in place (not decommitted)
/// when a slot is freed.
pub const POOLED_KEEP_RESIDENT_BYTES: usize = 2 << 20;
/// Largest linear memory the pooling allocator reserves per slot, in bytes;
/// manifests may not ask for more (see `manifest::MEMORY_BYTES_MAX_LIMIT`).
pub const POOLED_MEMORY_BYTES_MAX: usize = 1 << 30;

/// Why a rule call failed. These are the failure kinds of RULES.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The guest trapped (panic, unreachable, bad host call).
    Trap,
    /// The fuel budget ran out.
    Fuel,
    /// The wall-clock deadline passed.
    Deadline,
    /// The memory cap was hit.
    Memory,
    /// The result broke the output contract.
    InvalidOutput,
}

impl FailureKind {
    /// Every kind, in declaration order.
    pub const ALL: [FailureKind; 5] =
        [FailureKind::Trap, FailureKind::Fuel, FailureKind::Deadline, FailureKind::Memory, FailureKind::InvalidOutput];

    /// The spelling in decision records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Fuel => "fuel",
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::InvalidOutput => "invalid-output",
        }
    }
}

/// A failed call: its kind and a message for the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// Details for the analyst.
    pub message: String,
}

/// What a rule returned, validated against the output contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Validation passed.
    Accept,
    /// Validation rejected with a code.
    Reject {
        /// `[A-Z0-9_]{1,32}`.
        code: String,
        /// Explanation, at most `MESSAGE_BYTES_MAX` bytes.
        message: String,
    },
    /// A risk score.
    Score {
        /// 0..=1000.
        score: u32,
        /// Valid codes, at most `REASONS_MAX`.
        reasons: Vec<String>,
    },
}

/// A log line a rule recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// `trace` … `error`.
    pub level: &'static str,
    /// The message, possibly cut to the per-call cap.
    pub message: String,
}

/// The outcome of one call: the verdict or failure, the fuel it used, and its
/// log lines.
#[derive(Clone, Debug)]
pub struct CallOutcome {
    /// Verdict or failure.
    pub result: Result<Verdict, Failure>,
    /// Fuel consumed by instantiation and the call (deterministic).
    pub fuel: u64,
    /// Peak linear memory of the instance, in bytes.
    pub memory_bytes: u64,
    /// Log lines, within the caps.
    pub logs: Vec<LogLine>,
}

/// What a rule declares about itself (its `describe` export).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleDeclaration {
    /// Validation or risk.
    pub kind: RuleKind,
    /// Declared parameters and their types.
    pub params: Vec<(String, crate::params::ParamType)>,
    /// Declared operator lists.
    pub lists: Vec<String>,
    /// Longest history window, in seconds.
    pub history_window_seconds_max: u64,
}

/// A compiled, linked rule module, ready to instantiate cheaply.
#[derive(Clone)]
pub struct CompiledRule {
    pre: bindings::RuleWorldPre<CallState>,
    imports: Vec<String>,
}

impl CompiledRule {
    /// The component's imports (interface names), e.g. `rulehost:rules/host@1.0.0`
    /// and any WASI interfaces its toolchain pulled in.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }
}

/// The inputs of one call besides the transaction.
pub struct CallContext {
    /// The rule's parameters.
    pub params: Arc<Params>,
    /// The rule set's lists.
    pub lists: Arc<crate::ruleset::Lists>,
    /// Lists the rule declared.
    pub declared_lists: Arc<[String]>,
    /// Longest history window the rule declared, in seconds.
    pub history_window_seconds_max: u64,
    /// Accounts and history, as of this transaction.
    pub facts: Arc<dyn Facts>,
    /// The budget.
    pub budget: Budget,
}

/// Errors loading a module into the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid component (or a core module was given).
    #[error("not a valid Wasm component: {0}")]
    Compile(String),
    /// The component's imports or exports do not match `rulehost:rules@1.0.0`.
    #[error("incompatible with the rulehost WIT contract rulehost:rules@1.0.0: {0}")]
    Incompatible(String),
    /// Calling `describe` failed.
    #[error("its `describe` export failed ({}): {}", .0.kind.as_str(), .0.message)]
    Describe(Failure),
}

/// The engine and linker shared by every rule; one per process.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<CallState>,
    ticker_stop: Arc<AtomicBool>,
    cache: Option<wasmtime::Cache>,
    /// Linked modules by content hash: a reload never compiles an unchanged
    /// module again in this process.
    linked: std::sync::Mutex<std::collections::HashMap<String, CompiledRule>>,
}

/// Linked modules kept in memory for reuse across reloads.
pub const LINKED_MODULES_MAX: usize = 256;

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Options of the sandbox's engine.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Use the pooling instance allocator (fast instantiation). By default on.
    pub pooling: bool,
    /// Keep compiled modules in this folder, keyed by the module's content
    /// and the engine's configuration, so an unchanged module is never
    /// compiled twice (across reloads and restarts). By default off.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig { pooling: true, cache_dir: None }
    }
}

impl Sandbox {
    /// Builds the engine (fuel metering, epoch interruption, deterministic
    /// floats, pooling allocator) and the linker (the `host` capabilities and
    /// deny-all WASI), and starts the epoch ticker thread.
    pub fn new(config: &SandboxConfig) -> anyhow::Result<Sandbox> {
        let mut cfg = Config::new();
        cfg.consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            .parallel_compilation(true);
        if config.pooling {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(POOLED_INSTANCES_MAX)
                .total_core_instances(POOLED_INSTANCES_MAX * 4)
                .total_memories(POOLED_INSTANCES_MAX * 2)
                .total_tables(POOLED_INSTANCES_MAX * 4)
                .max_memory_size(POOLED_MEMORY_BYTES_MAX)
                .max_memories_per_component(4)
                .max_tables_per_component(8)
                // Reset slots with memset of the pages actually dirtied
                // (PAGEMAP_SCAN, Linux ≥ 6.7) instead of madvise: a rule call
                // then takes no page faults on a reused slot.
                .linear_memory_keep_resident(POOLED_KEEP_RESIDENT_BYTES)
                .table_keep_resident(POOLED_KEEP_RESIDENT_BYTES)
                .pagemap_scan(wasmtime::Enabled::Auto)
                .max_unused_warm_slots(POOLED_INSTANCES_MAX);
            cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let cache = match &config.cache_dir {
            Some(dir) => {
                let mut cache_config = wasmtime::CacheConfig::new();
                cache_config.with_directory(dir);
                let cache = wasmtime::Cache::new(cache_config)
                    .map_err(|e| anyhow::anyhow!("compiled-module cache in {}: {e}", dir.display()))?;
                cfg.cache(Some(cache.clone()));
                Some(cache)
            }
            None => None,
        };
        let engine = Engine::new(&cfg).map_err(|e| anyhow::anyhow!("configuring the Wasm engine: {e}"))?;
        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        bindings::RuleWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking host: {e}"))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("rulehost-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(EPOCH_TICK_MS));
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| anyhow::anyhow!("starting the epoch ticker: {e}"))?;
        }
        Ok(Sandbox { engine, linker, ticker_stop, cache, linked: Default::default() })
    }

    /// The wasmtime engine (for compiling and caching).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiled-module cache (hits, misses) since start, when a cache is set.
    pub fn cache_stats(&self) -> Option<(usize, usize)> {
        self.cache.as_ref().map(|c| (c.cache_hits(), c.cache_misses()))
    }

    /// Compiles component bytes.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        Component::new(&self.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))
    }

    /// Compiles and links `bytes`, or returns the module linked earlier for
    /// the same content hash `sha256`.
    pub fn load_module(&self, sha256: &str, bytes: &[u8]) -> Result<CompiledRule, LoadError> {
        if let Some(rule) = self.linked.lock().expect("linked modules lock").get(sha256) {
            return Ok(rule.clone());
        }
        let rule = self.link(&self.compile(bytes)?)?;
        let mut linked = self.linked.lock().expect("linked modules lock");
        if linked.len() >= LINKED_MODULES_MAX {
            linked.clear();
        }
        linked.insert(sha256.to_owned(), rule.clone());
        Ok(rule)
    }

    /// Links a compiled component against the contract. Fails with a message
    /// naming the missing or mismatched item when the module was built
    /// against another WIT version or lacks an export.
    pub fn link(&self, component: &Component) -> Result<CompiledRule, LoadError> {
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            if name.starts_with("rulehost:rules/") && !name.ends_with("@1.0.0") {
                return Err(LoadError::Incompatible(format!(
                    "it imports `{name}`; this host provides rulehost:rules@1.0.0 — rebuild the rule with a rulehost-guest SDK for 1.x"
                )));
            }
        }
        if !ty.exports(&self.engine).any(|(name, _)| name == "rulehost:rules/rule@1.0.0") {
            let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
            return Err(LoadError::Incompatible(format!(
                "it does not export `rulehost:rules/rule@1.0.0` (exports: [{}]) — export the rule with \
                 rulehost_guest::export_risk_rule! or export_validation_rule!",
                exports.join(", ")
            )));
        }
        let pre = self.linker.instantiate_pre(component).map_err(|e| LoadError::Incompatible(format!("{e:#}")))?;
        let pre = bindings::RuleWorldPre::new(pre).map_err(|e| LoadError::Incompatible(format!("{e:#}")))?;
        let imports = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        Ok(CompiledRule { pre, imports })
    }

    fn store(&self, ctx: Option<CallContext>, now: Nanos, budget: &Budget) -> Store<CallState> {
        let state = CallState {
            ctx,
            now,
            memory: MemoryCap {
                memory_bytes_max: budget.memory_bytes_max as usize,
                total_bytes: 0,
                peak_bytes: 0,
                exceeded: false,
            },
            logs: Vec::new(),
            log_bytes: 0,
            wasi: None,
            stderr: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        store.set_fuel(budget.fuel_max).expect("fuel is enabled in the engine config");
        // One extra tick: the next tick may come at once, so a deadline of
        // N ms is N..N+1 ms of wall time.
        store.set_epoch_deadline(budget.deadline_ms.div_ceil(EPOCH_TICK_MS) + 1);
        store
    }

    /// Calls the rule's `describe` export under `budget`.
    pub fn describe(&self, rule: &CompiledRule, budget: &Budget) -> Result<RuleDeclaration, LoadError> {
        let mut store = self.store(None, 0, budget);
        let result = rule.pre.instantiate(&mut store).and_then(|w| w.rulehost_rules_rule().call_describe(&mut store));
        let info = result.map_err(|e| LoadError::Describe(classify(&store, e)))?;
        use crate::params::ParamType as P;
        Ok(RuleDeclaration {
            kind: match info.kind {
                wit_rule::RuleKind::Validation => RuleKind::Validation,
                wit_rule::RuleKind::Risk => RuleKind::Risk,
            },
            params: info
                .params
                .into_iter()
                .map(|p| {
                    let ty = match p.type_ {
                        wit::ParamType::Text => P::Text,
                        wit::ParamType::Integer => P::Integer,
                        wit::ParamType::Decimal => P::Decimal,
                        wit::ParamType::TextList => P::TextList,
                        wit::ParamType::IntegerMap => P::IntegerMap,
                        wit::ParamType::DecimalMap => P::DecimalMap,
                        wit::ParamType::TextMap => P::TextMap,
                    };
                    (p.name, ty)
                })
                .collect(),
            lists: info.lists,
            history_window_seconds_max: info.history_window_seconds_max,
        })
    }

    /// Runs one `evaluate` call of `rule` on `tx` in a fresh instance under
    /// `ctx.budget`. Never panics and never returns an error: every failure of
    /// the guest becomes a [`Failure`] in the outcome.
    pub fn evaluate(&self, rule: &CompiledRule, kind: RuleKind, ctx: CallContext, tx: &WitTransaction) -> CallOutcome {
        self.session(tx).evaluate(rule, kind, ctx)
    }

    /// Starts the calls on one transaction. They share a `Store` (saving its
    /// set-up and tear-down per call), but each call still instantiates the
    /// rule afresh, with its own fuel, deadline, memory cap and WASI context:
    /// component instances share no state, so isolation is unchanged.
    pub fn session<'a>(&'a self, tx: &'a WitTransaction) -> TxSession<'a> {
        TxSession { sandbox: self, store: self.store(None, tx.timestamp(), &Budget::default()), tx }
    }
}

/// The calls of one transaction (see [`Sandbox::session`]).
pub struct TxSession<'a> {
    sandbox: &'a Sandbox,
    store: Store<CallState>,
    tx: &'a WitTransaction,
}

impl TxSession<'_> {
    /// Runs one `evaluate` call of `rule` in a fresh instance under
    /// `ctx.budget`. Never panics and never returns an error: every failure of
    /// the guest becomes a [`Failure`] in the outcome.
    pub fn evaluate(&mut self, rule: &CompiledRule, kind: RuleKind, ctx: CallContext) -> CallOutcome {
        let budget = ctx.budget;
        let store = &mut self.store;
        {
            let state = store.data_mut();
            state.ctx = Some(ctx);
            state.memory = MemoryCap {
                memory_bytes_max: budget.memory_bytes_max as usize,
                total_bytes: 0,
                peak_bytes: 0,
                exceeded: false,
            };
            state.logs.clear();
            state.log_bytes = 0;
            state.wasi = None;
            state.stderr = None;
        }
        store.set_fuel(budget.fuel_max).expect("fuel is enabled in the engine config");
        store.set_epoch_deadline(budget.deadline_ms.div_ceil(EPOCH_TICK_MS) + 1);
        let result = rule
            .pre
            .instantiate(&mut *store)
            .and_then(|w| w.rulehost_rules_rule().call_evaluate(&mut *store, &self.tx.0));
        let fuel = budget.fuel_max - store.get_fuel().unwrap_or(0);
        let (result, trapped) = match result {
            Ok(v) => (check_output(kind, v), false),
            Err(e) => (Err(classify(store, e)), true),
        };
        let state = store.data_mut();
        state.ctx = None;
        let logs = std::mem::take(&mut state.logs);
        let memory_bytes = state.memory.peak_bytes as u64;
        if trapped {
            // A trap leaves the store unable to enter component instances
            // ("cannot enter component instance"); the next call of this
            // transaction gets a fresh store.
            self.store = self.sandbox.store(None, self.tx.timestamp(), &Budget::default());
        }
        CallOutcome { result, fuel, memory_bytes, logs }
    }
}
