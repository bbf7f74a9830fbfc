//! Key leases (the coordination API's `LeaseGrant`/`LeaseKeepAlive`/
//! `LeaseRevoke`), checked against the engine's rules (`docs/guarantees.md`,
//! `engine/src/runtime/lease_clock.rs`):
//!
//! 1. **never early** (`lease-early`): a lease is revoked by expiry only if
//!    at least `TTL × (1 − d)` of global simulated time has passed between
//!    the last time it was promised to live and the moment a leader
//!    decided it expired. Promises: a keepalive acknowledged to a client,
//!    and the grant's commit (its first apply on any node), which is when
//!    the engine starts the lease (on the leader's apply). With
//!    `grant_from_ack` the grant's acknowledgement to the client counts
//!    instead: the engine does NOT guarantee that (finding F4 in
//!    `docs/simulation.md`: a grant acknowledged late by a lagging,
//!    deposed proposer may expire less than a TTL after that answer). `d` is the largest clock-rate error the run allows (the
//!    seed's drift, at most `MAX_DRIFT_PPM` = 5 % by default): a leader
//!    measures the TTL on its own clock, which may run that much fast. One
//!    microsecond is allowed for rounding the simulated clocks. A revoke
//!    that finds the lease already gone changes nothing and is not judged;
//! 2. **only a leader decides** (`lease-decider`): every expiry revoke that
//!    commits was decided by a node that, when it decided, believed it led
//!    its current term, had its lease clock running for that term, and is
//!    the node the election checker recorded as that term's leader;
//! 3. **keys go with their lease** (`lease-keys`), per replica after every
//!    applied entry: every attachment names an existing lease and an
//!    existing key, every key of the lease workload is attached, and after
//!    a revoke the lease and every key it held are gone; and a put that
//!    attached a key succeeded only if its lease's grant committed and no
//!    revoke of it committed before the put was invoked (ids are never
//!    reused);
//! 4. **liveness** (`lease-liveness`) is checked by the cluster at the end
//!    of the settle phase (`cluster/leases.rs`): with the network healed, no
//!    faults and the holders silent, every lease is revoked within its TTL
//!    (plus drift), the leader's check period and an election.

use std::collections::{BTreeMap, BTreeSet};

use d_engine_core::{Index, NodeId, Term};

use super::{Check, Violation};
use crate::sim::history::Time;
use crate::sim::kv::{Key, Kv, LeaseId, LEASE_KEY_BASE};

/// A node decided that a lease expired (and proposed its revoke).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryDecision {
    pub node: NodeId,
    pub lease: LeaseId,
    pub at: Time,
    /// The node's term and role when it decided.
    pub term: Term,
    pub leader: bool,
    /// The term its lease clock ran for (`None`: the clock was not running).
    pub clock_term: Option<Term>,
}

#[derive(Clone, Copy, Debug)]
struct Tracked {
    ttl_us: u64,
    /// Last time the lease was promised to live (see the module docs).
    last_ack: Option<Time>,
}

#[derive(Debug, Default)]
pub struct LeaseExpiry {
    drift_ppm: u64,
    /// Count the grant's acknowledgement to the client, not its commit.
    pub grant_from_ack: bool,
    leases: BTreeMap<LeaseId, Tracked>,
    /// Decision `k` is `decisions[k - 1]`.
    decisions: Vec<ExpiryDecision>,
    /// Expiry revokes that committed and revoked a lease.
    pub expired: u64,
    granted: BTreeSet<LeaseId>,
    /// When the revoke of each lease committed.
    revoked_at: BTreeMap<LeaseId, Time>,
}

impl LeaseExpiry {
    pub fn new(drift_ppm: u64) -> Self {
        LeaseExpiry {
            drift_ppm,
            ..Default::default()
        }
    }

    /// The least global time a lease of `ttl_us` must live after an
    /// acknowledgement (see the module docs).
    pub fn min_life(&self, ttl_us: u64) -> Time {
        (ttl_us as u128 * (1_000_000 - self.drift_ppm.min(1_000_000)) as u128 / 1_000_000) as Time
            - 1.min(ttl_us)
    }

