//! The shared durable ledger: the same front as the SQLite ledger
//! ([`rulehost_ledger::durable::Durable`]: bounded hot state, recent
//! decisions, a filter of decided ids, group commit) in front of a
//! PostgreSQL database — an existing, trusted engine for what one machine's
//! file cannot do (a database served to many machines, its own
//! replication and backups).
//!
//! `--ledger postgres://user@host:port/db` (or `postgresql://`, or any
//! connection string `postgres` accepts) opens it. Opening creates the
//! `rulehost` schema in that database, or migrates it (one transaction,
//! under a lock), then loads the hot state: accounts, pending holds,
//! history within retention, the rule-set dictionary, and the id filter
//! rebuilt from the decided ids.
//!
//! Group commit as with SQLite: many decisions per database transaction,
//! acknowledged only once `COMMIT` returned. Rows go in bulk (`unnest`),
//! balances as increments. The database enforces the ledger's keys (one
//! decision per id, one transfer and one hold posting per transaction, one
//! hold per id) and each entry's shape; `ledger reconcile` checks the rest.
//!
//! One host owns a PostgreSQL ledger at a time: its writer connection holds
//! a session advisory lock (released by the server when the connection ends,
//! also when the host is killed); a second host is refused with
//! [`OpenError::InUse`]. Or several hosts share it, each claiming some of
//! the 64 partitions of source accounts (`StoreOptions::partitions`): a
//! lease per partition, renewed by a thread of its own, and a fencing token
//! checked by every group commit (see `partitions.rs`); a transaction whose
//! source another host owns is refused with `LedgerError::NotOwner`.
//! Read-only access ([`PgReader`]: the `ledger`, `review list` and
//! `partitions` commands) works meanwhile.
//!
//! Connections are plain TCP or a Unix socket (no TLS in this build).
//!
//! Crate boundary: the only crate of the host that depends on a PostgreSQL
//! client (`postgres`); no client type appears in its API. It builds on
//! `rulehost-ledger` and `rulehost-core`.

mod client;
mod partitions;
mod rows;
mod schema;
mod writer;

pub use partitions::{ACQUIRE_WAIT_LEASES, PartitionLease, RENEWALS_PER_LEASE};
pub use schema::SCHEMA_VERSION;

use client::{Remote, off_runtime, reason};
use rows::Holds;
use writer::PgWriter;

use rulehost_core::model::Account;
use rulehost_ledger::LedgerError;
use rulehost_ledger::durable::{Durable, LedgerReader, Report, StoreOptions, StoreRead};
use rulehost_ledger::record::Dictionary;
use rulehost_ledger::{
    AccountBalances, Balances, DecisionRecord, Hold, JournalEntry, Ledger as _, MemoryLedger, RulesetArchive,
};
use std::sync::Arc;

