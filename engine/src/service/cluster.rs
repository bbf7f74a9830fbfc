//! The `dengine.v1.Cluster` service: membership and leader, answered by
//! any node from its local view (no consensus round).
//!
//! `WatchCluster` streams that view ([`NodeHandle::cluster_changes`]): one
//! message now, then one per change of leader, term or membership, each
//! carrying the whole state (a slow reader skips to the latest state; it
//! never sees a stale one last). The stream ends with `SHUTTING_DOWN` when
//! the node stops.

use std::pin::Pin;

use d_engine_api::{ClusterState, Error};
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::cluster_server::Cluster;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
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
        let node = self.node.clone();
        // The node's stream ends only when the node stops (a client that
        // goes away drops this stream, which ends the node's).
        let events = ReceiverStream::new(self.node.cluster_changes())
            .map(move |s| Ok(cluster_event(&node, s)))
            .chain(tokio_stream::once(Err(status(&Error::ShuttingDown(
                "cluster watch ended: the node is stopping; reconnect to another member".into(),
            )))));
        Ok(Response::new(Box::pin(events)))
    }
}

type ClusterEventStream = Pin<Box<dyn Stream<Item = Result<pb::ClusterEvent, Status>> + Send>>;

fn cluster_event(node: &NodeHandle, s: ClusterState) -> pb::ClusterEvent {
    pb::ClusterEvent {
        header: convert::header(node.header()),
        leader_id: s.leader.id,
        leader_addr: s.leader.client_addr,
        term: s.leader.term,
        members: convert::members(s.members),
        leader_changed: s.leader_changed,
        members_changed: s.members_changed,
    }
}
