//! [`ClusterState`]: one message of a cluster-change stream (the leader and
//! the members as one node sees them), and [`ClusterStateTracker`], the
//! one rule every stream (embedded, gRPC service, gRPC client) uses to
//! decide which states are news.
//!
//! Contract of every cluster-change stream: each item is the **whole**
//! state, so a reader that misses or skips items only needs the latest
//! one; the first item has both `*_changed` flags set; later items have at
//! least one set and are never identical to the item before; the leader's
//! term never goes backwards within one stream (a view from an older term,
//! e.g. from a node that reconnected late, keeps the previous leader).

use tokio::sync::mpsc;

use crate::error::Result;
use crate::types::{LeaderInfo, MemberInfo};

/// The cluster as one node sees it, at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterState {
    /// The leader (`id == 0` and an empty address while none is known).
    pub leader: LeaderInfo,
    /// Every member, voters and learners.
    pub members: Vec<MemberInfo>,
    /// The leader or its term differs from the previous item (always set
    /// on the first item).
    pub leader_changed: bool,
    /// The membership differs from the previous item (always set on the
    /// first item).
    pub members_changed: bool,
    /// The node whose view this is (0 if not known).
    pub node_id: u64,
}

/// A stream of [`ClusterState`]s from the embedded engine; ends (`None`)
/// when the node stops.
pub type ClusterStateStream = mpsc::Receiver<ClusterState>;

/// A stream of [`ClusterState`]s from a gRPC client: `Err` once (then
/// `None`) when no endpoint can serve it any more within the retry policy,
/// or credentials are refused.
pub type ClusterChangeStream = mpsc::Receiver<Result<ClusterState>>;

/// Turns a sequence of observed (leader, members) views into the items of
/// a stream per the module contract. Keeps the last item delivered.
#[derive(Clone, Debug, Default)]
pub struct ClusterStateTracker {
    last: Option<ClusterState>,
}

impl ClusterStateTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last item handed out, if any.
    pub fn last(&self) -> Option<&ClusterState> {
        self.last.as_ref()
    }

    /// The item to deliver for a newly observed view, or `None` when it
    /// brings nothing new (same leader, term and members) — including a
    /// view whose only difference is a leader from an older term.
    pub fn observe(
        &mut self,
        node_id: u64,
        leader: LeaderInfo,
        members: Vec<MemberInfo>,
    ) -> Option<ClusterState> {
        let next = match &self.last {
            None => ClusterState {
                leader,
                members,
                leader_changed: true,
                members_changed: true,
                node_id,
            },
            Some(prev) => {
                // Never step back to an older term's leader.
                let leader = if leader.term < prev.leader.term {
                    prev.leader.clone()
                } else {
                    leader
                };
                let leader_changed = leader != prev.leader;
                let members_changed = members != prev.members;
                if !leader_changed && !members_changed {
                    return None;
                }
                ClusterState {
                    leader,
                    members,
                    leader_changed,
                    members_changed,
                    node_id,
                }
            }
        };
        self.last = Some(next.clone());
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::MemberRole;

    fn leader(id: u64, term: u64) -> LeaderInfo {
        LeaderInfo {
            id,
            client_addr: if id == 0 {
                String::new()
            } else {
                format!("127.0.0.1:{id}")
            },
            term,
        }
    }

    fn member(id: u64, role: MemberRole) -> MemberInfo {
        MemberInfo {
            id,
            peer_addr: format!("p{id}"),
            client_addr: format!("c{id}"),
            role,
        }
    }

    #[test]
    fn first_item_has_both_flags_then_only_what_changed() {
        let mut t = ClusterStateTracker::new();
        let ms = vec![member(1, MemberRole::Voter)];
        let first = t.observe(1, leader(1, 1), ms.clone()).unwrap();
        assert!(first.leader_changed && first.members_changed);
        assert_eq!(t.observe(2, leader(1, 1), ms.clone()), None, "same view");
        let l = t.observe(1, leader(0, 2), ms.clone()).unwrap();
        assert!(l.leader_changed && !l.members_changed);
        let mut ms2 = ms.clone();
        ms2.push(member(4, MemberRole::Learner));
        let m = t.observe(1, leader(0, 2), ms2.clone()).unwrap();
        assert!(!m.leader_changed && m.members_changed);
        assert_eq!(t.last(), Some(&m));
    }

    #[test]
    fn an_older_terms_leader_is_not_delivered() {
        let mut t = ClusterStateTracker::new();
        let ms = vec![member(1, MemberRole::Voter)];
        t.observe(1, leader(2, 5), ms.clone()).unwrap();
        // A lagging node still believes node 1 leads in term 4.
        assert_eq!(t.observe(3, leader(1, 4), ms.clone()), None);
        // Its members are news, but the leader stays the term-5 one.
        let mut ms2 = ms.clone();
        ms2.push(member(3, MemberRole::Voter));
        let s = t.observe(3, leader(1, 4), ms2).unwrap();
        assert_eq!(s.leader, leader(2, 5));
        assert!(!s.leader_changed && s.members_changed);
    }
}