/// The session advisory lock the owning host's writer holds.
const OWNER_LOCK: i64 = 0x7275_6c65_0002;
/// How long opening waits for the owner lock of a host that is closing
/// before reporting the ledger in use.
pub const OWNER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether `location` names a PostgreSQL database (`postgres://` or
/// `postgresql://`).
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// `url` with any password replaced by `***` (for messages and logs).
pub fn redact(url: &str) -> String {
    let mut out = match url.split_once("password=") {
        Some((before, after)) => {
            let end = after.find(['&', ' ']).unwrap_or(after.len());
            format!("{before}password=***{}", &after[end..])
        }
        None => url.to_owned(),
    };
    if let Some((scheme, rest)) = out.split_once("://") {
        let end = rest.find('/').unwrap_or(rest.len());
        if let Some((userinfo, host)) = rest[..end].rsplit_once('@')
            && let Some((user, _)) = userinfo.split_once(':')
        {
            out = format!("{scheme}://{user}:***@{host}{}", &rest[end..]);
        }
    }
    out
}

/// Why a PostgreSQL ledger could not be opened. Opening never changes a
/// database it refuses.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database cannot be reached or refused the connection.
    #[error("cannot connect to ledger database {url}: {why}")]
    Connect {
        /// The location, password hidden.
        url: String,
        /// The client's or server's reason.
        why: String,
    },
    /// Another host owns the ledger.
    #[error(
        "ledger database {0} is in use by another host (one host owns a PostgreSQL ledger at a time; read-only commands work meanwhile)"
    )]
    InUse(String),
    /// What the database holds under `rulehost` is not a ledger this build reads.
    #[error("ledger database {url} is not a rulehost ledger this build reads: {why}")]
    NotALedger {
        /// The location, password hidden.
        url: String,
        /// What was found.
        why: String,
    },
    /// Read-only access to a database that has no ledger yet or needs migrating.
    #[error(
        "ledger database {url} has schema version {found}; this build reads {SCHEMA_VERSION}: migrate it with `rulehost ledger migrate --ledger {url}` (or open it once with `rulehost run` or `serve`)"
    )]
    NeedsMigration {
        /// The location, password hidden.
        url: String,
        /// Its schema version (0: none yet).
        found: i64,
    },
    /// The partitions claimed could not be taken (another host holds them).
    #[error("ledger database {url}: cannot take the partitions: {why}")]
    Partitions {
        /// The location, password hidden.
        url: String,
        /// Which partitions, held by whom.
        why: String,
    },
    /// The database's content is inconsistent, or a query failed while loading.
    #[error(
        "ledger database {url} could not be loaded: {why} (run `rulehost ledger reconcile --ledger {url}` for a full report)"
    )]
    Damaged {
        /// The location, password hidden.
        url: String,
        /// The first problem found.
        why: String,
    },
}

/// How long a serving host waits between two tries to reopen a shared
/// ledger that failed (see [`PostgresLedger`]'s upkeep).
pub const REOPEN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The durable ledger on a PostgreSQL database (see the module documentation).
pub struct PostgresLedger {
    /// The front; its writer stops before the leases are given back.
    durable: Durable<PgRead>,
    url: String,
    /// On a shared ledger: the renewal of this host's partition leases.
    renewal: Option<partitions::Renewal>,
    /// On a shared ledger: this host's leases.
    leases: Option<Arc<partitions::Leases>>,
    /// On a serving host of a shared ledger: how to reopen it.
    reopen: Option<Reopen>,
}

/// What a serving host needs to reopen its shared ledger.
struct Reopen {
    /// The location as given (with any password: to connect again).
    connect: String,
    /// Not before then (after a failed try).
    next_try: std::time::Instant,
}

impl Drop for PostgresLedger {
    fn drop(&mut self) {
        self.durable.shutdown();
        if let Some(r) = &mut self.renewal {
            r.stop();
        }
    }
}

rulehost_ledger::forward_ledger!(PostgresLedger, durable, upkeep = upkeep);

/// The reader's connection, on a thread of its own.
struct PgRead(Remote);

impl StoreRead for PgRead {
    fn record(&mut self, id: &str) -> Result<Option<Vec<u8>>, String> {
        let id = id.to_owned();
        self.0.call(move |c| rows::read_record(c, &id))
    }
    fn hold(&mut self, id: &str) -> Result<Option<Hold>, String> {
        let id = id.to_owned();
        self.0.call(move |c| rows::read_holds(c, Holds::One(&id)).map(|mut h| h.pop()))
    }
    fn holds(&mut self) -> Result<Vec<Hold>, String> {
        self.0.call(|c| rows::read_holds(c, Holds::All))
    }
    fn pending_holds(&mut self) -> Result<Vec<Hold>, String> {
        self.0.call(|c| rows::read_holds(c, Holds::Pending))
    }
    fn journal(&mut self, account: Option<&str>) -> Result<Vec<JournalEntry>, String> {
        let account = account.map(str::to_owned);
        self.0.call(move |c| rows::read_journal(c, account.as_deref()))
    }
    fn ruleset(&mut self, version: &str) -> Result<Option<RulesetArchive>, String> {
        let version = version.to_owned();
        self.0.call(move |c| rows::read_ruleset(c, &version))
    }
    fn reconcile(&mut self) -> Result<Report, String> {
        self.0.call(rows::reconcile)
    }
    fn posted(&mut self, account: &str) -> Result<Option<rust_decimal::Decimal>, String> {
        let account = account.to_owned();
        self.0.call(move |c| Ok(rows::read_accounts(c, Some(&account))?.pop().map(|r| r.posted)))
    }
}

