//! The `dengine.v1.Admin` service: membership changes, leadership
//! transfer, snapshots (leader only: NOT_LEADER with a hint otherwise) and
//! node status (any node).

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use super::convert;
use super::status::status;
use super::validate;
use crate::auth::Gate;
use crate::runtime::NodeHandle;

pub struct AdminService {
    node: NodeHandle,
    /// With auth on, every Admin RPC needs the built-in `admin` role.
    gate: Gate,
}

impl AdminService {
    /// Auth follows the node's `[auth]` config.
    pub fn new(node: NodeHandle) -> Self {
        let gate = Gate::from_config(&node.config().auth);
        AdminService { node, gate }
    }

    /// Uses `gate` (shared with the other services of one server).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    /// Authenticates and requires the admin role for `rpc`.
    async fn admin<T>(&self, req: &Request<T>, rpc: &str) -> Result<(), Status> {
        self.gate
            .authenticate_request(req)
            .await?
            .require_admin(rpc)
    }

    fn change(&self, members: Vec<d_engine_api::MemberInfo>) -> Response<pb::ChangeResponse> {
        Response::new(pb::ChangeResponse {
            header: convert::header(self.node.header()),
            members: convert::members(members),
        })
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        self.admin(&req, "Admin.AddLearner").await?;
        let r = req.into_inner();
        let id = validate::node_id("id", r.id)?;
        validate::address("peer_addr", &r.peer_addr, true)?;
        validate::address("client_addr", &r.client_addr, false)?;
        let members = self
            .node
            .add_learner(id, r.peer_addr, r.client_addr)
            .await
            .map_err(|e| status(&e))?;
        Ok(self.change(members))
    }

    async fn promote(
        &self,
        req: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        self.admin(&req, "Admin.Promote").await?;
        let r = req.into_inner();
        let id = validate::node_id("id", r.id)?;
        let members = self
            .node
            .promote_with(id, r.force)
            .await
            .map_err(|e| status(&e))?;
        Ok(self.change(members))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        self.admin(&req, "Admin.RemoveMember").await?;
        let id = validate::node_id("id", req.into_inner().id)?;
        let members = self.node.remove_member(id).await.map_err(|e| status(&e))?;
        Ok(self.change(members))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        self.admin(&req, "Admin.TransferLeader").await?;
        let to = validate::node_id("to", req.into_inner().to)?;
        self.node
            .transfer_leader(to)
            .await
            .map_err(|e| status(&e))?;
        Ok(self.change(self.node.members()))
    }

    async fn trigger_snapshot(
        &self,
        req: Request<pb::TriggerSnapshotRequest>,
    ) -> Result<Response<pb::TriggerSnapshotResponse>, Status> {
        self.admin(&req, "Admin.TriggerSnapshot").await?;
        let index = self.node.trigger_snapshot().await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::TriggerSnapshotResponse {
            header: convert::header(self.node.header()),
            snapshot_index: index,
        }))
    }

    async fn node_status(
        &self,
        req: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        self.admin(&req, "Admin.NodeStatus").await?;
        let s = self.node.status();
        Ok(Response::new(d_engine_api::convert::node_status_to_wire(
            s,
            convert::header(self.node.header()),
        )))
    }
}
