//! The `dengine.v1.App` service: application commands for a node running
//! an application state machine (`crate::app`), over
//! [`NodeHandle::propose_app`]. Its caller is a follower's `AppEngine`
//! forwarding a command to the leader (`crate::embedded`'s forwarder).
//!
//! - Auth (`[auth]` on): the caller must authenticate (UNAUTHENTICATED
//!   otherwise, before the command is looked at) and hold a readwrite
//!   grant of the whole keyspace (prefix "") or the admin role
//!   (PERMISSION_DENIED): a command names no key, so it may change
//!   anything. A follower forwards as the user of `auth.forward_token`.
//! - Limits: the message is bounded by `limits.max_request_bytes` when it
//!   is decoded; the command by `limits.max_value_bytes`, checked before it
//!   is copied into the log.
//! - `write_id` is required: without it a retried forward could apply
//!   twice.

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::app_server::App;
use tonic::{Request, Response, Status};

use super::convert;
use super::status::{invalid, status};
use super::validate;
use crate::auth::{Access, Gate};
use crate::runtime::NodeHandle;

pub struct AppService {
    node: NodeHandle,
    gate: Gate,
}

impl AppService {
    pub fn new(node: NodeHandle) -> Self {
        let gate = Gate::from_config(&node.config().auth);
        AppService { node, gate }
    }

    /// Uses `gate` (shared with the other services of one server).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }
}

#[tonic::async_trait]
impl App for AppService {
    async fn propose(
        &self,
        req: Request<pb::AppProposeRequest>,
    ) -> Result<Response<pb::AppProposeResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        if caller.require_prefix(b"", Access::Readwrite).is_err() {
            return Err(status(&d_engine_api::Error::PermissionDenied(format!(
                "user \"{}\" may not propose application commands: they need a readwrite \
                 grant of the whole keyspace (prefix \"\") or the admin role",
                caller.user().unwrap_or_default()
            ))));
        }
        let r = req.into_inner();
        validate::value(&self.node.config().limits, "command", &r.command)?;
        let id = match validate::write_id(r.write_id)? {
            Some(w) => (w.client_id, w.seq),
            None => {
                return Err(invalid(
                    "write_id",
                    "write_id is required (client_id != 0, seq >= 1): a forwarded command \
                     is retried, and only its write id keeps a retry from applying twice",
                ))
            }
        };
        let out = self
            .node
            .propose_app(&r.command, Some(id))
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::AppProposeResponse {
            header: convert::header(self.node.header()),
            revision: out.revision,
            output: out.output.into(),
        }))
    }
}
