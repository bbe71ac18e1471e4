//! Finds a rule component's main core module and proves that the component
//! is nothing but that module wired to the canonical ABI, so that the host
//! may run the module directly, answering its imports itself.
//!
//! This is the shape `wit-component` (behind `wasm-component-ld`) gives a
//! rule: the main module; a *shim* module whose functions forward through a
//! table to the lowered host imports (the lowering needs the main module's
//! memory and `cabi_realloc`, which exist only once it is instantiated); a
//! *fixup* module whose element segment fills that table; and lifts of the
//! main module's exports, possibly re-exported through a nested component
//! that only ascribes types. The proof resolves each of the main module's
//! imports to the lowering of the component import of the same name, with
//! the main module's memory and allocator and UTF-8 strings, and `evaluate`
//! to the lift of the main module's export with the same. Any other
//! structure (another stateful module, a start function, a nested
//! component with modules, other string encodings, async) is refused, and
//! the rule runs as a component.

mod glue;

use std::collections::HashMap;
use std::ops::Range;

use glue::{Glue, glue_kind, module_exports, module_imports, shim_slot};
use wasmparser::{
    CanonicalFunction, CanonicalOption, ComponentAlias, ComponentExternalKind, ComponentOuterAliasKind,
    ComponentTypeRef, ExternalKind, Instance, Parser, Payload,
};

/// Why a component does not have the shape the host can run directly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotCanonical(pub String);

fn refuse<T>(why: impl Into<String>) -> Result<T, NotCanonical> {
    Err(NotCanonical(why.into()))
}

/// What the host needs to run the main module directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Byte range of the main core module within the component.
    pub main_module: Range<usize>,
    /// The main module's imports, each resolved to the host function of the
    /// same name in `host_interface`.
    pub imports: Vec<String>,
}

