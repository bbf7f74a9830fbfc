//! `GrpcAdmin`: membership changes, leadership transfer, snapshots, status.
//!
//! Changes go to the leader (following NotLeader hints). They are retried
//! only after errors that mean the change was not executed (NotLeader,
//! NoLeader, Overloaded, ChangeInProgress) or the node was unreachable; an
//! attempt that times out is reported as `Timeout` (outcome unknown: check
//! with `members()` before repeating it).

use d_engine_proto::v1 as pb;

use crate::client::Client;
use crate::convert;
use crate::error::{Error, Result};
use crate::router::{request, Retry, Route};
use crate::types::MemberInfo;

/// Cluster administration; from [`Client::admin`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GrpcAdmin {
    pub(crate) client: Client,
}

pub use d_engine_api::NodeStatus;

impl GrpcAdmin {
    /// Adds node `id` as a learner (receives the log, does not vote).
    /// Returns the membership after the change.
    pub async fn add_learner(
        &self,
        id: u64,
        peer_addr: impl Into<String>,
        client_addr: impl Into<String>,
    ) -> Result<Vec<MemberInfo>> {
        let peer_addr = peer_addr.into();
        if id == 0 {
            return Err(Error::InvalidArgument(
                "node id 0 is reserved; use 1 or more".into(),
            ));
        }
        if peer_addr.trim().is_empty() {
            return Err(Error::InvalidArgument(
                "peer_addr is empty; give the address peers reach the node at (host:port)".into(),
            ));
        }
        let req = pb::AddLearnerRequest {
            id,
            peer_addr,
            client_addr: client_addr.into(),
        };
        self.change("add_learner", |mut rpc, t| {
            let req = request(req.clone(), t);
            async move { rpc.add_learner(req).await }
        })
        .await
    }

    /// Promotes learner `id` to voter.
    pub async fn promote(&self, id: u64) -> Result<Vec<MemberInfo>> {
        self.promote_with(id, false).await
    }

    /// Promotes learner `id` to voter; with `force`, even if it has not
    /// caught up with the leader's log.
    pub async fn promote_with(&self, id: u64, force: bool) -> Result<Vec<MemberInfo>> {
        self.change("promote", |mut rpc, t| {
            let req = request(pb::PromoteRequest { id, force }, t);
            async move { rpc.promote(req).await }
        })
        .await
    }

    /// Removes node `id` (voter or learner) from the cluster.
    pub async fn remove_member(&self, id: u64) -> Result<Vec<MemberInfo>> {
        self.change("remove_member", |mut rpc, t| {
            let req = request(pb::RemoveMemberRequest { id }, t);
            async move { rpc.remove_member(req).await }
        })
        .await
    }

    /// Asks the leader to hand leadership to voter `to`. The client's leader
    /// cache is cleared so the next request finds the new leader.
    pub async fn transfer_leader(&self, to: u64) -> Result<Vec<MemberInfo>> {
        let r = self
            .change("transfer_leader", |mut rpc, t| {
                let req = request(pb::TransferLeaderRequest { to }, t);
                async move { rpc.transfer_leader(req).await }
            })
            .await;
        self.client.inner.set_leader(None);
        r
    }

    /// Snapshots the leader's state machine now; returns the snapshot index.
    pub async fn trigger_snapshot(&self) -> Result<u64> {
        self.snapshot(Route::Leader).await
    }

    /// Snapshots the node at `addr` (no redirect).
    pub async fn trigger_snapshot_at(&self, addr: &str) -> Result<u64> {
        let addr = self.client.inner.normalize(addr)?;
        self.snapshot(Route::Node(addr)).await
    }

    /// Status of the leader if known, otherwise of any node.
    pub async fn node_status(&self) -> Result<NodeStatus> {
        self.status(Route::PreferLeader).await
    }

    /// Status of the node at `addr` (no redirect).
    pub async fn node_status_at(&self, addr: &str) -> Result<NodeStatus> {
        let addr = self.client.inner.normalize(addr)?;
        self.status(Route::Node(addr)).await
    }

    async fn change<F, Fut>(&self, op: &str, mut f: F) -> Result<Vec<MemberInfo>>
    where
        F: FnMut(
            pb::admin_client::AdminClient<crate::auth::RpcChannel>,
            std::time::Duration,
        ) -> Fut,
        Fut: std::future::Future<
            Output = std::result::Result<tonic::Response<pb::ChangeResponse>, tonic::Status>,
        >,
    {
        let inner = &self.client.inner;
        let resp = inner
            .execute(op, Route::Leader, Retry::Unsafe, |ch, t| {
                let fut = f(inner.admin_rpc(ch), t);
                async move { Ok(fut.await?.into_inner()) }
            })
            .await?;
        Ok(convert::members(resp.members))
    }

    async fn snapshot(&self, route: Route) -> Result<u64> {
        let inner = &self.client.inner;
        let resp = inner
            .execute("trigger_snapshot", route, Retry::Safe, |ch, t| {
                let mut rpc = inner.admin_rpc(ch);
                let req = request(pb::TriggerSnapshotRequest {}, t);
                async move { Ok(rpc.trigger_snapshot(req).await?.into_inner()) }
            })
            .await?;
        Ok(resp.snapshot_index)
    }

    async fn status(&self, route: Route) -> Result<NodeStatus> {
        let inner = &self.client.inner;
        let r = inner
            .execute("node_status", route, Retry::Safe, |ch, t| {
                let mut rpc = inner.admin_rpc(ch);
                let req = request(pb::NodeStatusRequest {}, t);
                async move { Ok(rpc.node_status(req).await?.into_inner()) }
            })
            .await?;
        convert::node_status(r)
    }
}
