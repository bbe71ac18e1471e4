//! The rulehost guest SDK: everything a rule author needs to write a rule in
//! plain Rust, unit-test it natively, and build it to a Wasm component.
//!
//! A rule is a type implementing [`ValidationRule`] or [`RiskRule`], exported
//! with [`export_validation_rule!`] or [`export_risk_rule!`]. It reads the
//! world only through the functions of this crate ([`params`], [`history`],
//! [`account`], [`list_contains`], [`log`]); there is no clock, no
//! randomness, no file or network access.
//!
//! ```
//! use rulehost_guest::{RiskRule, RuleInfo, Score, Transaction, ParamType, params};
//!
//! /// Scores transactions above a configured amount.
//! pub struct BigSpender;
//!
//! impl RiskRule for BigSpender {
//!     fn declare() -> RuleInfo {
//!         RuleInfo::new().param("limit", ParamType::Decimal)
//!     }
//!
//!     fn score(tx: &Transaction) -> Score {
//!         if tx.amount >= params::decimal("limit") {
//!             Score::new(300, "BIG_SPENDER")
//!         } else {
//!             Score::zero()
//!         }
//!     }
//! }
//!
//! rulehost_guest::export_risk_rule!(BigSpender);
//! ```
//!
//! On the host target (`cargo test`), the capability functions answer from a
//! [`testing::FakeHost`] installed by the test, so rules are unit-tested
//! natively without Wasm. Built for `wasm32-wasip2`, they call the real host.
//!
//! # `std` or `no_std`
//!
//! A rule may use `std` freely: whatever WASI its toolchain imports, the host
//! links deny-all, deterministic stand-ins. A rule that needs only `alloc`
//! (strings, vectors, `format!`) can instead be `no_std` inside Wasm — no
//! WASI imports at all, a module a third the size, and cheaper calls; the
//! shipped rules do this:
//!
//! ```text
//! #![cfg_attr(target_arch = "wasm32", no_std)]
#![warn(missing_docs)]
//! use rulehost_guest::prelude::*;
//! // ... the rule ...
//! rulehost_guest::export_risk_rule!(MyRule);
//! rulehost_guest::no_std_runtime!();
//! ```

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

mod convert;
#[doc(hidden)]
pub mod encoding;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
mod rule;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;

pub use rule::{ParamType, RiskRule, RuleInfo, Score, Validation, ValidationRule};
pub use rust_decimal::Decimal;
pub use types::{Account, AccountStatus, HistoryStats, LogLevel, Timestamp, Transaction, TransactionKind};

/// Raw bindings generated from the WIT contract. Not part of the public API:
/// use the functions and types of this crate instead.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wit {
    wit_bindgen::generate!({
        world: "rule-world",
        path: "../wit/rulehost.wit",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "rulehost_guest::wit",
    });
}

/// What a `no_std` rule needs from `alloc`, in one import:
/// `use rulehost_guest::prelude::*;` (in a `std` build these are the usual
/// prelude items, so the same code compiles both ways).
pub mod prelude {
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

/// Implementation details used by the export macros.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::libc_alloc::{RuleAlloc, cabi_realloc};
    #[cfg(target_arch = "wasm32")]
    pub use crate::rule::wasm::{describe, evaluate_risk, evaluate_validation, report_panic};
    pub use alloc::vec::Vec;
}

/// Inside Wasm the SDK links wasi-libc, as `std` does: it provides
/// `memcpy`/`memcmp` and the `malloc` a `no_std` rule falls back on; none
/// of these use WASI.
#[cfg(target_arch = "wasm32")]
mod libc_alloc {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::{Cell, UnsafeCell};

    #[link(name = "c")]
    unsafe extern "C" {
        fn malloc(size: usize) -> *mut u8;
        fn aligned_alloc(align: usize, size: usize) -> *mut u8;
        fn realloc(ptr: *mut u8, size: usize) -> *mut u8;
        fn free(ptr: *mut u8);
    }

    /// The component model's allocation entry point for a `no_std` rule
    /// (with `std`, wasi-libc exports it), over the Rust global allocator.
    ///
    /// # Safety
    /// Called only by the canonical ABI, with a pointer/length/alignment it
    /// obtained from an earlier call.
    pub unsafe fn cabi_realloc(old_ptr: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
        let ptr = unsafe {
            if old_len == 0 {
                if new_len == 0 {
                    return align as *mut u8;
                }
                alloc::alloc::alloc(Layout::from_size_align_unchecked(new_len, align))
            } else {
                alloc::alloc::realloc(old_ptr, Layout::from_size_align_unchecked(old_len, align), new_len)
            }
        };
        if ptr.is_null() {
            core::arch::wasm32::unreachable()
        }
        ptr
    }

    /// The alignment wasi-libc's `malloc` guarantees.
    const MALLOC_ALIGN: usize = 8;

    /// Bytes of the bump arena that serves a call's allocations before
    /// `malloc` does.
    pub const ARENA_BYTES: usize = 32 * 1024;

