//! Resettable instances: a rule's core module run directly, instantiated
//! once per evaluating thread and rule-set version, and put back into its
//! post-instantiation state after every call.
//!
//! - `shape.rs` proves a component is its main module wired to the
//!   canonical ABI, and nothing else;
//! - `instrument.rs` proves the module's state is reachable and adds the
//!   dirty map and global exports;
//! - `abi.rs` answers the module's imports and lifts its verdict;
//! - here: instantiation, the snapshot, a call, and the reset.
//!
//! The reset restores exactly what a call can change (see
//! `instrument.rs`): the chunks of memory the guest marked or the host
//! wrote (the host marks its own writes in the same map), copied back from the snapshot taken right after instantiation,
//! and every mutable global. An instance whose memory grew, or whose call
//! failed in any way (trap, fuel, deadline, memory), is dropped instead and
//! the next call gets a new one.

mod abi;
mod instrument;
mod shape;
mod stub;

use std::cell::RefCell;

use thread_local::ThreadLocal;
use wasmtime::{Engine, Global, InstancePre, Linker, Memory, Module, Store, TypedFunc, Val};

pub use abi::{DECLARED_ITEMS_MAX, DECLARED_NAME_BYTES_MAX};
use abi::{DESCRIBE_EXPORT, EVALUATE_EXPORT};
pub(super) use abi::{HOST, RULE, ResetState, encode_transaction};
pub use instrument::CHUNK_BYTES;
use instrument::{CALL_EXPORT, DIRTY_MAP_EXPORT, GLOBAL_EXPORT_PREFIX, STAGING_BYTES, STAGING_EXPORT};

use super::capabilities::{CallData, MemoryCap};
use super::outcome::{RawVerdict, classify};
use super::{CallContext, Failure, POOLED_MEMORY_BYTES_MAX};
use rulehost_core::manifest::Budget;
use rulehost_core::model::Nanos;

/// A rule module prepared for resettable instances.
pub(super) struct ResettableModule {
    pre: InstancePre<ResetState>,
    /// Indices and export names of the mutable globals.
    globals: Vec<(u32, String)>,
    /// Bytes of the host's own memories in the instance (the dirty map and
    /// the staging memory), allowed on top of the memory budget.
    host_memory_bytes: usize,
    /// Whether the module's call entry point sets the globals back itself.
    call_restores_globals: bool,
}

/// Defines the host interface for resettable modules.
pub(super) fn linker(engine: &Engine) -> anyhow::Result<Linker<ResetState>> {
    let mut linker = Linker::new(engine);
    abi::add_to_linker(&mut linker)?;
    Ok(linker)
}

impl ResettableModule {
    /// Prepares `component` for resettable instances, or says why it cannot
    /// be (it then runs as a component). Also returns the component's type
    /// stub (`stub.rs`), which the caller links to check its types.
    pub(super) fn prepare_with_stub(
        engine: &Engine,
        linker: &Linker<ResetState>,
        component: &[u8],
    ) -> Result<(ResettableModule, Vec<u8>), String> {
        let shape = shape::analyze(component, HOST, RULE).map_err(|e| e.to_string())?;
        let stub = stub::stub_component(component, shape.main_module.clone())?;
        Ok((Self::prepare(engine, linker, component)?, stub))
    }

    /// Prepares `component` for resettable instances, or says why it cannot
    /// be.
    pub(super) fn prepare(
        engine: &Engine,
        linker: &Linker<ResetState>,
        component: &[u8],
    ) -> Result<ResettableModule, String> {
        let shape = shape::analyze(component, HOST, RULE).map_err(|e| e.to_string())?;
        let main = component.get(shape.main_module.clone()).ok_or("the main module is out of range")?;
        let instrumented = instrument::instrument(main, POOLED_MEMORY_BYTES_MAX as u64).map_err(|e| e.to_string())?;
        let module = Module::new(engine, &instrumented.bytes).map_err(|e| format!("compiling it failed: {e:#}"))?;
        let pre = linker.instantiate_pre(&module).map_err(|e| format!("its imports do not match: {e:#}"))?;
        let has = |name: &str| module.get_export(name).is_some();
        for name in
            ["memory", "cabi_realloc", EVALUATE_EXPORT, DESCRIBE_EXPORT, DIRTY_MAP_EXPORT, STAGING_EXPORT, CALL_EXPORT]
        {
            if !has(name) {
                return Err(format!("its main module does not export `{name}`"));
            }
        }
        Ok(ResettableModule {
            pre,
            globals: instrumented.mutable_globals.iter().map(|g| (*g, format!("{GLOBAL_EXPORT_PREFIX}{g}"))).collect(),
            host_memory_bytes: usize::try_from(instrumented.dirty_map_bytes + STAGING_BYTES).unwrap_or(usize::MAX),
            call_restores_globals: instrumented.call_restores_globals,
        })
    }
}