    /// The grant of lease `id` (of `ttl_us`) committed: first applied
    /// anywhere at `at`.
    pub fn on_grant_committed(&mut self, id: LeaseId, ttl_us: u64, at: Time) {
        self.granted.insert(id);
        if !self.grant_from_ack {
            self.promise(id, ttl_us, at);
        }
    }

    /// A client was told at `at` that lease `id` (of `ttl_us`) was granted.
    pub fn on_grant_ack(&mut self, id: LeaseId, ttl_us: u64, at: Time) {
        if self.grant_from_ack {
            self.promise(id, ttl_us, at);
        }
    }

    /// A client was told at `at` that lease `id` was renewed.
    pub fn on_keepalive_ack(&mut self, id: LeaseId, ttl_us: u64, at: Time) {
        self.promise(id, ttl_us, at);
    }

    fn promise(&mut self, id: LeaseId, ttl_us: u64, at: Time) {
        let t = self.leases.entry(id).or_insert(Tracked {
            ttl_us,
            last_ack: None,
        });
        t.last_ack = Some(t.last_ack.map_or(at, |a| a.max(at)));
    }

    /// A revoke of lease `id` (by expiry or not) committed at `at` and
    /// deleted it.
    pub fn on_revoke_committed(&mut self, id: LeaseId, at: Time) {
        self.revoked_at.entry(id).or_insert(at);
    }

    /// A put invoked at `invoke` attached `key` to lease `id`.
    pub fn check_attach(&self, id: LeaseId, key: Key, invoke: Time) -> Check {
        let v = |what: String| {
            Err(Violation::new(
                "lease-keys",
                format!("a put invoked at {invoke} us attached key {key} to lease {id}: {what}"),
            ))
        };
        if !self.granted.contains(&id) {
            return v("no grant of that lease ever committed".into());
        }
        match self.revoked_at.get(&id) {
            Some(&at) if at < invoke => v(format!("its revoke had committed at {at} us")),
            _ => Ok(()),
        }
    }

    /// Records a decision; returns its id (>= 1).
    pub fn decide(&mut self, d: ExpiryDecision) -> u64 {
        self.decisions.push(d);
        self.decisions.len() as u64
    }

    pub fn decision(&self, id: u64) -> Option<&ExpiryDecision> {
        id.checked_sub(1)
            .and_then(|i| self.decisions.get(i as usize))
    }

