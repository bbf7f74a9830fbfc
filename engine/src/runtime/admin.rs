//! Cluster administration: membership changes, leadership transfer and
//! on-demand snapshots.
//!
//! Contracts:
//! - membership changes and transfers are leader-only (`NotLeader` /
//!   `NoLeader` elsewhere) and take a slot of
//!   `queues.max_pending_proposals`;
//! - `add_learner` and `promote` are idempotent for a retried call (same
//!   id and addresses; already a voter); an unknown node is `UnknownNode`;
//! - a change resolves once appended and committed, with the members after
//!   it; a transfer resolves once the target leads; either gives `Timeout`
//!   after `queues.request_timeout_ms` with an unknown outcome.

use std::sync::atomic::Ordering;

use d_engine_core::{ConfChange, NodeId};
use tokio::sync::oneshot;

use super::addr::MemberAddr;
use super::handle::NodeHandle;
use super::input::{Input, ProposalWaiter};
use super::types::{ApplyResult, Error, MemberInfo, Result};

/// How long an unforced promote waits for a lagging learner to catch up
/// before it is refused.
pub const PROMOTE_CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl NodeHandle {
    async fn conf_change(&self, change: ConfChange) -> Result<Vec<MemberInfo>> {
        self.shared.check_running()?;
        if !self.shared.is_leader() {
            return Err(self.shared.leader_hint_error());
        }
        let slot = self.shared.proposal_slot()?;
        let (tx, rx) = oneshot::channel();
        self.shared.send_client(Input::ConfChange {
            change,
            waiter: ProposalWaiter::new(tx, slot),
        })?;
        let out = self.shared.wait(rx, "the membership change").await?;
        match out.result {
            // The core applies a change when it is appended, so the published
            // membership already holds it.
            ApplyResult::MembershipChanged => Ok(self.members()),
            other => Err(self.unexpected(other)),
        }
    }

    fn check_member(&self, id: NodeId) -> Result<()> {
        if !self.shared.members_view().membership.contains(id) {
            return Err(Error::UnknownNode(format!(
                "node {id} is not a member of the cluster (members: {:?})",
                self.shared
                    .members_view()
                    .list
                    .iter()
                    .map(|m| m.id)
                    .collect::<Vec<_>>()
            )));
        }
        Ok(())
    }

    /// Adds a non-voting learner; returns the members after the change.
    pub async fn add_learner(
        &self,
        id: NodeId,
        peer_addr: String,
        client_addr: String,
    ) -> Result<Vec<MemberInfo>> {
        if id == 0 {
            return Err(Error::InvalidArgument(
                "node id 0 is reserved; use >= 1".into(),
            ));
        }
        for (name, a) in [("peer_addr", &peer_addr), ("client_addr", &client_addr)] {
            if a.contains('|') || (name == "peer_addr" && a.is_empty()) {
                return Err(Error::InvalidArgument(format!(
                    "{name} `{a}` must be a host:port address"
                )));
            }
        }
        if let Some(m) = self.shared.members_view().membership.members.get(&id) {
            // Idempotent for a retried call with the same addresses.
            let a = MemberAddr::decode(&m.addr);
            if a.peer == peer_addr && a.client == client_addr {
                return Ok(self.members());
            }
            return Err(Error::InvalidArgument(format!(
                "node {id} is already a member at {}; remove it first to re-add it at other \
                 addresses",
                a.peer
            )));
        }
        let addr = MemberAddr::new(peer_addr, client_addr).encode();
        self.conf_change(ConfChange::AddLearner { id, addr }).await
    }

    /// Turns a learner into a voter once it has caught up (see
    /// [`NodeHandle::promote_with`]).
    pub async fn promote(&self, id: NodeId) -> Result<Vec<MemberInfo>> {
        self.promote_with(id, false).await
    }

    /// Turns a learner into a voter. Without `force` the learner must have
    /// caught up: its log must hold everything the leader had committed
    /// when the call came (waiting up to [`PROMOTE_CATCH_UP_WAIT`] for it);
    /// otherwise `ChangeInProgress` (FAILED_PRECONDITION) names how far
    /// behind it is. A voter far behind weakens the quorum: it cannot help
    /// commit until it has caught up. `force` skips the check.
    pub async fn promote_with(&self, id: NodeId, force: bool) -> Result<Vec<MemberInfo>> {
        self.check_member(id)?;
        if self.shared.members_view().membership.is_voter(id) {
            // Idempotent: a retried promote succeeds.
            return Ok(self.members());
        }
        if !force {
            self.wait_caught_up(id).await?;
        }
        self.conf_change(ConfChange::Promote { id }).await
    }

    async fn wait_caught_up(&self, id: NodeId) -> Result<()> {
        if !self.shared.is_leader() {
            return Err(self.shared.leader_hint_error());
        }
        let target = self.status().commit_index;
        let deadline = std::time::Instant::now() + PROMOTE_CATCH_UP_WAIT;
        loop {
            let matched = self
                .shared
                .metrics
                .follower_matches()
                .into_iter()
                .find(|(m, _)| *m == id)
                .map_or(0, |(_, matched)| matched);
            if matched >= target {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::ChangeInProgress(format!(
                    "learner {id} is {} entries behind: its log holds up to index {matched}, \
                     the leader had committed up to {target}; wait until it catches up \
                     (`dengine endpoint status`), or promote with force to promote it anyway",
                    target - matched
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Removes a voter or learner.
    pub async fn remove_member(&self, id: NodeId) -> Result<Vec<MemberInfo>> {
        self.check_member(id)?;
        self.conf_change(ConfChange::Remove { id }).await
    }

    /// Hands leadership to `to`; resolves once `to` leads (or `Timeout`).
    pub async fn transfer_leader(&self, to: NodeId) -> Result<()> {
        self.shared.check_running()?;
        self.check_member(to)?;
        if self.shared.published.leader.load(Ordering::Acquire) == to {
            return Ok(());
        }
        if !self.shared.is_leader() {
            return Err(self.shared.leader_hint_error());
        }
        let (tx, rx) = oneshot::channel();
        self.shared.send_client(Input::Transfer { to, tx })?;
        self.shared.wait(rx, "the leadership transfer").await?;
        let mut leader = self.shared.leader_tx.subscribe();
        let target = async {
            loop {
                if leader.borrow_and_update().id == to {
                    return Ok(());
                }
                if leader.changed().await.is_err() {
                    return Err(self.shared.stopped_error());
                }
            }
        };
        match tokio::time::timeout(self.shared.config.request_timeout(), target).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(format!(
                "node {to} did not take over leadership within {} ms",
                self.shared.config.queues.request_timeout_ms
            ))),
        }
    }

    /// Takes a snapshot now (and compacts the log); returns its index.
    pub async fn trigger_snapshot(&self) -> Result<u64> {
        self.shared.check_running()?;
        let (tx, rx) = oneshot::channel();
        self.shared.send_client(Input::Snapshot { tx })?;
        self.shared.wait(rx, "the snapshot").await
    }
}
