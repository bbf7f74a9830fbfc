//! The `dengine.v1.Cluster` service: membership and leader, answered by
//! any node from its local view (no consensus round).

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use super::convert;
use crate::runtime::NodeHandle;

pub struct ClusterService {
    node: NodeHandle,
}

impl ClusterService {
    pub fn new(node: NodeHandle) -> Self {
        ClusterService { node }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn members(
        &self,
        _req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        Ok(Response::new(pb::MembersResponse {
            header: convert::header(self.node.header()),
            members: convert::members(self.node.members()),
            leader_id: self.node.leader().id,
        }))
    }

    async fn leader(
        &self,
        _req: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        let l = self.node.leader();
        Ok(Response::new(pb::LeaderResponse {
            header: convert::header(self.node.header()),
            leader_id: l.id,
            leader_addr: l.client_addr,
        }))
    }
}
