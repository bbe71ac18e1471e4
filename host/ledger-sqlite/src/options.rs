//! How the SQLite ledger reports a file it cannot open.

use std::path::PathBuf;

use super::SCHEMA_VERSION;

/// SQLite's reason once (rusqlite's own text repeats it), with what to do
/// about the common ones.
pub(crate) fn sqlite_reason(e: &rusqlite::Error) -> String {
    let (code, text) = match e {
        rusqlite::Error::SqliteFailure(f, Some(m)) => (Some(f.code), m.clone()),
        rusqlite::Error::SqliteFailure(f, None) => (Some(f.code), f.to_string()),
        other => (None, other.to_string()),
    };
    match code {
        Some(
            rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied,
        ) => {
            format!("{text} (the file and its folder must be writable by this user: check their permissions)")
        }
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            format!("{text} (not a ledger, or damaged: restore it from a backup or give another path)")
        }
        _ => text,
    }
}

/// Why a ledger file could not be opened. Opening never changes a file it
/// refuses.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The path cannot be opened or created.
    #[error("cannot open ledger {path}: {why}")]
    Unopenable {
        /// The path.
        path: PathBuf,
        /// SQLite's reason, with what to do about it.
        why: String,
    },
    /// Another process holds the ledger.
    #[error("ledger {0} is in use by another process (one process owns a ledger file at a time)")]
    InUse(PathBuf),
    /// The file is not a SQLite database, or not a rulehost ledger.
    #[error("{path} is not a rulehost ledger: {why}")]
    NotALedger {
        /// The path.
        path: PathBuf,
        /// What was found.
        why: String,
    },
    /// The ledger was written with an older layout and this handle cannot
    /// migrate it (it only reads).
    #[error(
        "ledger {path} has schema version {found}; this build reads {SCHEMA_VERSION}: migrate it with `rulehost ledger migrate --ledger {path}` (or open it once with `rulehost run` or `serve`)"
    )]
    NeedsMigration {
        /// The path.
        path: PathBuf,
        /// Its schema version.
        found: i64,
    },
    /// The ledger's content is inconsistent (run `rulehost ledger reconcile`).
    #[error("ledger {path} is damaged: {why} (run `rulehost ledger reconcile --ledger {path}` for a full report)")]
    Damaged {
        /// The path.
        path: PathBuf,
        /// The first problem found.
        why: String,
    },
}
