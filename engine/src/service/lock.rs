//! The `dengine.v1.Lock` service: [`crate::recipes::lock`] run on this
//! node ([`LocalKv`]). A follower answers `NOT_LEADER` like for any write;
//! the client retries on the leader with the same lease, which keeps its
//! place in the queue.
//!
//! Auth: read-write access to the lock's queue prefix (`name/`).

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::lock_server::Lock;
use tonic::{Request, Response, Status};

use super::convert;
use super::status::status;
use crate::auth::{Access, Gate};
use crate::recipes::{self, local::LocalKv, queue_prefix};
use crate::runtime::NodeHandle;

pub struct LockService {
    node: NodeHandle,
    gate: Gate,
}

impl LockService {
    pub fn new(node: NodeHandle) -> Self {
        let gate = Gate::from_config(&node.config().auth);
        LockService { node, gate }
    }

    /// Uses `gate` (shared with the other services of one server).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        convert::header(self.node.header())
    }
}

/// The lock name a queue key belongs to: everything before the last `/`.
pub(super) fn name_of(key: &[u8]) -> Result<&[u8], Status> {
    match key.iter().rposition(|b| *b == b'/') {
        Some(i) if i > 0 => Ok(&key[..i]),
        _ => Err(Status::invalid_argument(
            "key is not a lock or election key (name/<lease id>); pass the key Lock or Campaign returned",
        )),
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(
        &self,
        req: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        caller.require_prefix(&queue_prefix(&r.name), Access::Readwrite)?;
        let held = recipes::lock::lock(&LocalKv(self.node.clone()), &r.name, r.lease)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::LockResponse {
            header: self.header(),
            key: held.key,
            revision: held.revision,
        }))
    }

    async fn unlock(
        &self,
        req: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        let name = name_of(&r.key)?;
        caller.require_prefix(&queue_prefix(name), Access::Readwrite)?;
        recipes::lock::unlock(&LocalKv(self.node.clone()), &r.key)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::UnlockResponse {
            header: self.header(),
        }))
    }
}