#[derive(Debug)]
enum CoreInstance<'a> {
    Instantiate { module: u32, args: Vec<(&'a str, u32)> },
    FromExports(Vec<(&'a str, ExternalKind, u32)>),
}

#[derive(Debug, Clone)]
enum CoreFunc<'a> {
    Alias { instance: u32, name: &'a str },
    Lower { func: u32, options: Vec<CanonicalOption> },
    Other,
}

#[derive(Debug, Clone)]
enum Func<'a> {
    Import,
    InstanceExport { instance: u32, name: &'a str },
    Lift { core_func: u32, options: Vec<CanonicalOption> },
    Export(u32),
    Other,
}

#[derive(Debug)]
enum ComponentInstance<'a> {
    Import(&'a str),
    Instantiate { component: u32, args: Vec<(&'a str, ComponentExternalKind, u32)> },
    FromExports(Vec<(&'a str, ComponentExternalKind, u32)>),
    Export(u32),
    Other,
}

/// A nested component that only re-exports its imports (the type
/// ascription `wit-component` adds around exported interfaces).
#[derive(Debug, Default)]
struct Nested<'a> {
    /// Import names of its function index space, in order.
    func_imports: Vec<&'a str>,
    /// Exported functions: name → index in its function space.
    func_exports: HashMap<&'a str, u32>,
    /// Whether it does anything but import and export.
    pure: bool,
}

#[derive(Default)]
struct Spaces<'a> {
    modules: Vec<Option<Range<usize>>>,
    core_instances: Vec<CoreInstance<'a>>,
    core_funcs: Vec<CoreFunc<'a>>,
    core_memories: Vec<(u32, &'a str)>,
    core_tables: Vec<(u32, &'a str)>,
    funcs: Vec<Func<'a>>,
    instances: Vec<ComponentInstance<'a>>,
    components: Vec<Option<Nested<'a>>>,
    exports: Vec<(&'a str, ComponentExternalKind, u32)>,
    has_start: bool,
}

fn parse_error(e: wasmparser::BinaryReaderError) -> NotCanonical {
    NotCanonical(format!("unreadable component: {}", e.message()))
}

fn collect<'a>(bytes: &'a [u8]) -> Result<Spaces<'a>, NotCanonical> {
    let mut s = Spaces::default();
    // Depth 1 is the component itself; depth 2 a nested module or component.
    let mut depth = 0usize;
    let mut nested: Option<Nested<'a>> = None;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(parse_error)?;
        match &payload {
            Payload::Version { .. } => {
                depth += 1;
                continue;
            }
            Payload::End(_) => {
                if depth == 2
                    && let Some(n) = nested.take()
                {
                    s.components.push(Some(n));
                }
                depth = depth.saturating_sub(1);
                continue;
            }
            _ => {}
        }
        if depth > 2 {
            if let Some(n) = nested.as_mut() {
                n.pure = false;
            }
            continue;
        }
        if depth == 2 {
            if let Some(n) = nested.as_mut() {
                nested_payload(n, payload)?;
            }
            continue;
        }
        match payload {
            Payload::ModuleSection { unchecked_range, .. } => {
                if unchecked_range.end > bytes.len() {
                    return refuse("a module section runs past the end");
                }
                s.modules.push(Some(unchecked_range));
            }
            Payload::ComponentSection { .. } => {
                nested = Some(Nested { pure: true, ..Nested::default() });
            }
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    s.core_instances.push(match instance.map_err(parse_error)? {
                        Instance::Instantiate { module_index, args } => CoreInstance::Instantiate {
                            module: module_index,
                            args: args.iter().map(|a| (a.name, a.index)).collect(),
                        },
                        Instance::FromExports(exports) => {
                            CoreInstance::FromExports(exports.iter().map(|e| (e.name, e.kind, e.index)).collect())
                        }
                    });
                }
            }
            Payload::ComponentInstanceSection(reader) => {
                for instance in reader {
                    s.instances.push(match instance.map_err(parse_error)? {
                        wasmparser::ComponentInstance::Instantiate { component_index, args } => {
                            ComponentInstance::Instantiate {
                                component: component_index,
                                args: args.iter().map(|a| (a.name, a.kind, a.index)).collect(),
                            }
                        }
                        wasmparser::ComponentInstance::FromExports(exports) => ComponentInstance::FromExports(
                            exports.iter().map(|e| (e.name.name, e.kind, e.index)).collect(),
                        ),
                    });
                }
            }
            Payload::ComponentAliasSection(reader) => {
                for alias in reader {
                    match alias.map_err(parse_error)? {
                        ComponentAlias::InstanceExport { kind, instance_index, name } => match kind {
                            ComponentExternalKind::Func => {
                                s.funcs.push(Func::InstanceExport { instance: instance_index, name })
                            }
                            ComponentExternalKind::Instance => s.instances.push(ComponentInstance::Other),
                            ComponentExternalKind::Module => s.modules.push(None),
                            ComponentExternalKind::Component => s.components.push(None),
                            ComponentExternalKind::Type | ComponentExternalKind::Value => {}
                        },
                        ComponentAlias::CoreInstanceExport { kind, instance_index, name } => match kind {
                            ExternalKind::Func | ExternalKind::FuncExact => {
                                s.core_funcs.push(CoreFunc::Alias { instance: instance_index, name })
                            }
                            ExternalKind::Memory => s.core_memories.push((instance_index, name)),
                            ExternalKind::Table => s.core_tables.push((instance_index, name)),
                            ExternalKind::Global | ExternalKind::Tag => {}
                        },
                        ComponentAlias::Outer { kind, .. } => match kind {
                            ComponentOuterAliasKind::CoreModule => s.modules.push(None),
                            ComponentOuterAliasKind::Component => s.components.push(None),
                            ComponentOuterAliasKind::CoreType | ComponentOuterAliasKind::Type => {}
                        },
                    }
                }
            }
            Payload::ComponentCanonicalSection(reader) => {
                for canon in reader {
                    match canon.map_err(parse_error)? {
                        CanonicalFunction::Lift { core_func_index, options, .. } => {
                            s.funcs.push(Func::Lift { core_func: core_func_index, options: options.into_vec() })
                        }
                        CanonicalFunction::Lower { func_index, options } => {
                            s.core_funcs.push(CoreFunc::Lower { func: func_index, options: options.into_vec() })
                        }
                        _ => s.core_funcs.push(CoreFunc::Other),
                    }
                }
            }
            Payload::ComponentImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(parse_error)?;
                    match import.ty {
                        ComponentTypeRef::Func(_) => s.funcs.push(Func::Import),
                        ComponentTypeRef::Instance(_) => s.instances.push(ComponentInstance::Import(import.name.name)),
                        ComponentTypeRef::Module(_) => s.modules.push(None),
                        ComponentTypeRef::Component(_) => s.components.push(None),
                        ComponentTypeRef::Type(_) | ComponentTypeRef::Value(_) => {}
                    }
                }
            }
            Payload::ComponentExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(parse_error)?;
                    s.exports.push((export.name.name, export.kind, export.index));
                    match export.kind {
                        ComponentExternalKind::Func => s.funcs.push(Func::Export(export.index)),
                        ComponentExternalKind::Instance => s.instances.push(ComponentInstance::Export(export.index)),
                        ComponentExternalKind::Module => s.modules.push(None),
                        ComponentExternalKind::Component => s.components.push(None),
                        ComponentExternalKind::Type | ComponentExternalKind::Value => {}
                    }
                }
            }
            Payload::ComponentStartSection { .. } => s.has_start = true,
            _ => {}
        }
    }
    // Component functions other than the tracked kinds keep their index.
    let _ = Func::Other;
    Ok(s)
}

