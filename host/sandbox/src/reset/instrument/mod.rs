//! Makes a rule's core module resettable: checks that everything a call can
//! change is reachable by the host, and rewrites the module so that the host
//! can put it back.
//!
//! What a call can change in a core instance, and how each is handled:
//!
//! | state | handled by |
//! | --- | --- |
//! | bytes of its linear memory | every store and bulk write is preceded by a mark in a *dirty map* (a second memory, one byte per [`CHUNK_BYTES`] of the first, that the guest's own code cannot address); the host copies the marked chunks back from the post-instantiation snapshot |
//! | the memory's size (`memory.grow`) | the host compares it after the call and replaces the instance when it grew |
//! | mutable globals | each is exported (`__rulehost_global_N`) and set back after the call |
//! | tables, passive segments (`table.set/grow/fill/copy/init`, `elem.drop`, `data.drop`) | refused: such a module runs on the fresh-instance path |
//! | anything of threads, GC, exceptions, memory64, several memories, stack switching | refused by validating with only the features listed in [`FEATURES`] |
//!
//! The checks run on the *whole* module before anything is rewritten, so a
//! module is either entirely covered or not used this way at all.
//!
//! The rewrite also adds the entry point the host calls, [`CALL_EXPORT`]:
//! `(len) -> ret` allocates `len` bytes with the module's own
//! `cabi_realloc`, copies the transaction there from a *staging memory* the
//! host filled (a third memory, also unaddressable by the guest's code),
//! marks them, calls `evaluate`, and — when the module has no start function,
//! so its globals' post-instantiation values are their initialisers — sets
//! every mutable global back, all in one call from the host.

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{Instruction, ValType};
use wasmparser::{Operator, Parser, WasmFeatures};

mod address;
mod survey;
#[cfg(test)]
mod tests;

use address::{CHEAP_OFFSET_MAX, destination_local, push_recent};
use survey::{Survey, forbidden, survey};

/// Bytes of guest memory one byte of the dirty map covers.
pub const CHUNK_BYTES: u64 = 256;
/// `log2(CHUNK_BYTES)`, the shift from an address to its chunk.
const CHUNK_SHIFT: i32 = 8;
/// Export name of the dirty map.
pub const DIRTY_MAP_EXPORT: &str = "__rulehost_dirty";
/// Prefix of the export name of mutable global `N`.
pub const GLOBAL_EXPORT_PREFIX: &str = "__rulehost_global_";
/// Export name of the staging memory the host writes the transaction to.
pub const STAGING_EXPORT: &str = "__rulehost_staging";
/// Export name of the entry point the host calls.
pub const CALL_EXPORT: &str = "__rulehost_call";
/// Bytes of the staging memory: the largest transaction encoding the host
/// hands over (an input line is at most 1 MiB, and its encoding is smaller).
pub const STAGING_BYTES: u64 = (1 << 20) + PAGE_BYTES;
/// Wasm page size in bytes.
pub(super) const PAGE_BYTES: u64 = 65_536;

/// The only Wasm features a resettable module may use. Everything these
/// allow that writes instance state is either instrumented (stores and bulk
/// memory writes) or refused (table and segment mutation); see the module
/// documentation.
pub const FEATURES: WasmFeatures = WasmFeatures::MUTABLE_GLOBAL
    .union(WasmFeatures::SATURATING_FLOAT_TO_INT)
    .union(WasmFeatures::SIGN_EXTENSION)
    .union(WasmFeatures::REFERENCE_TYPES)
    .union(WasmFeatures::MULTI_VALUE)
    .union(WasmFeatures::BULK_MEMORY)
    .union(WasmFeatures::SIMD)
    .union(WasmFeatures::RELAXED_SIMD)
    .union(WasmFeatures::TAIL_CALL)
    .union(WasmFeatures::FLOATS)
    .union(WasmFeatures::EXTENDED_CONST);

