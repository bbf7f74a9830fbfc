//! *lock*: workers take `lock("fault-lock", lease)` through the Lock
//! service, each on a short-TTL lease kept alive by [`LeaseKeeper`]. While
//! holding, a worker makes guarded writes — Txn(compare: its lock key
//! exists with create revision = its fencing token; then: get and put
//! `fault-lock/owner`) — and stops acting as soon as its keeper reports the
//! lease lost (the documented rule), or when it unlocks.
//!
//! A holding's *safe interval* runs from the lock call's return to the
//! earliest of: unlock invoked, the loss noticed, and the end of the time
//! its lease was certainly alive (an acknowledged grant/renewal invoked at
//! most `TTL - TTL/3` before, see [`super::renewals`]). A holding with a
//! non-empty safe interval is *clean*. Checked:
//! - clean holdings, in the order their lock calls returned, have strictly
//!   increasing fencing tokens, and their safe intervals never overlap;
//! - no two holdings share a fencing token;
//! - guarded writes that succeeded, in revision order, never go back to a
//!   lower fencing token (no interleaving between holders), and the value
//!   each replaced (read in the same txn) never has a higher token;
//! - a guarded write refused (compare false) while its holding was clean
//!   for the whole call means the lock key vanished while its lease was
//!   alive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_engine_client::{
    Compare, CompareOp, CompareTarget, CoordClient, Error, KvClient, LeaseKeeper, Txn, TxnOp,
    TxnOpResult,
};

use super::renewals::RecordingKv;
use super::{Counts, Ctx};
use crate::fault::history::Outcome;
use crate::sim::rng::Rng;

pub const NAME: &str = "fault-lock";
const OWNER: &str = "fault-lock-owner";
const TTL: Duration = Duration::from_millis(2000);

#[derive(Clone, Debug)]
pub struct Write {
    pub invoke: u64,
    pub complete: u64,
    /// Some(succeeded) when the txn answered and was not a replay.
    pub succeeded: Option<bool>,
    pub revision: u64,
    /// The owner value the write replaced (success branch get).
    pub prev: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Holding {
    pub worker: usize,
    pub lease: u64,
    pub ttl: Duration,
    pub fencing: u64,
    pub lock_invoke: u64,
    pub acquired: u64,
    /// When the worker stopped acting (unlock invoked, or loss noticed).
    pub end: u64,
    pub lost: Option<String>,
    pub writes: Vec<Write>,
}

#[derive(Default)]
pub struct LockWorkload {
    rkv: Mutex<Option<RecordingKv>>,
    holdings: Mutex<Vec<Holding>>,
    counts: Mutex<Counts>,
    /// Lock calls that failed (lease lost while waiting, errors).
    pub failed_locks: Mutex<u64>,
}

/// `w<worker>:<fencing>:<n>`
fn owner_value(worker: usize, fencing: u64, n: usize) -> String {
    format!("w{worker}:{fencing}:{n}")
}

fn fencing_of(v: &str) -> Option<u64> {
    v.split(':').nth(1)?.parse().ok()
}

impl LockWorkload {
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let me = LockWorkload::default();
        *me.rkv.lock().unwrap() = Some(RecordingKv::new(ctx.client.kv(), ctx.clock));
        Arc::new(me)
    }

    fn rkv(&self) -> RecordingKv {
        self.rkv.lock().unwrap().clone().expect("set in new")
    }

