//! The `dengine.v1.Lease` service over a [`NodeHandle`].
//!
//! - Every call goes to the leader: a follower answers UNAVAILABLE /
//!   `NOT_LEADER` with the leader's id and client address (grant and
//!   revoke are writes; renew, time-to-live and list are served from the
//!   leader's lease clock).
//! - An unknown, revoked or expired lease is NOT_FOUND / `LEASE_NOT_FOUND`
//!   with the id in the `lease_id` metadata.
//! - `LeaseKeepAlive`: one response per request, in order; the stream ends
//!   with the error of the first renewal that fails (`LEASE_NOT_FOUND`
//!   when the lease is gone, `NOT_LEADER` / `NO_LEADER` on a leadership
//!   change: reconnect to the leader and go on), or with `SHUTTING_DOWN`
//!   when the server stops. Requests are handled one at a time and at most
//!   [`KEEPALIVE_BUFFER`] responses wait for the client: a client that does
//!   not read its responses stops being read (HTTP/2 flow control), so a
//!   stream buffers a bounded amount whatever the client sends.
//! - Auth: the lease calls name no key; they need a readwrite grant of any
//!   prefix (or the admin role). Revoking also needs readwrite access to
//!   every key attached at the time of the call (it deletes them), and
//!   listing a lease's keys (`LeaseTimeToLive` with `keys`) read access to
//!   each listed key. Keys attached between that check and the revoke's
//!   apply are deleted too (they were attached by writers of those keys).

use std::time::Duration;

use d_engine_api::Error;
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::lease_server::Lease;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::convert::RESPONSE_SLACK;
use super::status::{lease_status, status};
use super::validate;
use crate::auth::{Access, Gate};
use crate::runtime::NodeHandle;

/// Keepalive responses queued per stream for the client, at most.
pub const KEEPALIVE_BUFFER: usize = 4;

pub struct LeaseService {
    node: NodeHandle,
    shutdown: watch::Receiver<bool>,
    gate: Gate,
}

fn ms(d: Duration) -> u64 {
    d_engine_api::convert::duration_ms(d)
}

impl LeaseService {
    /// `shutdown` turns true when the server stops: open keepalive streams
    /// then end with `SHUTTING_DOWN`. Auth follows the node's `[auth]`.
    pub fn new(node: NodeHandle, shutdown: watch::Receiver<bool>) -> Self {
        let gate = Gate::from_config(&node.config().auth);
        LeaseService {
            node,
            shutdown,
            gate,
        }
    }

    /// Uses `gate` (shared with the other services of one server).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        convert::header(self.node.header())
    }

    async fn authorize<T>(&self, req: &Request<T>, rpc: &str) -> Result<(), Status> {
        let caller = self.gate.authenticate_request(req).await?;
        caller.require_lease(rpc)
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        caller.require_lease("Lease.LeaseGrant")?;
        let r = req.into_inner();
        let ttl = validate::lease_ttl("ttl_ms", r.ttl_ms)?;
        let wid = validate::write_id(r.write_id)?.map(|w| w.owned_by(caller.user()));
        let g = self
            .node
            .lease_grant(ttl, r.id, wid)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: self.header(),
            id: g.id,
            ttl_ms: ms(g.ttl),
            revision: g.revision,
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        caller.require_lease("Lease.LeaseRevoke")?;
        let r = req.into_inner();
        let id = validate::lease_id("id", r.id)?;
        let wid = validate::write_id(r.write_id)?.map(|w| w.owned_by(caller.user()));
        if self.gate.enabled() {
            // Revoking deletes the lease's keys: the caller needs readwrite
            // access to each (checked on the keys attached now).
            let t = self
                .node
                .lease_ttl_shared(id, true, None)
                .await
                .map_err(|e| lease_status(&e, id))?;
            for k in &t.keys {
                caller.require_key(k, Access::Readwrite)?;
            }
        }
        let (deleted, revision) = self
            .node
            .lease_revoke_shared(id, wid)
            .await
            .map_err(|e| lease_status(&e, id))?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: self.header(),
            deleted,
            revision,
        }))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.authorize(&req, "Lease.LeaseKeepAlive").await?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_BUFFER);
        let node = self.node.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    _ = stopping(&mut shutdown) => {
                        let e = Error::ShuttingDown("the server is shutting down; reconnect to another node".into());
                        let _ = tx.send(Err(status(&e))).await;
                        return;
                    }
                    m = inbound.message() => m,
                };
                let id = match msg {
                    Ok(Some(r)) => r.id,
                    // The client closed its side, or the stream broke.
                    Ok(None) | Err(_) => return,
                };
                let reply = match validate::lease_id("id", id) {
                    Err(s) => Err(s),
                    Ok(id) => node
                        .lease_renew(id)
                        .await
                        .map(|ttl| pb::LeaseKeepAliveResponse {
                            header: convert::header(node.header()),
                            id,
                            ttl_ms: ms(ttl),
                        })
                        .map_err(|e| lease_status(&e, id)),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_renew(
        &self,
        req: Request<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        self.authorize(&req, "Lease.LeaseRenew").await?;
        let id = validate::lease_id("id", req.into_inner().id)?;
        let ttl = self
            .node
            .lease_renew(id)
            .await
            .map_err(|e| lease_status(&e, id))?;
        Ok(Response::new(pb::LeaseKeepAliveResponse {
            header: self.header(),
            id,
            ttl_ms: ms(ttl),
        }))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        caller.require_lease("Lease.LeaseTimeToLive")?;
        let r = req.into_inner();
        let id = validate::lease_id("id", r.id)?;
        let budget = self
            .node
            .config()
            .limits
            .max_request_bytes
            .saturating_sub(RESPONSE_SLACK);
        let t = self
            .node
            .lease_ttl_shared(id, r.keys, Some(budget))
            .await
            .map_err(|e| lease_status(&e, id))?;
        // Key names are data: list them only to a caller who may read each.
        for k in &t.keys {
            caller.require_key(k, Access::Read)?;
        }
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: self.header(),
            id,
            granted_ttl_ms: ms(t.granted_ttl),
            remaining_ms: ms(t.remaining),
            keys: t.keys,
            key_count: t.key_count,
        }))
    }

    async fn lease_list(
        &self,
        req: Request<pb::LeaseListRequest>,
    ) -> Result<Response<pb::LeaseListResponse>, Status> {
        self.authorize(&req, "Lease.LeaseList").await?;
        let leases = self.node.lease_list().await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::LeaseListResponse {
            header: self.header(),
            leases: leases
                .into_iter()
                .map(|l| pb::LeaseStatus {
                    id: l.id,
                    granted_ttl_ms: ms(l.granted_ttl),
                })
                .collect(),
        }))
    }
}

/// Resolves once the server begins shutting down (or its flag is gone).
async fn stopping(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}