/// Why a module is not resettable (it then runs on the fresh-instance path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotResettable {
    /// It uses a Wasm feature outside [`FEATURES`].
    #[error("it uses Wasm features a resettable module may not use: {0}")]
    Features(String),
    /// It has no memory, several, an imported or a shared one.
    #[error("it must define exactly one unshared 32-bit memory (it has {0})")]
    Memory(String),
    /// It imports something other than functions.
    #[error("it imports a {0}; only functions may be imported")]
    Import(&'static str),
    /// An instruction changes state the host cannot restore.
    #[error("function {func} uses `{op}`, which changes state the host cannot restore")]
    Instruction {
        /// Index of the function in the module.
        func: u32,
        /// The instruction's name.
        op: &'static str,
    },
    /// It lacks `cabi_realloc` or `evaluate` (as core functions of the
    /// canonical signatures).
    #[error("its main module does not export `cabi_realloc` and `evaluate` with their canonical signatures")]
    Exports,
    /// One of the host's export names is taken.
    #[error("it already exports `{0}`")]
    ExportName(String),
    /// The rewritten module failed to encode.
    #[error("rewriting it failed: {0}")]
    Rewrite(String),
}

/// The rewritten module and what the host needs to reset it.
#[derive(Debug, Clone)]
pub struct Instrumented {
    /// The rewritten module's bytes.
    pub bytes: Vec<u8>,
    /// Indices of the mutable globals (each exported as
    /// `__rulehost_global_N`).
    pub mutable_globals: Vec<u32>,
    /// Bytes of the dirty map (covers the largest the guest memory can grow
    /// to, plus one chunk).
    pub dirty_map_bytes: u64,
    /// Whether [`CALL_EXPORT`] sets the mutable globals back itself (the
    /// module has no start function); otherwise the host must.
    pub call_restores_globals: bool,
}

/// Checks `module` and, when it is resettable, rewrites it. The guest memory
/// can never exceed `memory_bytes_limit` (the engine's per-memory maximum),
/// which sizes the dirty map.
pub fn instrument(module: &[u8], memory_bytes_limit: u64) -> Result<Instrumented, NotResettable> {
    let mut validator = wasmparser::Validator::new_with_features(FEATURES);
    validator.validate_all(module).map_err(|e| NotResettable::Features(e.message().to_string()))?;
    let survey = survey(module)?;
    for name in &survey.export_names {
        if name == DIRTY_MAP_EXPORT
            || name == STAGING_EXPORT
            || name == CALL_EXPORT
            || name.starts_with(GLOBAL_EXPORT_PREFIX)
        {
            return Err(NotResettable::ExportName(name.clone()));
        }
    }
    let memory_max = survey.memory_max_bytes.unwrap_or(u64::MAX).min(memory_bytes_limit);
    // One byte per chunk, and one more: a store marks its chunk and the next
    // (it may straddle them).
    let dirty_map_bytes = memory_max.div_ceil(CHUNK_BYTES) + 2;
    let dirty_map_pages = dirty_map_bytes.div_ceil(PAGE_BYTES);
    let mut rewriter = Rewriter { survey: &survey, dirty_map_pages, defined_index: 0, error: None };
    let mut out = wasm_encoder::Module::new();
    let result = rewriter.parse_core_module(&mut out, Parser::new(0), module);
    if let Some(e) = rewriter.error {
        return Err(e);
    }
    result.map_err(|e| NotResettable::Rewrite(e.to_string()))?;
    let bytes = out.finish();
    // The rewrite must itself be a valid module of the same feature set.
    wasmparser::Validator::new_with_features(FEATURES.union(WasmFeatures::MULTI_MEMORY))
        .validate_all(&bytes)
        .map_err(|e| NotResettable::Rewrite(e.message().to_string()))?;
    Ok(Instrumented {
        bytes,
        mutable_globals: survey.mutable_globals,
        dirty_map_bytes,
        call_restores_globals: !survey.has_start,
    })
}

/// The temporaries an instrumented function needs, as extra locals.
#[derive(Clone, Copy)]
struct Temps {
    addr: u32,
    i32: u32,
    i64: u32,
    f32: u32,
    f64: u32,
    v128: u32,
    /// A second i32 (bulk operations take three operands).
    src: u32,
}