    /// The revoke of lease `id` proposed for expiry decision `decision`
    /// committed at `index` (reported once, by the first node to apply it);
    /// `revoked`: it found the lease and deleted it. `leader_of` names the
    /// leader the election checker recorded for a term.
    pub fn on_expiry_committed(
        &mut self,
        decision: u64,
        index: Index,
        revoked: bool,
        leader_of: impl Fn(Term) -> Option<NodeId>,
    ) -> Check {
        let Some(d) = self.decision(decision).cloned() else {
            return Err(Violation::new(
                "lease-decider",
                format!("an expiry revoke at index {index} names unknown decision {decision}"),
            ));
        };
        let recorded = leader_of(d.term);
        if !d.leader || d.clock_term != Some(d.term) || recorded != Some(d.node) {
            return Err(Violation::new(
                "lease-decider",
                format!(
                    "lease {} was revoked by expiry (index {index}) on the decision of node {} at \
                     {} us, which was not a leader with a running lease clock: role leader={}, \
                     term {}, clock running for {:?}, the term's recorded leader {:?}",
                    d.lease, d.node, d.at, d.leader, d.term, d.clock_term, recorded
                ),
            ));
        }
        if !revoked {
            return Ok(());
        }
        self.expired += 1;
        let Some(t) = self.leases.get(&d.lease).copied() else {
            // No client was ever told the lease lives (its grant timed out):
            // nothing was promised.
            return Ok(());
        };
        if let Some(ack) = t.last_ack {
            let min = self.min_life(t.ttl_us);
            if d.at < ack + min {
                return Err(Violation::new(
                    "lease-early",
                    format!(
                        "node {} (leader of term {}) decided at {} us that lease {} (TTL {} us) \
                         expired, {} us after it was last promised to live (at {} us: {}); at \
                         least {} us must pass (TTL minus {} ppm drift); the revoke committed at \
                         index {index}",
                        d.node,
                        d.term,
                        d.at,
                        d.lease,
                        t.ttl_us,
                        d.at as i128 - ack as i128,
                        ack,
                        if self.grant_from_ack {
                            "a grant or keepalive acknowledged to a client"
                        } else {
                            "the grant's commit or a keepalive acknowledged to a client"
                        },
                        min,
                        self.drift_ppm
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Invariant 3 on one replica right after it applied `index`; `revoked`:
/// that entry revoked a lease and deleted these keys.
pub fn check_replica(
    node: NodeId,
    index: Index,
    kv: &Kv,
    revoked: Option<(LeaseId, &[Key])>,
) -> Check {
    let v = |what: String| {
        Err(Violation::new(
            "lease-keys",
            format!("node {node} after applying index {index}: {what}"),
        ))
    };
    for (key, lease) in kv.attachments() {
        if kv.lease(lease).is_none() {
            return v(format!(
                "key {key} is attached to lease {lease}, which does not exist"
            ));
        }
        if kv.get(key).is_none() {
            return v(format!(
                "lease {lease} holds key {key}, which does not exist"
            ));
        }
    }
    for key in kv.keys().filter(|k| *k >= LEASE_KEY_BASE) {
        if kv.attached_to(key).is_none() {
            return v(format!(
                "key {key} of the lease workload exists without a lease (every put of it names \
                 one): a revoke left it behind"
            ));
        }
    }
    if let Some((id, deleted)) = revoked {
        if kv.lease(id).is_some() {
            return v(format!("lease {id} still exists after its revoke"));
        }
        if let Some(k) = deleted.iter().find(|k| kv.get(**k).is_some()) {
            return v(format!("key {k} of revoked lease {id} still exists"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kv::Command;

    fn decision(node: NodeId, at: Time, leader: bool, clock: Option<Term>) -> ExpiryDecision {
        ExpiryDecision {
            node,
            lease: 7,
            at,
            term: 3,
            leader,
            clock_term: clock,
        }
    }

    #[test]
    fn grant_promise_counts_from_commit_or_from_ack() {
        let mut c = LeaseExpiry::new(0);
        c.on_grant_committed(7, 100, 1_000);
        c.on_grant_ack(7, 100, 1_050);
        let d = c.decide(decision(1, 1_099, true, Some(3)));
        c.on_expiry_committed(d, 1, true, |_| Some(1)).unwrap();
        let mut strict = LeaseExpiry::new(0);
        strict.grant_from_ack = true;
        strict.on_grant_committed(7, 100, 1_000);
        strict.on_grant_ack(7, 100, 1_050);
        let d = strict.decide(decision(1, 1_099, true, Some(3)));
        let v = strict
            .on_expiry_committed(d, 1, true, |_| Some(1))
            .unwrap_err();
        assert_eq!(v.checker, "lease-early");
    }

    #[test]
    fn fires_on_an_expiry_before_the_ttl_since_the_last_ack() {
        let mut c = LeaseExpiry::new(50_000);
        assert_eq!(c.min_life(100_000), 94_999);
        c.on_grant_committed(7, 100_000, 1_000);
        c.on_keepalive_ack(7, 100_000, 50_000);
        // 94,999 us after the keepalive: allowed (5 % drift, 1 us rounding).
        let ok = c.decide(decision(1, 144_999, true, Some(3)));
        c.on_expiry_committed(ok, 10, true, |_| Some(1)).unwrap();
        let early = c.decide(decision(1, 144_998, true, Some(3)));
        let v = c
            .on_expiry_committed(early, 11, true, |_| Some(1))
            .unwrap_err();
        assert_eq!(v.checker, "lease-early");
        // The same decision that found the lease already revoked: harmless.
        c.on_expiry_committed(early, 12, false, |_| Some(1))
            .unwrap();
        // A keepalive acknowledged after the decision: early too.
        c.on_keepalive_ack(7, 100_000, 200_000);
        let v = c
            .on_expiry_committed(ok, 13, true, |_| Some(1))
            .unwrap_err();
        assert_eq!(v.checker, "lease-early");
        // A lease no client heard of may go at any time.
        let other = c.decide(ExpiryDecision {
            lease: 8,
            ..decision(1, 0, true, Some(3))
        });
        c.on_expiry_committed(other, 14, true, |_| Some(1)).unwrap();
    }

    #[test]
    fn fires_on_a_put_attached_to_a_dead_lease() {
        let mut c = LeaseExpiry::new(0);
        assert!(c.check_attach(7, LEASE_KEY_BASE, 10).is_err());
        c.on_grant_committed(7, 100, 5);
        c.check_attach(7, LEASE_KEY_BASE, 10).unwrap();
        c.on_revoke_committed(7, 20);
        // Invoked before the revoke committed: may still have applied first.
        c.check_attach(7, LEASE_KEY_BASE, 19).unwrap();
        let v = c.check_attach(7, LEASE_KEY_BASE, 21).unwrap_err();
        assert_eq!(v.checker, "lease-keys");
    }

    #[test]
    fn fires_when_a_non_leader_decides() {
        let mut c = LeaseExpiry::new(0);
        let leader = c.decide(decision(1, 10, true, Some(3)));
        c.on_expiry_committed(leader, 5, true, |_| Some(1)).unwrap();
        for (d, recorded) in [
            (decision(2, 10, false, None), Some(1)),
            (decision(2, 10, true, None), Some(2)),
            (decision(2, 10, true, Some(2)), Some(2)),
            (decision(2, 10, true, Some(3)), Some(1)),
        ] {
            let id = c.decide(d.clone());
            let v = c
                .on_expiry_committed(id, 6, true, |_| recorded)
                .unwrap_err();
            assert_eq!(v.checker, "lease-decider", "{d:?}");
        }
        assert!(c.on_expiry_committed(99, 7, true, |_| Some(1)).is_err());
    }

    #[test]
    fn replica_invariant_fires_on_orphans_and_leftovers() {
        let mut kv = Kv::default();
        kv.apply(&Command::LeaseGrant {
            op: 1,
            id: 5,
            ttl_us: 10,
        });
        for key in [LEASE_KEY_BASE, LEASE_KEY_BASE + 1] {
            kv.apply(&Command::Put {
                op: 2,
                key,
                value: 1,
                lease: 5,
            });
        }
        kv.apply(&Command::Put {
            op: 3,
            key: 0,
            value: 1,
            lease: 0,
        });
        check_replica(1, 4, &kv, None).unwrap();
        let r = kv.apply(&Command::LeaseRevoke { op: 4, id: 5 });
        let crate::sim::kv::ApplyResult::LeaseRevoked { deleted, .. } = r else {
            panic!("{r:?}")
        };
        check_replica(1, 5, &kv, Some((5, &deleted))).unwrap();
        // A revoke that left a key behind (still attached, or detached).
        for lease in [Some(5), None] {
            let mut bad = kv.clone();
            bad.corrupt(LEASE_KEY_BASE, Some(1), lease);
            let v = check_replica(1, 5, &bad, Some((5, &deleted))).unwrap_err();
            assert_eq!(v.checker, "lease-keys");
        }
        // An attachment whose key is gone.
        let mut bad = kv.clone();
        bad.apply(&Command::LeaseGrant {
            op: 5,
            id: 6,
            ttl_us: 10,
        });
        bad.corrupt(LEASE_KEY_BASE + 2, None, Some(6));
        assert!(check_replica(1, 6, &bad, None).is_err());
    }
}
