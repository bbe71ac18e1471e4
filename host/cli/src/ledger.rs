//! `rulehost ledger …` and `rulehost review …`: the durable ledger's
//! commands.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use rulehost::ledger::{Ledger, LedgerLocation, LedgerReader, StoreOptions};

use crate::{EXIT_SOME_ERRORS, Failure, LEDGER_PATH_DEFAULT, start};

/// Which ledger.
#[derive(clap::Args, Clone)]
pub(crate) struct LedgerArg {
    /// The ledger: a SQLite file (created when absent), a PostgreSQL
    /// database (`postgres://user@host:port/db`; its `rulehost` schema is
    /// created when absent), or `:memory:` (this process only).
    #[arg(long, default_value = LEDGER_PATH_DEFAULT)]
    pub(crate) ledger: PathBuf,
}

impl LedgerArg {
    /// Where it lives.
    pub(crate) fn location(&self) -> LedgerLocation {
        LedgerLocation::from_arg(&self.ledger)
    }

    /// As messages name it (a password hidden).
    fn shown(&self) -> String {
        self.location().to_string()
    }
}

/// How much of a durable ledger `run` and `serve` keep in memory.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct StoreArgs {
    /// Recent decisions kept in memory, in decisions (older ones are read
    /// from the file when an id comes again; decisions not yet durable are
    /// always kept).
    #[arg(long, default_value_t = rulehost::ledger::DECISION_CACHE_ENTRIES_DEFAULT)]
    decision_cache_entries: usize,
    /// Size of the in-memory filter of every id ever decided, in bytes
    /// (fixed: more ids only make a "maybe seen" — one indexed read — more
    /// frequent).
    #[arg(long, default_value_t = rulehost::ledger::ID_FILTER_BYTES_DEFAULT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(8..=(1u64 << 34)))]
    id_filter_bytes: usize,
    /// On a PostgreSQL ledger several hosts share: the partitions of source
    /// accounts this host decides (`all`, or numbers and ranges of 0–63 such
    /// as `0-31` or `0-15,40`); a transaction whose source is in another
    /// partition is not decided here (`PARTITION_NOT_OWNED`, HTTP 421).
    #[arg(long, value_name = "SET")]
    partitions: Option<String>,
    /// This host's name in the partition leases (default: machine name and
    /// process id); a host restarted under the same name takes its
    /// partitions back at once.
    #[arg(long, requires = "partitions")]
    host_name: Option<String>,
    /// How long a partition lease lasts without renewal, in seconds
    /// (renewed every third of it; a host that stops loses its partitions
    /// this long after its last renewal).
    #[arg(long, default_value_t = rulehost::ledger::durable::LEASE_DEFAULT.as_secs(), value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..=3600), requires = "partitions")]
    lease_seconds: u64,
    /// `serve` only: do not take over the partitions of a host whose lease
    /// lapsed (by default a serving host adopts them until their host
    /// claims them back, and reopens its ledger after a failure).
    #[arg(long, requires = "partitions")]
    no_take_over: bool,
}

impl StoreArgs {
    /// These settings over `options`; a `serving` host takes lapsed
    /// partitions over unless told not to.
    pub(crate) fn apply(&self, options: StoreOptions, serving: bool) -> Result<StoreOptions> {
        let partitions = match &self.partitions {
            None => None,
            Some(spec) => Some(rulehost::ledger::durable::PartitionClaim {
                host: self.host_name.clone().unwrap_or_else(default_host_name),
                partitions: rulehost::partition::parse_partitions(spec)
                    .map_err(|e| anyhow::anyhow!("--partitions {spec:?}: {e}"))?,
                lease: std::time::Duration::from_secs(self.lease_seconds),
                take_over: serving && !self.no_take_over,
            }),
        };
        Ok(StoreOptions {
            decision_cache_entries: self.decision_cache_entries,
            id_filter_bytes: self.id_filter_bytes,
            partitions,
            ..options
        })
    }
}

/// This machine's name and the process id: unique among running hosts.
fn default_host_name() -> String {
    let machine = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    format!("{}-{}", if machine.is_empty() { "host" } else { &machine }, std::process::id())
}

