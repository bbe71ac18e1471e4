//! Partitions of a shared ledger: the leases a host holds, their renewal,
//! and the fencing token every group commit checks.
//!
//! A row per partition in `rulehost.partitions` names its owner, an epoch
//! and an expiry. A host takes a partition that is free, expired or its own
//! name's (a restart) by raising its epoch; it renews every third of the
//! lease. Each group commit first locks the host's rows (`FOR SHARE`) and
//! checks it still holds every partition at the epoch it took: a host whose
//! partition was taken over (it was paused or cut off past its lease) can
//! never commit again — the successor's `UPDATE` raised the epoch, and it
//! waited for any commit in flight before it could. A host that closes
//! cleanly frees its partitions at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::Client;

use crate::client::{connect, reason};
use rulehost_core::partition::{PARTITIONS, partition};
use rulehost_ledger::LedgerError;
use rulehost_ledger::durable::{Ownership, PartitionClaim};

/// How long opening waits for partitions another host holds, in leases
/// (a dead host's lease lapses within one; the second is slack).
pub const ACQUIRE_WAIT_LEASES: u32 = 2;
/// Renewals per lease: a lease survives this many minus one missed renewals.
pub const RENEWALS_PER_LEASE: u32 = 3;
/// Shortest time between two renewals (for very short test leases).
const RENEWAL_INTERVAL_MIN: Duration = Duration::from_millis(50);
/// How often opening retries taking partitions held by another host.
const ACQUIRE_RETRY: Duration = Duration::from_millis(100);

/// What a host holds: (partition, epoch) pairs, fixed once acquired.
pub(crate) struct Leases {
    pub(crate) host: String,
    pub(crate) held: Vec<(i32, i64)>,
    owned: [bool; PARTITIONS as usize],
    lost: AtomicBool,
    /// Other partitions' owners, as last seen by the renewal.
    owners: Mutex<HashMap<u16, String>>,
}

impl Leases {
    /// The lease of some partition was lost: this host decides nothing more.
    pub(crate) fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    fn columns(&self) -> (Vec<i32>, Vec<i64>) {
        self.held.iter().copied().unzip()
    }

    /// Inside a group's transaction: locks this host's rows and checks it
    /// still holds every partition at its epoch.
    pub(crate) fn fence(&self, t: &mut postgres::Transaction<'_>) -> Result<(), String> {
        let (partitions, epochs) = self.columns();
        let rows = t
            .query(
                "SELECT p.partition FROM rulehost.partitions p
                 JOIN unnest($2::int[], $3::bigint[]) AS h(partition, epoch)
                   ON p.partition = h.partition AND p.epoch = h.epoch
                 WHERE p.owner = $1 FOR SHARE OF p",
                &[&self.host, &partitions, &epochs],
            )
            .map_err(|e| reason(&e))?;
        if rows.len() != self.held.len() {
            self.lose();
            return Err(format!(
                "host {:?} was fenced off: another host took over {} of its {} partition(s) (its lease lapsed); nothing after the last durable point is acknowledged",
                self.host,
                self.held.len() - rows.len().min(self.held.len()),
                self.held.len()
            ));
        }
        Ok(())
    }
}