impl PostgresLedger {
    /// Connects to the database at `url`, creates or migrates its schema,
    /// takes ownership — of the whole ledger, or of the partitions
    /// `options.partitions` claims — and loads the hot state.
    pub fn open(url: &str, options: &StoreOptions) -> Result<PostgresLedger, OpenError> {
        let wait = options.partitions.as_ref().map_or(std::time::Duration::ZERO, |c| c.lease * ACQUIRE_WAIT_LEASES);
        Self::open_with(url, options, &[], wait)
    }

    /// As [`PostgresLedger::open`], also adopting those of `adopt` that are
    /// free or lapsed, and waiting up to `wait` for claimed partitions.
    fn open_with(
        url: &str,
        options: &StoreOptions,
        adopt: &[u16],
        wait: std::time::Duration,
    ) -> Result<PostgresLedger, OpenError> {
        let shown = redact(url);
        let connect_err = |why: String| OpenError::Connect { url: shown.clone(), why };
        let damaged = |why: String| OpenError::Damaged { url: shown.clone(), why };
        let claim = options.partitions.as_ref();
        // Every connection is made and (on an error) dropped off any async
        // runtime the caller may be on.
        off_runtime(|| -> Result<_, OpenError> {
            let mut client = client::connect(url).map_err(connect_err)?;
            // One owner of the whole ledger, or any number of partition
            // owners (a shared lock each). A host that just closed may still
            // be leaving: wait up to OWNER_WAIT.
            let lock = if claim.is_some() {
                "SELECT pg_try_advisory_lock_shared($1)"
            } else {
                "SELECT pg_try_advisory_lock($1)"
            };
            let deadline = std::time::Instant::now() + OWNER_WAIT;
            loop {
                let owner: bool = client
                    .query_one(lock, &[&OWNER_LOCK])
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| connect_err(reason(&e)))?;
                if owner {
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    return Err(OpenError::InUse(shown.clone()));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            schema::migrate(&mut client)
                .map_err(&damaged)?
                .map_err(|why| OpenError::NotALedger { url: shown.clone(), why })?;
            // Leases before loading: a previous owner's last commit is in
            // what this host loads, and nothing of it can come after. They
            // are renewed from then on (loading may take a while).
            let (leases, mut renewal) = match claim {
                Some(claim) => {
                    let leases = partitions::acquire(&mut client, claim, adopt, wait)
                        .map_err(|why| OpenError::Partitions { url: shown.clone(), why })?;
                    let renewal = partitions::Renewal::start(url, leases.clone(), claim.lease).map_err(connect_err)?;
                    (Some(leases), Some(renewal))
                }
                None => (None, None),
            };
            let loaded = (|| {
                let mut memory = MemoryLedger::hot(options.lateness_seconds);
                memory.retain_history(options.history_window_seconds_max);
                let ids = rows::load(&mut client, &mut memory, options.id_filter_bytes).map_err(&damaged)?;
                let reader = Remote::connect(url, "rulehost-ledger-read").map_err(connect_err)?;
                Durable::start(memory, ids, PgRead(reader), PgWriter(client, leases.clone()), options)
                    .map_err(|e| damaged(format!("cannot start the ledger writer: {e}")))
            })();
            let mut durable = match loaded {
                Ok(durable) => durable,
                Err(e) => {
                    // A serving host keeps its rows (it tries again, and
                    // takes them at once); otherwise they are freed.
                    if let Some(r) = renewal.as_mut()
                        && claim.is_some_and(|c| c.take_over)
                    {
                        r.pause(Vec::new());
                    }
                    return Err(e);
                }
            };
            if let Some(leases) = &leases {
                durable = durable.with_ownership(leases.clone());
            }
            let reopen = claim
                .filter(|c| c.take_over)
                .map(|_| Reopen { connect: url.to_owned(), next_try: std::time::Instant::now() });
            Ok(PostgresLedger { durable, url: shown.clone(), renewal, leases, reopen })
        })
    }

    /// On a serving host of a shared ledger, before each change and every
    /// so often ([`Ledger::maintain`](rulehost_ledger::Ledger::maintain)):
    /// reopens the ledger when the renewal found partitions to take over or
    /// hand back, when its leases were lost, or when a group failed (the
    /// database refused it: say another host decided the same id first).
    /// Reopening writes what is queued, stops renewing, lets handed-back
    /// partitions expire, takes the partitions again (a new epoch) and
    /// loads the hot state from the database; what was not durable is not
    /// in it, and was never acknowledged. A failed try leaves the ledger
    /// refusing changes until the next, [`REOPEN_RETRY`] later.
    fn upkeep(&mut self) -> Result<(), LedgerError> {
        let (Some(reopen), Some(leases)) = (&self.reopen, &self.leases) else { return Ok(()) };
        let failure = self.durable.watermark().failure();
        let reshape = leases.reshape();
        if failure.is_none() && reshape.is_none() && !leases.is_lost() {
            return Ok(());
        }
        let why = match (&failure, &reshape) {
            (Some(f), _) => f.clone(),
            (None, Some(_)) => "partitions to take over or hand back".to_owned(),
            (None, None) => "its partition leases were lost".to_owned(),
        };
        if std::time::Instant::now() < reopen.next_try {
            return Err(LedgerError::Storage(format!("the shared ledger is reopening after: {why}")));
        }
        let connect = reopen.connect.clone();
        let target = reshape.unwrap_or_else(|| leases.partitions());
        let handed_back: Vec<(i32, i64)> = leases
            .held
            .iter()
            .copied()
            .filter(|(p, _)| u16::try_from(*p).map_or(true, |p| !target.contains(&p)))
            .collect();
        let options = self.durable.options().clone();
        let home: &[u16] = options.partitions.as_ref().map_or(&[], |c| c.partitions.as_slice());
        let adopt: Vec<u16> = target.iter().copied().filter(|p| !home.contains(p)).collect();
        tracing::info!(url = %self.url, reason = %why, partitions = ?target, "reopening the shared ledger");
        // Writes the last group (when the store still takes them); nothing
        // later can reach the old writer.
        self.durable.shutdown();
        self.durable.watermark().fail(format!("the shared ledger is reopening after: {why}"));
        if let Some(r) = &mut self.renewal {
            r.pause(handed_back);
        }
        match Self::open_with(&connect, &options, &adopt, std::time::Duration::ZERO) {
            Ok(fresh) => {
                tracing::info!(url = %self.url, partitions = ?fresh.leases.as_ref().map(|l| l.partitions()), "reopened the shared ledger");
                // The old front is shut down and its renewal paused: dropping it frees nothing.
                drop(std::mem::replace(self, fresh));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "could not reopen the shared ledger; trying again");
                if let Some(reopen) = &mut self.reopen {
                    reopen.next_try = std::time::Instant::now() + REOPEN_RETRY;
                }
                Err(LedgerError::Storage(format!("the shared ledger could not be reopened: {e}")))
            }
        }
    }

