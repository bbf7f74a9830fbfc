//! Lease safety: while a leader's lease holds (by its own clock), no other
//! node leads a later term.
//!
//! Lease reads are served without a quorum round, so they are only safe if
//! no new leader can be elected (and commit) while the lease lasts. This is
//! the design invariant behind them, checked directly after every event;
//! stale lease reads themselves are caught by the read checkers.

use d_engine_core::{NodeId, Term};

use super::{Check, Violation};

/// A node that currently believes it leads.
#[derive(Clone, Copy, Debug)]
pub struct LeaderState {
    pub node: NodeId,
    pub term: Term,
    /// Its lease holds at its current tick (`now_tick < lease_until_tick`).
    pub lease_valid: bool,
    pub now_tick: u64,
    pub lease_until_tick: u64,
}

pub fn check_leases(leaders: &[LeaderState]) -> Check {
    for a in leaders.iter().filter(|a| a.lease_valid) {
        if let Some(b) = leaders.iter().find(|b| b.term > a.term) {
            return Err(Violation::new(
                "lease-safety",
                format!(
                    "node {} still holds its term-{} lease (tick {} < {}) while node {} leads \
                     term {}: a lease read on node {} could be stale",
                    a.node, a.term, a.now_tick, a.lease_until_tick, b.node, b.term, a.node
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(node: NodeId, term: Term, lease_valid: bool) -> LeaderState {
        LeaderState {
            node,
            term,
            lease_valid,
            now_tick: 5,
            lease_until_tick: if lease_valid { 9 } else { 0 },
        }
    }

    #[test]
    fn fires_when_a_lease_overlaps_a_later_leader() {
        let v = check_leases(&[l(1, 3, true), l(2, 4, false)]).unwrap_err();
        assert_eq!(v.checker, "lease-safety");
    }

    #[test]
    fn accepts_expired_leases_and_single_leaders() {
        check_leases(&[l(1, 3, false), l(2, 4, true)]).unwrap();
        check_leases(&[l(1, 3, true)]).unwrap();
        check_leases(&[]).unwrap();
    }
}