impl Ownership for Leases {
    fn check(&self, source: &str) -> Result<(), LedgerError> {
        let p = partition(source);
        if self.owned[usize::from(p)] && !self.lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        let owner = if self.owned[usize::from(p)] {
            Some("another host (this one lost its lease)".to_owned())
        } else {
            self.owners.lock().ok().and_then(|o| o.get(&p).cloned())
        };
        Err(LedgerError::NotOwner { account: source.to_owned(), partition: p, owner })
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Takes the partitions `claim` names, waiting up to [`ACQUIRE_WAIT_LEASES`] leases for
/// ones another host holds to expire; the error names who holds what.
pub(crate) fn acquire(client: &mut Client, claim: &PartitionClaim) -> Result<Arc<Leases>, String> {
    if claim.partitions.is_empty() {
        return Err("no partitions claimed".into());
    }
    if let Some(p) = claim.partitions.iter().find(|p| **p >= PARTITIONS) {
        return Err(format!("partition {p} does not exist: there are {PARTITIONS}"));
    }
    client
        .execute(
            "INSERT INTO rulehost.partitions (partition) SELECT g FROM generate_series(0, $1::int - 1) g
             ON CONFLICT DO NOTHING",
            &[&i32::from(PARTITIONS)],
        )
        .map_err(|e| reason(&e))?;
    let wanted: Vec<i32> = claim.partitions.iter().map(|p| i32::from(*p)).collect();
    let mut held: Vec<(i32, i64)> = Vec::new();
    let deadline = Instant::now() + claim.lease * ACQUIRE_WAIT_LEASES;
    loop {
        let mine: Vec<i32> = held.iter().map(|(p, _)| *p).collect();
        let rows = client
            .query(
                "UPDATE rulehost.partitions
                 SET owner = $1, epoch = epoch + 1, expires_at = now() + make_interval(secs => $2), renewed_at = now()
                 WHERE partition = ANY($3) AND partition <> ALL($4)
                   AND (owner IS NULL OR owner = $1 OR expires_at < now())
                 RETURNING partition, epoch",
                &[&claim.host, &seconds(claim.lease), &wanted, &mine],
            )
            .map_err(|e| reason(&e))?;
        for r in rows {
            held.push((r.try_get(0).map_err(|e| reason(&e))?, r.try_get(1).map_err(|e| reason(&e))?));
        }
        if held.len() == wanted.len() {
            break;
        }
        if Instant::now() >= deadline {
            let mine: Vec<i32> = held.iter().map(|(p, _)| *p).collect();
            let busy = client
                .query(
                    "SELECT partition, owner, greatest(0, extract(epoch FROM expires_at - now()))::float8
                     FROM rulehost.partitions WHERE partition = ANY($1) AND partition <> ALL($2) ORDER BY partition",
                    &[&wanted, &mine],
                )
                .map_err(|e| reason(&e))?;
            let busy: Vec<String> = busy
                .iter()
                .map(|r| {
                    let p: i32 = r.try_get(0).unwrap_or(-1);
                    let owner: Option<String> = r.try_get(1).unwrap_or(None);
                    let left: f64 = r.try_get(2).unwrap_or(0.0);
                    format!("{p} ({} for {left:.1} s more)", owner.unwrap_or_else(|| "free".into()))
                })
                .collect();
            // Give back what was taken: nothing half-claimed stays held.
            release(client, &claim.host, &held);
            return Err(format!(
                "partitions held by another host past {:.0} s: {}",
                seconds(claim.lease * ACQUIRE_WAIT_LEASES),
                busy.join(", ")
            ));
        }
        std::thread::sleep(ACQUIRE_RETRY);
    }
    held.sort_unstable();
    let mut owned = [false; PARTITIONS as usize];
    for (p, _) in &held {
        if let Some(slot) = usize::try_from(*p).ok().and_then(|i| owned.get_mut(i)) {
            *slot = true;
        }
    }
    tracing::info!(host = %claim.host, partitions = held.len(), "took the partitions' leases");
    Ok(Arc::new(Leases {
        host: claim.host.clone(),
        held,
        owned,
        lost: AtomicBool::new(false),
        owners: Mutex::default(),
    }))
}

/// Frees `held` (a clean stop), if this host still holds them.
fn release(client: &mut Client, host: &str, held: &[(i32, i64)]) {
    let (partitions, epochs): (Vec<i32>, Vec<i64>) = held.iter().copied().unzip();
    let _ = client.execute(
        "UPDATE rulehost.partitions p SET owner = NULL, expires_at = '-infinity'
         FROM unnest($2::int[], $3::bigint[]) AS h(partition, epoch)
         WHERE p.partition = h.partition AND p.epoch = h.epoch AND p.owner = $1",
        &[&host, &partitions, &epochs],
    );
}

/// The thread that renews a host's leases (and watches who owns the
/// others); stopping it frees the leases.
pub(crate) struct Renewal {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Renewal {
    pub(crate) fn start(url: &str, leases: Arc<Leases>, lease: Duration) -> Result<Renewal, String> {
        let mut client = connect(url)?;
        let stop = Arc::new(AtomicBool::new(false));
        let every = (lease / RENEWALS_PER_LEASE).max(RENEWAL_INTERVAL_MIN);
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("rulehost-leases".into())
                .spawn(move || {
                    let (partitions, epochs) = leases.columns();
                    while !stop.load(Ordering::SeqCst) {
                        let renewed = client.execute(
                            "UPDATE rulehost.partitions p
                             SET expires_at = now() + make_interval(secs => $4), renewed_at = now()
                             FROM unnest($2::int[], $3::bigint[]) AS h(partition, epoch)
                             WHERE p.partition = h.partition AND p.epoch = h.epoch AND p.owner = $1",
                            &[&leases.host, &partitions, &epochs, &seconds(lease)],
                        );
                        match renewed {
                            Ok(n) if n as usize == leases.held.len() => {}
                            Ok(n) => {
                                tracing::error!(host = %leases.host, renewed = n, held = leases.held.len(), "lost partition leases: deciding nothing more");
                                leases.lose();
                            }
                            Err(e) => tracing::warn!(error = %reason(&e), "could not renew the partition leases"),
                        }
                        if let Ok(rows) = client.query(
                            "SELECT partition, owner FROM rulehost.partitions WHERE owner IS NOT NULL AND expires_at > now()",
                            &[],
                        ) && let Ok(mut owners) = leases.owners.lock()
                        {
                            owners.clear();
                            for r in rows {
                                if let (Ok(p), Ok(o)) = (r.try_get::<_, i32>(0), r.try_get::<_, String>(1))
                                    && let Ok(p) = u16::try_from(p)
                                {
                                    owners.insert(p, o);
                                }
                            }
                        }
                        let until = Instant::now() + every;
                        while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    release(&mut client, &leases.host, &leases.held);
                })
                .map_err(|e| format!("cannot start the lease thread: {e}"))?
        };
        Ok(Renewal { stop, thread: Some(thread) })
    }

    /// Stops renewing and frees the leases.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One partition's lease, as `rulehost partitions` shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PartitionLease {
    /// The partition.
    pub partition: u16,
    /// Its owner, while the lease runs.
    pub owner: Option<String>,
    /// The fencing token: raised at every takeover.
    pub epoch: i64,
    /// Milliseconds until the lease expires (negative: expired that long ago).
    pub expires_in_ms: Option<i64>,
    /// Milliseconds since its owner last renewed it.
    pub renewed_ms_ago: Option<i64>,
}

pub(crate) fn leases(client: &mut Client) -> Result<Vec<PartitionLease>, String> {
    let rows = client
        .query(
            "SELECT partition, owner, epoch,
                    CASE WHEN expires_at = '-infinity' THEN NULL
                         ELSE (extract(epoch FROM expires_at - now()) * 1000)::bigint END,
                    (extract(epoch FROM now() - renewed_at) * 1000)::bigint
             FROM rulehost.partitions ORDER BY partition",
            &[],
        )
        .map_err(|e| reason(&e))?;
    rows.iter()
        .map(|r| {
            let p: i32 = r.try_get(0).map_err(|e| reason(&e))?;
            let expires: Option<i64> = r.try_get(3).map_err(|e| reason(&e))?;
            let owner: Option<String> = r.try_get(1).map_err(|e| reason(&e))?;
            Ok(PartitionLease {
                partition: u16::try_from(p).map_err(|_| format!("partition {p}"))?,
                owner: owner.filter(|_| expires.is_some_and(|e| e > 0)),
                epoch: r.try_get(2).map_err(|e| reason(&e))?,
                expires_in_ms: expires,
                renewed_ms_ago: r.try_get(4).map_err(|e| reason(&e))?,
            })
        })
        .collect()
}
