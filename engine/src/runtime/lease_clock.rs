//! The leader's lease clock: when each lease expires, on this node's
//! monotonic clock, in memory only.
//!
//! Contracts:
//! - the clock runs only on a leader that has committed an entry of its
//!   term ([`LeaseClock::activate`], called by the consensus loop); every
//!   lease then in the applied state gets `now + its full TTL`. A node that
//!   is not (or no longer) leader keeps no deadlines
//!   ([`LeaseClock::deactivate`]): a new leader never expires a lease
//!   before its TTL has passed on its own clock, and a dead holder's lease
//!   may survive up to one extra TTL (plus the election) after a leader
//!   change;
//! - while it runs, the apply thread tells it about every applied grant
//!   (the lease starts when its grant applies) and every applied revoke
//!   ([`LeaseClock::applied`]), under the same lock the activation reads
//!   the state machine with, so no lease is missed or kept after its
//!   revoke;
//! - a renew sets `now + ttl`; a lease whose deadline passed is marked
//!   expiring ([`LeaseClock::take_due`]) and the loop proposes its revoke
//!   once; a failed revoke makes it due again ([`LeaseClock::retry`]);
//!   an expiring lease can no longer be renewed (`LeaseNotFound`);
//! - cost: deadlines are kept in a `BTreeSet` ordered by deadline, so a
//!   tick looks only at the leases that are due, not at all of them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use d_engine_storage::sm::{ApplyResult, LeaseRecord};

#[derive(Clone, Copy, Debug)]
struct Deadline {
    ttl: Duration,
    at: Instant,
    /// Its revoke was proposed (the deadline passed).
    expiring: bool,
}

#[derive(Default)]
struct State {
    /// The term the clock runs for; `None`: not running (not a ready leader).
    term: Option<u64>,
    leases: HashMap<u64, Deadline>,
    /// `(deadline, id)` of every lease not yet expiring.
    by_deadline: BTreeSet<(Instant, u64)>,
}

impl State {
    fn set(&mut self, id: u64, ttl: Duration, at: Instant) {
        if let Some(old) = self.leases.insert(
            id,
            Deadline {
                ttl,
                at,
                expiring: false,
            },
        ) {
            self.by_deadline.remove(&(old.at, id));
        }
        self.by_deadline.insert((at, id));
    }

    fn remove(&mut self, id: u64) {
        if let Some(old) = self.leases.remove(&id) {
            self.by_deadline.remove(&(old.at, id));
        }
    }
}

/// What the clock knows about one lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeaseView {
    /// The clock is not running on this node (not a ready leader).
    NotRunning,
    /// No such lease, or it expired (its revoke is under way).
    Gone,
    Live {
        ttl: Duration,
        remaining: Duration,
    },
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct LeaseClock {
    state: Mutex<State>,
}

