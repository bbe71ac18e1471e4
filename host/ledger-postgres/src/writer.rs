//! The PostgreSQL store's writer: one database transaction per group,
//! acknowledged when `COMMIT` returns (`synchronous_commit` as the server
//! is configured: on by default, durable on the server's disk).
//!
//! Rows go in bulk (`unnest` of arrays, one statement per table per group).
//! Balances are written as increments (`posted = posted + Δ`), computed
//! from the group's entries and holds, never as the host's absolute view:
//! the database's sums stay right whatever else wrote to it. Rows to be
//! changed are locked in id order first, so two writers never deadlock.

use std::collections::{BTreeMap, HashMap};

use postgres::Client;
use rust_decimal::Decimal;

use std::sync::Arc;

use crate::client::reason;
use crate::partitions::Leases;
use crate::rows::ts_key;
use rulehost_core::input::format_timestamp;
use rulehost_core::model::Nanos;
use rulehost_ledger::durable::{GroupWriter, Op, Queued, legs};
use rulehost_ledger::record::DictionaryEntry;
use rulehost_ledger::{HoldState, JournalEntry, SYSTEM_ACCOUNT_PREFIX, exact_add};

/// The writer's connection (it also holds the ledger's owner lock), and
/// the leases each group must still hold on a shared ledger.
pub(crate) struct PgWriter(pub(crate) Client, pub(crate) Option<Arc<Leases>>);

impl GroupWriter for PgWriter {
    fn write_group(&mut self, group: Vec<Queued>) -> Result<(), String> {
        let rows = Rows::of(group)?;
        rows.write(&mut self.0, self.1.as_deref())
    }
}

/// One group, gathered into columns.
#[derive(Default)]
struct Rows {
    accounts: Vec<[String; 8]>,
    journal: Journal,
    decision_ids: Vec<String>,
    decision_records: Vec<std::sync::Arc<[u8]>>,
    history: (Vec<String>, Vec<Vec<u8>>, Vec<String>),
    horizons: HashMap<String, Nanos>,
    holds: Vec<[String; 6]>,
    resolves: Vec<(String, &'static str, i64)>,
    dictionary: Vec<(i32, DictionaryEntry)>,
    rulesets: Vec<std::sync::Arc<rulehost_ledger::RulesetArchive>>,
    /// Per account: (posted Δ, pending Δ).
    deltas: BTreeMap<String, (Decimal, Decimal)>,
}

#[derive(Default)]
struct Journal {
    reference: Vec<String>,
    kind: Vec<&'static str>,
    debit: Vec<String>,
    credit: Vec<String>,
    currency: Vec<String>,
    amount: Vec<String>,
}

fn add(sum: &mut Decimal, amount: Decimal, account: &str) -> Result<(), String> {
    *sum =
        exact_add(*sum, amount).ok_or_else(|| format!("the change of account {account:?} in one group overflows"))?;
    Ok(())
}

impl Rows {
    fn of(group: Vec<Queued>) -> Result<Rows, String> {
        let mut rows = Rows::default();
        for (_, _, op) in group {
            match op {
                Op::Accounts { accounts, entries, balances: _ } => {
                    for a in accounts {
                        let tags = serde_json::to_string(&a.tags).map_err(|e| format!("account {:?}: {e}", a.id))?;
                        rows.accounts.push([
                            a.id,
                            a.currency,
                            a.country,
                            format_timestamp(a.opened_at),
                            a.status.as_str().to_owned(),
                            a.overdraft_limit.to_string(),
                            a.opening_balance.to_string(),
                            tags,
                        ]);
                    }
                    for e in &entries {
                        rows.entry(e)?;
                    }
                }
                Op::Decision(d) => {
                    rows.decision_ids.push(d.id);
                    rows.decision_records.push(d.record);
                    if let Some((source, ts, amount, horizon)) = d.history {
                        let h = rows.horizons.entry(source.clone()).or_insert(horizon);
                        *h = (*h).max(horizon);
                        rows.history.0.push(source);
                        rows.history.1.push(ts_key(ts).to_vec());
                        rows.history.2.push(amount.to_string());
                    }
                    if let Some(e) = &d.entry {
                        rows.entry(e)?;
                    }
                    if let Some(h) = d.hold {
                        let delta = rows.deltas.entry(h.source.clone()).or_default();
                        add(&mut delta.1, h.amount, &h.source)?;
                        rows.holds.push([
                            h.id,
                            h.source,
                            h.destination,
                            h.amount.to_string(),
                            h.currency,
                            h.state.as_str().to_owned(),
                        ]);
                    }
                }
                Op::Resolve { hold, entry, balances: _, at_unix_ms } => {
                    let delta = rows.deltas.entry(hold.source.clone()).or_default();
                    add(&mut delta.1, -hold.amount, &hold.source)?;
                    if let Some(e) = &entry {
                        rows.entry(e)?;
                    }
                    let action = if hold.state == HoldState::Posted { "approve" } else { "decline" };
                    rows.resolves.push((hold.id, action, at_unix_ms));
                }
                Op::Dictionary { id, entry } => {
                    let id = i32::try_from(id).map_err(|_| format!("rule-set version number {id}"))?;
                    rows.dictionary.push((id, entry));
                }
                Op::Ruleset(archive) => rows.rulesets.push(archive),
                // The database keeps no snapshot of the id filter: opening
                // rebuilds it from the ids.
                Op::IdFilter(_) => {}
            }
        }
        Ok(rows)
    }