    fn count(&self, o: Outcome) {
        self.counts.lock().unwrap()[o as usize] += 1;
    }

    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap()
    }

    pub fn holdings(&self) -> Vec<Holding> {
        self.holdings.lock().unwrap().clone()
    }

    pub fn spawn(
        self: &Arc<Self>,
        ctx: &Ctx,
        workers: usize,
        seed: u64,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..workers)
            .map(|w| {
                let me = self.clone();
                let ctx = ctx.clone();
                let mut rng = Rng::new(seed ^ 0x10C4 ^ ((w as u64) << 20));
                tokio::spawn(async move {
                    while !ctx.stopped() {
                        me.one(&ctx, w, &mut rng).await;
                        tokio::time::sleep(Duration::from_millis(rng.range(5, 50))).await;
                    }
                })
            })
            .collect()
    }

    async fn one(&self, ctx: &Ctx, w: usize, rng: &mut Rng) {
        let rkv = self.rkv();
        let grant = match rkv.lease_grant(TTL).await {
            Ok(g) => g,
            Err(_) => {
                self.count(Outcome::Info);
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
        };
        let mut keeper = LeaseKeeper::start(Arc::new(rkv.clone()), grant.id, grant.ttl);
        let lock_invoke = ctx.clock.now();
        // Wait for the lock, unless the lease is lost or the run ends.
        let res = tokio::select! {
            r = rkv.kv.lock(NAME, grant.id) => Some(r),
            _ = keeper.lost() => None,
            _ = stopped(ctx) => None,
        };
        let key = match res {
            Some(Ok(k)) => k,
            other => {
                if let Some(Err(_)) = other {
                    self.count(Outcome::Fail);
                }
                *self.failed_locks.lock().unwrap() += 1;
                drop(keeper);
                let _ = rkv.kv.lease_revoke(grant.id).await;
                return;
            }
        };
        let acquired = ctx.clock.now();
        self.count(Outcome::Ok);
        let mut h = Holding {
            worker: w,
            lease: grant.id,
            ttl: grant.ttl,
            fencing: key.revision,
            lock_invoke,
            acquired,
            end: acquired,
            lost: None,
            writes: Vec::new(),
        };
        let n = rng.range(1, 4) as usize;
        for i in 0..n {
            if let Some(e) = keeper.lost_reason() {
                h.lost = Some(e.to_string());
                break;
            }
            let txn = Txn::new()
                .when([Compare::new(
                    key.key.clone(),
                    CompareOp::Equal,
                    CompareTarget::CreateRevision(key.revision),
                )])
                .and_then([
                    TxnOp::get(OWNER),
                    TxnOp::put(OWNER, owner_value(w, key.revision, i)),
                ]);
            let invoke = ctx.clock.now();
            let r = rkv.kv.txn(txn).await;
            let complete = ctx.clock.now();
            let write = match r {
                Ok(o) => {
                    self.count(Outcome::Ok);
                    let prev = match o.results.first() {
                        Some(TxnOpResult::Range(p)) => p
                            .kvs
                            .first()
                            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                        _ => None,
                    };
                    Write {
                        invoke,
                        complete,
                        succeeded: (!o.replayed).then_some(o.succeeded),
                        revision: o.revision,
                        prev,
                    }
                }
                Err(e) => {
                    self.count(if matches!(e, Error::InvalidArgument(_)) {
                        Outcome::Fail
                    } else {
                        Outcome::Info
                    });
                    Write {
                        invoke,
                        complete,
                        succeeded: None,
                        revision: 0,
                        prev: None,
                    }
                }
            };
            let refused = write.succeeded == Some(false);
            h.writes.push(write);
            if refused {
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.range(20, 150))).await;
        }
        if h.lost.is_none() {
            if let Some(e) = keeper.lost_reason() {
                h.lost = Some(e.to_string());
            }
        }
        h.end = ctx.clock.now();
        self.holdings.lock().unwrap().push(h);
        drop(keeper);
        let _ = rkv.kv.unlock(&key.key).await;
        let _ = rkv.kv.lease_revoke(grant.id).await;
    }

    /// The anomalies and a summary note.
    pub fn check(&self) -> (Vec<String>, String) {
        let renewals = self.rkv().renewals.clone();
        let holdings = self.holdings();
        let safe_end = |h: &Holding| {
            let ttl = h.ttl.as_nanos() as u64;
            h.end
                .min(renewals.covered_until(h.lease, ttl, ttl / 3, h.acquired))
                .max(h.acquired)
        };
        check_holdings(&holdings, safe_end)
    }
}

