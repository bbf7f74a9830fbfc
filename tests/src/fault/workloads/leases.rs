//! *leases*: clients grant leases (TTL 3 or 5 s) and attach one key each
//! (`lease/<id>`), renewed by [`LeaseKeeper`]: client 0 keeps one lease
//! for the whole run; the others keep theirs for 3-8 s then revoke it, or
//! stop renewing after 0.5-2.5 s (abandon). Every client reads its key
//! (linearizable gets) all along.
//!
//! Checked afterwards, from the recorded grants and renewals
//! ([`super::renewals`]):
//! - **no early expiry**: a read that found a lease's key missing (after
//!   the attaching put was acknowledged) while the lease was certainly
//!   alive during the whole read — an acknowledged grant/renewal invoked at
//!   most `TTL - TTL/3` before every instant of the read — is an anomaly;
//!   so is the wrong value or lease on the key;
//! - **abandoned leases end**: the key of every lease no longer renewed
//!   (stopped on purpose, or reported lost by its keeper) is gone by
//!   `max(last renewal, end of faults) + 2 TTL + FAILOVER_BOUND` (a leader
//!   change gives a lease its full TTL again);
//! - **a revoke deletes the key at once**: no read invoked after a revoke
//!   returned finds the key (the whole-run leases are revoked at the end).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use d_engine_client::{Consistency, Error, KvClient, LeaseKeeper, RangeOptions};

use super::renewals::RecordingKv;
use super::{Counts, Ctx};
use crate::fault::history::Outcome;
use crate::sim::rng::Rng;

const PREFIX: &str = "lease/";
/// How long after the faults stop an abandoned lease may still live, on
/// top of two TTLs (one full TTL again per leader change).
pub const FAILOVER_BOUND: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Renewed until the run stops (revoked by the check).
    KeepToTheEnd,
    /// Renewed this long, then revoked: the key must be gone at once.
    Revoke(Duration),
    /// Renewed this long, then no more: the key must go after the TTL.
    Abandon(Duration),
}

#[derive(Clone, Debug)]
struct LeaseRec {
    id: u64,
    ttl: Duration,
    key: String,
    /// When the attaching put returned ok (None: failed or unknown).
    put_acked: Option<u64>,
    /// Kept alive until the end of the run (else abandoned after a while).
    kept: bool,
    /// When renewing stopped (abandoned, or lost).
    stopped: Option<u64>,
    /// The keeper's loss report (time, reason).
    lost: Option<(u64, String)>,
    /// When a revoke of it was invoked (the key may be gone from then on).
    revoke_invoked: Option<u64>,
}

#[derive(Clone, Debug)]
struct Read {
    lease: usize,
    invoke: u64,
    complete: u64,
    /// (value, lease) if present.
    found: Option<(String, u64)>,
}

pub struct LeaseWorkload {
    rkv: RecordingKv,
    leases: Mutex<Vec<LeaseRec>>,
    reads: Mutex<Vec<Read>>,
    counts: Mutex<Counts>,
    keepers: Mutex<Vec<(usize, LeaseKeeper)>>,
    /// Leases revoked during the run: (lease index, revoke returned).
    revoked: Mutex<Vec<(usize, u64)>>,
}

