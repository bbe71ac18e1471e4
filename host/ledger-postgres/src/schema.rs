//! The database's layout: the schema this build writes (in a PostgreSQL
//! schema of its own, `rulehost`), and the migrations that bring an older
//! one to it — each run in one transaction, under a lock, so concurrent
//! hosts starting together migrate once.

use postgres::Client;

use crate::client::reason;

/// Version of the database layout this build writes.
pub const SCHEMA_VERSION: i64 = 3;

/// The lock (`pg_advisory_xact_lock`) that serializes migrations.
const MIGRATION_LOCK: i64 = 0x7275_6c65_0001;

/// Migrations: `MIGRATIONS[v - 1]` brings version `v - 1` to `v` (2 adds
/// the partition leases of hosts sharing the ledger; 3 lets a host ask for
/// its partitions back from one that adopted them). Money is
/// `numeric` (exact); the database enforces the ledger's keys (one decision
/// per id, at most one transfer and one hold posting per transaction, one
/// hold per id) and each entry's shape (positive amount, two distinct
/// accounts: balanced by construction).
const MIGRATIONS: [&str; 3] = [
    "
CREATE TABLE rulehost.accounts (
    id text PRIMARY KEY,
    currency text NOT NULL,
    country text NOT NULL,
    opened_at text NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'frozen', 'closed')),
    overdraft_limit numeric NOT NULL,
    opening_balance numeric NOT NULL,
    tags text NOT NULL,
    posted numeric NOT NULL DEFAULT 0,
    pending numeric NOT NULL DEFAULT 0 CHECK (pending >= 0)
);
CREATE TABLE rulehost.system_accounts (id text PRIMARY KEY, posted numeric NOT NULL);
CREATE TABLE rulehost.journal (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reference text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('opening', 'transfer', 'hold-posted')),
    debit text NOT NULL,
    credit text NOT NULL,
    currency text NOT NULL,
    amount numeric NOT NULL CHECK (amount > 0),
    CHECK (debit <> credit),
    UNIQUE (reference, kind)
);
CREATE INDEX journal_debit ON rulehost.journal (debit);
CREATE INDEX journal_credit ON rulehost.journal (credit);
CREATE TABLE rulehost.holds (
    id text PRIMARY KEY,
    source text NOT NULL,
    destination text NOT NULL,
    amount numeric NOT NULL CHECK (amount > 0),
    currency text NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'posted', 'voided'))
);
CREATE INDEX holds_pending ON rulehost.holds (id) WHERE state = 'pending';
CREATE TABLE rulehost.resolutions (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hold_id text NOT NULL,
    action text NOT NULL CHECK (action IN ('approve', 'decline')),
    at_unix_ms bigint NOT NULL
);
CREATE TABLE rulehost.decisions (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    record bytea NOT NULL
);
CREATE TABLE rulehost.history (
    source text NOT NULL,
    ts bytea NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    amount numeric NOT NULL,
    PRIMARY KEY (source, ts, seq)
);
CREATE TABLE rulehost.ruleset_versions (id integer PRIMARY KEY, version text NOT NULL UNIQUE, rules text NOT NULL);
CREATE TABLE rulehost.rulesets (version text PRIMARY KEY, sha256 text NOT NULL, files text NOT NULL);
CREATE TABLE rulehost.blobs (sha256 text PRIMARY KEY, bytes bytea NOT NULL);
",
    "
CREATE TABLE rulehost.partitions (
    partition integer PRIMARY KEY CHECK (partition >= 0),
    owner text,
    epoch bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '-infinity',
    renewed_at timestamptz
);
",
    "
ALTER TABLE rulehost.partitions ADD COLUMN wanted_by text, ADD COLUMN wanted_at timestamptz;
",
];

/// What the database holds, before any migration.
pub(crate) enum Found {
    /// No `rulehost` schema yet.
    Empty,
    /// A rulehost ledger of this version.
    Version(i64),
    /// A `rulehost` schema without a version: not ours.
    Foreign(String),
}

pub(crate) fn found(client: &mut Client) -> Result<Found, String> {
    let schema =
        client.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = 'rulehost'", &[]).map_err(|e| reason(&e))?;
    if schema.is_none() {
        return Ok(Found::Empty);
    }
    let meta = client
        .query_opt("SELECT 1 FROM pg_tables WHERE schemaname = 'rulehost' AND tablename = 'meta'", &[])
        .map_err(|e| reason(&e))?;
    if meta.is_none() {
        return Ok(Found::Foreign("it has a `rulehost` schema but no `rulehost.meta` table".into()));
    }
    let version = client
        .query_opt("SELECT value FROM rulehost.meta WHERE key = 'schema_version'", &[])
        .map_err(|e| reason(&e))?;
    let Some(row) = version else { return Ok(Found::Foreign("no schema version".into())) };
    let v: String = row.try_get(0).map_err(|e| reason(&e))?;
    v.parse::<i64>().map(Found::Version).map_err(|_| format!("schema version {v:?}"))
}

/// Creates or migrates the schema to [`SCHEMA_VERSION`], in one
/// transaction; returns the version found (0 for none).
pub(crate) fn migrate(client: &mut Client) -> Result<Result<i64, String>, String> {
    let mut t = client.transaction().map_err(|e| reason(&e))?;
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(|e| reason(&e))?;
    t.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS rulehost;
         CREATE TABLE IF NOT EXISTS rulehost.meta (key text PRIMARY KEY, value text NOT NULL);",
    )
    .map_err(|e| reason(&e))?;
    let row =
        t.query_opt("SELECT value FROM rulehost.meta WHERE key = 'schema_version'", &[]).map_err(|e| reason(&e))?;
    let found = match row {
        None => {
            let tables: i64 = t
                .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'rulehost' AND tablename <> 'meta'", &[])
                .and_then(|r| r.try_get(0))
                .map_err(|e| reason(&e))?;
            if tables > 0 {
                return Ok(Err("it has a `rulehost` schema with tables but no schema version".into()));
            }
            0
        }
        Some(row) => {
            let v: String = row.try_get(0).map_err(|e| reason(&e))?;
            match v.parse::<i64>() {
                Ok(v) => v,
                Err(_) => return Ok(Err(format!("schema version {v:?}"))),
            }
        }
    };
    if found > SCHEMA_VERSION {
        return Ok(Err(format!(
            "schema version {found} was written by a later release; this build reads up to {SCHEMA_VERSION}"
        )));
    }
    if found < 0 {
        return Ok(Err(format!("schema version {found}")));
    }
    for migration in MIGRATIONS.iter().skip(found as usize) {
        t.batch_execute(migration).map_err(|e| reason(&e))?;
    }
    t.execute(
        "INSERT INTO rulehost.meta (key, value) VALUES ('schema_version', $1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&SCHEMA_VERSION.to_string()],
    )
    .map_err(|e| reason(&e))?;
    t.commit().map_err(|e| reason(&e))?;
    if found < SCHEMA_VERSION && found > 0 {
        tracing::info!(from = found, to = SCHEMA_VERSION, "migrated the PostgreSQL ledger");
    }
    Ok(Ok(found))
}