impl ResettableModule {
    /// Calls `describe` in a fresh instance under `budget` (the instance is
    /// dropped after).
    pub(super) fn describe(
        &self,
        engine: &Engine,
        budget: &Budget,
    ) -> Result<super::RuleDeclaration, super::LoadError> {
        let mut instance = RuleInstance::new(self, engine, budget).map_err(super::LoadError::Instantiate)?;
        set_budget(&mut instance.store, budget).map_err(super::LoadError::Describe)?;
        let failed = |store: &Store<ResetState>, e: wasmtime::Error| {
            super::LoadError::Describe(classify(&e, &store.data().data.memory, None))
        };
        let describe = match instance.describe.call(&mut instance.store, ()) {
            Ok(ret) => ret,
            Err(e) => return Err(failed(&instance.store, e)),
        };
        match abi::lift_rule_info(instance.memory.data(&instance.store), describe) {
            Ok(Ok(declaration)) => Ok(declaration),
            Ok(Err(message)) => {
                Err(super::LoadError::Describe(Failure { kind: super::FailureKind::InvalidOutput, message }))
            }
            Err(e) => Err(failed(&instance.store, e)),
        }
    }
}

/// One instance, its snapshot, and the handles a call uses.
pub(super) struct RuleInstance {
    store: Store<ResetState>,
    memory: Memory,
    dirty: Memory,
    staging: Memory,
    /// The entry point: allocate, copy the transaction in, evaluate.
    call: TypedFunc<u32, u32>,
    describe: TypedFunc<(), u32>,
    globals: Vec<(Global, Val)>,
    /// Whether `call` sets the globals back itself.
    call_restores_globals: bool,
    global_indices: Vec<u32>,
    /// Guest memory right after instantiation.
    snapshot: Box<[u8]>,
    /// The memory budget the instance was created under.
    memory_bytes_max: u64,
    /// Scratch: chunk runs to restore.
    runs: Vec<(usize, usize)>,
}

fn set_budget(store: &mut Store<ResetState>, budget: &Budget) -> Result<(), Failure> {
    store.set_fuel(budget.fuel_max).map_err(|e| Failure { kind: super::FailureKind::Trap, message: e.to_string() })?;
    store.data_mut().data.deadline_nanos = budget.deadline_ms.saturating_mul(1_000_000);
    store.data_mut().data.restart_clock();
    store.set_epoch_deadline(1);
    Ok(())
}