struct Rewriter<'a> {
    survey: &'a Survey,
    dirty_map_pages: u64,
    /// Index of the defined function being rewritten.
    defined_index: u32,
    error: Option<NotResettable>,
}

impl Rewriter<'_> {
    /// Type index of `mark_range`, appended after the module's types.
    fn mark_type(&self) -> u32 {
        self.survey.type_params.len() as u32
    }

    /// Function index of `mark_range`, appended after the module's functions.
    fn mark_func(&self) -> u32 {
        self.survey.imported_funcs + self.survey.func_types.len() as u32
    }

    /// `mark_range(dst, len)`: marks every chunk of `[dst, dst + len)`.
    fn mark_range_body(&self) -> wasm_encoder::Function {
        let (dst, len, first) = (0, 1, 2);
        let mut f = wasm_encoder::Function::new([(1, ValType::I32)]);
        f.instructions()
            .local_get(len)
            .i32_eqz()
            .if_(wasm_encoder::BlockType::Empty)
            .return_()
            .end()
            .local_get(dst)
            .i32_const(CHUNK_SHIFT)
            .i32_shr_u()
            .local_tee(first)
            .i32_const(1)
            // last = (dst + len - 1) >> shift, in 64 bits so it cannot wrap.
            .local_get(dst)
            .i64_extend_i32_u()
            .local_get(len)
            .i64_extend_i32_u()
            .i64_add()
            .i64_const(1)
            .i64_sub()
            .i64_const(i64::from(CHUNK_SHIFT))
            .i64_shr_u()
            .i32_wrap_i64()
            .local_get(first)
            .i32_sub()
            .i32_const(1)
            .i32_add()
            .memory_fill(1)
            .end();
        f
    }

    /// `call(len) -> ret`: allocate, copy in from staging, mark, evaluate,
    /// and set the mutable globals back when that is the reset.
    fn call_body(&self) -> wasm_encoder::Function {
        let (len, ptr) = (0, 1);
        let mut f = wasm_encoder::Function::new([(1, ValType::I32)]);
        let (Some(realloc), Some(evaluate)) = (self.survey.realloc, self.survey.evaluate) else {
            // `survey` refuses such modules; keep the body valid regardless.
            f.instructions().unreachable().end();
            return f;
        };
        f.instructions()
            .i32_const(0)
            .i32_const(0)
            .i32_const(1)
            .local_get(len)
            .call(realloc)
            .local_tee(ptr)
            .i32_const(0)
            .local_get(len)
            .memory_copy(0, 2)
            .local_get(ptr)
            .local_get(len)
            .call(self.mark_func())
            .local_get(ptr)
            .local_get(len)
            .call(evaluate);
        if !self.survey.has_start {
            for (g, init) in self.survey.mutable_globals.iter().zip(&self.survey.global_inits) {
                f.raw(init.iter().copied());
                f.instructions().global_set(*g);
            }
        }
        f.instructions().end();
        f
    }

    /// Emits the mark for a store of the value on top of the stack (of type
    /// `value`, in local `tmp`) to the address below it plus `offset`.
    fn mark_store(&self, f: &mut wasm_encoder::Function, temps: Temps, tmp: u32, offset: u64) {
        let mut i = f.instructions();
        i.local_set(tmp).local_tee(temps.addr);
        if offset != 0 {
            // Offsets of 32-bit memories fit in u32; the sum may wrap, in
            // which case the store itself traps (the address exceeds 4 GiB).
            i.i32_const(offset as u32 as i32).i32_add();
        }
        i.i32_const(CHUNK_SHIFT)
            .i32_shr_u()
            .i32_const(0x0101)
            .i32_store16(wasm_encoder::MemArg { offset: 0, align: 0, memory_index: 1 })
            .local_get(temps.addr)
            .local_get(tmp);
    }

    /// Emits the mark for a bulk write `(dst, x, len)` on the stack.
    fn mark_bulk(&self, f: &mut wasm_encoder::Function, temps: Temps) {
        // Stack: dst, x, len. Keep them in (addr, src, i32), mark, restore.
        f.instructions()
            .local_set(temps.i32)
            .local_set(temps.src)
            .local_tee(temps.addr)
            .local_get(temps.i32)
            .call(self.mark_func())
            .local_get(temps.addr)
            .local_get(temps.src)
            .local_get(temps.i32);
    }

    /// The mark for a store or a short bulk write whose destination is
    /// still in a local (the common case): `local.get L; [offset; add];
    /// shift; 0x0101; store16` before the instruction, with no temporaries.
    /// `None` when the destination's origin is not that simple.
    fn cheap_mark(&self, op: &Operator<'_>, recent: &std::collections::VecDeque<Operator<'_>>) -> Option<Vec<u8>> {
        use wasm_encoder::Encode;
        // (operand depth of the destination, offset to add, whether the
        // instruction writes at most `CHEAP_SPAN_BYTES` past destination+offset)
        let (depth, offset) = match op {
            Operator::I32Store { memarg }
            | Operator::I32Store8 { memarg }
            | Operator::I32Store16 { memarg }
            | Operator::I64Store { memarg }
            | Operator::I64Store8 { memarg }
            | Operator::I64Store16 { memarg }
            | Operator::I64Store32 { memarg }
            | Operator::F32Store { memarg }
            | Operator::F64Store { memarg }
            | Operator::V128Store { memarg }
            | Operator::V128Store8Lane { memarg, .. }
            | Operator::V128Store16Lane { memarg, .. }
            | Operator::V128Store32Lane { memarg, .. }
            | Operator::V128Store64Lane { memarg, .. } => (1, memarg.offset),
            Operator::MemoryFill { .. } | Operator::MemoryCopy { .. } | Operator::MemoryInit { .. } => {
                // Only a constant length of at most one chunk.
                match recent.back() {
                    Some(Operator::I32Const { value }) if (0..=CHUNK_BYTES as i32).contains(value) => (2, 0),
                    _ => return None,
                }
            }
            _ => return None,
        };
        let local = destination_local(recent, depth)?;
        let mut bytes = Vec::new();
        let mut put = |i: Instruction<'_>| i.encode(&mut bytes);
        put(Instruction::LocalGet(local));
        // Marking chunk c and c + 1 covers [c·256, c·256 + 512), which holds
        // [dst + offset, dst + offset + 16) whenever offset ≤ 240.
        if offset > CHEAP_OFFSET_MAX {
            put(Instruction::I32Const(offset as u32 as i32));
            put(Instruction::I32Add);
        }
        put(Instruction::I32Const(CHUNK_SHIFT));
        put(Instruction::I32ShrU);
        put(Instruction::I32Const(0x0101));
        put(Instruction::I32Store16(wasm_encoder::MemArg { offset: 0, align: 0, memory_index: 1 }));
        Some(bytes)
    }

    fn rewrite_body(
        &mut self,
        body: &wasmparser::FunctionBody<'_>,
    ) -> Result<wasm_encoder::Function, wasm_encoder::reencode::Error<std::convert::Infallible>> {
        let ty = self.survey.func_types.get(self.defined_index as usize).copied().unwrap_or(0);
        let params = self.survey.type_params.get(ty as usize).copied().unwrap_or(0);
        let mut locals = Vec::new();
        let mut declared = 0u32;
        for pair in body.get_locals_reader()? {
            let (count, ty) = pair?;
            declared += count;
            locals.push((count, RoundtripReencoder.val_type(ty)?));
        }
        let base = params + declared;
        let temps = Temps {
            addr: base,
            i32: base + 1,
            src: base + 2,
            i64: base + 3,
            f32: base + 4,
            f64: base + 5,
            v128: base + 6,
        };
        locals.push((3, ValType::I32));
        locals.push((1, ValType::I64));
        locals.push((1, ValType::F32));
        locals.push((1, ValType::F64));
        if self.survey.uses_v128 {
            locals.push((1, ValType::V128));
        }
        let mut f = wasm_encoder::Function::new(locals);
        let mut ops = body.get_operators_reader()?;
        let mut recent: std::collections::VecDeque<Operator<'_>> = std::collections::VecDeque::new();
        while !ops.eof() {
            let op = ops.read()?;
            if let Some(cheap) = self.cheap_mark(&op, &recent) {
                f.raw(cheap);
                push_recent(&mut recent, op.clone());
                f.instruction(&RoundtripReencoder.instruction(op)?);
                continue;
            }
            push_recent(&mut recent, op.clone());
            let store = |m: &wasmparser::MemArg, tmp: u32| Some((m.offset, tmp));
            let marked = match &op {
                Operator::I32Store { memarg } | Operator::I32Store8 { memarg } | Operator::I32Store16 { memarg } => {
                    store(memarg, temps.i32)
                }
                Operator::I64Store { memarg }
                | Operator::I64Store8 { memarg }
                | Operator::I64Store16 { memarg }
                | Operator::I64Store32 { memarg } => store(memarg, temps.i64),
                Operator::F32Store { memarg } => store(memarg, temps.f32),
                Operator::F64Store { memarg } => store(memarg, temps.f64),
                Operator::V128Store { memarg }
                | Operator::V128Store8Lane { memarg, .. }
                | Operator::V128Store16Lane { memarg, .. }
                | Operator::V128Store32Lane { memarg, .. }
                | Operator::V128Store64Lane { memarg, .. } => store(memarg, temps.v128),
                Operator::MemoryFill { .. } | Operator::MemoryCopy { .. } | Operator::MemoryInit { .. } => {
                    self.mark_bulk(&mut f, temps);
                    None
                }
                _ => None,
            };
            if let Some((offset, tmp)) = marked {
                self.mark_store(&mut f, temps, tmp, offset);
            }
            f.instruction(&RoundtripReencoder.instruction(op)?);
        }
        Ok(f)
    }
}