async fn stopped(ctx: &Ctx) {
    while !ctx.stopped() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn show(h: &Holding, safe_end: u64) -> String {
    format!(
        "worker {} lease {:x} fencing {} held [{:.3}s, {:.3}s] safe until {:.3}s{}",
        h.worker,
        h.lease,
        h.fencing,
        secs(h.acquired),
        secs(h.end),
        secs(safe_end),
        h.lost
            .as_ref()
            .map(|l| format!(" (lost: {l})"))
            .unwrap_or_default()
    )
}

/// The checks of the module docs over `holdings`, with `safe_end` giving
/// the end of each holding's safe interval.
pub fn check_holdings(
    holdings: &[Holding],
    safe_end: impl Fn(&Holding) -> u64,
) -> (Vec<String>, String) {
    let mut out = Vec::new();
    let mut clean: Vec<(&Holding, u64)> = holdings
        .iter()
        .map(|h| (h, safe_end(h)))
        .filter(|(h, e)| *e > h.acquired)
        .collect();
    clean.sort_by_key(|(h, _)| h.acquired);
    // Fencing tokens grow from one clean holding to the next, and the
    // safe intervals never overlap.
    for pair in clean.windows(2) {
        let ((a, ae), (b, be)) = (pair[0], pair[1]);
        if b.fencing <= a.fencing {
            out.push(format!(
                "lock: fencing token went back: {} then {}",
                show(a, ae),
                show(b, be)
            ));
        }
    }
    let mut latest: Option<(&Holding, u64)> = None;
    for (h, e) in &clean {
        if let Some((p, pe)) = latest {
            if h.acquired < pe {
                out.push(format!(
                    "lock: TWO HOLDERS at once (both leases certainly alive): {} overlaps {}",
                    show(p, pe),
                    show(h, *e)
                ));
            }
        }
        if latest.is_none_or(|(_, pe)| *e > pe) {
            latest = Some((*h, *e));
        }
    }
    // Unique fencing tokens.
    let mut tokens: Vec<u64> = holdings.iter().map(|h| h.fencing).collect();
    tokens.sort();
    for w in tokens.windows(2) {
        if w[0] == w[1] {
            out.push(format!("lock: two holdings with fencing token {}", w[0]));
        }
    }
    // Guarded writes, in revision order, never go back to a lower token.
    let mut writes: Vec<(u64, &Holding, &Write)> = holdings
        .iter()
        .flat_map(|h| h.writes.iter().map(move |w| (w.revision, h, w)))
        .filter(|(_, _, w)| w.succeeded == Some(true))
        .collect();
    writes.sort_by_key(|(r, _, _)| *r);
    let mut max_token: Option<(u64, u64)> = None; // (token, revision)
    for (rev, h, w) in &writes {
        if let Some((t, at)) = max_token {
            if h.fencing < t {
                out.push(format!(
                    "lock: guarded write of fencing {} at revision {rev} after a write of fencing {t} at revision {at} (holders interleaved): {}",
                    h.fencing,
                    show(h, safe_end(h))
                ));
            }
        }
        if max_token.is_none_or(|(t, _)| h.fencing > t) {
            max_token = Some((h.fencing, *rev));
        }
        if let Some(p) = &w.prev {
            if fencing_of(p).is_some_and(|pt| pt > h.fencing) {
                out.push(format!(
                    "lock: guarded write of fencing {} at revision {rev} replaced `{p}`, written under a later token",
                    h.fencing
                ));
            }
        }
        if *rev <= h.fencing {
            out.push(format!(
                "lock: guarded write at revision {rev} not after its lock key's creation at {}",
                h.fencing
            ));
        }
    }
    // A refused guarded write inside a clean holding's safe interval.
    for (h, e) in &clean {
        for w in &h.writes {
            if w.succeeded == Some(false) && w.complete <= *e {
                out.push(format!(
                    "lock: guarded write [{:.3}s, {:.3}s] refused (lock key gone) while the lease was certainly alive: {}",
                    secs(w.invoke),
                    secs(w.complete),
                    show(h, *e)
                ));
            }
        }
    }
    let note = format!(
        "lock: {} holdings ({} clean, {} lost while holding), {} guarded writes applied, {} refused",
        holdings.len(),
        clean.len(),
        holdings.iter().filter(|h| h.lost.is_some()).count(),
        writes.len(),
        holdings
            .iter()
            .flat_map(|h| &h.writes)
            .filter(|w| w.succeeded == Some(false))
            .count()
    );
    (out, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(worker: usize, fencing: u64, acquired: u64, end: u64, writes: &[(u64, bool)]) -> Holding {
        Holding {
            worker,
            lease: worker as u64,
            ttl: Duration::from_secs(2),
            fencing,
            lock_invoke: 0,
            acquired,
            end,
            lost: None,
            writes: writes
                .iter()
                .map(|(rev, ok)| Write {
                    invoke: acquired,
                    complete: acquired + 1,
                    succeeded: Some(*ok),
                    revision: *rev,
                    prev: None,
                })
                .collect(),
        }
    }

    #[test]
    fn successive_clean_holdings_pass() {
        let hs = [
            h(0, 10, 100, 200, &[(11, true)]),
            h(1, 12, 210, 300, &[(13, true)]),
        ];
        let (a, _) = check_holdings(&hs, |h| h.end);
        assert!(a.is_empty(), "{a:?}");
    }

    #[test]
    fn overlapping_clean_holders_are_caught() {
        let hs = [h(0, 10, 100, 200, &[]), h(1, 12, 150, 300, &[])];
        let (a, _) = check_holdings(&hs, |h| h.end);
        assert!(a.iter().any(|x| x.contains("TWO HOLDERS")), "{a:?}");
        // Not when the first holder's lease was not certainly alive then.
        let (a, _) = check_holdings(&hs, |h| if h.worker == 0 { 140 } else { h.end });
        assert!(a.is_empty(), "{a:?}");
    }

    #[test]
    fn a_token_going_back_and_interleaved_writes_are_caught() {
        let hs = [
            h(0, 12, 100, 200, &[(20, true)]),
            h(1, 10, 210, 300, &[(15, true), (25, true)]),
        ];
        let (a, _) = check_holdings(&hs, |h| h.end);
        assert!(
            a.iter().any(|x| x.contains("fencing token went back")),
            "{a:?}"
        );
        assert!(a.iter().any(|x| x.contains("interleaved")), "{a:?}");
    }

    #[test]
    fn a_refused_write_while_certainly_alive_is_caught() {
        let hs = [h(0, 10, 100, 200, &[(0, false)])];
        let (a, _) = check_holdings(&hs, |h| h.end);
        assert!(a.iter().any(|x| x.contains("refused")), "{a:?}");
    }
}
