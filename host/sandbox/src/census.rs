//! What a component would take from the instance pool, counted at load: a
//! rule whose component carries more core instances, memories or tables
//! than a rule needs is refused, naming the limit, before it can crowd the
//! other rules out of the shared pool on any thread.

use wasmparser::{Parser, Payload};

use super::LoadError;

/// Core instances one component may create (a `no_std` rule built by the
/// SDK has 3: its module, the canonical-ABI shim and its fixup; a `std` one
/// with the WASI adapter about 22).
pub const CORE_INSTANCES_PER_COMPONENT_MAX: u32 = 32;
/// Linear memories one component may define (the pool's per-component cap).
pub const MEMORIES_PER_COMPONENT_MAX: u32 = 4;
/// Tables one component may define (the pool's per-component cap).
pub const TABLES_PER_COMPONENT_MAX: u32 = 8;

/// Counts what instantiating `bytes` would allocate and refuses it beyond
/// the limits. A component that does not parse is left to the compiler's
/// own error.
pub(super) fn check(bytes: &[u8]) -> Result<(), LoadError> {
    let (mut instances, mut memories, mut tables) = (0u32, 0u32, 0u32);
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else { return Ok(()) };
        match payload {
            Payload::InstanceSection(s) => instances = instances.saturating_add(s.count()),
            Payload::MemorySection(s) => memories = memories.saturating_add(s.count()),
            Payload::TableSection(s) => tables = tables.saturating_add(s.count()),
            _ => {}
        }
    }
    let refuse = |what: &str, n: u32, max: u32, name: &str| {
        Err(LoadError::Compile(format!(
            "the component has {n} {what}, more than a rule may have ({max}, sandbox::{name})"
        )))
    };
    if instances > CORE_INSTANCES_PER_COMPONENT_MAX {
        return refuse(
            "core instances",
            instances,
            CORE_INSTANCES_PER_COMPONENT_MAX,
            "CORE_INSTANCES_PER_COMPONENT_MAX",
        );
    }
    // Only defined memories and tables take pool slots; imported ones are
    // another module's.
    if memories > MEMORIES_PER_COMPONENT_MAX {
        return refuse("linear memories", memories, MEMORIES_PER_COMPONENT_MAX, "MEMORIES_PER_COMPONENT_MAX");
    }
    if tables > TABLES_PER_COMPONENT_MAX {
        return refuse("tables", tables, TABLES_PER_COMPONENT_MAX, "TABLES_PER_COMPONENT_MAX");
    }
    Ok(())
}
