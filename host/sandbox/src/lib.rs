//! The Wasm sandbox: the one place that knows wasmtime. It configures the
//! engine (fuel, epoch deadlines, pooling allocator), links the `host`
//! capabilities, and runs one rule call under its budget, classifying every
//! way a call can fail.
//!
//! Isolation model: every call sees its rule in the state right after
//! instantiation, so a decision never depends on what a rule saw before.
//! A rule whose core module is *resettable* (`reset/`: the shipped rules and
//! any `no_std` rule of contract 2.0.0) keeps one instance per evaluating
//! thread and rule-set version, put back into its post-instantiation state
//! after every call; any other rule (`component.rs`) gets a fresh component
//! instance per call. ARCHITECTURE.md ("Isolation model") says why the reset
//! is complete and records the measurements behind the design.
//!
//! Crate boundary: the only crate of the host that depends on wasmtime, and
//! no wasmtime type appears in its API (rules are loaded from bytes, called
//! with a transaction and a [`CallContext`], and answer a [`CallOutcome`]).
//! It builds on `rulehost-core` alone: never the ledger, the engine, SQLite
//! or an HTTP stack.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use rulehost_core::manifest::{Budget, RuleKind};
use rulehost_core::model::Transaction;

mod capabilities;
mod census;
mod component;
mod outcome;
mod reset;
mod types;

pub use types::{CallContext, CallOutcome, Failure, FailureKind, LoadError, LogLine, RuleDeclaration, Verdict};

use capabilities::{CallData, MemoryCap};
pub use census::{CORE_INSTANCES_PER_COMPONENT_MAX, MEMORIES_PER_COMPONENT_MAX, TABLES_PER_COMPONENT_MAX};
use component::{CallState, ComponentRule, PreparedTx};
pub use outcome::{CODE_BYTES_MAX, check_verdict, is_valid_code};
use outcome::{check_output, classify};
pub use reset::{DECLARED_ITEMS_MAX, DECLARED_NAME_BYTES_MAX, InstanceState};

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
pub const POOLED_INSTANCES_MAX: u32 = 1024;
/// Bytes of each pooled memory and table reset in place (not decommitted)
/// when a slot is freed.
pub const POOLED_KEEP_RESIDENT_BYTES: usize = 2 << 20;
/// Largest linear memory the pooling allocator reserves per slot, in bytes;
/// manifests may not ask for more (see `manifest::MEMORY_BYTES_MAX_LIMIT`).
pub const POOLED_MEMORY_BYTES_MAX: usize = 1 << 30;

/// The contract versions this host provides.
pub const CONTRACTS: [&str; 2] = ["2.0.0", "1.0.0"];

/// A compiled, linked module, shared by every rule set that loads it.
struct RuleModule {
    /// The component path (absent for a resettable rule, whose component is
    /// never compiled).
    component: Option<ComponentRule>,
    /// The direct path, when the module is resettable.
    resettable: Option<reset::ResettableModule>,
    /// Why the module is not resettable, when it is not.
    fresh_reason: Option<String>,
    imports: Vec<String>,
    contract: &'static str,
}

/// A compiled, linked rule module, with its own instances: every rule set
/// that loads a module gets a `CompiledRule` of its own, so instances are
/// kept per rule-set version (and per evaluating thread).
pub struct CompiledRule {
    module: Arc<RuleModule>,
    instances: reset::InstancePool,
}

/// How a rule's calls are isolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// One instance per evaluating thread, reset to its post-instantiation
    /// state after every call.
    Reset,
    /// A fresh component instance for every call, and why.
    Fresh(String),
}

impl CompiledRule {
    /// The component's imports (interface names), e.g. `rulehost:rules/host@2.0.0`
    /// and any WASI interfaces its toolchain pulled in.
    pub fn imports(&self) -> &[String] {
        &self.module.imports
    }

    /// The contract version it was built against (`2.0.0` or `1.0.0`).
    pub fn contract(&self) -> &'static str {
        self.module.contract
    }

    /// How its calls are isolated.
    pub fn isolation(&self) -> Isolation {
        match &self.module.fresh_reason {
            None => Isolation::Reset,
            Some(why) => Isolation::Fresh(why.clone()),
        }
    }

    /// For the isolation tests: this thread's reused instance's state and a
    /// fresh instance's, when the rule is resettable and has run on this
    /// thread.
    pub fn compare_with_fresh(&self, sandbox: &Sandbox, budget: &Budget) -> Option<(InstanceState, InstanceState)> {
        let module = self.module.resettable.as_ref()?;
        self.instances.compare_with_fresh(module, &sandbox.engine, budget)
    }
}

