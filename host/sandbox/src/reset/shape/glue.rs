//! The glue modules `wit-component` adds around a rule's main module, and
//! their recognition: a *shim* that forwards each lowered import through a
//! table, and a *fixup* that fills the table at instantiation.

use wasmparser::{ExternalKind, Operator, Parser, Payload};

use super::{NotCanonical, parse_error, refuse};

/// The kinds of glue module `wit-component` adds.
pub(super) enum Glue {
    /// Defines a table and functions that only call through it.
    Shim,
    /// Imports functions and a table and fills the table with them.
    Fixup {
        /// Imports in order: field name and, for functions, `Some(())`.
        imports: Vec<(String, Option<()>)>,
        /// The element segment: slot → index of an imported function.
        elements: Vec<u32>,
    },
}

pub(super) fn module_exports(bytes: &[u8]) -> Result<Vec<(&str, ExternalKind)>, NotCanonical> {
    let mut out = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        if let Payload::ExportSection(reader) = payload.map_err(parse_error)? {
            for export in reader {
                let export = export.map_err(parse_error)?;
                out.push((export.name, export.kind));
            }
        }
    }
    Ok(out)
}

pub(super) fn module_imports(bytes: &[u8]) -> Result<Vec<(&str, &str)>, NotCanonical> {
    let mut out = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        if let Payload::ImportSection(reader) = payload.map_err(parse_error)? {
            for import in reader.into_imports() {
                let import = import.map_err(parse_error)?;
                if !matches!(import.ty, wasmparser::TypeRef::Func(_)) {
                    return refuse("the main module imports something other than functions");
                }
                out.push((import.module, import.name));
            }
        }
    }
    Ok(out)
}

/// Recognises a glue module; anything else (state, code beyond forwarding,
/// a start function) is refused.
pub(super) fn glue_kind(bytes: &[u8]) -> Result<Glue, NotCanonical> {
    let mut imports = Vec::new();
    let mut elements = None;
    let mut defines_table = false;
    let mut has_code = false;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(parse_error)? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(parse_error)?;
                    match import.ty {
                        wasmparser::TypeRef::Func(_) => imports.push((import.name.to_string(), Some(()))),
                        wasmparser::TypeRef::Table(_) => imports.push((import.name.to_string(), None)),
                        _ => return refuse("a glue module imports memory or globals"),
                    }
                }
            }
            Payload::TableSection(reader) => {
                defines_table = reader.count() == 1;
                if !defines_table {
                    return refuse("a glue module defines several tables");
                }
            }
            Payload::MemorySection(_)
            | Payload::GlobalSection(_)
            | Payload::DataSection(_)
            | Payload::TagSection(_) => {
                return refuse("a second module has state (memory, globals or data)");
            }
            Payload::StartSection { .. } => return refuse("a second module has a start function"),
            Payload::ElementSection(reader) => {
                if elements.is_some() || reader.count() != 1 {
                    return refuse("a glue module has several element segments");
                }
                for element in reader {
                    elements = Some(fixup_elements(element.map_err(parse_error)?)?);
                }
            }
            Payload::CodeSectionEntry(body) => {
                has_code = true;
                forwarding_slot(&body)?;
            }
            _ => {}
        }
    }
    match (defines_table, has_code, elements) {
        (true, _, None) => Ok(Glue::Shim),
        (false, false, Some(elements)) => {
            // Slot i of the table must hold function i of the imports list;
            // map each slot to the import's position among all imports.
            let func_positions: Vec<u32> =
                imports.iter().enumerate().filter(|(_, (_, f))| f.is_some()).map(|(i, _)| i as u32).collect();
            let mut slots = Vec::new();
            for f in elements {
                let Some(position) = func_positions.get(f as usize) else {
                    return refuse("a fixup element is not an imported function");
                };
                slots.push(*position);
            }
            Ok(Glue::Fixup { imports, elements: slots })
        }
        _ => refuse("a second module is neither a shim nor a fixup"),
    }
}

/// The functions a fixup's element segment places from slot 0 on (into the
/// imported table).
fn fixup_elements(element: wasmparser::Element<'_>) -> Result<Vec<u32>, NotCanonical> {
    let wasmparser::ElementKind::Active { table_index, offset_expr } = element.kind else {
        return refuse("a fixup element segment is not active");
    };
    if table_index.unwrap_or(0) != 0 {
        return refuse("a fixup fills another table");
    }
    let mut ops = offset_expr.get_operators_reader();
    let offset = match (ops.read(), ops.read()) {
        (Ok(Operator::I32Const { value: 0 }), Ok(Operator::End)) => 0,
        _ => return refuse("a fixup element segment does not start at slot 0"),
    };
    let _ = offset;
    let wasmparser::ElementItems::Functions(funcs) = element.items else {
        return refuse("a fixup element segment holds expressions");
    };
    funcs.into_iter().map(|f| f.map_err(parse_error)).collect()
}

/// Checks a shim function body: `local.get 0 … local.get n-1; i32.const
/// slot; call_indirect (table 0)`; returns the slot.
fn forwarding_slot(body: &wasmparser::FunctionBody<'_>) -> Result<u32, NotCanonical> {
    if body.get_locals_reader().map_err(parse_error)?.get_count() != 0 {
        return refuse("a shim function has locals");
    }
    let mut ops = body.get_operators_reader().map_err(parse_error)?;
    let mut next_local = 0u32;
    let mut slot = None;
    loop {
        let op = ops.read().map_err(parse_error)?;
        match (op, slot) {
            (Operator::LocalGet { local_index }, None) if local_index == next_local => next_local += 1,
            (Operator::I32Const { value }, None) if value >= 0 => slot = Some(value as u32),
            (Operator::CallIndirect { table_index: 0, .. }, Some(s)) => {
                return match (ops.read().map_err(parse_error)?, ops.eof()) {
                    (Operator::End, true) => Ok(s),
                    _ => refuse("a shim function does more than forward"),
                };
            }
            _ => return refuse("a shim function does more than forward"),
        }
    }
}

/// The table slot shim export `name` forwards to.
pub(super) fn shim_slot(shim: &[u8], name: &str) -> Result<u32, NotCanonical> {
    let mut imported_funcs = 0u32;
    let mut export = None;
    let mut bodies = Vec::new();
    for payload in Parser::new(0).parse_all(shim) {
        match payload.map_err(parse_error)? {
            Payload::ImportSection(reader) if reader.count() != 0 => imported_funcs = u32::MAX,
            Payload::ExportSection(reader) => {
                for e in reader {
                    let e = e.map_err(parse_error)?;
                    if e.name == name && e.kind == ExternalKind::Func {
                        export = Some(e.index);
                    }
                }
            }
            Payload::CodeSectionEntry(body) => bodies.push(forwarding_slot(&body)?),
            _ => {}
        }
    }
    if imported_funcs != 0 {
        return refuse("a shim imports");
    }
    export
        .and_then(|f| bodies.get(f as usize).copied())
        .ok_or_else(|| NotCanonical(format!("the shim has no `{name}`")))
}
