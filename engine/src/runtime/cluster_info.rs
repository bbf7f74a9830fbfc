//! Leader and membership information: what this node knows about the
//! cluster, read from the values the consensus loop publishes after every
//! iteration. Never touches the loop; never blocks except
//! [`NodeHandle::wait_leader`]. [`NodeHandle::cluster_changes`] is the one
//! cluster-change stream the embedded engine and the `WatchCluster` RPC
//! both serve.

use std::sync::atomic::Ordering;
use std::time::Duration;

use d_engine_api::{ClusterStateStream, ClusterStateTracker};
use tokio::sync::{mpsc, watch};

use super::handle::NodeHandle;
use super::shared::{ROLE_CANDIDATE, ROLE_LEADER, ROLE_LEARNER, ROLE_PRE_CANDIDATE};
use super::types::{Alarm, Error, Header, LeaderInfo, MemberInfo, NodeRole, NodeStatus, Result};

impl NodeHandle {
    /// Current members (with peer and client addresses).
    pub fn members(&self) -> Vec<MemberInfo> {
        self.shared.members_view().list.clone()
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> LeaderInfo {
        let id = self.shared.published.leader.load(Ordering::Acquire);
        LeaderInfo {
            id,
            client_addr: if id == 0 {
                String::new()
            } else {
                self.shared
                    .members_view()
                    .client_addr(id)
                    .unwrap_or_default()
            },
            term: self.shared.published.term.load(Ordering::Acquire),
        }
    }

    /// Header values for a response.
    pub fn header(&self) -> Header {
        Header {
            node_id: self.shared.id,
            term: self.shared.published.term.load(Ordering::Acquire),
            revision: self.shared.applied.load(Ordering::Acquire),
        }
    }

    /// Role, indexes, members.
    ///
    /// A consistent view: the loop publishes its commit index at the end of
    /// an iteration, so the apply thread can be ahead of it for a moment;
    /// the commit index reported is never below the applied index.
    pub fn status(&self) -> NodeStatus {
        let p = &self.shared.published;
        let applied = self.shared.applied.load(Ordering::Acquire);
        NodeStatus {
            id: self.shared.id,
            role: self.status_role(),
            term: p.term.load(Ordering::Acquire),
            leader_id: p.leader.load(Ordering::Acquire),
            commit_index: p.commit.load(Ordering::Acquire).max(applied),
            applied_index: applied,
            last_log_index: p.last_index.load(Ordering::Acquire),
            snapshot_index: p.snapshot_index.load(Ordering::Acquire),
            members: self.members(),
            sole_voter: p.sole_voter.load(Ordering::Acquire),
            alarms: if self.shared.quota.alarm() {
                vec![Alarm::NoSpace]
            } else {
                Vec::new()
            },
            data_bytes: self.shared.quota.used(),
            quota_bytes: self.shared.quota.limit(),
            log_bytes: p.log_bytes.load(Ordering::Acquire),
        }
    }

    /// The role the loop last published.
    pub(crate) fn status_role(&self) -> NodeRole {
        match self.shared.published.role.load(Ordering::Acquire) {
            ROLE_LEADER => NodeRole::Leader,
            ROLE_CANDIDATE => NodeRole::Candidate,
            ROLE_PRE_CANDIDATE => NodeRole::PreCandidate,
            ROLE_LEARNER => NodeRole::Learner,
            _ => NodeRole::Follower,
        }
    }

    /// Fires on every change of leader or term.
    pub fn subscribe_leader(&self) -> watch::Receiver<LeaderInfo> {
        self.shared.leader_tx.subscribe()
    }

    /// Fires on every membership change.
    pub fn subscribe_members(&self) -> watch::Receiver<Vec<MemberInfo>> {
        self.shared.members_tx.subscribe()
    }

    /// A stream of this node's view of the leader and the members: the
    /// current state now, then one item per change (contract in
    /// [`d_engine_api::cluster_state`]); it ends when the node stops or
    /// the receiver is dropped. A slow reader delays the stream but never
    /// ends it; intermediate states may then be skipped (each item is the
    /// whole state). Must be called inside a Tokio runtime.
    pub fn cluster_changes(&self) -> ClusterStateStream {
        let (tx, rx) = mpsc::channel(CLUSTER_CHANGE_BUFFER);
        let node = self.clone();
        tokio::spawn(async move { node.forward_cluster_changes(tx).await });
        rx
    }

    async fn forward_cluster_changes(self, tx: mpsc::Sender<d_engine_api::ClusterState>) {
        let mut leaders = self.subscribe_leader();
        let mut members = self.subscribe_members();
        let mut tracker = ClusterStateTracker::new();
        loop {
            let leader = leaders.borrow_and_update().clone();
            let list = members.borrow_and_update().clone();
            if let Some(state) = tracker.observe(self.id(), leader, list) {
                tokio::select! {
                    sent = tx.send(state) => if sent.is_err() { return },
                    _ = self.stopped() => return,
                }
            }
            tokio::select! {
                _ = self.stopped() => return,
                _ = tx.closed() => return,
                changed = leaders.changed() => if changed.is_err() { return },
                changed = members.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Waits until some leader is known (and, if this node leads, it has
    /// committed an entry of its term), or fails with `Timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<LeaderInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.shared.leader_tx.subscribe();
        loop {
            self.shared.check_running()?;
            let l = self.leader();
            let ready = l.id != 0
                && (l.id != self.shared.id
                    || self.shared.published.leader_ready.load(Ordering::Acquire));
            if ready {
                return Ok(l);
            }
            // The leader watch fires on leader/term changes; poll briefly as
            // well for `leader_ready`, which has no notification of its own.
            let step = tokio::time::Instant::now() + Duration::from_millis(5);
            let until = step.min(deadline);
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "no leader was elected within {timeout:?}; check that a majority of the \
                     members are running and reachable"
                )));
            }
            let _ = tokio::time::timeout_at(until, rx.changed()).await;
        }
    }
}

/// Items buffered per cluster-change stream (each is the whole state, so
/// a full buffer only delays the reader).
const CLUSTER_CHANGE_BUFFER: usize = 4;
