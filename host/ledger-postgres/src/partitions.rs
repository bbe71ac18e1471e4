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
//!
//! A serving host (`PartitionClaim::take_over`) also watches for lapsed
//! leases — an owner that stopped renewing: it died, hangs or is cut off —
//! and asks its ledger to reopen with those partitions added (adopted).
//! A host that claims partitions held by another writes its name in their
//! `wanted_by` (refreshed while it waits); an adopter hands such a
//! partition back by letting its lease expire at once, after its last
//! commit. Partitions a host claims itself (its home) are never handed
//! back; a partition wanted within the last lease is not adopted by a third.

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
    /// (partition, epoch), sorted by partition.
    pub(crate) held: Vec<(i32, i64)>,
    /// The partitions it claims itself (the others held were adopted).
    home: Vec<i32>,
    take_over: bool,
    owned: [bool; PARTITIONS as usize],
    lost: AtomicBool,
    /// Other partitions' owners, as last seen by the renewal.
    owners: Mutex<HashMap<u16, String>>,
    /// The partitions the renewal found this host should hold instead
    /// (lapsed ones added, wanted adopted ones removed), until a reopen.
    reshape: Mutex<Option<Vec<u16>>>,
}

impl Leases {
    /// The lease of some partition was lost: this host decides nothing more.
    pub(crate) fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// The partitions held, sorted (as `held` is).
    pub(crate) fn partitions(&self) -> Vec<u16> {
        self.held.iter().filter_map(|(p, _)| u16::try_from(*p).ok()).collect()
    }

