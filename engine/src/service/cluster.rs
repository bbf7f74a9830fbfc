//! The `dengine.v1.Cluster` service: membership and leader, answered by
//! any node from its local view (no consensus round).
//!
//! `WatchCluster` streams that view ([`NodeHandle::cluster_changes`]): one
//! message now, then one per change of leader, term or membership, each
//! carrying the whole state (a slow reader skips to the latest state; it
//! never sees a stale one last). The stream ends with `SHUTTING_DOWN` when
//! the server starts draining or the node stops.

use std::pin::Pin;

use d_engine_api::{ClusterState, Error};
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::cluster_server::Cluster;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use super::status::status;
use crate::auth::Gate;
use crate::runtime::NodeHandle;

pub struct ClusterService {
    node: NodeHandle,
    /// With auth on, any authenticated user may ask.
    gate: Gate,
    /// The server's drain signal: open `WatchCluster` streams end with
    /// `SHUTTING_DOWN` when it turns true (before the node itself stops).
    stop: Option<watch::Receiver<bool>>,
}

impl ClusterService {
    /// Auth follows the node's `[auth]` config.
    pub fn new(node: NodeHandle) -> Self {
        let gate = Gate::from_config(&node.config().auth);
        ClusterService {
            node,
            gate,
            stop: None,
        }
    }

    /// Ends `WatchCluster` streams when `stop` turns true (the server
    /// drains), as well as when the node stops.
    pub fn with_stop(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
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
        let mut stop = self.stop.clone();
        let draining = async move {
            match stop.as_mut() {
                Some(rx) => {
                    let _ = rx.wait_for(|s| *s).await;
                }
                None => std::future::pending().await,
            }
        };
        // The node's stream ends when the node stops; the server's drain
        // ends it earlier. A client that goes away drops this stream, which
        // ends the node's.
        let events = ReceiverStream::new(self.node.cluster_changes())
            .map(move |s| Ok(cluster_event(&node, s)))
            .take_until(Box::pin(draining))
            .chain(stream::once(async {
                Err(status(&Error::ShuttingDown(
                    "cluster watch ended: the node is stopping; reconnect to another member".into(),
                )))
            }));
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