impl RuleInstance {
    /// Instantiates `module` under `budget` and takes its snapshot.
    fn new(module: &ResettableModule, engine: &Engine, budget: &Budget) -> Result<RuleInstance, Failure> {
        let data = CallData::new(MemoryCap::new(budget.memory_bytes_max, module.host_memory_bytes), budget.deadline_ms);
        let mut store =
            Store::new(engine, ResetState { data, memory: None, dirty: None, realloc: None, scratch: Vec::new() });
        store.limiter(|s| &mut s.data.memory);
        super::capabilities::check_deadline_by_cpu_time(&mut store);
        set_budget(&mut store, budget)?;
        let failed = |store: &Store<ResetState>, e: wasmtime::Error| {
            let mut f = classify(&e, &store.data().data.memory, None);
            f.message = format!("instantiating the rule failed: {}", f.message);
            f
        };
        let instance = match module.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => return Err(failed(&store, e)),
        };
        let missing = |what: &str| Failure {
            kind: super::FailureKind::Trap,
            message: format!("the instrumented module lacks `{what}`"),
        };
        let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| missing("memory"))?;
        let dirty = instance.get_memory(&mut store, DIRTY_MAP_EXPORT).ok_or_else(|| missing(DIRTY_MAP_EXPORT))?;
        let staging = instance.get_memory(&mut store, STAGING_EXPORT).ok_or_else(|| missing(STAGING_EXPORT))?;
        let realloc = instance
            .get_typed_func::<(u32, u32, u32, u32), u32>(&mut store, "cabi_realloc")
            .map_err(|_| missing("cabi_realloc"))?;
        let call = instance.get_typed_func::<u32, u32>(&mut store, CALL_EXPORT).map_err(|_| missing(CALL_EXPORT))?;
        let describe =
            instance.get_typed_func::<(), u32>(&mut store, DESCRIBE_EXPORT).map_err(|_| missing(DESCRIBE_EXPORT))?;
        let mut globals = Vec::with_capacity(module.globals.len());
        for (_, name) in &module.globals {
            let global = instance.get_global(&mut store, name).ok_or_else(|| missing(name))?;
            let value = global.get(&mut store);
            globals.push((global, value));
        }
        let snapshot: Box<[u8]> = memory.data(&store).into();
        // A start function's stores marked the map; the snapshot includes them.
        let covered = (snapshot.len() / CHUNK_BYTES as usize + 2).min(dirty.data_size(&store));
        dirty.data_mut(&mut store)[..covered].fill(0);
        store.data_mut().memory = Some(memory);
        store.data_mut().dirty = Some(dirty);
        store.data_mut().realloc = Some(realloc);
        Ok(RuleInstance {
            store,
            memory,
            dirty,
            staging,
            call,
            describe,
            globals,
            call_restores_globals: module.call_restores_globals,
            global_indices: module.globals.iter().map(|(i, _)| *i).collect(),
            snapshot,
            memory_bytes_max: budget.memory_bytes_max,
            runs: Vec::new(),
        })
    }

    /// One `evaluate` call. Returns the raw result (or the failure), the
    /// fuel used, the peak memory and the logs, and whether the instance is
    /// back in its post-instantiation state (false: drop it).
    fn call(
        &mut self,
        ctx: CallContext,
        now: Nanos,
        tx: &[u8],
    ) -> (Result<RawVerdict, Failure>, u64, u64, Vec<super::LogLine>, bool) {
        let budget = ctx.budget;
        self.store.data_mut().data.begin(ctx, now);
        if let Err(f) = set_budget(&mut self.store, &budget) {
            return (Err(f), 0, 0, Vec::new(), false);
        }
        let result = self.run(tx);
        let fuel = budget.fuel_max.saturating_sub(self.store.get_fuel().unwrap_or(0));
        let state = self.store.data_mut();
        let logs = state.data.finish();
        let memory_bytes = state.data.memory.peak_guest_bytes();
        match result {
            Ok(verdict) => {
                let clean = self.reset();
                (verdict, fuel, memory_bytes, logs, clean)
            }
            Err(e) => {
                let failure = classify(&e, &self.store.data().data.memory, None);
                (Err(failure), fuel, memory_bytes, logs, false)
            }
        }
    }

    fn run(&mut self, tx: &[u8]) -> wasmtime::Result<Result<RawVerdict, Failure>> {
        let staging = self.staging.data_mut(&mut self.store);
        let Some(dst) = staging.get_mut(..tx.len()) else {
            return Err(wasmtime::Error::msg(format!(
                "the transaction's encoding of {} bytes exceeds the {STAGING_BYTES} bytes a rule is handed",
                tx.len()
            )));
        };
        dst.copy_from_slice(tx);
        // `call` allocates with the guest's `cabi_realloc`, copies the
        // transaction in (marking it), and calls `evaluate`.
        let ret = self.call.call(&mut self.store, tx.len() as u32)?;
        abi::lift_verdict(self.memory.data(&self.store), ret)
    }

    /// Puts the instance back into its post-instantiation state; false when
    /// it cannot be (its memory grew), and the instance must be dropped.
    fn reset(&mut self) -> bool {
        let size = self.memory.data_size(&self.store);
        if size != self.snapshot.len() {
            return false;
        }
        let chunk = CHUNK_BYTES as usize;
        self.runs.clear();
        {
            let map = self.dirty.data_mut(&mut self.store);
            let covered = (size / chunk + 2).min(map.len());
            let map = &mut map[..covered];
            // Runs of marked chunks, found a word (8 chunks) at a time.
            let mut run: Option<usize> = None;
            for (w, word) in map.chunks_mut(8).enumerate() {
                let clean = match <&[u8; 8]>::try_from(&*word) {
                    Ok(w8) => u64::from_ne_bytes(*w8) == 0,
                    Err(_) => word.iter().all(|b| *b == 0),
                };
                if run.is_none() && clean {
                    continue;
                }
                for (j, mark) in word.iter_mut().enumerate() {
                    let i = w * 8 + j;
                    match (*mark != 0, run) {
                        (true, None) => run = Some(i),
                        (false, Some(start)) => {
                            self.runs.push((start * chunk, i * chunk));
                            run = None;
                        }
                        _ => {}
                    }
                    *mark = 0;
                }
            }
            if let Some(start) = run {
                self.runs.push((start * chunk, map.len() * chunk));
            }
        }
        let mem = self.memory.data_mut(&mut self.store);
        for &(start, end) in &self.runs {
            let end = end.min(size);
            if start < end {
                mem[start..end].copy_from_slice(&self.snapshot[start..end]);
            }
        }
        if !self.call_restores_globals {
            for (global, value) in &self.globals {
                if global.set(&mut self.store, *value).is_err() {
                    return false;
                }
            }
        }
        true
    }

    /// The guest memory and mutable globals now (for the isolation tests).
    fn state(&mut self) -> InstanceState {
        let memory = self.memory.data(&self.store).to_vec();
        let globals = self.globals.iter().map(|(g, _)| val_bits(&g.get(&mut self.store))).collect();
        InstanceState { memory, globals, global_indices: self.global_indices.clone() }
    }
}