#[derive(Subcommand)]
pub(crate) enum LedgerAction {
    /// Import accounts (JSON Lines): all or nothing; a bad line is named by
    /// line and field. Accounts already present with the same facts are skipped.
    Import {
        /// The accounts file.
        file: PathBuf,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Print an account's balances (JSON).
    Balance {
        /// The account id.
        account: String,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Print every account with its balances (JSON Lines).
    Accounts {
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Print the journal (JSON Lines), optionally only one account's entries.
    Journal {
        /// Only entries debiting or crediting this account.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Recompute every balance from the journal and check every invariant;
    /// exit 1 on any discrepancy.
    Reconcile {
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Print a stored decision with its input, the facts its rules read and
    /// the funds check's answer (JSON).
    Show {
        /// The transaction id.
        id: String,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Re-evaluate a stored decision with its own rule-set version (kept in
    /// the ledger) against the facts it saw, and say whether the result is
    /// byte-identical; exit 1 if it is not.
    Replay {
        /// The transaction id.
        id: String,
        #[command(flatten)]
        ledger: LedgerArg,
        #[command(flatten)]
        cache: crate::CacheArg,
    },
    /// Print the partitions of a shared PostgreSQL ledger: owner, fencing
    /// epoch, lease expiry and time since renewal (JSON Lines).
    Partitions {
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Bring a ledger written by an earlier release to this release's
    /// schema (`run` and `serve` also do it when they open one).
    Migrate {
        #[command(flatten)]
        ledger: LedgerArg,
    },
}

#[derive(Subcommand)]
pub(crate) enum ReviewAction {
    /// Print the pending holds (JSON Lines).
    List {
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Post a held transaction (funds are checked again). Idempotent.
    Approve {
        /// The transaction id.
        id: String,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Void a held transaction. Idempotent.
    Decline {
        /// The transaction id.
        id: String,
        #[command(flatten)]
        ledger: LedgerArg,
    },
}

fn open_store(ledger: &LedgerArg) -> Result<Box<dyn Ledger>> {
    Ok(ledger.location().open(&StoreOptions::default())?)
}

/// Makes every change durable, then closes the ledger.
fn close(store: Box<dyn Ledger>) -> Result<()> {
    store.sync_point().wait().context("closing the ledger")?;
    drop(store);
    Ok(())
}

fn read_store(ledger: &LedgerArg) -> Result<Box<dyn LedgerReader>> {
    ledger.location().reader()?.ok_or_else(|| {
        anyhow::anyhow!("a `:memory:` ledger lives only in the process that runs it: there is nothing to read")
    })
}

fn print_json_lines<T: serde::Serialize>(items: impl IntoIterator<Item = T>) -> Result<(), Failure> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    for item in items {
        serde_json::to_writer(&mut out, &item).map_err(|e| Failure::Io(e.into()))?;
        writeln!(out).map_err(|e| Failure::Io(e.into()))?;
    }
    out.flush().map_err(|e| Failure::Io(e.into()))
}

#[derive(serde::Serialize)]
struct EntryJson<'a> {
    seq: u64,
    reference: &'a str,
    kind: &'static str,
    debit: &'a str,
    credit: &'a str,
    currency: &'a str,
    amount: rust_decimal::Decimal,
}

pub(crate) fn ledger_command(action: LedgerAction) -> Result<u8, Failure> {
    match action {
        LedgerAction::Import { file, ledger } => {
            let mut store = start(open_store(&ledger))?;
            let (added, present) = start(
                rulehost::ledger::import_file(&mut *store, &file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display())),
            )?;
            start(close(store))?;
            eprintln!("imported {added} new account(s) into {} ({present} already present)", ledger.shown());
            Ok(0)
        }
        LedgerAction::Balance { account, ledger } => {
            let accounts = start(read_store(&ledger).and_then(|r| r.accounts().map_err(anyhow::Error::msg)))?;
            match accounts.into_iter().find(|a| a.id == account) {
                Some(a) => print_json_lines([a]).map(|_| 0),
                None => Err(Failure::CannotStart(anyhow::anyhow!("no account {account:?} in {}", ledger.shown()))),
            }
        }
        LedgerAction::Accounts { ledger } => {
            let accounts = start(read_store(&ledger).and_then(|r| r.accounts().map_err(anyhow::Error::msg)))?;
            print_json_lines(accounts).map(|_| 0)
        }
        LedgerAction::Journal { account, ledger } => {
            let journal =
                start(read_store(&ledger).and_then(|r| r.journal(account.as_deref()).map_err(anyhow::Error::msg)))?;
            print_json_lines(journal.iter().map(|e| EntryJson {
                seq: e.seq,
                reference: &e.reference,
                kind: e.kind.as_str(),
                debit: &e.postings[0].account,
                credit: &e.postings[1].account,
                currency: &e.postings[1].currency,
                amount: e.postings[1].amount,
            }))
            .map(|_| 0)
        }
        LedgerAction::Reconcile { ledger } => {
            let report = start(read_store(&ledger).and_then(|r| r.reconcile().map_err(anyhow::Error::msg)))?;
            println!(
                "ledger {}: {} accounts, {} journal entries, {} holds, {} decisions",
                ledger.shown(),
                report.accounts,
                report.entries,
                report.holds,
                report.decisions
            );
            for d in &report.discrepancies {
                println!("DISCREPANCY {d}");
            }
            if report.is_clean() {
                println!("reconciled: every balance equals the journal; every invariant holds");
                Ok(0)
            } else {
                println!("{} discrepancies", report.discrepancies.len());
                Ok(EXIT_SOME_ERRORS)
            }
        }
        LedgerAction::Show { id, ledger } => {
            let shown = start(read_store(&ledger).and_then(|r| show(&*r, &id)))?;
            print_json_lines([shown]).map(|_| 0)
        }
        LedgerAction::Replay { id, ledger, cache } => {
            let (identical, shown) = start(read_store(&ledger).and_then(|r| replay(&*r, &id, &cache)))?;
            print_json_lines([shown])?;
            if identical {
                eprintln!("replayed {id:?}: byte-identical to the stored decision");
                Ok(0)
            } else {
                eprintln!("replayed {id:?}: DIFFERS from the stored decision");
                Ok(EXIT_SOME_ERRORS)
            }
        }
        LedgerAction::Partitions { ledger } => {
            let LedgerLocation::Postgres(url) = ledger.location() else {
                return Err(Failure::CannotStart(anyhow::anyhow!(
                    "{} is not a PostgreSQL ledger: only hosts sharing one have partitions",
                    ledger.shown()
                )));
            };
            let reader = start(rulehost::ledger::PgReader::open(&url).map_err(anyhow::Error::new))?;
            let leases = start(reader.partitions().map_err(anyhow::Error::msg))?;
            print_json_lines(leases).map(|_| 0)
        }
        LedgerAction::Migrate { ledger } => {
            let store = start(open_store(&ledger))?;
            start(close(store))?;
            let version = match ledger.location() {
                LedgerLocation::Postgres(_) => rulehost::ledger::postgres::SCHEMA_VERSION,
                _ => rulehost::ledger::SCHEMA_VERSION,
            };
            eprintln!("ledger {} is at schema version {version}", ledger.shown());
            Ok(0)
        }
    }
}

/// `ledger show`: the stored record as JSON.
fn show(reader: &dyn LedgerReader, id: &str) -> Result<serde_json::Value> {
    use rulehost::ledger::Read;
    let record =
        reader.record(id).map_err(anyhow::Error::msg)?.ok_or_else(|| anyhow::anyhow!("no decision for {id:?}"))?;
    let decision: serde_json::Value = serde_json::from_str(record.decision.json())?;
    let kept = reader.ruleset(&record.decision.ruleset).map_err(anyhow::Error::msg)?.is_some();
    let mut out = serde_json::json!({
        "id": id,
        "decision": decision,
        "ruleset_kept": kept,
    });
    match &record.input {
        None => out["input"] = serde_json::Value::Null,
        Some(input) => {
            let reads: Vec<serde_json::Value> = input
                .facts
                .reads()
                .iter()
                .map(|r| match r {
                    Read::Account { id, available } => serde_json::json!({
                        "account": id, "available": available.map(|a| a.to_string()),
                    }),
                    Read::History { account, from_exclusive, to_inclusive, min, max, stats } => serde_json::json!({
                        "history": account,
                        "from_exclusive": rulehost::input::format_timestamp(*from_exclusive),
                        "to_inclusive": rulehost::input::format_timestamp(*to_inclusive),
                        "min": min.map(|m| m.to_string()),
                        "max": max.map(|m| m.to_string()),
                        "count": stats.count,
                        "sum": stats.sum.to_string(),
                    }),
                })
                .collect();
            let funds = match input.admission {
                rulehost::ledger::Admission::NotAsked => "not-asked".to_owned(),
                rulehost::ledger::Admission::Admitted => "admitted".to_owned(),
                rulehost::ledger::Admission::Refused(r) => r.code().to_owned(),
            };
            out["input"] = serde_json::json!({
                "transaction": input.transaction_json(),
                "counted_in_history": input.counted,
                "funds_check": funds,
                "reads": reads,
            });
        }
    }
    Ok(out)
}

/// `ledger replay`: re-evaluates a stored decision; whether it is identical.
fn replay(reader: &dyn LedgerReader, id: &str, cache: &crate::CacheArg) -> Result<(bool, serde_json::Value)> {
    let record =
        reader.record(id).map_err(anyhow::Error::msg)?.ok_or_else(|| anyhow::anyhow!("no decision for {id:?}"))?;
    let version = record.decision.ruleset.clone();
    let archive = reader.ruleset(&version).map_err(anyhow::Error::msg)?.ok_or_else(|| {
        anyhow::anyhow!("rule-set version {version} that decided {id:?} is not kept in this ledger (it was decided before the ledger kept rule sets)")
    })?;
    let dir = std::env::temp_dir().join(format!("rulehost-replay-{}-{version}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    archive.extract(&dir)?;
    let (sandbox, ruleset) = crate::load(&dir, cache)?;
    if ruleset.sha256 != archive.sha256 {
        anyhow::bail!(
            "rule-set version {version} read back with another content hash ({}): the kept files are damaged",
            ruleset.sha256
        );
    }
    let mut accounts = Vec::new();
    if let Some(input) = &record.input {
        let mut ids: Vec<&str> = vec![&input.tx.source, &input.tx.destination];
        ids.extend(input.facts.reads().iter().map(|r| match r {
            rulehost::ledger::Read::Account { id, .. } => id.as_str(),
            rulehost::ledger::Read::History { account, .. } => account.as_str(),
        }));
        ids.sort_unstable();
        ids.dedup();
        for a in ids {
            if let Some(account) = reader.account(a).map_err(anyhow::Error::msg)? {
                accounts.push(account);
            }
        }
    }
    let ledger: rulehost::pipeline::SharedLedger =
        std::sync::Arc::new(std::sync::Mutex::new(Box::new(rulehost::ledger::MemoryLedger::default())));
    let pipeline = rulehost::pipeline::Pipeline::new(sandbox, ledger);
    let replayed = pipeline.replay(&ruleset, &record, accounts)?;
    let json = |d: &rulehost::decision::Decision| serde_json::from_str::<serde_json::Value>(d.json());
    Ok((
        replayed.identical,
        serde_json::json!({
            "id": id,
            "ruleset": &*version,
            "identical": replayed.identical,
            "unrecorded_reads": replayed.unrecorded_reads,
            "stored": json(&replayed.stored)?,
            "replayed": json(&replayed.replayed)?,
        }),
    ))
}

pub(crate) fn review_command(action: ReviewAction) -> Result<u8, Failure> {
    let (id, approve, ledger) = match action {
        ReviewAction::List { ledger } => {
            let holds = start(read_store(&ledger).and_then(|r| r.pending_holds().map_err(anyhow::Error::msg)))?;
            return print_json_lines(holds).map(|_| 0);
        }
        ReviewAction::Approve { id, ledger } => (id, true, ledger),
        ReviewAction::Decline { id, ledger } => (id, false, ledger),
    };
    let mut store = start(open_store(&ledger))?;
    let result = store.resolve_hold(&id, approve);
    start(store.sync_point().wait().context("making the resolution durable"))?;
    let hold = store.hold(&id);
    start(close(store))?;
    match result.and_then(|r| Ok((r, hold?.ok_or_else(|| rulehost::ledger::LedgerError::UnknownHold(id.clone()))?))) {
        Ok((resolution, hold)) => {
            println!("{}", resolution.answer(&hold));
            Ok(0)
        }
        Err(e) => {
            eprintln!("rulehost: {e}");
            Ok(EXIT_SOME_ERRORS)
        }
    }
}
