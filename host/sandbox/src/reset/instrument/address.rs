//! Where a store's address comes from: a tiny backwards walk over the
//! straight-line instructions before it, so that a mark can read the address
//! from the local that still holds it instead of saving it to temporaries.

use std::collections::VecDeque;

use wasmparser::Operator;

use super::CHUNK_BYTES;

/// The largest static offset a store may have for its mark to skip adding it
/// (its two chunks still cover the written bytes; see `cheap_mark`).
pub(super) const CHEAP_OFFSET_MAX: u64 = CHUNK_BYTES - 16;
/// Instructions remembered to find where a store's address came from.
pub(super) const RECENT_MAX: usize = 16;

pub(super) fn push_recent<'a>(recent: &mut VecDeque<Operator<'a>>, op: Operator<'a>) {
    if simple_arity(&op).is_none() {
        // Control flow, calls and the like: values before them are not
        // followed.
        recent.clear();
        return;
    }
    if recent.len() == RECENT_MAX {
        recent.pop_front();
    }
    recent.push_back(op);
}

/// The local that holds, unchanged, the operand `depth` below the top of
/// the stack (0 = top) after the `recent` instructions: it was pushed by
/// `local.get L` (or `local.tee L`) and `L` was not written since.
pub(super) fn destination_local(recent: &VecDeque<Operator<'_>>, depth: u32) -> Option<u32> {
    let mut k = depth;
    let mut written: Vec<u32> = Vec::new();
    for op in recent.iter().rev() {
        let (pops, pushes) = simple_arity(op)?;
        if k < pushes {
            return match op {
                Operator::LocalGet { local_index } | Operator::LocalTee { local_index }
                    if !written.contains(local_index) =>
                {
                    Some(*local_index)
                }
                _ => None,
            };
        }
        if let Operator::LocalSet { local_index } | Operator::LocalTee { local_index } = op {
            written.push(*local_index);
        }
        k = k - pushes + pops;
    }
    None
}

/// (values popped, values pushed) of the straight-line instructions the
/// address search looks through; `None` for anything else.
fn simple_arity(op: &Operator<'_>) -> Option<(u32, u32)> {
    use Operator as O;
    Some(match op {
        O::Nop => (0, 0),
        O::LocalGet { .. }
        | O::GlobalGet { .. }
        | O::I32Const { .. }
        | O::I64Const { .. }
        | O::F32Const { .. }
        | O::F64Const { .. }
        | O::MemorySize { .. } => (0, 1),
        O::LocalSet { .. } | O::GlobalSet { .. } | O::Drop => (1, 0),
        O::LocalTee { .. }
        | O::I32Load { .. }
        | O::I32Load8S { .. }
        | O::I32Load8U { .. }
        | O::I32Load16S { .. }
        | O::I32Load16U { .. }
        | O::I64Load { .. }
        | O::I64Load8S { .. }
        | O::I64Load8U { .. }
        | O::I64Load16S { .. }
        | O::I64Load16U { .. }
        | O::I64Load32S { .. }
        | O::I64Load32U { .. }
        | O::F32Load { .. }
        | O::F64Load { .. }
        | O::I32Eqz
        | O::I64Eqz
        | O::I32Clz
        | O::I32Ctz
        | O::I32Popcnt
        | O::I64Clz
        | O::I64Ctz
        | O::I64Popcnt
        | O::I32WrapI64
        | O::I64ExtendI32S
        | O::I64ExtendI32U
        | O::I32Extend8S
        | O::I32Extend16S
        | O::I64Extend8S
        | O::I64Extend16S
        | O::I64Extend32S => (1, 1),
        O::I32Add
        | O::I32Sub
        | O::I32Mul
        | O::I32DivS
        | O::I32DivU
        | O::I32RemS
        | O::I32RemU
        | O::I32And
        | O::I32Or
        | O::I32Xor
        | O::I32Shl
        | O::I32ShrS
        | O::I32ShrU
        | O::I32Rotl
        | O::I32Rotr
        | O::I32Eq
        | O::I32Ne
        | O::I32LtS
        | O::I32LtU
        | O::I32GtS
        | O::I32GtU
        | O::I32LeS
        | O::I32LeU
        | O::I32GeS
        | O::I32GeU
        | O::I64Add
        | O::I64Sub
        | O::I64Mul
        | O::I64DivS
        | O::I64DivU
        | O::I64RemS
        | O::I64RemU
        | O::I64And
        | O::I64Or
        | O::I64Xor
        | O::I64Shl
        | O::I64ShrS
        | O::I64ShrU
        | O::I64Rotl
        | O::I64Rotr
        | O::I64Eq
        | O::I64Ne
        | O::I64LtS
        | O::I64LtU
        | O::I64GtS
        | O::I64GtU
        | O::I64LeS
        | O::I64LeU
        | O::I64GeS
        | O::I64GeU => (2, 1),
        O::Select => (3, 1),
        O::I32Store { .. }
        | O::I32Store8 { .. }
        | O::I32Store16 { .. }
        | O::I64Store { .. }
        | O::I64Store8 { .. }
        | O::I64Store16 { .. }
        | O::I64Store32 { .. }
        | O::F32Store { .. }
        | O::F64Store { .. } => (2, 0),
        O::MemoryFill { .. } | O::MemoryCopy { .. } => (3, 0),
        _ => return None,
    })
}