fn nested_payload<'a>(n: &mut Nested<'a>, payload: Payload<'a>) -> Result<(), NotCanonical> {
    match payload {
        Payload::ComponentImportSection(reader) => {
            for import in reader {
                let import = import.map_err(parse_error)?;
                match import.ty {
                    ComponentTypeRef::Func(_) => n.func_imports.push(import.name.name),
                    ComponentTypeRef::Type(_) => {}
                    _ => n.pure = false,
                }
            }
        }
        Payload::ComponentExportSection(reader) => {
            for export in reader {
                let export = export.map_err(parse_error)?;
                match export.kind {
                    ComponentExternalKind::Func => {
                        n.func_exports.insert(export.name.name, export.index);
                        // An export adds to the function index space.
                        n.func_imports.push("");
                    }
                    ComponentExternalKind::Type => {}
                    _ => n.pure = false,
                }
            }
        }
        Payload::ComponentTypeSection(_) | Payload::CustomSection(_) => {}
        Payload::ComponentAliasSection(reader) => {
            // Only type aliases keep it pure.
            for alias in reader {
                match alias.map_err(parse_error)? {
                    ComponentAlias::Outer {
                        kind: ComponentOuterAliasKind::Type | ComponentOuterAliasKind::CoreType,
                        ..
                    } => {}
                    ComponentAlias::InstanceExport { kind: ComponentExternalKind::Type, .. } => {}
                    _ => n.pure = false,
                }
            }
        }
        _ => n.pure = false,
    }
    Ok(())
}

/// Finds the main module of `component` and proves its wiring for the
/// interfaces `host` (imported, e.g. `rulehost:rules/host@2.0.0`) and `rule`
/// (exported, with function `evaluate`).
pub fn analyze(component: &[u8], host: &str, rule: &str) -> Result<Shape, NotCanonical> {
    let s = collect(component)?;
    if s.has_start {
        return refuse("it has a component start function");
    }
    let evaluate_export = format!("{rule}#evaluate");
    // The main module: the one exporting `rule#evaluate`.
    let mut main = None;
    for (i, range) in s.modules.iter().enumerate() {
        let Some(range) = range else { continue };
        if module_exports(&component[range.clone()])?.iter().any(|(name, _)| *name == evaluate_export) {
            if main.is_some() {
                return refuse("two modules export the rule");
            }
            main = Some(i as u32);
        }
    }
    let Some(main) = main else { return refuse("no core module exports the rule") };
    let main_range = s.modules[main as usize].clone().unwrap_or_default();
    let main_bytes = &component[main_range.clone()];

    // Every core instance is the main module (once), a shim, a fixup, or a
    // bag of exports.
    let mut main_instance = None;
    for (i, instance) in s.core_instances.iter().enumerate() {
        if let CoreInstance::Instantiate { module, .. } = instance {
            if *module == main {
                if main_instance.is_some() {
                    return refuse("the main module is instantiated twice");
                }
                main_instance = Some(i as u32);
            } else {
                let Some(Some(range)) = s.modules.get(*module as usize) else {
                    return refuse("it instantiates an imported or aliased module");
                };
                glue_kind(&component[range.clone()])?;
            }
        }
    }
    let Some(main_instance) = main_instance else { return refuse("the main module is never instantiated") };
    let ctx = Resolver { s: &s, component, main_instance };

    // Imports: each resolves to the lowering of the same-named host function.
    let CoreInstance::Instantiate { args, .. } = &s.core_instances[main_instance as usize] else {
        return refuse("internal: main instance");
    };
    let mut imports = Vec::new();
    for (module, name) in module_imports(main_bytes)? {
        if module != host {
            return refuse(format!("the main module imports `{module}`, not only `{host}`"));
        }
        let Some((_, arg)) = args.iter().find(|(n, _)| *n == module) else {
            return refuse(format!("the main module's import `{module}` is not supplied"));
        };
        let Some(CoreInstance::FromExports(items)) = s.core_instances.get(*arg as usize) else {
            return refuse(format!("`{module}` is not supplied as a bag of functions"));
        };
        let Some((_, _, func)) = items.iter().find(|(n, k, _)| *n == name && *k == ExternalKind::Func) else {
            return refuse(format!("`{module}#{name}` is not supplied"));
        };
        let lowered = ctx.lowered(*func)?;
        ctx.host_import(lowered, host, name)?;
        imports.push(name.to_string());
    }

    // The `evaluate` export: the lift of the main module's export.
    let Some((_, kind, index)) = s.exports.iter().find(|(n, _, _)| *n == rule) else {
        return refuse(format!("it does not export `{rule}`"));
    };
    if *kind != ComponentExternalKind::Instance {
        return refuse(format!("`{rule}` is not exported as an instance"));
    }
    let func = ctx.instance_func(*index, "evaluate", 0)?;
    let (core_func, options) = ctx.lift(func, 0)?;
    ctx.main_export(core_func, &evaluate_export)?;
    ctx.options(&options, true)?;
    Ok(Shape { main_module: main_range, imports })
}

