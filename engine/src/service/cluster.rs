//! The `dengine.v1.Cluster` service: membership and leader, answered by
//! any node from its local view (no consensus round).

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use super::convert;
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
}