impl Reencode for Rewriter<'_> {
    type Error = std::convert::Infallible;

    fn parse_type_section(
        &mut self,
        types: &mut wasm_encoder::TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        wasm_encoder::reencode::utils::parse_type_section(self, types, section)?;
        types.ty().function([ValType::I32, ValType::I32], []);
        types.ty().function([ValType::I32], [ValType::I32]);
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        functions: &mut wasm_encoder::FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        wasm_encoder::reencode::utils::parse_function_section(self, functions, section)?;
        functions.function(self.mark_type());
        functions.function(self.mark_type() + 1);
        Ok(())
    }

    fn parse_memory_section(
        &mut self,
        memories: &mut wasm_encoder::MemorySection,
        section: wasmparser::MemorySectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        wasm_encoder::reencode::utils::parse_memory_section(self, memories, section)?;
        for pages in [self.dirty_map_pages, STAGING_BYTES / PAGE_BYTES] {
            memories.memory(wasm_encoder::MemoryType {
                minimum: pages,
                maximum: Some(pages),
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
        }
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        wasm_encoder::reencode::utils::parse_export_section(self, exports, section)?;
        exports.export(DIRTY_MAP_EXPORT, wasm_encoder::ExportKind::Memory, 1);
        exports.export(STAGING_EXPORT, wasm_encoder::ExportKind::Memory, 2);
        exports.export(CALL_EXPORT, wasm_encoder::ExportKind::Func, self.mark_func() + 1);
        for g in &self.survey.mutable_globals {
            exports.export(&format!("{GLOBAL_EXPORT_PREFIX}{g}"), wasm_encoder::ExportKind::Global, *g);
        }
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        for body in section {
            let f = self.rewrite_body(&body?)?;
            code.function(&f);
            self.defined_index += 1;
        }
        code.function(&self.mark_range_body());
        code.function(&self.call_body());
        Ok(())
    }

    fn instruction<'a>(
        &mut self,
        op: Operator<'a>,
    ) -> Result<Instruction<'a>, wasm_encoder::reencode::Error<Self::Error>> {
        // Only reached for constant expressions (globals, segments), which
        // cannot write memory.
        if self.error.is_none()
            && let Some(name) = forbidden(&op)
        {
            self.error = Some(NotResettable::Instruction { func: u32::MAX, op: name });
        }
        RoundtripReencoder.instruction(op)
    }
}
