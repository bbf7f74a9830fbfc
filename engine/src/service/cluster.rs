//! The `dengine.v1.Cluster` service: membership and leader, answered by
//! any node from its local view (no consensus round).
//!
//! `WatchCluster` streams that view: one message now, then one per change
//! of leader, term or membership, each carrying the whole state (a slow
//! reader skips to the latest state; it never sees a stale one last). The
//! stream ends with `SHUTTING_DOWN` when the node stops.

use std::pin::Pin;

use d_engine_api::{Error, LeaderInfo, MemberInfo};
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::cluster_server::Cluster;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status};

use super::convert;
use super::status::status;
use crate::auth::Gate;
use crate::runtime::NodeHandle;

pub struct ClusterService {
    node: NodeHandle,
    /// With auth on, any authenticated user may ask.
    gate: Gate,
}

impl ClusterService {
    /// Auth follows the node's `[auth]` config.
    pub fn new(node: NodeHandle) -> Self {
        let gate = Gate::from_config(&node.config().auth);
        ClusterService { node, gate }
    }

    /// Uses `gate` (shared with the other services of one server).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn members(
        &self,
        req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        self.gate.authenticate_request(&req).await?;
        Ok(Response::new(pb::MembersResponse {
            header: convert::header(self.node.header()),
            members: convert::members(self.node.members()),
            leader_id: self.node.leader().id,
        }))
    }

    async fn leader(
        &self,
        req: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        self.gate.authenticate_request(&req).await?;
        let l = self.node.leader();
        Ok(Response::new(pb::LeaderResponse {
            header: convert::header(self.node.header()),
            leader_id: l.id,
            leader_addr: l.client_addr,
        }))
    }

    type WatchClusterStream = ClusterEventStream;

    async fn watch_cluster(
        &self,
        req: Request<pb::WatchClusterRequest>,
    ) -> Result<Response<Self::WatchClusterStream>, Status> {
        self.gate.authenticate_request(&req).await?;
        let (tx, rx) = mpsc::channel(CLUSTER_EVENT_BUFFER);
        let node = self.node.clone();
        tokio::spawn(forward_cluster_changes(node, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Events buffered per WatchCluster stream (each is the whole state, so a
/// full buffer only delays the reader; it never loses the latest state).
const CLUSTER_EVENT_BUFFER: usize = 4;

type ClusterEventStream = Pin<Box<dyn Stream<Item = Result<pb::ClusterEvent, Status>> + Send>>;

/// Sends the current state, then one event per change, until the client
/// goes away (send fails) or the node stops (a final `SHUTTING_DOWN`).
async fn forward_cluster_changes(
    node: NodeHandle,
    tx: mpsc::Sender<Result<pb::ClusterEvent, Status>>,
) {
    let mut leaders = node.subscribe_leader();
    let mut members = node.subscribe_members();
    let mut last_leader = leaders.borrow_and_update().clone();
    let mut last_members = members.borrow_and_update().clone();
    let first = cluster_event(&node, &last_leader, &last_members, true, true);
    if tx.send(Ok(first)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = node.stopped() => break,
            _ = tx.closed() => return,
            changed = leaders.changed() => {
                if changed.is_err() { break; }
                let l = leaders.borrow_and_update().clone();
                if l == last_leader { continue; }
                last_leader = l;
                let ev = cluster_event(&node, &last_leader, &last_members, true, false);
                if tx.send(Ok(ev)).await.is_err() { return; }
            }
            changed = members.changed() => {
                if changed.is_err() { break; }
                let m = members.borrow_and_update().clone();
                if m == last_members { continue; }
                last_members = m;
                let ev = cluster_event(&node, &last_leader, &last_members, false, true);
                if tx.send(Ok(ev)).await.is_err() { return; }
            }
        }
    }
    let _ = tx
        .send(Err(status(&Error::ShuttingDown(
            "cluster watch ended: the node is stopping; reconnect to another member".into(),
        ))))
        .await;
}

fn cluster_event(
    node: &NodeHandle,
    leader: &LeaderInfo,
    members: &[MemberInfo],
    leader_changed: bool,
    members_changed: bool,
) -> pb::ClusterEvent {
    pb::ClusterEvent {
        header: convert::header(node.header()),
        leader_id: leader.id,
        leader_addr: leader.client_addr.clone(),
        term: leader.term,
        members: convert::members(members.to_vec()),
        leader_changed,
        members_changed,
    }
}