/// Why a [`Sandbox`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The compiled-module cache folder cannot be used.
    #[error("compiled-module cache in {}: {message}", dir.display())]
    Cache {
        /// The folder.
        dir: std::path::PathBuf,
        /// Why.
        message: String,
    },
    /// The Wasm engine refused its configuration.
    #[error("configuring the Wasm engine: {0}")]
    Engine(String),
    /// Linking the host functions failed.
    #[error("linking the host functions: {0}")]
    Link(String),
    /// The epoch ticker thread could not be started.
    #[error("starting the epoch ticker: {0}")]
    Ticker(String),
}

/// The engine and linkers shared by every rule; one per process.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<CallState>,
    reset_linker: wasmtime::Linker<reset::ResetState>,
    ticker_stop: Arc<AtomicBool>,
    cache: Option<wasmtime::Cache>,
    /// Linked modules by content hash: a reload never compiles an unchanged
    /// module again in this process.
    linked: std::sync::Mutex<std::collections::HashMap<String, Arc<RuleModule>>>,
    /// Whether resettable modules reuse instances.
    reuse: bool,
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
    /// Reuse resettable instances across calls (by default on). Off, every
    /// call of every rule gets a fresh component instance — the reference
    /// the isolation tests and benchmarks compare with.
    pub reuse_instances: bool,
    /// Write `/tmp/perf-<pid>.map` so that `perf` names the compiled guest
    /// functions (by the names in each module's name section). By default
    /// off; the command line turns it on with `RULEHOST_PERF_MAP=1`.
    pub perf_map: bool,
    /// Keep compiled modules in this folder, keyed by the module's content
    /// and the engine's configuration, so an unchanged module is never
    /// compiled twice (across reloads and restarts). By default off.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig { pooling: true, reuse_instances: true, perf_map: false, cache_dir: None }
    }
}

fn set_budget(store: &mut Store<CallState>, budget: &Budget) {
    // Fuel is enabled in the engine configuration, so this cannot fail.
    let _ = store.set_fuel(budget.fuel_max);
    store.data_mut().data.deadline_nanos = budget.deadline_ms.saturating_mul(1_000_000);
    store.data_mut().data.restart_clock();
    store.set_epoch_deadline(1);
}