fn ttl_of(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

impl LeaseClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("poisoned")
    }

    /// The term the clock runs for, if it runs.
    pub(crate) fn running_term(&self) -> Option<u64> {
        self.lock().term
    }

    /// Starts the clock for `term`: every lease `read` returns (the applied
    /// state, read under the clock's lock) gets `now + ttl`.
    pub(crate) fn activate<E>(
        &self,
        term: u64,
        now: Instant,
        read: impl FnOnce() -> Result<Vec<LeaseRecord>, E>,
    ) -> Result<usize, E> {
        let mut s = self.lock();
        *s = State::default();
        let leases = read()?;
        let n = leases.len();
        for l in leases {
            s.set(l.id, ttl_of(l.ttl_ms), now + ttl_of(l.ttl_ms));
        }
        s.term = Some(term);
        Ok(n)
    }

    /// Stops the clock and forgets every deadline.
    pub(crate) fn deactivate(&self) {
        *self.lock() = State::default();
    }

    /// The apply thread's report of applied results (replays of
    /// deduplicated writes excluded by the caller): grants start now,
    /// revokes (and lease-not-found answers) remove the lease.
    pub(crate) fn applied<'a>(&self, results: impl Iterator<Item = &'a ApplyResult>, now: Instant) {
        let mut s: Option<std::sync::MutexGuard<'_, State>> = None;
        for r in results {
            let (id, grant) = match r {
                ApplyResult::LeaseGranted { id, ttl_ms } => (*id, Some(*ttl_ms)),
                ApplyResult::LeaseRevoked { id, .. } | ApplyResult::LeaseNotFound { id } => {
                    (*id, None)
                }
                _ => continue,
            };
            let s = s.get_or_insert_with(|| self.lock());
            if s.term.is_none() {
                return;
            }
            match grant {
                Some(ms) => s.set(id, ttl_of(ms), now + ttl_of(ms)),
                None => s.remove(id),
            }
        }
    }

    /// Restarts the TTL of a live lease (`Live` with the full TTL left);
    /// otherwise changes nothing and says why (`NotRunning`, `Gone`).
    pub(crate) fn renew(&self, id: u64, now: Instant) -> LeaseView {
        let mut s = self.lock();
        if s.term.is_none() {
            return LeaseView::NotRunning;
        }
        match s.leases.get(&id).copied() {
            Some(d) if !d.expiring => {
                s.set(id, d.ttl, now + d.ttl);
                LeaseView::Live {
                    ttl: d.ttl,
                    remaining: d.ttl,
                }
            }
            _ => LeaseView::Gone,
        }
    }

    /// The lease as the clock sees it at `now`.
    pub(crate) fn view(&self, id: u64, now: Instant) -> LeaseView {
        let s = self.lock();
        if s.term.is_none() {
            return LeaseView::NotRunning;
        }
        match s.leases.get(&id) {
            Some(d) if !d.expiring => LeaseView::Live {
                ttl: d.ttl,
                remaining: d.at.saturating_duration_since(now),
            },
            _ => LeaseView::Gone,
        }
    }

    /// The leases whose deadline is at or before `now`, now marked
    /// expiring (each is returned once, until [`LeaseClock::retry`]).
    pub(crate) fn take_due(&self, now: Instant) -> Vec<u64> {
        let mut s = self.lock();
        let mut due = Vec::new();
        while let Some(&(at, id)) = s.by_deadline.first() {
            if at > now {
                break;
            }
            s.by_deadline.pop_first();
            if let Some(d) = s.leases.get_mut(&id) {
                d.expiring = true;
            }
            due.push(id);
        }
        due
    }

    /// The revoke of an expiring lease failed: it is due again at `now`
    /// (if the clock still knows it).
    pub(crate) fn retry(&self, id: u64, now: Instant) {
        let mut s = self.lock();
        if let Some(d) = s.leases.get_mut(&id) {
            if d.expiring {
                d.expiring = false;
                d.at = now;
                s.by_deadline.insert((now, id));
            }
        }
    }

    /// Leases the clock holds (live or expiring).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().leases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, ttl_ms: u64) -> LeaseRecord {
        LeaseRecord { id, ttl_ms }
    }

    #[test]
    fn a_new_leader_gives_every_lease_its_full_ttl_and_expires_in_deadline_order() {
        let c = LeaseClock::default();
        let t0 = Instant::now();
        assert_eq!(c.view(1, t0), LeaseView::NotRunning);
        // Not running: grants are not tracked.
        c.applied([ApplyResult::LeaseGranted { id: 9, ttl_ms: 5 }].iter(), t0);
        c.activate(3, t0, || Ok::<_, ()>(vec![rec(1, 1000), rec(2, 500)]))
            .unwrap();
        assert_eq!(c.running_term(), Some(3));
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.view(1, t0 + Duration::from_millis(400)),
            LeaseView::Live {
                ttl: Duration::from_millis(1000),
                remaining: Duration::from_millis(600)
            }
        );
        assert!(c.take_due(t0 + Duration::from_millis(499)).is_empty());
        assert_eq!(c.take_due(t0 + Duration::from_millis(500)), vec![2]);
        // Once only, and an expiring lease cannot be renewed.
        assert!(c.take_due(t0 + Duration::from_millis(600)).is_empty());
        assert_eq!(c.renew(2, t0), LeaseView::Gone);
        assert_eq!(c.view(2, t0), LeaseView::Gone);
        // A failed revoke makes it due again.
        c.retry(2, t0 + Duration::from_millis(700));
        assert_eq!(c.take_due(t0 + Duration::from_millis(700)), vec![2]);
        // The revoke applied: gone.
        c.applied([ApplyResult::LeaseRevoked { id: 2, deleted: 3 }].iter(), t0);
        assert_eq!(c.len(), 1);
        // Renew restarts the TTL from now.
        let t1 = t0 + Duration::from_millis(900);
        assert!(matches!(c.renew(1, t1), LeaseView::Live { .. }));
        assert!(c.take_due(t0 + Duration::from_millis(1500)).is_empty());
        assert_eq!(c.take_due(t1 + Duration::from_millis(1000)), vec![1]);
        c.deactivate();
        assert_eq!(c.len(), 0);
        assert_eq!(c.renew(1, t1), LeaseView::NotRunning);
    }

    #[test]
    fn a_grant_starts_when_it_applies() {
        let c = LeaseClock::default();
        let t0 = Instant::now();
        c.activate(1, t0, || Ok::<_, ()>(vec![])).unwrap();
        let t1 = t0 + Duration::from_secs(5);
        c.applied(
            [
                ApplyResult::Noop,
                ApplyResult::LeaseGranted { id: 7, ttl_ms: 100 },
            ]
            .iter(),
            t1,
        );
        assert!(c.take_due(t1 + Duration::from_millis(99)).is_empty());
        assert_eq!(c.take_due(t1 + Duration::from_millis(100)), vec![7]);
        // Many leases: only the due ones are touched.
        for id in 100..10_100 {
            c.applied([ApplyResult::LeaseGranted { id, ttl_ms: id }].iter(), t0);
        }
        assert_eq!(
            c.take_due(t0 + Duration::from_millis(150)),
            (100..=150).collect::<Vec<_>>()
        );
    }
}
