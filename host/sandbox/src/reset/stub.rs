//! A *type stub* of a resettable rule's component: the same component with
//! its main module replaced by one that has the same imports and exports
//! but no code. wasmtime compiles it in a fraction of the time, and linking
//! it checks the component's types against the contract exactly as linking
//! the real one would; the real code only ever runs as the instrumented
//! core module, so the real component is never compiled.

use std::ops::Range;

use wasm_encoder::{Encode, RawSection};
use wasmparser::{ExternalKind, Parser, Payload, TypeRef};

/// The component id of a core module section.
const CORE_MODULE_SECTION: u8 = 1;

/// A module with `main`'s imports, memories, tables, globals and exports,
/// whose functions all trap.
fn stub_module(main: &[u8]) -> Result<Vec<u8>, String> {
    let bad = |e: wasmparser::BinaryReaderError| e.message().to_string();
    let mut module = wasm_encoder::Module::new();
    let mut imported_funcs = 0u32;
    let mut func_types: Vec<u32> = Vec::new();
    let mut exports = Vec::new();
    let mut raw: Vec<(u8, Range<usize>)> = Vec::new();
    for payload in Parser::new(0).parse_all(main) {
        match payload.map_err(bad)? {
            Payload::TypeSection(r) => raw.push((wasm_encoder::SectionId::Type as u8, r.range())),
            Payload::ImportSection(r) => {
                raw.push((wasm_encoder::SectionId::Import as u8, r.range()));
                for import in r.into_imports() {
                    if let TypeRef::Func(_) = import.map_err(bad)?.ty {
                        imported_funcs += 1;
                    }
                }
            }
            Payload::FunctionSection(r) => {
                for ty in r {
                    func_types.push(ty.map_err(bad)?);
                }
            }
            Payload::TableSection(r) => raw.push((wasm_encoder::SectionId::Table as u8, r.range())),
            Payload::MemorySection(r) => raw.push((wasm_encoder::SectionId::Memory as u8, r.range())),
            Payload::GlobalSection(r) => raw.push((wasm_encoder::SectionId::Global as u8, r.range())),
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e.map_err(bad)?;
                    exports.push((e.name.to_string(), e.kind, e.index));
                }
            }
            _ => {}
        }
    }
    // Sections in their required order: types, imports, functions, tables,
    // memories, globals, exports, code.
    let section = |module: &mut wasm_encoder::Module, id: u8| {
        for (_, range) in raw.iter().filter(|(i, _)| *i == id) {
            module.section(&RawSection { id, data: &main[range.clone()] });
        }
    };
    section(&mut module, wasm_encoder::SectionId::Type as u8);
    section(&mut module, wasm_encoder::SectionId::Import as u8);
    let mut functions = wasm_encoder::FunctionSection::new();
    let mut code = wasm_encoder::CodeSection::new();
    let mut export_section = wasm_encoder::ExportSection::new();
    let mut remapped = Vec::new();
    for (name, kind, index) in &exports {
        let (kind, index) = match kind {
            ExternalKind::Func | ExternalKind::FuncExact if *index >= imported_funcs => {
                let ty = func_types.get((index - imported_funcs) as usize).ok_or("export of an unknown function")?;
                functions.function(*ty);
                let mut body = wasm_encoder::Function::new([]);
                body.instructions().unreachable().end();
                code.function(&body);
                let stub = imported_funcs + remapped.len() as u32;
                remapped.push(stub);
                (wasm_encoder::ExportKind::Func, stub)
            }
            ExternalKind::Func | ExternalKind::FuncExact => (wasm_encoder::ExportKind::Func, *index),
            ExternalKind::Memory => (wasm_encoder::ExportKind::Memory, *index),
            ExternalKind::Table => (wasm_encoder::ExportKind::Table, *index),
            ExternalKind::Global => (wasm_encoder::ExportKind::Global, *index),
            ExternalKind::Tag => return Err("the main module exports a tag".into()),
        };
        export_section.export(name, kind, index);
    }
    module.section(&functions);
    section(&mut module, wasm_encoder::SectionId::Table as u8);
    section(&mut module, wasm_encoder::SectionId::Memory as u8);
    section(&mut module, wasm_encoder::SectionId::Global as u8);
    module.section(&export_section);
    module.section(&code);
    let bytes = module.finish();
    wasmparser::Validator::new()
        .validate_all(&bytes)
        .map_err(|e| format!("the type stub is invalid: {}", e.message()))?;
    Ok(bytes)
}

/// `component` with the core module at `main` (its byte range) replaced by
/// its type stub.
pub(super) fn stub_component(component: &[u8], main: Range<usize>) -> Result<Vec<u8>, String> {
    let module = component.get(main.clone()).ok_or("the main module is out of range")?;
    let stub = stub_module(module)?;
    // The section header is the id byte and the LEB128 size (possibly
    // padded, so up to 5 bytes) just before the module's bytes.
    let start = (1..=5)
        .find_map(|k| {
            let size = component.get(main.start.checked_sub(k)?..main.start)?;
            let terminated = size.last().is_some_and(|b| b & 0x80 == 0) && size[..k - 1].iter().all(|b| b & 0x80 != 0);
            let value = size.iter().rev().fold(0u64, |acc, b| (acc << 7) | u64::from(b & 0x7f));
            let id_at = main.start.checked_sub(k + 1)?;
            (terminated && value == main.len() as u64 && component.get(id_at) == Some(&CORE_MODULE_SECTION))
                .then_some(id_at)
        })
        .ok_or("the main module's section header is not where it should be")?;
    let mut out = Vec::with_capacity(component.len() - main.len() + stub.len());
    out.extend_from_slice(&component[..start]);
    out.push(CORE_MODULE_SECTION);
    (stub.len() as u64).encode(&mut out);
    out.extend_from_slice(&stub);
    out.extend_from_slice(&component[main.end..]);
    Ok(out)
}