impl LeaseWorkload {
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        Arc::new(LeaseWorkload {
            rkv: RecordingKv::new(ctx.client.kv(), ctx.clock),
            leases: Mutex::default(),
            reads: Mutex::default(),
            counts: Mutex::default(),
            keepers: Mutex::default(),
            revoked: Mutex::default(),
        })
    }

    fn count(&self, o: Outcome) {
        self.counts.lock().unwrap()[o as usize] += 1;
    }

    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap()
    }

    pub fn spawn(
        self: &Arc<Self>,
        ctx: &Ctx,
        clients: usize,
        seed: u64,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..clients)
            .map(|c| {
                let me = self.clone();
                let ctx = ctx.clone();
                let mut rng = Rng::new(seed ^ 0x1EA5E ^ ((c as u64) << 16));
                tokio::spawn(async move {
                    // Client 0 keeps one lease for the whole run; the others
                    // keep theirs for 3-8 s then revoke it, or abandon it
                    // after 0.5-2.5 s.
                    while !ctx.stopped() {
                        let fate = if c == 0 {
                            Fate::KeepToTheEnd
                        } else if rng.below(2) == 0 {
                            Fate::Revoke(Duration::from_millis(rng.range(3000, 8000)))
                        } else {
                            Fate::Abandon(Duration::from_millis(rng.range(500, 2500)))
                        };
                        me.one_lease(&ctx, &mut rng, fate).await;
                    }
                })
            })
            .collect()
    }

    async fn read(&self, ctx: &Ctx, idx: usize, key: &str) -> Option<bool> {
        let invoke = ctx.clock.now();
        match self.rkv.kv.get_with(key, Consistency::Linearizable).await {
            Ok(found) => {
                let complete = ctx.clock.now();
                self.count(Outcome::Ok);
                let present = found.is_some();
                self.reads.lock().unwrap().push(Read {
                    lease: idx,
                    invoke,
                    complete,
                    found: found
                        .map(|kv| (String::from_utf8_lossy(&kv.value).into_owned(), kv.lease)),
                });
                Some(present)
            }
            Err(_) => {
                self.count(Outcome::Fail);
                None
            }
        }
    }

    async fn one_lease(&self, ctx: &Ctx, rng: &mut Rng, fate: Fate) {
        let kept = !matches!(fate, Fate::Abandon(_));
        let ttl = Duration::from_millis(if rng.below(2) == 0 { 3000 } else { 5000 });
        let grant = match self.rkv.lease_grant(ttl).await {
            Ok(g) => g,
            Err(_) => {
                self.count(Outcome::Info);
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
        };
        self.count(Outcome::Ok);
        let mut keeper = LeaseKeeper::start(Arc::new(self.rkv.clone()), grant.id, grant.ttl);
        let key = format!("{PREFIX}{:016x}", grant.id);
        let idx = {
            let mut all = self.leases.lock().unwrap();
            all.push(LeaseRec {
                id: grant.id,
                ttl: grant.ttl,
                key: key.clone(),
                put_acked: None,
                kept,
                stopped: None,
                lost: None,
                revoke_invoked: None,
            });
            all.len() - 1
        };
        match self
            .rkv
            .put_with_lease(&key, grant.id.to_string(), grant.id)
            .await
        {
            Ok(_) => {
                self.leases.lock().unwrap()[idx].put_acked = Some(ctx.clock.now());
                self.count(Outcome::Ok);
            }
            Err(Error::LeaseNotFound(_)) => self.count(Outcome::Fail),
            Err(_) => self.count(Outcome::Info),
        }
        let renew_for = match fate {
            Fate::KeepToTheEnd => Duration::MAX,
            Fate::Revoke(d) | Fate::Abandon(d) => d,
        };
        let started = Instant::now();
        loop {
            if ctx.stopped() || started.elapsed() >= renew_for {
                break;
            }
            let pause = Duration::from_millis(rng.range(50, 250));
            tokio::select! {
                e = keeper.lost() => {
                    let now = ctx.clock.now();
                    let mut all = self.leases.lock().unwrap();
                    all[idx].lost = Some((now, e.to_string()));
                    all[idx].stopped = Some(now);
                    return;
                }
                _ = tokio::time::sleep(pause) => {}
            }
            self.read(ctx, idx, &key).await;
        }
        if let Fate::KeepToTheEnd = fate {
            // Revoked by the check, after the "no early expiry" reads.
            self.keepers.lock().unwrap().push((idx, keeper));
            return;
        }
        if let (Fate::Revoke(_), false) = (fate, ctx.stopped()) {
            drop(keeper);
            self.leases.lock().unwrap()[idx].revoke_invoked = Some(ctx.clock.now());
            match self.rkv.kv.lease_revoke(grant.id).await {
                Ok(_) => {
                    self.count(Outcome::Ok);
                    self.revoked.lock().unwrap().push((idx, ctx.clock.now()));
                    // Deleted with the revoke, in the same step.
                    self.read(ctx, idx, &key).await;
                }
                Err(Error::LeaseNotFound(_)) => {
                    self.count(Outcome::Fail);
                    self.leases.lock().unwrap()[idx].stopped = Some(ctx.clock.now());
                }
                Err(_) => {
                    self.count(Outcome::Info);
                    self.leases.lock().unwrap()[idx].stopped = Some(ctx.clock.now());
                }
            }
            return;
        }
        drop(keeper);
        self.leases.lock().unwrap()[idx].stopped = Some(ctx.clock.now());
        // Follow the abandoned key for a while (until it is gone).
        let until = Instant::now() + ttl * 2;
        while Instant::now() < until && !ctx.stopped() {
            if self.read(ctx, idx, &key).await == Some(false) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.range(100, 300))).await;
        }
    }

    /// `faults_end`: when the last fault was healed (run clock).
    pub async fn check(&self, ctx: &Ctx, faults_end: u64) -> (Vec<String>, Vec<String>) {
        let mut out = Vec::new();
        let mut notes = Vec::new();
        let leases = self.leases.lock().unwrap().clone();
        let renewals = self.rkv.renewals.clone();
        let margin = |ttl: Duration| ttl.as_nanos() as u64 / 3;
        let ttl_ns = |ttl: Duration| ttl.as_nanos() as u64;

        // 1. No early expiry, and the right value on the key.
        let reads = self.reads.lock().unwrap().clone();
        let mut checked = 0u64;
        for r in &reads {
            let l = &leases[r.lease];
            match &r.found {
                Some((v, lease)) if *v != l.id.to_string() || *lease != l.id => out.push(format!(
                    "leases: {} read as value {v} lease {lease}; written as value {} lease {}",
                    l.key, l.id, l.id
                )),
                Some(_) => {}
                None => {
                    let Some(acked) = l.put_acked else { continue };
                    if r.invoke < acked || l.revoke_invoked.is_some_and(|t| r.complete >= t) {
                        continue;
                    }
                    checked += 1;
                    let alive_until =
                        renewals.covered_until(l.id, ttl_ns(l.ttl), margin(l.ttl), r.invoke);
                    if alive_until >= r.complete {
                        let acks = renewals.acks(l.id);
                        let last: Vec<String> = acks
                            .iter()
                            .filter(|a| a.0 <= r.invoke)
                            .rev()
                            .take(3)
                            .map(|a| format!("[{:.3}s..{:.3}s]", secs(a.0), secs(a.1)))
                            .collect();
                        out.push(format!(
                            "leases: EARLY EXPIRY: {} (lease {}, TTL {:?}) missing in a linearizable read [{:.3}s, {:.3}s] while certainly alive until {:.3}s; last acknowledged renewals (invoke..return): {}",
                            l.key,
                            l.id,
                            l.ttl,
                            secs(r.invoke),
                            secs(r.complete),
                            secs(alive_until),
                            last.join(" ")
                        ));
                    }
                }
            }
        }
        // A read invoked after a revoke returned must not find the key.
        let revoked = self.revoked.lock().unwrap().clone();
        for (idx, at) in &revoked {
            for r in reads.iter().filter(|r| r.lease == *idx && r.invoke > *at) {
                if r.found.is_some() {
                    out.push(format!(
                        "leases: {} found at [{:.3}s, {:.3}s] after its lease {} was revoked at {:.3}s",
                        leases[*idx].key,
                        secs(r.invoke),
                        secs(r.complete),
                        leases[*idx].id,
                        secs(*at)
                    ));
                }
            }
        }
        let lost = leases.iter().filter(|l| l.lost.is_some()).count();
        notes.push(format!(
            "leases: {} leases ({} kept then revoked, {} abandoned, {} reported lost by the keeper), {} key reads ({} of a missing key checked against renewals)",
            leases.len(),
            leases.iter().filter(|l| l.kept).count(),
            leases.iter().filter(|l| !l.kept).count(),
            lost,
            reads.len(),
            checked
        ));
        let mut reasons: Vec<&str> = leases
            .iter()
            .filter_map(|l| l.lost.as_ref().map(|x| x.1.as_str()))
            .collect();
        reasons.sort();
        reasons.dedup();
        for r in reasons.iter().take(3) {
            notes.push(format!("leases: keeper loss report: {r}"));
        }

        // 2. Keys of leases no longer renewed go away.
        let abandoned: Vec<&LeaseRec> = leases.iter().filter(|l| l.stopped.is_some()).collect();
        let deadline_of = |l: &LeaseRec| {
            l.stopped.unwrap().max(faults_end)
                + 2 * ttl_ns(l.ttl)
                + FAILOVER_BOUND.as_nanos() as u64
        };
        let last_deadline = abandoned.iter().map(|l| deadline_of(l)).max().unwrap_or(0);
        let mut remaining: Vec<&LeaseRec> = abandoned.clone();
        loop {
            if let Ok(keys) = self.present_keys().await {
                remaining.retain(|l| keys.contains(&l.key));
                if remaining.is_empty() {
                    break;
                }
            }
            if ctx.clock.now() > last_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let now = ctx.clock.now();
        for l in remaining {
            if now > deadline_of(l) {
                out.push(format!(
                    "leases: {} of lease {} (TTL {:?}, renewing stopped at {:.3}s, faults ended at {:.3}s) still present at {:.3}s",
                    l.key,
                    l.id,
                    l.ttl,
                    secs(l.stopped.unwrap()),
                    secs(faults_end),
                    secs(now)
                ));
            }
        }

        // 3. Revoking a kept lease deletes its key at once.
        let keepers = std::mem::take(&mut *self.keepers.lock().unwrap());
        let mut revoked = 0;
        for (idx, keeper) in keepers {
            let l = &leases[idx];
            let id = keeper.id();
            drop(keeper);
            if l.put_acked.is_none() {
                continue;
            }
            let mut ok = false;
            for _ in 0..10 {
                match self.rkv.kv.lease_revoke(id).await {
                    Ok(_) => {
                        ok = true;
                        break;
                    }
                    Err(Error::LeaseNotFound(_)) => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
            if ok {
                revoked += 1;
                if let Ok(Some(kv)) = self.rkv.kv.get(&l.key).await {
                    out.push(format!(
                        "leases: {} still present after its lease {} was revoked (mod revision {})",
                        l.key, id, kv.mod_revision
                    ));
                }
            }
        }
        notes.push(format!("leases: {revoked} kept leases revoked at the end"));
        (out, notes)
    }

    async fn present_keys(&self) -> Result<Vec<String>, Error> {
        let kvs = self
            .rkv
            .kv
            .range_all(
                PREFIX,
                RangeOptions::prefix().with_consistency(Consistency::Linearizable),
            )
            .collect_all()
            .await?;
        Ok(kvs
            .into_iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect())
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}