    fn entry(&mut self, e: &JournalEntry) -> Result<(), String> {
        let (debit, credit) = legs(e)?;
        add(&mut self.deltas.entry(debit.account.clone()).or_default().0, debit.amount, &debit.account)?;
        add(&mut self.deltas.entry(credit.account.clone()).or_default().0, credit.amount, &credit.account)?;
        let j = &mut self.journal;
        j.reference.push(e.reference.clone());
        j.kind.push(e.kind.as_str());
        j.debit.push(debit.account.clone());
        j.credit.push(credit.account.clone());
        j.currency.push(credit.currency.clone());
        j.amount.push(credit.amount.to_string());
        Ok(())
    }

    fn write(self, client: &mut Client, leases: Option<&Leases>) -> Result<(), String> {
        let db = |e: postgres::Error| reason(&e);
        let mut t = client.transaction().map_err(db)?;
        if let Some(leases) = leases {
            leases.fence(&mut t)?;
        }
        if !self.accounts.is_empty() {
            let mut cols: [Vec<String>; 8] = Default::default();
            for row in self.accounts {
                for (col, value) in cols.iter_mut().zip(row) {
                    col.push(value);
                }
            }
            t.execute(
                "INSERT INTO rulehost.accounts (id, currency, country, opened_at, status, overdraft_limit, opening_balance, tags)
                 SELECT id, currency, country, opened_at, status, overdraft::numeric, opening::numeric, tags
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
                   AS a(id, currency, country, opened_at, status, overdraft, opening, tags)",
                &[&cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5], &cols[6], &cols[7]],
            )
            .map_err(db)?;
        }
        if !self.decision_ids.is_empty() {
            let records: Vec<&[u8]> = self.decision_records.iter().map(|r| &r[..]).collect();
            t.execute(
                "INSERT INTO rulehost.decisions (id, record)
                 SELECT id, record FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS d(id, record, n) ORDER BY n",
                &[&self.decision_ids, &records],
            )
            .map_err(db)?;
        }
        let j = &self.journal;
        if !j.reference.is_empty() {
            t.execute(
                "INSERT INTO rulehost.journal (reference, kind, debit, credit, currency, amount)
                 SELECT reference, kind, debit, credit, currency, amount::numeric
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY
                   AS e(reference, kind, debit, credit, currency, amount, n) ORDER BY n",
                &[&j.reference, &j.kind, &j.debit, &j.credit, &j.currency, &j.amount],
            )
            .map_err(db)?;
        }
        if !self.holds.is_empty() {
            let mut cols: [Vec<String>; 6] = Default::default();
            for row in self.holds {
                for (col, value) in cols.iter_mut().zip(row) {
                    col.push(value);
                }
            }
            t.execute(
                "INSERT INTO rulehost.holds (id, source, destination, amount, currency, state)
                 SELECT id, source, destination, amount::numeric, currency, state
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                   AS h(id, source, destination, amount, currency, state)",
                &[&cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5]],
            )
            .map_err(db)?;
        }
        for (id, action, at) in &self.resolves {
            let state = if *action == "approve" { "posted" } else { "voided" };
            let n = t
                .execute("UPDATE rulehost.holds SET state = $2 WHERE id = $1 AND state = 'pending'", &[id, &state])
                .map_err(db)?;
            if n != 1 {
                return Err(format!("hold {id:?} is not pending in the database: resolved elsewhere"));
            }
            t.execute(
                "INSERT INTO rulehost.resolutions (hold_id, action, at_unix_ms) VALUES ($1, $2, $3)",
                &[id, action, at],
            )
            .map_err(db)?;
        }
        let (sources, ts, amounts) = &self.history;
        if !sources.is_empty() {
            t.execute(
                "INSERT INTO rulehost.history (source, ts, amount)
                 SELECT source, ts, amount::numeric FROM unnest($1::text[], $2::bytea[], $3::text[]) WITH ORDINALITY
                   AS h(source, ts, amount, n) ORDER BY n",
                &[sources, ts, amounts],
            )
            .map_err(db)?;
            let (ids, horizons): (Vec<&str>, Vec<Vec<u8>>) =
                self.horizons.iter().map(|(s, h)| (s.as_str(), ts_key(*h).to_vec())).unzip();
            t.execute(
                "DELETE FROM rulehost.history h USING unnest($1::text[], $2::bytea[]) AS p(source, horizon)
                 WHERE h.source = p.source AND h.ts < p.horizon",
                &[&ids, &horizons],
            )
            .map_err(db)?;
        }
        // Hosts sharing the database number the versions they run alike when
        // they start from the same dictionary (the same rule set on a fresh
        // ledger): the first to commit an entry inserts it, the others find
        // it. An entry only grows (traces name the rules in manifest order,
        // so every host's entry is a prefix of the same list): the longer
        // one is kept. A number taken by another version, or entries that
        // are not prefixes of each other, are refused (records would decode
        // wrongly).
        for (id, entry) in &self.dictionary {
            let (version, rules) = (entry.version.to_string(), entry.rules_json());
            t.execute(
                "INSERT INTO rulehost.ruleset_versions (id, version, rules) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[id, &version, &rules],
            )
            .map_err(db)?;
            let found = t
                .query(
                    "SELECT id, version, rules FROM rulehost.ruleset_versions WHERE id = $1 OR version = $2 FOR UPDATE",
                    &[id, &version],
                )
                .map_err(db)?;
            for row in &found {
                let (other_id, other_version, other_rules): (i32, String, String) =
                    (row.try_get(0).map_err(db)?, row.try_get(1).map_err(db)?, row.try_get(2).map_err(db)?);
                if other_id != *id || other_version != version {
                    return Err(format!(
                        "rule-set version {version:?} is number {id} on this host, but the database has number {other_id} for version {other_version:?} (hosts that ran different rule-set versions in different orders: restart this one to load the database's numbering)"
                    ));
                }
                let stored = DictionaryEntry::from_stored(other_version, &other_rules)?;
                let (shorter, longer) = if stored.rules.len() <= entry.rules.len() {
                    (&stored.rules, &entry.rules)
                } else {
                    (&entry.rules, &stored.rules)
                };
                if !longer.starts_with(shorter) {
                    return Err(format!(
                        "rule-set version {version:?}: this host's rules {:?} and the database's {:?} do not extend each other",
                        entry.rules, stored.rules
                    ));
                }
                if stored.rules.len() < entry.rules.len() {
                    t.execute("UPDATE rulehost.ruleset_versions SET rules = $2 WHERE id = $1", &[id, &rules])
                        .map_err(db)?;
                }
            }
        }
        for archive in &self.rulesets {
            let mut files = Vec::with_capacity(archive.files.len());
            for f in &archive.files {
                t.execute(
                    "INSERT INTO rulehost.blobs (sha256, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&f.sha256, &&f.bytes[..]],
                )
                .map_err(db)?;
                files.push((f.path.as_str(), f.sha256.as_str()));
            }
            let files = serde_json::to_string(&files).map_err(|e| e.to_string())?;
            t.execute(
                "INSERT INTO rulehost.rulesets (version, sha256, files) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&&*archive.version, &archive.sha256, &files],
            )
            .map_err(db)?;
        }
        let (mut ids, mut posted, mut pending) = (Vec::new(), Vec::new(), Vec::new());
        let (mut system, mut system_posted) = (Vec::new(), Vec::new());
        for (id, (p, q)) in &self.deltas {
            if p.is_zero() && q.is_zero() {
                continue;
            }
            if id.starts_with(SYSTEM_ACCOUNT_PREFIX) {
                system.push(id.as_str());
                system_posted.push(p.to_string());
            } else {
                ids.push(id.as_str());
                posted.push(p.to_string());
                pending.push(q.to_string());
            }
        }
        if !ids.is_empty() {
            // Lock in id order (the map is sorted): concurrent writers never deadlock.
            t.execute("SELECT 1 FROM rulehost.accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&ids])
                .map_err(db)?;
            let n = t
                .execute(
                    "UPDATE rulehost.accounts AS a SET posted = a.posted + d.posted::numeric,
                                                       pending = a.pending + d.pending::numeric
                     FROM unnest($1::text[], $2::text[], $3::text[]) AS d(id, posted, pending) WHERE a.id = d.id",
                    &[&ids, &posted, &pending],
                )
                .map_err(db)?;
            if n != ids.len() as u64 {
                return Err(format!(
                    "{} of {} accounts to change are not in the database",
                    ids.len() as u64 - n.min(ids.len() as u64),
                    ids.len()
                ));
            }
        }
        if !system.is_empty() {
            t.execute(
                "INSERT INTO rulehost.system_accounts (id, posted)
                 SELECT id, posted::numeric FROM unnest($1::text[], $2::text[]) AS d(id, posted) ORDER BY id
                 ON CONFLICT (id) DO UPDATE SET posted = rulehost.system_accounts.posted + excluded.posted",
                &[&system, &system_posted],
            )
            .map_err(db)?;
        }
        t.commit().map_err(db)
    }
}
