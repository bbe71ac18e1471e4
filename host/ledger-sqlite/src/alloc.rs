//! SQLite's heap on mimalloc.
//!
//! SQLite allocates through `malloc` unless told otherwise, and glibc's
//! `malloc` fragments under its pattern — page-sized cache pages between
//! small statement and blob buffers, allocated on one thread and freed on
//! another: measured over the scale benchmark's second million decisions
//! (BENCHMARKS.md), SQLite's own count stayed at 66 MiB while glibc's
//! arenas holding it grew from 75 to 108 MiB, and `malloc_trim` gave none of
//! it back. mimalloc (the host's Rust allocator already) keeps each size in
//! pages of its own and returns what is freed, so SQLite's resident memory
//! stays what it uses. SQLite takes the methods once, before it
//! initialises: [`use_mimalloc`] runs before the store's first connection;
//! when something in the process opened SQLite earlier, SQLite refuses and
//! keeps `malloc` (correct either way, only fatter).

use std::ffi::{c_int, c_void};
use std::sync::Once;

use rusqlite::ffi;

unsafe extern "C" fn malloc(bytes: c_int) -> *mut c_void {
    match usize::try_from(bytes) {
        // SAFETY: mi_malloc takes any size and returns null or a block of
        // at least that many bytes, 16-byte aligned (SQLite needs 8).
        Ok(n) => unsafe { libmimalloc_sys::mi_malloc(n) },
        Err(_) => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn free(block: *mut c_void) {
    // SAFETY: SQLite frees only blocks these methods allocated (or null).
    unsafe { libmimalloc_sys::mi_free(block) }
}

unsafe extern "C" fn realloc(block: *mut c_void, bytes: c_int) -> *mut c_void {
    match usize::try_from(bytes) {
        // SAFETY: `block` came from these methods; mi_realloc keeps its
        // contents up to the smaller size, or returns null leaving it be.
        Ok(n) => unsafe { libmimalloc_sys::mi_realloc(block, n) },
        Err(_) => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn size(block: *mut c_void) -> c_int {
    // SAFETY: `block` came from these methods (mi_usable_size(null) is 0).
    let usable = unsafe { libmimalloc_sys::mi_usable_size(block) };
    c_int::try_from(usable).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn roundup(bytes: c_int) -> c_int {
    let Ok(n) = usize::try_from(bytes) else { return bytes };
    // SAFETY: a pure function of its argument.
    let good = unsafe { libmimalloc_sys::mi_good_size(n) };
    c_int::try_from(good).unwrap_or(bytes)
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn shutdown(_: *mut c_void) {}

/// Makes SQLite allocate from mimalloc, once per process, if SQLite has not
/// initialised yet.
pub(crate) fn use_mimalloc() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(malloc),
            xFree: Some(free),
            xRealloc: Some(realloc),
            xSize: Some(size),
            xRoundup: Some(roundup),
            xInit: Some(init),
            xShutdown: Some(shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: SQLITE_CONFIG_MALLOC takes one pointer to a
        // sqlite3_mem_methods, which SQLite copies before returning; the
        // methods above are thread-safe (so is mimalloc). After SQLite has
        // initialised it changes nothing and returns SQLITE_MISUSE.
        let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &raw const methods) };
        if rc == ffi::SQLITE_OK {
            tracing::debug!("SQLite allocates from mimalloc");
        } else {
            tracing::debug!(rc, "SQLite was initialised before the ledger: it keeps malloc");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_allocates_from_mimalloc_once_configured() {
        // Every connection of this crate configures first, so whichever
        // test runs first, SQLite starts on mimalloc.
        use_mimalloc();
        // SAFETY: a plain allocation of SQLite's, freed with its own free.
        unsafe {
            let block = ffi::sqlite3_malloc(1000);
            assert!(!block.is_null());
            assert!(libmimalloc_sys::mi_is_in_heap_region(block), "SQLite's block is not mimalloc's");
            assert!(ffi::sqlite3_msize(block) >= 1000);
            assert!(crate::sqlite_heap_bytes() >= 1000, "SQLite counts what it holds");
            ffi::sqlite3_free(block);
        }
    }
}