struct Resolver<'a, 'b> {
    s: &'b Spaces<'a>,
    component: &'a [u8],
    main_instance: u32,
}

/// Bound on alias chains followed (exports of exports).
const CHAIN_MAX: usize = 16;

impl Resolver<'_, '_> {
    /// The function `name` of component instance `instance`.
    fn instance_func(&self, instance: u32, name: &str, depth: usize) -> Result<u32, NotCanonical> {
        if depth > CHAIN_MAX {
            return refuse("alias chain too long");
        }
        match self.s.instances.get(instance as usize) {
            Some(ComponentInstance::Export(i)) => self.instance_func(*i, name, depth + 1),
            Some(ComponentInstance::FromExports(items)) => items
                .iter()
                .find(|(n, k, _)| *n == name && *k == ComponentExternalKind::Func)
                .map(|(_, _, f)| *f)
                .ok_or_else(|| NotCanonical(format!("the rule instance has no `{name}`"))),
            Some(ComponentInstance::Instantiate { component, args }) => {
                let Some(Some(nested)) = self.s.components.get(*component as usize) else {
                    return refuse("the rule is exported through an unknown component");
                };
                if !nested.pure {
                    return refuse("the rule is exported through a component that does more than re-export");
                }
                let Some(index) = nested.func_exports.get(name) else {
                    return refuse(format!("the re-exporting component has no `{name}`"));
                };
                let Some(import) = nested.func_imports.get(*index as usize).filter(|n| !n.is_empty()) else {
                    return refuse("the re-exporting component exports something it did not import");
                };
                args.iter()
                    .find(|(n, k, _)| n == import && *k == ComponentExternalKind::Func)
                    .map(|(_, _, f)| *f)
                    .ok_or_else(|| NotCanonical(format!("`{import}` is not supplied to the re-exporting component")))
            }
            _ => refuse("the rule instance is not built from the module's exports"),
        }
    }

    /// The core function and options a component function lifts.
    fn lift(&self, func: u32, depth: usize) -> Result<(u32, Vec<CanonicalOption>), NotCanonical> {
        if depth > CHAIN_MAX {
            return refuse("alias chain too long");
        }
        match self.s.funcs.get(func as usize) {
            Some(Func::Export(f)) => self.lift(*f, depth + 1),
            Some(Func::Lift { core_func, options }) => Ok((*core_func, options.clone())),
            _ => refuse("`evaluate` is not a lifted core function"),
        }
    }

    /// Whether core function `func` is the main instance's export `name`.
    fn main_export(&self, func: u32, name: &str) -> Result<(), NotCanonical> {
        match self.s.core_funcs.get(func as usize) {
            Some(CoreFunc::Alias { instance, name: n }) if *instance == self.main_instance && *n == name => Ok(()),
            _ => refuse(format!("`{name}` is not lifted from the main module's export")),
        }
    }

    fn is_main_memory(&self, memory: u32) -> bool {
        self.s.core_memories.get(memory as usize).is_some_and(|(i, n)| *i == self.main_instance && *n == "memory")
    }