    #[repr(C, align(16))]
    struct ArenaBytes(UnsafeCell<[u8; ARENA_BYTES]>);

    /// A bump arena in the module's own memory. The host gives every call an
    /// instance in its post-instantiation state (a fresh one, or one reset to
    /// it), so the arena starts empty on every call; a call's allocations
    /// cost a pointer bump and its frees nothing. What does not fit goes to
    /// `malloc`, so a rule that allocates more still works.
    struct Arena {
        bytes: ArenaBytes,
        /// Offset of the first free byte.
        next: Cell<usize>,
    }

    // SAFETY: a Wasm rule instance is single-threaded (no shared memory).
    unsafe impl Sync for Arena {}

    static ARENA: Arena = Arena { bytes: ArenaBytes(UnsafeCell::new([0; ARENA_BYTES])), next: Cell::new(0) };

    impl Arena {
        #[inline]
        fn base(&self) -> usize {
            self.bytes.0.get() as usize
        }

        #[inline]
        fn contains(&self, ptr: *mut u8) -> bool {
            let p = ptr as usize;
            p >= self.base() && p < self.base() + ARENA_BYTES
        }

        #[inline]
        fn alloc(&self, layout: Layout) -> Option<*mut u8> {
            let base = self.base();
            let start = (base + self.next.get()).checked_next_multiple_of(layout.align())?;
            let end = start.checked_add(layout.size())?;
            if end > base + ARENA_BYTES {
                return None;
            }
            self.next.set(end - base);
            Some(start as *mut u8)
        }

        /// Whether `ptr` with `size` bytes is the latest allocation.
        #[inline]
        fn is_last(&self, ptr: *mut u8, size: usize) -> bool {
            ptr as usize + size == self.base() + self.next.get()
        }
    }

    /// The global allocator of a `no_std` rule: the bump arena first, then
    /// wasi-libc's `malloc` (what `std` uses on Wasm).
    pub struct RuleAlloc;

    unsafe fn libc_alloc(layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN && layout.align() <= layout.size() {
            unsafe { malloc(layout.size()) }
        } else {
            unsafe { aligned_alloc(layout.align(), layout.size().next_multiple_of(layout.align())) }
        }
    }

    // SAFETY: arena blocks are disjoint, aligned and inside the arena; the
    // rest forwards to the C allocator, honouring alignment as std's System
    // allocator does on wasm32-wasip2.
    unsafe impl GlobalAlloc for RuleAlloc {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            match ARENA.alloc(layout) {
                Some(ptr) => ptr,
                None => unsafe { libc_alloc(layout) },
            }
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if ARENA.contains(ptr) {
                // Only the latest block is given back (a stack discipline
                // covers temporaries); the rest is freed with the instance.
                if ARENA.is_last(ptr, layout.size()) {
                    ARENA.next.set(ptr as usize - ARENA.base());
                }
            } else {
                unsafe { free(ptr) }
            }
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if ARENA.contains(ptr) {
                let offset = ptr as usize - ARENA.base();
                if ARENA.is_last(ptr, layout.size()) && new_size <= ARENA_BYTES - offset {
                    ARENA.next.set(offset + new_size);
                    return ptr;
                }
                if new_size <= layout.size() {
                    return ptr;
                }
            } else if layout.align() <= MALLOC_ALIGN && layout.align() <= new_size {
                return unsafe { realloc(ptr, new_size) };
            }
            let new = unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
            if !new.is_null() {
                unsafe {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
            }
            new
        }
    }
}

/// Supplies what a `no_std` rule crate needs inside Wasm: a global allocator
/// (a per-call bump arena, then wasi-libc's `malloc` as Rust's `std` uses on
/// Wasm) and a panic handler that records
/// the panic message in the decision trace (a `log` line at `error` level)
/// and then traps, so the host applies the rule's `on_error`. Expands to
/// nothing outside Wasm. Use it once, at the crate root, in a crate marked
/// `#![cfg_attr(target_arch = "wasm32", no_std)]`.
#[macro_export]
macro_rules! no_std_runtime {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static __RULEHOST_ALLOCATOR: $crate::__private::RuleAlloc = $crate::__private::RuleAlloc;

        #[cfg(target_arch = "wasm32")]
        #[unsafe(export_name = "cabi_realloc")]
        unsafe extern "C" fn __rulehost_cabi_realloc(
            old_ptr: *mut u8,
            old_len: usize,
            align: usize,
            new_len: usize,
        ) -> *mut u8 {
            // SAFETY: the canonical ABI's contract, forwarded unchanged.
            unsafe { $crate::__private::cabi_realloc(old_ptr, old_len, align, new_len) }
        }

        #[cfg(target_arch = "wasm32")]
        #[panic_handler]
        fn __rulehost_panic(info: &::core::panic::PanicInfo<'_>) -> ! {
            $crate::__private::report_panic(info)
        }
    };
}

