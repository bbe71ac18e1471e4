//! The resettability check and the rewrite, on small hand-written modules.

use super::*;
use wasmparser::Payload;

const LIMIT: u64 = 1 << 30;

/// A module with the two exports the direct path needs, around `body`.
fn module(extra: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            {extra}
            (memory 1)
            (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 64)
            (func (export "rulehost:rules/rule@2.0.0#evaluate") (param i32 i32) (result i32) i32.const 0)
        )"#
    ))
    .unwrap()
}

fn refused(extra: &str) -> NotResettable {
    instrument(&module(extra), LIMIT).err().unwrap_or_else(|| panic!("accepted: {extra}"))
}

#[test]
fn state_the_host_cannot_restore_is_refused() {
    let table = "(table 2 funcref) (elem declare func 0)";
    for (extra, what) in [
        (format!("{table} (func (table.set 0 (i32.const 0) (ref.null func)))"), "table.set"),
        (format!("{table} (func (drop (table.grow 0 (ref.null func) (i32.const 1))))"), "table.grow"),
        (format!("{table} (func (table.fill 0 (i32.const 0) (ref.null func) (i32.const 1)))"), "table.fill"),
        ("(data \"x\") (func (data.drop 0))".to_string(), "data.drop"),
        ("(elem func 0) (func (elem.drop 0))".to_string(), "elem.drop"),
    ] {
        match refused(&extra) {
            NotResettable::Instruction { op, .. } => assert_eq!(op, what),
            other => panic!("{what}: {other}"),
        }
    }
    assert!(matches!(refused("(memory 1)"), NotResettable::Features(_) | NotResettable::Memory(_)));
    assert!(matches!(refused("(import \"m\" \"g\" (global (mut i32)))"), NotResettable::Import("global")));
    assert!(matches!(refused("(import \"m\" \"t\" (table 1 funcref))"), NotResettable::Import("table")));
}

#[test]
fn features_outside_the_set_are_refused() {
    // Threads (shared memory and atomics) and exceptions are not in the set.
    let shared = wat::parse_str(
        r#"(module (memory 1 1 shared)
            (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 64)
            (func (export "rulehost:rules/rule@2.0.0#evaluate") (param i32 i32) (result i32) i32.const 0))"#,
    )
    .unwrap();
    assert!(matches!(instrument(&shared, LIMIT), Err(NotResettable::Features(_))));
    let exceptions = module("(tag $t) (func (throw $t))");
    assert!(matches!(instrument(&exceptions, LIMIT), Err(NotResettable::Features(_))));
}

#[test]
fn every_store_and_bulk_write_is_marked() {
    let source = module(
        r#"(global $g (mut i32) (i32.const 7))
           (func (param i32 i64)
             (i32.store offset=4 (local.get 0) (i32.const 1))
             (i64.store offset=100000 (i32.add (local.get 0) (i32.const 8)) (local.get 1))
             (memory.fill (local.get 0) (i32.const 0) (i32.const 16))
             (memory.copy (local.get 0) (i32.const 0) (i32.add (local.get 0) (i32.const 300))))"#,
    );
    let out = instrument(&source, LIMIT).unwrap();
    assert_eq!(out.mutable_globals, vec![0]);
    assert!(out.call_restores_globals);
    // Count the stores into the dirty map (memory 1) and the calls of the
    // range marker in the rewritten function.
    let mut marks = 0;
    let mut range_marks = 0;
    for payload in Parser::new(0).parse_all(&out.bytes) {
        if let Ok(Payload::CodeSectionEntry(body)) = payload {
            let mut ops = body.get_operators_reader().unwrap();
            while !ops.eof() {
                match ops.read().unwrap() {
                    Operator::I32Store16 { memarg } if memarg.memory == 1 => marks += 1,
                    Operator::Call { .. } => range_marks += 1,
                    _ => {}
                }
            }
        }
    }
    // Two stores and a short fill marked inline; the variable-length copy
    // through the range marker (plus the entry point's own calls).
    assert_eq!(marks, 3, "inline marks");
    assert!(range_marks >= 2, "range marks and the entry point's calls: {range_marks}");
}

#[test]
fn a_start_function_leaves_the_globals_to_the_host() {
    let out = instrument(
        &module("(global (mut i32) (i32.const 1)) (func $s (global.set 0 (i32.const 2))) (start $s)"),
        LIMIT,
    )
    .unwrap();
    assert!(!out.call_restores_globals);
}
