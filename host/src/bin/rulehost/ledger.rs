//! `rulehost ledger …` and `rulehost review …`: the durable ledger's
//! commands.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use rulehost::ledger::{HoldState, Ledger, SqliteLedger, StoreOptions, StoreReader};

use crate::{EXIT_SOME_ERRORS, Failure, LEDGER_PATH_DEFAULT, start};

/// Which ledger file.
#[derive(clap::Args, Clone)]
pub(crate) struct LedgerArg {
    /// The ledger file (SQLite; created when absent). `:memory:` keeps the
    /// ledger in memory only, for this process.
    #[arg(long, default_value = LEDGER_PATH_DEFAULT)]
    pub(crate) ledger: PathBuf,
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

fn open_store(ledger: &LedgerArg) -> Result<SqliteLedger> {
    Ok(SqliteLedger::open(&ledger.ledger, &StoreOptions::default())?)
}

fn read_store(ledger: &LedgerArg) -> Result<StoreReader> {
    Ok(StoreReader::open(&ledger.ledger)?)
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
                rulehost::ledger::import_file(&mut store, &file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display())),
            )?;
            start(store.close().context("closing the ledger"))?;
            eprintln!("imported {added} new account(s) into {} ({present} already present)", ledger.ledger.display());
            Ok(0)
        }
        LedgerAction::Balance { account, ledger } => {
            let accounts = start(read_store(&ledger).and_then(|r| r.accounts().map_err(anyhow::Error::msg)))?;
            match accounts.into_iter().find(|a| a.id == account) {
                Some(a) => print_json_lines([a]).map(|_| 0),
                None => {
                    Err(Failure::CannotStart(anyhow::anyhow!("no account {account:?} in {}", ledger.ledger.display())))
                }
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
                ledger.ledger.display(),
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
    }
}

pub(crate) fn review_command(action: ReviewAction) -> Result<u8, Failure> {
    let (id, approve, ledger) = match action {
        ReviewAction::List { ledger } => {
            let holds = start(read_store(&ledger).and_then(|r| r.holds().map_err(anyhow::Error::msg)))?;
            return print_json_lines(holds.iter().filter(|h| h.state == HoldState::Pending)).map(|_| 0);
        }
        ReviewAction::Approve { id, ledger } => (id, true, ledger),
        ReviewAction::Decline { id, ledger } => (id, false, ledger),
    };
    let mut store = start(open_store(&ledger))?;
    let result = store.resolve_hold(&id, approve);
    start(store.sync_point().wait().context("making the resolution durable"))?;
    let hold = store.hold(&id);
    start(store.close().context("closing the ledger"))?;
    match result {
        Ok(resolution) => {
            println!("{}", resolution.answer(&hold.expect("a resolved hold exists")));
            Ok(0)
        }
        Err(e) => {
            eprintln!("rulehost: {e}");
            Ok(EXIT_SOME_ERRORS)
        }
    }
}