/// Typed access to the rule's manifest parameters.
///
/// Parameters are checked against [`RuleInfo`] when the rule set loads, so a
/// declared parameter is always present with its declared type; reading an
/// undeclared or mistyped one is a bug in the rule and traps (the host then
/// applies the rule's `on_error` policy).
pub mod params {
    use crate::Decimal;
    use crate::backend;
    use crate::types::ParamValue;
    use alloc::string::String;
    use alloc::vec::Vec;

    fn wrong(name: &str, expected: &str) -> ! {
        panic!("parameter `{name}` is not declared as {expected}")
    }

    /// A `text` parameter.
    pub fn text(name: &str) -> String {
        match backend::param(name) {
            Some(ParamValue::Text(v)) => v,
            _ => wrong(name, "text"),
        }
    }

    /// An `integer` parameter.
    pub fn integer(name: &str) -> i64 {
        match backend::param(name) {
            Some(ParamValue::Integer(v)) => v,
            _ => wrong(name, "integer"),
        }
    }

    /// A `decimal` parameter.
    pub fn decimal(name: &str) -> Decimal {
        match backend::param(name) {
            Some(ParamValue::Decimal(v)) => v,
            _ => wrong(name, "decimal"),
        }
    }

    /// A `text-list` parameter.
    pub fn text_list(name: &str) -> Vec<String> {
        match backend::param(name) {
            Some(ParamValue::TextList(v)) => v,
            _ => wrong(name, "text-list"),
        }
    }

    /// One entry of a `decimal-map` parameter, `None` when `key` is absent.
    pub fn decimal_entry(name: &str, key: &str) -> Option<Decimal> {
        match backend::param_entry(name, key) {
            Some(ParamValue::Decimal(v)) => Some(v),
            None => None,
            _ => wrong(name, "decimal-map"),
        }
    }

    /// One entry of an `integer-map` parameter, `None` when `key` is absent.
    pub fn integer_entry(name: &str, key: &str) -> Option<i64> {
        match backend::param_entry(name, key) {
            Some(ParamValue::Integer(v)) => Some(v),
            None => None,
            _ => wrong(name, "integer-map"),
        }
    }

    /// One entry of a `text-map` parameter, `None` when `key` is absent.
    pub fn text_entry(name: &str, key: &str) -> Option<String> {
        match backend::param_entry(name, key) {
            Some(ParamValue::Text(v)) => Some(v),
            None => None,
            _ => wrong(name, "text-map"),
        }
    }
}

/// Count and sum of `account`'s earlier transactions *as source* with a
/// timestamp in `(t − window_seconds, t]`, `t` the current transaction's
/// timestamp; with `amount_range = Some((min, max))` only amounts in
/// `[min, max)` count. The current transaction is never included.
///
/// `window_seconds` must not exceed the `history_window_seconds_max` the rule
/// declared in [`RuleInfo`].
pub fn history(account: &str, window_seconds: u64, amount_range: Option<(Decimal, Decimal)>) -> HistoryStats {
    backend::history(account, window_seconds, amount_range)
}

/// Facts about an account as of the current transaction; `None` when the
/// account does not exist.
pub fn account(id: &str) -> Option<Account> {
    backend::account(id)
}

/// Whether `value` is in the operator list `list` of the rule set (a file
/// `lists/<list>.txt`). The list must be declared in [`RuleInfo`].
pub fn list_contains(list: &str, value: &str) -> bool {
    backend::list_contains(list, value)
}

/// A log line recorded in the decision trace. The host caps bytes per call
/// and per evaluation; anything beyond is dropped.
pub fn log(level: LogLevel, message: &str) {
    backend::log(level, message)
}

/// Where the capability functions go: the real host inside Wasm, the
/// installed [`testing::FakeHost`] natively.
#[cfg(target_arch = "wasm32")]
mod backend {
    use crate::convert::{from_wit_account, from_wit_decimal, from_wit_param, to_wit_decimal, to_wit_level};
    use crate::types::ParamValue;
    use crate::wit::rulehost::rules::host;
    use crate::{Account, Decimal, HistoryStats, LogLevel};

    pub fn param(name: &str) -> Option<ParamValue> {
        host::param(name).map(from_wit_param)
    }

    pub fn param_entry(name: &str, key: &str) -> Option<ParamValue> {
        host::param_entry(name, key).map(from_wit_param)
    }

    pub fn history(account: &str, window_seconds: u64, range: Option<(Decimal, Decimal)>) -> HistoryStats {
        let (min, max) = match range {
            Some((min, max)) => (Some(to_wit_decimal(min)), Some(to_wit_decimal(max))),
            None => (None, None),
        };
        let stats = host::history(account, window_seconds, min, max);
        HistoryStats { count: stats.count, sum: from_wit_decimal(stats.sum) }
    }

    pub fn account(id: &str) -> Option<Account> {
        host::account(id).map(from_wit_account)
    }

    pub fn list_contains(list: &str, value: &str) -> bool {
        host::list_contains(list, value)
    }

    pub fn log(level: LogLevel, message: &str) {
        host::log(to_wit_level(level), message)
    }
}

#[cfg(not(target_arch = "wasm32"))]
use native as backend;
