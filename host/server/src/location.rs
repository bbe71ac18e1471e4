//! Where a ledger lives, as `--ledger` and the builders name it: in memory,
//! a SQLite file, or a PostgreSQL database — and opening it.

use std::path::Path;

use rulehost_ledger::durable::{LedgerReader, StoreOptions};
use rulehost_ledger::{Ledger, MemoryLedger};
use rulehost_ledger_postgres::{PgReader, PostgresLedger, is_postgres_url, redact};
use rulehost_ledger_sqlite::{SqliteLedger, StoreReader};

/// `--ledger` value for a ledger kept in memory only.
pub const MEMORY_LEDGER: &str = ":memory:";

/// Where a ledger lives.
#[derive(Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// In this process's memory only.
    Memory,
    /// A durable SQLite file (created when absent).
    File(std::path::PathBuf),
    /// A PostgreSQL database (its connection URL; the schema is created
    /// when absent).
    Postgres(String),
}

impl std::fmt::Debug for LedgerLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerLocation::Memory => f.write_str("Memory"),
            LedgerLocation::File(path) => f.debug_tuple("File").field(path).finish(),
            LedgerLocation::Postgres(url) => f.debug_tuple("Postgres").field(&redact(url)).finish(),
        }
    }
}

impl std::fmt::Display for LedgerLocation {
    /// As a message names it (a password hidden).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerLocation::Memory => f.write_str(MEMORY_LEDGER),
            LedgerLocation::File(path) => write!(f, "{}", path.display()),
            LedgerLocation::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// Why a ledger did not open.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// The SQLite file.
    #[error(transparent)]
    Sqlite(#[from] rulehost_ledger_sqlite::OpenError),
    /// The PostgreSQL database.
    #[error(transparent)]
    Postgres(#[from] rulehost_ledger_postgres::OpenError),
    /// Partitions were claimed on a ledger only one host can use.
    #[error("{0}: partitions are for hosts sharing a PostgreSQL ledger (--ledger postgres://…)")]
    NotShared(String),
}

impl LedgerLocation {
    /// [`MEMORY_LEDGER`] is memory; a `postgres://` or `postgresql://` URL
    /// a PostgreSQL database; anything else a file.
    pub fn from_arg(path: &Path) -> Self {
        if path == Path::new(MEMORY_LEDGER) {
            return LedgerLocation::Memory;
        }
        match path.to_str() {
            Some(url) if is_postgres_url(url) => LedgerLocation::Postgres(url.to_owned()),
            _ => LedgerLocation::File(path.to_owned()),
        }
    }

    /// Opens the ledger, keeping the history `options` asks for.
    pub fn open(&self, options: &StoreOptions) -> Result<Box<dyn Ledger>, LocationError> {
        if options.partitions.is_some() && !matches!(self, LedgerLocation::Postgres(_)) {
            return Err(LocationError::NotShared(self.to_string()));
        }
        Ok(match self {
            LedgerLocation::Memory => {
                let mut ledger = MemoryLedger::new(options.lateness_seconds);
                ledger.retain_history(options.history_window_seconds_max);
                Box::new(ledger)
            }
            LedgerLocation::File(path) => Box::new(SqliteLedger::open(path, options)?),
            LedgerLocation::Postgres(url) => Box::new(PostgresLedger::open(url, options)?),
        })
    }

    /// Opens a durable ledger read-only (nothing is created or migrated);
    /// `None` for a memory ledger, which no other process can read.
    pub fn reader(&self) -> Result<Option<Box<dyn LedgerReader>>, LocationError> {
        Ok(match self {
            LedgerLocation::Memory => None,
            LedgerLocation::File(path) => Some(Box::new(StoreReader::open(path)?)),
            LedgerLocation::Postgres(url) => Some(Box::new(PgReader::open(url)?)),
        })
    }
}
