//! The checking pass: everything the rewrite needs to know about a module,
//! and the refusal of anything it could not make resettable.

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasmparser::{Operator, Parser, Payload};

use super::{NotResettable, PAGE_BYTES};
use crate::reset::abi::EVALUATE_EXPORT;

/// Facts gathered in the checking pass.
pub(super) struct Survey {
    /// Parameter count of each function type.
    pub(super) type_params: Vec<u32>,
    /// Number of imported functions.
    pub(super) imported_funcs: u32,
    /// Type index of each defined function.
    pub(super) func_types: Vec<u32>,
    /// The memory's maximum size in bytes, if declared.
    pub(super) memory_max_bytes: Option<u64>,
    pub(super) mutable_globals: Vec<u32>,
    /// Each mutable global's initialiser (without its `end`).
    pub(super) global_inits: Vec<Vec<u8>>,
    /// Function indices of `cabi_realloc` and the `evaluate` export.
    pub(super) realloc: Option<u32>,
    pub(super) evaluate: Option<u32>,
    pub(super) has_start: bool,
    /// Whether any function stores a `v128` (and so needs a `v128` temporary).
    pub(super) uses_v128: bool,
    pub(super) export_names: Vec<String>,
}

pub(super) fn survey(module: &[u8]) -> Result<Survey, NotResettable> {
    let mut s = Survey {
        type_params: Vec::new(),
        imported_funcs: 0,
        func_types: Vec::new(),
        memory_max_bytes: None,
        mutable_globals: Vec::new(),
        global_inits: Vec::new(),
        realloc: None,
        evaluate: None,
        has_start: false,
        uses_v128: false,
        export_names: Vec::new(),
    };
    let mut memories = 0u32;
    let bad = |e: wasmparser::BinaryReaderError| NotResettable::Features(e.message().to_string());
    let mut defined_func = 0u32;
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(bad)? {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    let ty = ty.map_err(bad)?;
                    s.type_params.push(ty.params().len() as u32);
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    match import.map_err(bad)?.ty {
                        wasmparser::TypeRef::Func(_) => s.imported_funcs += 1,
                        wasmparser::TypeRef::Memory(_) => return Err(NotResettable::Memory("an imported one".into())),
                        wasmparser::TypeRef::Table(_) => return Err(NotResettable::Import("table")),
                        wasmparser::TypeRef::Global(_) => return Err(NotResettable::Import("global")),
                        _ => return Err(NotResettable::Import("tag or other item")),
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    s.func_types.push(ty.map_err(bad)?);
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(bad)?;
                    memories += 1;
                    if memory.shared || memory.memory64 || memory.page_size_log2.is_some() {
                        return Err(NotResettable::Memory("a shared, 64-bit or custom-page one".into()));
                    }
                    s.memory_max_bytes = memory.maximum.map(|pages| pages.saturating_mul(PAGE_BYTES));
                }
            }
            Payload::GlobalSection(reader) => {
                for (i, global) in reader.into_iter().enumerate() {
                    let global = global.map_err(bad)?;
                    if global.ty.mutable {
                        s.mutable_globals.push(i as u32);
                        let mut ops = global.init_expr.get_operators_reader();
                        let mut init = Vec::new();
                        while !ops.eof() {
                            match ops.read().map_err(bad)? {
                                Operator::End => {}
                                op => {
                                    use wasm_encoder::Encode;
                                    RoundtripReencoder
                                        .instruction(op)
                                        .map_err(|e| NotResettable::Rewrite(e.to_string()))?
                                        .encode(&mut init);
                                }
                            }
                        }
                        s.global_inits.push(init);
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(bad)?;
                    if export.kind == wasmparser::ExternalKind::Func {
                        match export.name {
                            "cabi_realloc" => s.realloc = Some(export.index),
                            name if name == EVALUATE_EXPORT => s.evaluate = Some(export.index),
                            _ => {}
                        }
                    }
                    s.export_names.push(export.name.to_string());
                }
            }
            Payload::StartSection { .. } => s.has_start = true,
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader().map_err(bad)?;
                while !ops.eof() {
                    let op = ops.read().map_err(bad)?;
                    if let Some(name) = forbidden(&op) {
                        return Err(NotResettable::Instruction { func: s.imported_funcs + defined_func, op: name });
                    }
                    s.uses_v128 |= matches!(
                        op,
                        Operator::V128Store { .. }
                            | Operator::V128Store8Lane { .. }
                            | Operator::V128Store16Lane { .. }
                            | Operator::V128Store32Lane { .. }
                            | Operator::V128Store64Lane { .. }
                    );
                }
                defined_func += 1;
            }
            _ => {}
        }
    }
    if memories != 1 {
        return Err(NotResettable::Memory(format!("{memories}")));
    }
    let signature = |f: Option<u32>, params: u32| {
        f.and_then(|f| f.checked_sub(s.imported_funcs))
            .and_then(|d| s.func_types.get(d as usize))
            .and_then(|t| s.type_params.get(*t as usize))
            .is_some_and(|p| *p == params)
    };
    if !signature(s.realloc, 4) || !signature(s.evaluate, 2) {
        return Err(NotResettable::Exports);
    }
    Ok(s)
}

/// The instructions of [`FEATURES`] that change state the host does not
/// restore.
pub(super) fn forbidden(op: &Operator<'_>) -> Option<&'static str> {
    Some(match op {
        Operator::TableSet { .. } => "table.set",
        Operator::TableGrow { .. } => "table.grow",
        Operator::TableFill { .. } => "table.fill",
        Operator::TableCopy { .. } => "table.copy",
        Operator::TableInit { .. } => "table.init",
        Operator::ElemDrop { .. } => "elem.drop",
        Operator::DataDrop { .. } => "data.drop",
        _ => return None,
    })
}