impl Sandbox {
    /// Builds the engine (fuel metering, epoch interruption, deterministic
    /// floats, pooling allocator), the linkers (the `host` capabilities of
    /// both contract versions and deny-all WASI), and starts the epoch
    /// ticker thread.
    pub fn new(config: &SandboxConfig) -> Result<Sandbox, SandboxError> {
        let mut cfg = Config::new();
        cfg.consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            .parallel_compilation(true);
        if config.perf_map {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if config.pooling {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(POOLED_INSTANCES_MAX)
                // Every admitted component fits whole: its core instances,
                // memories and tables are bounded at load (census.rs), and
                // the totals give each component instance its maximum.
                .total_core_instances(POOLED_INSTANCES_MAX * census::CORE_INSTANCES_PER_COMPONENT_MAX)
                .total_memories(POOLED_INSTANCES_MAX * census::MEMORIES_PER_COMPONENT_MAX)
                .total_tables(POOLED_INSTANCES_MAX * census::TABLES_PER_COMPONENT_MAX)
                .max_memory_size(POOLED_MEMORY_BYTES_MAX)
                .max_memories_per_component(census::MEMORIES_PER_COMPONENT_MAX)
                .max_memories_per_module(3)
                .max_tables_per_component(census::TABLES_PER_COMPONENT_MAX)
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
                // wasmtime wants an absolute folder; a relative one is taken from the working directory.
                let dir = std::path::absolute(dir)
                    .map_err(|e| SandboxError::Cache { dir: dir.clone(), message: e.to_string() })?;
                let mut cache_config = wasmtime::CacheConfig::new();
                cache_config.with_directory(&dir);
                let cache = wasmtime::Cache::new(cache_config)
                    .map_err(|e| SandboxError::Cache { dir: dir.clone(), message: e.to_string() })?;
                cfg.cache(Some(cache.clone()));
                Some(cache)
            }
            None => None,
        };
        let engine = Engine::new(&cfg).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let mut linker = Linker::<CallState>::new(&engine);
        component::add_to_linker(&mut linker).map_err(|e| SandboxError::Link(e.to_string()))?;
        let reset_linker = reset::linker(&engine).map_err(|e| SandboxError::Link(e.to_string()))?;
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
                .map_err(|e| SandboxError::Ticker(e.to_string()))?;
        }
        Ok(Sandbox {
            engine,
            linker,
            reset_linker,
            ticker_stop,
            cache,
            linked: Default::default(),
            reuse: config.reuse_instances,
        })
    }

    /// For the isolation tests: the state of a fresh resettable instance of
    /// `component`'s main module, right after instantiation.
    #[doc(hidden)]
    pub fn fresh_state(&self, component: &[u8], budget: &Budget) -> Result<InstanceState, String> {
        reset::fresh_state(&self.engine, &self.reset_linker, component, budget)
    }

    /// Compiled-module cache (hits, misses) since start, when a cache is set.
    pub fn cache_stats(&self) -> Option<(usize, usize)> {
        self.cache.as_ref().map(|c| (c.cache_hits(), c.cache_misses()))
    }

    /// Compiles and links `bytes`, or takes the module linked earlier for the
    /// same content hash `sha256`; the result has instances of its own.
    pub fn load_module(&self, sha256: &str, bytes: &[u8]) -> Result<CompiledRule, LoadError> {
        let cached = self.linked.lock().ok().and_then(|linked| linked.get(sha256).cloned());
        let module = match cached {
            Some(module) => module,
            None => {
                let module = Arc::new(self.build(bytes)?);
                if let Ok(mut linked) = self.linked.lock() {
                    if linked.len() >= LINKED_MODULES_MAX {
                        linked.clear();
                    }
                    linked.insert(sha256.to_owned(), module.clone());
                }
                module
            }
        };
        Ok(CompiledRule { module, instances: Default::default() })
    }

    /// Compiles and links `bytes` (not cached).
    pub fn load(&self, bytes: &[u8]) -> Result<CompiledRule, LoadError> {
        Ok(CompiledRule { module: Arc::new(self.build(bytes)?), instances: Default::default() })
    }

    /// Compiles and links a rule. A resettable rule of contract 2.0.0 has
    /// only its instrumented core module compiled; its component's types are
    /// checked by linking the component's type stub (`reset/stub.rs`), which
    /// costs a fraction of compiling it. Any other rule is compiled as a
    /// component. Fails with a message naming the missing or mismatched item
    /// when the module was built against another WIT version or lacks an
    /// export.
    fn build(&self, bytes: &[u8]) -> Result<RuleModule, LoadError> {
        census::check(bytes)?;
        let fresh_reason = if self.reuse {
            match reset::ResettableModule::prepare_with_stub(&self.engine, &self.reset_linker, bytes) {
                Ok((resettable, stub)) => {
                    let (contract, imports, _) = self.link_component(&stub)?;
                    return Ok(RuleModule {
                        component: None,
                        resettable: Some(resettable),
                        fresh_reason: None,
                        imports,
                        contract,
                    });
                }
                Err(why) => why,
            }
        } else {
            "instance reuse is switched off".to_string()
        };
        let (contract, imports, component) = self.link_component(bytes)?;
        let fresh_reason = match contract {
            "2.0.0" => fresh_reason,
            other => format!("it was built against contract {other}"),
        };
        Ok(RuleModule {
            component: Some(component),
            resettable: None,
            fresh_reason: Some(fresh_reason),
            imports,
            contract,
        })
    }

    /// Compiles a component and links it against the contract it was built
    /// for: (contract version, imports, the linked component).
    fn link_component(&self, bytes: &[u8]) -> Result<(&'static str, Vec<String>, ComponentRule), LoadError> {
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let ty = component.component_type();
        let contract_of = |name: &str| CONTRACTS.into_iter().find(|v| name.ends_with(&format!("@{v}")));
        for (name, _) in ty.imports(&self.engine) {
            if name.starts_with("rulehost:rules/") && contract_of(name).is_none() {
                return Err(LoadError::Incompatible(format!(
                    "it imports `{name}`; this host provides rulehost:rules@2.0.0 and @1.0.0 — rebuild the rule with a \
                     rulehost-guest SDK for 2.x"
                )));
            }
        }
        let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let Some(contract) =
            CONTRACTS.into_iter().find(|v| exports.iter().any(|e| *e == format!("rulehost:rules/rule@{v}")))
        else {
            return Err(LoadError::Incompatible(format!(
                "it does not export `rulehost:rules/rule@2.0.0` (exports: [{}]) — export the rule with \
                 rulehost_guest::export_risk_rule! or export_validation_rule!",
                exports.join(", ")
            )));
        };
        let pre = self.linker.instantiate_pre(&component).map_err(|e| LoadError::Incompatible(format!("{e:#}")))?;
        let incompatible = |e: wasmtime::Error| LoadError::Incompatible(format!("{e:#}"));
        let linked = match contract {
            "1.0.0" => ComponentRule::V1(component::v1::RuleWorldPre::new(pre).map_err(incompatible)?),
            _ => ComponentRule::V2(component::v2::RuleWorldPre::new(pre).map_err(incompatible)?),
        };
        let imports = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        Ok((contract, imports, linked))
    }

    fn store(&self, budget: &Budget) -> Store<CallState> {
        let data = CallData::new(MemoryCap::new(budget.memory_bytes_max, 0), budget.deadline_ms);
        let mut store = Store::new(&self.engine, CallState::new(data));
        store.limiter(|s| &mut s.data.memory);
        capabilities::check_deadline_by_cpu_time(&mut store);
        set_budget(&mut store, budget);
        store
    }

    /// Calls the rule's `describe` export under `budget`, in a fresh
    /// instance.
    pub fn describe(&self, rule: &CompiledRule, budget: &Budget) -> Result<RuleDeclaration, LoadError> {
        if let Some(module) = &rule.module.resettable {
            return module.describe(&self.engine, budget);
        }
        let Some(component) = &rule.module.component else {
            return Err(LoadError::Incompatible("internal: a rule with neither path".into()));
        };
        let mut store = self.store(budget);
        component.describe(&mut store).map_err(|(instantiating, e)| {
            let failure = classify(&e, &store.data().data.memory, store.data().stderr_text());
            if instantiating { LoadError::Instantiate(failure) } else { LoadError::Describe(failure) }
        })
    }

    /// Runs one `evaluate` call of `rule` on `tx` under `ctx.budget`. Never
    /// panics and never returns an error: every failure of the guest becomes
    /// a [`Failure`] in the outcome.
    pub fn evaluate(&self, rule: &CompiledRule, kind: RuleKind, ctx: CallContext, tx: &Transaction) -> CallOutcome {
        self.session(tx).evaluate(rule, kind, ctx)
    }

    /// Starts the calls on one transaction: its encoding is made once for
    /// all of them.
    pub fn session<'a>(&'a self, tx: &'a Transaction) -> TxSession<'a> {
        TxSession { sandbox: self, tx: PreparedTx::new(tx), store: None }
    }
}