    /// The location, password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Read-only access to a PostgreSQL ledger, whoever owns it (the `ledger`
/// and `review list` commands).
pub struct PgReader {
    remote: Remote,
    dictionary: Dictionary,
}

impl PgReader {
    /// Connects to the ledger at `url`; a database without a ledger of this
    /// schema version is refused (nothing is created or migrated).
    pub fn open(url: &str) -> Result<PgReader, OpenError> {
        let shown = redact(url);
        let remote = Remote::connect(url, "rulehost-ledger-read")
            .map_err(|why| OpenError::Connect { url: shown.clone(), why })?;
        let found = remote.call(schema::found).map_err(|why| OpenError::Damaged { url: shown.clone(), why })?;
        match found {
            schema::Found::Version(SCHEMA_VERSION) => {}
            schema::Found::Version(v) if v > SCHEMA_VERSION => {
                return Err(OpenError::NotALedger {
                    url: shown,
                    why: format!("schema version {v} was written by a later release"),
                });
            }
            schema::Found::Version(found) => return Err(OpenError::NeedsMigration { url: shown, found }),
            schema::Found::Empty => return Err(OpenError::NeedsMigration { url: shown, found: 0 }),
            schema::Found::Foreign(why) => return Err(OpenError::NotALedger { url: shown, why }),
        }
        let dictionary =
            remote.call(rows::read_dictionary).map_err(|why| OpenError::Damaged { url: shown.clone(), why })?;
        Ok(PgReader { remote, dictionary })
    }
}

impl PgReader {
    /// Every partition's lease (none before a host claimed partitions).
    pub fn partitions(&self) -> Result<Vec<PartitionLease>, String> {
        self.remote.call(partitions::leases)
    }
}

impl LedgerReader for PgReader {
    fn record(&self, id: &str) -> Result<Option<DecisionRecord>, String> {
        let id = id.to_owned();
        let Some(bytes) = self.remote.call(move |c| rows::read_record(c, &id))? else { return Ok(None) };
        let decoded = match rulehost_ledger::record::decode(&bytes, &self.dictionary) {
            Ok(r) => r,
            // A version decided after this reader opened: read the dictionary again.
            Err(_) => {
                let dictionary = self.remote.call(rows::read_dictionary)?;
                rulehost_ledger::record::decode(&bytes, &dictionary).map_err(|e| e.to_string())?
            }
        };
        Ok(Some(decoded))
    }