    /// What the renewal found this host should hold instead, if anything.
    pub(crate) fn reshape(&self) -> Option<Vec<u16>> {
        self.reshape.lock().ok().and_then(|r| r.clone())
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

    fn owned(&self) -> Vec<u16> {
        if self.is_lost() { Vec::new() } else { self.partitions() }
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Takes the partitions `claim` names, waiting up to `wait` for ones
/// another host holds to expire or be handed back (asking for them
/// meanwhile); and those of `adopt` that are free, lapsed or its own at the
/// first try (never waited for). The error names who holds what.
pub(crate) fn acquire(
    client: &mut Client,
    claim: &PartitionClaim,
    adopt: &[u16],
    wait: Duration,
) -> Result<Arc<Leases>, String> {
    if claim.partitions.is_empty() {
        return Err("no partitions claimed".into());
    }
    if let Some(p) = claim.partitions.iter().chain(adopt).find(|p| **p >= PARTITIONS) {
        return Err(format!("partition {p} does not exist: there are {PARTITIONS}"));
    }
    client
        .execute(
            "INSERT INTO rulehost.partitions (partition) SELECT g FROM generate_series(0, $1::int - 1) g
             ON CONFLICT DO NOTHING",
            &[&i32::from(PARTITIONS)],
        )
        .map_err(|e| reason(&e))?;
    let home: Vec<i32> = claim.partitions.iter().map(|p| i32::from(*p)).collect();
    let adopt: Vec<i32> = adopt.iter().map(|p| i32::from(*p)).filter(|p| !home.contains(p)).collect();
    let mut held: Vec<(i32, i64)> = Vec::new();
    let deadline = Instant::now() + wait;
    let mut wanted: Vec<i32> = home.iter().chain(&adopt).copied().collect();
    loop {
        let mine: Vec<i32> = held.iter().map(|(p, _)| *p).collect();
        let rows = client
            .query(
                "UPDATE rulehost.partitions
                 SET owner = $1, epoch = epoch + 1, expires_at = now() + make_interval(secs => $2), renewed_at = now(),
                     wanted_by = NULL, wanted_at = NULL
                 WHERE partition = ANY($3) AND partition <> ALL($4)
                   AND (owner IS NULL OR owner = $1 OR expires_at < now())
                 RETURNING partition, epoch",
                &[&claim.host, &seconds(claim.lease), &wanted, &mine],
            )
            .map_err(|e| reason(&e))?;
        for r in rows {
            held.push((r.try_get(0).map_err(|e| reason(&e))?, r.try_get(1).map_err(|e| reason(&e))?));
        }
        // Adopted partitions are taken at the first try or not at all.
        wanted = home.clone();
        let mine: Vec<i32> = held.iter().map(|(p, _)| *p).collect();
        let missing: Vec<i32> = home.iter().copied().filter(|p| !mine.contains(p)).collect();
        if missing.is_empty() {
            break;
        }
        // Ask for them: a host that adopted them hands them back.
        client
            .execute(
                "UPDATE rulehost.partitions SET wanted_by = $1, wanted_at = now()
                 WHERE partition = ANY($2) AND owner IS DISTINCT FROM $1",
                &[&claim.host, &missing],
            )
            .map_err(|e| reason(&e))?;
        if Instant::now() >= deadline {
            let busy = client
                .query(
                    "SELECT partition, owner, greatest(0, extract(epoch FROM expires_at - now()))::float8
                     FROM rulehost.partitions WHERE partition = ANY($1) ORDER BY partition",
                    &[&missing],
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
            return Err(format!("partitions held by another host past {:.1} s: {}", seconds(wait), busy.join(", ")));
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
    let adopted = held.len() - home.len();
    tracing::info!(host = %claim.host, partitions = held.len(), adopted, "took the partitions' leases");
    Ok(Arc::new(Leases {
        host: claim.host.clone(),
        held,
        home,
        take_over: claim.take_over,
        owned,
        lost: AtomicBool::new(false),
        owners: Mutex::default(),
        reshape: Mutex::default(),
    }))
}

/// Lets the leases of `held` expire at once (a hand-back: the host that
/// wants them, or any other, may take them), if this host still holds them.
fn expire(client: &mut Client, host: &str, held: &[(i32, i64)]) {
    let (partitions, epochs): (Vec<i32>, Vec<i64>) = held.iter().copied().unzip();
    let _ = client.execute(
        "UPDATE rulehost.partitions p SET expires_at = now() - interval '1 millisecond'
         FROM unnest($2::int[], $3::bigint[]) AS h(partition, epoch)
         WHERE p.partition = h.partition AND p.epoch = h.epoch AND p.owner = $1",
        &[&host, &partitions, &epochs],
    );
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

/// How a renewal thread ends.
#[derive(Clone, Default)]
enum Exit {
    /// Still renewing.
    #[default]
    Run,
    /// A clean stop: frees every lease.
    Release,
    /// A reopen: keeps the rows (the reopening host takes them again at
    /// once), letting these expire at once (handed back).
    Keep(Vec<(i32, i64)>),
}

/// The thread that renews a host's leases (and watches who owns the
/// others, and on a serving host which lapsed or are wanted back).
pub(crate) struct Renewal {
    exit: Arc<Mutex<Exit>>,
    thread: Option<JoinHandle<()>>,
}

impl Renewal {
    pub(crate) fn start(url: &str, leases: Arc<Leases>, lease: Duration) -> Result<Renewal, String> {
        let mut client = connect(url)?;
        let exit = Arc::new(Mutex::new(Exit::Run));
        let every = (lease / RENEWALS_PER_LEASE).max(RENEWAL_INTERVAL_MIN);
        let running = {
            let exit = exit.clone();
            move || exit.lock().map(|e| matches!(*e, Exit::Run)).unwrap_or(false)
        };
        let thread = {
            let exit = exit.clone();
            std::thread::Builder::new()
                .name("rulehost-leases".into())
                .spawn(move || {
                    let (partitions, epochs) = leases.columns();
                    while running() {
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
                                if !leases.is_lost() {
                                    tracing::error!(host = %leases.host, renewed = n, held = leases.held.len(), "lost partition leases: deciding nothing more");
                                }
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
                        if leases.take_over
                            && let Err(e) = watch(&mut client, &leases, lease)
                        {
                            tracing::warn!(error = %reason(&e), "could not look for lapsed partition leases");
                        }
                        let until = Instant::now() + every;
                        while running() && Instant::now() < until {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    match exit.lock().map(|e| e.clone()).unwrap_or(Exit::Release) {
                        Exit::Keep(handed_back) => expire(&mut client, &leases.host, &handed_back),
                        Exit::Release | Exit::Run => release(&mut client, &leases.host, &leases.held),
                    }
                })
                .map_err(|e| format!("cannot start the lease thread: {e}"))?
        };
        Ok(Renewal { exit, thread: Some(thread) })
    }

    fn end(&mut self, how: Exit) {
        if let Some(t) = self.thread.take() {
            if let Ok(mut exit) = self.exit.lock() {
                *exit = how;
            }
            let _ = t.join();
        }
    }

    /// Stops renewing and frees the leases.
    pub(crate) fn stop(&mut self) {
        self.end(Exit::Release);
    }

    /// Stops renewing, keeping the leases as they are (to take them again
    /// at once), except `handed_back`, which expire now.
    pub(crate) fn pause(&mut self, handed_back: Vec<(i32, i64)>) {
        self.end(Exit::Keep(handed_back));
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.stop();
    }
}

/// On a serving host: which partitions it should hold instead — lapsed
/// ones added (not wanted by a third host within the last lease), adopted
/// ones another host wants back removed — noted in `leases.reshape`.
fn watch(client: &mut Client, leases: &Leases, lease: Duration) -> Result<(), postgres::Error> {
    let held: Vec<i32> = leases.held.iter().map(|(p, _)| *p).collect();
    let adopted: Vec<i32> = held.iter().copied().filter(|p| !leases.home.contains(p)).collect();
    let lapsed: Vec<i32> = client
        .query(
            "SELECT partition FROM rulehost.partitions
             WHERE owner IS NOT NULL AND owner <> $1 AND expires_at < now()
               AND (wanted_by IS NULL OR wanted_by = $1 OR wanted_at < now() - make_interval(secs => $2))
             ORDER BY partition",
            &[&leases.host, &seconds(lease)],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let wanted: Vec<i32> = if adopted.is_empty() {
        Vec::new()
    } else {
        client
            .query(
                "SELECT partition FROM rulehost.partitions
                 WHERE partition = ANY($1) AND wanted_by IS NOT NULL AND wanted_by <> $2
                   AND wanted_at > now() - make_interval(secs => $3)",
                &[&adopted, &leases.host, &seconds(lease)],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?
    };
    if lapsed.is_empty() && wanted.is_empty() {
        return Ok(());
    }
    let mut target: Vec<u16> =
        held.iter().chain(&lapsed).filter(|p| !wanted.contains(p)).filter_map(|p| u16::try_from(*p).ok()).collect();
    target.sort_unstable();
    target.dedup();
    tracing::info!(host = %leases.host, lapsed = ?lapsed, wanted_back = ?wanted, "partitions to take over or hand back");
    if let Ok(mut reshape) = leases.reshape.lock() {
        *reshape = Some(target);
    }
    Ok(())
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