/// A `no_std` rule's panic handler logs the panic and then traps: the trap
/// message names the panic, as a `std` rule's stderr does.
fn with_panic_message(mut failure: Failure, logs: &[LogLine]) -> Failure {
    if failure.kind == FailureKind::Trap
        && let Some(panic) = logs
            .iter()
            .rev()
            .find(|l| l.level == rulehost_core::rule::LogLevel::Error && l.message.starts_with("panic: "))
    {
        failure.message.push_str(": ");
        failure.message.push_str(&panic.message);
    }
    failure
}

/// The calls of one transaction (see [`Sandbox::session`]).
pub struct TxSession<'a> {
    sandbox: &'a Sandbox,
    tx: PreparedTx<'a>,
    /// The store fresh component instances are made in, shared by the
    /// transaction's calls (each still instantiates afresh).
    store: Option<Store<CallState>>,
}

impl TxSession<'_> {
    /// Runs one `evaluate` call of `rule` under `ctx.budget`. Never panics
    /// and never returns an error: every failure of the guest becomes a
    /// [`Failure`] in the outcome.
    pub fn evaluate(&mut self, rule: &CompiledRule, kind: RuleKind, ctx: CallContext) -> CallOutcome {
        match &rule.module.resettable {
            Some(module) => {
                let call =
                    rule.instances.call(module, &self.sandbox.engine, ctx, self.tx.tx.timestamp, self.tx.encoded());
                let logs = call.logs;
                let result = call.result.map_err(|f| with_panic_message(f, &logs));
                CallOutcome {
                    result: result.and_then(|raw| check_output(kind, raw)),
                    fuel: call.fuel,
                    memory_bytes: call.memory_bytes,
                    logs,
                }
            }
            None => self.evaluate_fresh(rule, kind, ctx),
        }
    }

    fn evaluate_fresh(&mut self, rule: &CompiledRule, kind: RuleKind, ctx: CallContext) -> CallOutcome {
        let budget = ctx.budget;
        let Some(component) = &rule.module.component else {
            let message = "internal: a rule with neither path".to_string();
            return CallOutcome {
                result: Err(Failure { kind: FailureKind::Trap, message }),
                fuel: 0,
                memory_bytes: 0,
                logs: Vec::new(),
            };
        };
        let store = self.store.get_or_insert_with(|| self.sandbox.store(&budget));
        store.data_mut().data.begin(ctx, self.tx.tx.timestamp);
        store.data_mut().data.memory.total_bytes = 0;
        store.data_mut().stderr = None;
        set_budget(store, &budget);
        let result = component.evaluate(store, &self.tx);
        let fuel = budget.fuel_max.saturating_sub(store.get_fuel().unwrap_or(0));
        let logs = store.data_mut().data.finish();
        let (result, trapped) = match result {
            Ok(v) => (check_output(kind, v), false),
            Err(e) => {
                let failure = classify(&e, &store.data().data.memory, store.data().stderr_text());
                (Err(with_panic_message(failure, &logs)), true)
            }
        };
        let memory_bytes = store.data().data.memory.peak_guest_bytes();
        if trapped {
            // A trap leaves the store unable to enter component instances
            // ("cannot enter component instance"); the next call of this
            // transaction gets a fresh store.
            self.store = None;
        }
        CallOutcome { result, fuel, memory_bytes, logs }
    }
}