    fn decision_ids(&self) -> Result<Vec<String>, String> {
        self.remote.call(|c| {
            let rows = c.query("SELECT id FROM rulehost.decisions ORDER BY seq", &[]).map_err(|e| reason(&e))?;
            rows.iter().map(|r| r.try_get::<_, String>(0).map_err(|e| reason(&e))).collect()
        })
    }

    fn ruleset(&self, version: &str) -> Result<Option<RulesetArchive>, String> {
        let version = version.to_owned();
        self.remote.call(move |c| rows::read_ruleset(c, &version))
    }

    fn account(&self, id: &str) -> Result<Option<Account>, String> {
        let id = id.to_owned();
        self.remote.call(move |c| Ok(rows::read_accounts(c, Some(&id))?.pop().map(|r| r.account)))
    }

    fn accounts(&self) -> Result<Vec<AccountBalances>, String> {
        let rows = self.remote.call(|c| rows::read_accounts(c, None))?;
        rows.iter()
            .map(|r| {
                let available = rulehost_ledger::exact_sub(r.posted, r.pending)
                    .ok_or_else(|| format!("account {:?}: posted − pending is out of range", r.account.id))?;
                Ok(AccountBalances::new(&r.account, Balances { posted: r.posted, pending: r.pending, available }))
            })
            .collect()
    }

    fn journal(&self, account: Option<&str>) -> Result<Vec<JournalEntry>, String> {
        let account = account.map(str::to_owned);
        self.remote.call(move |c| rows::read_journal(c, account.as_deref()))
    }

    fn holds(&self) -> Result<Vec<Hold>, String> {
        self.remote.call(|c| rows::read_holds(c, Holds::All))
    }

    fn pending_holds(&self) -> Result<Vec<Hold>, String> {
        self.remote.call(|c| rows::read_holds(c, Holds::Pending))
    }

    fn reconcile(&self) -> Result<Report, String> {
        self.remote.call(rows::reconcile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("postgres://app:s3cret@db:5432/ledger"), "postgres://app:***@db:5432/ledger");
        assert_eq!(redact("postgresql://app@db/ledger"), "postgresql://app@db/ledger");
        assert_eq!(
            redact("postgres://db/ledger?password=x&sslmode=disable"),
            "postgres://db/ledger?password=***&sslmode=disable"
        );
        assert_eq!(redact("host=db password=x user=app"), "host=db password=*** user=app");
        assert_eq!(redact("postgres://a:b@h/d?password=x"), "postgres://a:***@h/d?password=***");
        assert!(
            is_postgres_url("postgresql://h/d")
                && is_postgres_url("postgres://h/d")
                && !is_postgres_url("ledger.sqlite")
        );
    }
}