/// The state a call can change: guest memory and mutable globals (as bits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceState {
    /// The guest's linear memory.
    pub memory: Vec<u8>,
    /// Each mutable global's bits.
    pub globals: Vec<u128>,
    /// The module's index of each of those globals.
    pub global_indices: Vec<u32>,
}

/// A global's value as bits (for comparing states).
pub(crate) fn val_bits(v: &Val) -> u128 {
    match v {
        Val::I32(x) => *x as u32 as u128,
        Val::I64(x) => *x as u64 as u128,
        Val::F32(x) => u128::from(*x),
        Val::F64(x) => u128::from(*x),
        Val::V128(x) => x.as_u128(),
        // Reference globals cannot be compared by value; a module with them
        // still resets them (by `Global::set`), and tests see a constant.
        _ => u128::MAX,
    }
}

/// The instances of one rule (one rule-set version), one per evaluating
/// thread, created on the thread's first call.
#[derive(Default)]
pub(super) struct InstancePool {
    per_thread: ThreadLocal<RefCell<Option<RuleInstance>>>,
}

/// What a call through the pool produced.
pub(super) struct PooledCall {
    pub(super) result: Result<RawVerdict, Failure>,
    pub(super) fuel: u64,
    pub(super) memory_bytes: u64,
    pub(super) logs: Vec<super::LogLine>,
}

impl InstancePool {
    /// Calls `evaluate` on this thread's instance (creating it if needed),
    /// and resets or drops it afterwards.
    pub(super) fn call(
        &self,
        module: &ResettableModule,
        engine: &Engine,
        ctx: CallContext,
        now: Nanos,
        tx: &[u8],
    ) -> PooledCall {
        let cell = self.per_thread.get_or(|| RefCell::new(None));
        // A rule call never re-enters the pool on the same thread, so the
        // cell is never borrowed twice; a failed borrow becomes a failure.
        let Ok(mut slot) = cell.try_borrow_mut() else {
            let message = "internal: the rule's instance is already in use on this thread".to_string();
            return PooledCall {
                result: Err(Failure { kind: super::FailureKind::Trap, message }),
                fuel: 0,
                memory_bytes: 0,
                logs: Vec::new(),
            };
        };
        // The instance is taken out for the call and put back only once it
        // is reset: if anything unwinds through the call, the thread is
        // left without an instance, never with a dirty one.
        let mut instance = match slot.take() {
            Some(i) if i.memory_bytes_max == ctx.budget.memory_bytes_max => i,
            _ => match RuleInstance::new(module, engine, &ctx.budget) {
                Ok(i) => i,
                Err(failure) => {
                    return PooledCall { result: Err(failure), fuel: 0, memory_bytes: 0, logs: Vec::new() };
                }
            },
        };
        let (result, fuel, memory_bytes, logs, clean) = instance.call(ctx, now, tx);
        if clean {
            *slot = Some(instance);
        }
        PooledCall { result, fuel, memory_bytes, logs }
    }

    /// This thread's instance's memory and globals, and those of a fresh
    /// instance of the same module (for the isolation tests).
    pub(super) fn compare_with_fresh(
        &self,
        module: &ResettableModule,
        engine: &Engine,
        budget: &Budget,
    ) -> Option<(InstanceState, InstanceState)> {
        let cell = self.per_thread.get()?;
        let mut slot = cell.try_borrow_mut().ok()?;
        let reused = slot.as_mut()?.state();
        let fresh = RuleInstance::new(module, engine, budget).ok()?.state();
        Some((reused, fresh))
    }
}

/// A fresh direct instance's state (for the isolation tests, which compare
/// it with the component model's own instance of the same module).
pub(super) fn fresh_state(
    engine: &Engine,
    linker: &Linker<ResetState>,
    component: &[u8],
    budget: &Budget,
) -> Result<InstanceState, String> {
    let module = ResettableModule::prepare(engine, linker, component)?;
    let mut instance = RuleInstance::new(&module, engine, budget).map_err(|f| f.message)?;
    Ok(instance.state())
}