    /// Checks canonical options: UTF-8, the main module's memory and
    /// `cabi_realloc`, no async; a post-return only where `lift`.
    fn options(&self, options: &[CanonicalOption], lift: bool) -> Result<(), NotCanonical> {
        for option in options {
            match option {
                CanonicalOption::UTF8 => {}
                CanonicalOption::Memory(m) if self.is_main_memory(*m) => {}
                CanonicalOption::Realloc(f) => self.main_export(*f, "cabi_realloc")?,
                CanonicalOption::PostReturn(f) if lift => match self.s.core_funcs.get(*f as usize) {
                    Some(CoreFunc::Alias { instance, .. }) if *instance == self.main_instance => {}
                    _ => return refuse("the post-return function is not the main module's"),
                },
                other => return refuse(format!("canonical option {other:?} is not supported on the direct path")),
            }
        }
        Ok(())
    }

    /// Follows a core function through a shim and its fixup to the lowering
    /// it stands for; returns the lowered component function and options.
    fn lowered(&self, func: u32) -> Result<(u32, Vec<CanonicalOption>), NotCanonical> {
        match self.s.core_funcs.get(func as usize) {
            Some(CoreFunc::Lower { func, options }) => Ok((*func, options.clone())),
            Some(CoreFunc::Alias { instance, name }) => {
                let Some(CoreInstance::Instantiate { module, args }) = self.s.core_instances.get(*instance as usize)
                else {
                    return refuse("an import comes from an unknown instance");
                };
                if !args.is_empty() {
                    return refuse("an import comes from a module instantiated with imports");
                }
                let shim = self.module(*module)?;
                let slot = shim_slot(shim, name)?;
                self.fixup_target(*instance, slot)
            }
            _ => refuse("an import is neither a lowering nor a shim"),
        }
    }

    fn module(&self, index: u32) -> Result<&[u8], NotCanonical> {
        match self.s.modules.get(index as usize) {
            Some(Some(range)) => Ok(&self.component[range.clone()]),
            _ => refuse("unknown module"),
        }
    }

    /// The lowering the fixup instance places in slot `slot` of the table
    /// exported (as `$imports`) by shim instance `shim`.
    fn fixup_target(&self, shim: u32, slot: u32) -> Result<(u32, Vec<CanonicalOption>), NotCanonical> {
        let mut found = None;
        for (i, instance) in self.s.core_instances.iter().enumerate() {
            let CoreInstance::Instantiate { module, args } = instance else { continue };
            if i as u32 == self.main_instance {
                continue;
            }
            // Every other instantiated module was checked to be glue.
            let Glue::Fixup { imports, elements } = glue_kind(self.module(*module)?)? else { continue };
            let [(_, bag)] = args.as_slice() else { return refuse("a fixup is instantiated with several bags") };
            let Some(CoreInstance::FromExports(items)) = self.s.core_instances.get(*bag as usize) else {
                return refuse("a fixup is not instantiated with a bag of exports");
            };
            // The fixup must fill this shim's table.
            let table = items.iter().find(|(_, k, _)| *k == ExternalKind::Table);
            let Some((table_name, _, table)) = table else { continue };
            let Some((import, _)) = imports.iter().find(|(_, kind)| kind.is_none()) else { continue };
            if table_name != import {
                continue;
            }
            match self.s.core_tables.get(*table as usize) {
                Some((i, _)) if *i == shim => {}
                _ => continue,
            }
            let Some(func_index) = elements.get(slot as usize) else {
                return refuse("a shim slot is never filled");
            };
            let Some((name, _)) = imports.get(*func_index as usize) else {
                return refuse("a shim slot holds no import");
            };
            let Some((_, _, func)) = items.iter().find(|(n, k, _)| n == name && *k == ExternalKind::Func) else {
                return refuse("a fixup import is not supplied");
            };
            if found.is_some() {
                return refuse("a shim table is filled twice");
            }
            found = Some(match self.s.core_funcs.get(*func as usize) {
                Some(CoreFunc::Lower { func, options }) => (*func, options.clone()),
                _ => return refuse("a shim slot holds something other than a lowering"),
            });
        }
        found.ok_or_else(|| NotCanonical("a shim table is never filled".into()))
    }

    /// Checks that a lowering is of the host function `host#name`, with the
    /// main module's memory and allocator.
    fn host_import(
        &self,
        (func, options): (u32, Vec<CanonicalOption>),
        host: &str,
        name: &str,
    ) -> Result<(), NotCanonical> {
        let Some(Func::InstanceExport { instance, name: n }) = self.s.funcs.get(func as usize) else {
            return refuse(format!("`{name}` does not lower a host function"));
        };
        match self.s.instances.get(*instance as usize) {
            Some(ComponentInstance::Import(i)) if *i == host && *n == name => {}
            _ => return refuse(format!("`{name}` is wired to another function")),
        }
        self.options(&options, false)
    }
}
