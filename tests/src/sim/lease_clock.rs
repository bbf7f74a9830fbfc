//! The simulated host's lease clock: a model of the engine's
//! `engine/src/runtime/lease_clock.rs`, on a node's simulated (drifting)
//! clock, in simulated microseconds. Volatile: a crash loses it.
//!
//! - it runs only on a leader that has committed an entry of its term
//!   ([`LeaseClock::activate`]): every lease in the applied state then gets
//!   `now + its full TTL`; losing leadership forgets every deadline
//!   ([`LeaseClock::deactivate`]);
//! - while it runs, an applied grant starts at its apply, an applied revoke
//!   (or `LeaseNotFound`) removes the lease;
//! - a renew sets `now + ttl`; a lease whose deadline passed is taken once
//!   ([`LeaseClock::take_due`]: its revoke is proposed) and cannot be
//!   renewed any more; a revoke that failed makes it due again
//!   ([`LeaseClock::retry`]).
//!
//! `passive` is the injected bug `HostBug::NoLeaseResetOnLeaderChange`:
//! every node tracks grants from their apply, and a new leader keeps those
//! deadlines instead of giving every lease its full TTL.

use std::collections::BTreeMap;

use d_engine_core::Term;

use super::history::Time;
use super::kv::LeaseId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Deadline {
    ttl: u64,
    at: Time,
    expiring: bool,
}

/// What a renew found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renew {
    NotRunning,
    /// No such lease, or its revoke is under way.
    Gone,
    Live {
        ttl: u64,
    },
}

#[derive(Clone, Debug, Default)]
pub struct LeaseClock {
    /// The term the clock runs for (`None`: not running).
    pub term: Option<Term>,
    leases: BTreeMap<LeaseId, Deadline>,
    pub passive: bool,
}

impl LeaseClock {
    pub fn running(&self) -> bool {
        self.term.is_some()
    }

    /// Starts the clock for `term` at local time `now` with the applied leases.
    pub fn activate(
        &mut self,
        term: Term,
        now: Time,
        leases: impl Iterator<Item = (LeaseId, u64)>,
    ) {
        if !self.passive {
            self.leases.clear();
        }
        for (id, ttl) in leases {
            self.leases.entry(id).or_insert(Deadline {
                ttl,
                at: now + ttl,
                expiring: false,
            });
        }
        self.term = Some(term);
    }

    pub fn deactivate(&mut self) {
        self.term = None;
        if self.passive {
            for d in self.leases.values_mut() {
                d.expiring = false;
            }
        } else {
            self.leases.clear();
        }
    }

    /// A grant applied at local time `now`.
    pub fn granted(&mut self, id: LeaseId, ttl: u64, now: Time) {
        if self.running() || self.passive {
            self.leases.insert(
                id,
                Deadline {
                    ttl,
                    at: now + ttl,
                    expiring: false,
                },
            );
        }
    }

    /// A revoke (or a `LeaseNotFound`) applied.
    pub fn removed(&mut self, id: LeaseId) {
        self.leases.remove(&id);
    }

    pub fn renew(&mut self, id: LeaseId, now: Time) -> Renew {
        if !self.running() {
            return Renew::NotRunning;
        }
        match self.leases.get_mut(&id) {
            Some(d) if !d.expiring => {
                d.at = now + d.ttl;
                Renew::Live { ttl: d.ttl }
            }
            _ => Renew::Gone,
        }
    }

    /// Leases whose deadline is at or before `now`, marked expiring.
    pub fn take_due(&mut self, now: Time) -> Vec<LeaseId> {
        if !self.running() {
            return Vec::new();
        }
        let mut due = Vec::new();
        for (id, d) in self.leases.iter_mut() {
            if !d.expiring && d.at <= now {
                d.expiring = true;
                due.push(*id);
            }
        }
        due
    }

    /// The revoke of an expiring lease failed: due again at `now`.
    pub fn retry(&mut self, id: LeaseId, now: Time) {
        if let Some(d) = self.leases.get_mut(&id) {
            if d.expiring {
                d.expiring = false;
                d.at = now;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_the_engine_clock() {
        let mut c = LeaseClock::default();
        c.granted(9, 5, 0);
        assert!(c.is_empty(), "not running: grants are not tracked");
        assert_eq!(c.renew(1, 0), Renew::NotRunning);
        c.activate(3, 100, [(1, 1000), (2, 500)].into_iter());
        assert!(c.take_due(599).is_empty());
        assert_eq!(c.take_due(600), vec![2]);
        assert!(c.take_due(700).is_empty(), "taken once");
        assert_eq!(c.renew(2, 700), Renew::Gone);
        c.retry(2, 700);
        assert_eq!(c.take_due(700), vec![2]);
        c.removed(2);
        assert_eq!(c.renew(1, 900), Renew::Live { ttl: 1000 });
        assert!(c.take_due(1899).is_empty());
        assert_eq!(c.take_due(1900), vec![1]);
        c.granted(4, 50, 2000);
        assert_eq!(c.take_due(2050), vec![4]);
        c.deactivate();
        assert!(c.is_empty());
        // A new leader gives every lease its full TTL again.
        c.activate(4, 5000, [(1, 1000)].into_iter());
        assert!(c.take_due(5999).is_empty());
    }

    #[test]
    fn passive_mode_keeps_old_deadlines() {
        let mut c = LeaseClock {
            passive: true,
            ..Default::default()
        };
        c.granted(1, 100, 0);
        c.activate(2, 5000, [(1, 100)].into_iter());
        assert_eq!(c.take_due(5000), vec![1]);
    }
}
