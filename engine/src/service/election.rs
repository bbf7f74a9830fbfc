//! The `dengine.v1.Election` service: [`crate::recipes::election`] run on
//! this node ([`LocalKv`]). Campaign, Proclaim and Resign go to the leader
//! (`NOT_LEADER` otherwise); Leader and Observe read linearizably, so they
//! go to the leader too.
//!
//! Auth: read-write access to the election's queue prefix (`name/`) for
//! Campaign, Proclaim and Resign; read access for Leader and Observe.

use std::pin::Pin;

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::election_server::Election;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::convert;
use super::lock::name_of;
use super::status::status;
use crate::auth::{Access, Gate};
use crate::recipes::{self, election::LeaderKey, local::LocalKv, queue_prefix};
use crate::runtime::NodeHandle;

/// Leader changes buffered per Observe stream.
const OBSERVE_BUFFER: usize = 16;

pub struct ElectionService {
    node: NodeHandle,
    gate: Gate,
}

impl ElectionService {
    pub fn new(node: NodeHandle) -> Self {
        let gate = Gate::from_config(&node.config().auth);
        ElectionService { node, gate }
    }

    /// Uses `gate` (shared with the other services of one server).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        convert::header(self.node.header())
    }

    fn kv(&self) -> LocalKv {
        LocalKv(self.node.clone())
    }
}

/// A wire leader key, checked: its key must belong to its name.
fn leader_key(k: Option<pb::LeaderKey>) -> Result<LeaderKey, Status> {
    let k = k.ok_or_else(|| {
        Status::invalid_argument("leader is missing; pass the LeaderKey Campaign returned")
    })?;
    if name_of(&k.key)? != k.name.as_slice() {
        return Err(Status::invalid_argument(
            "leader.key does not belong to leader.name; pass the LeaderKey Campaign returned",
        ));
    }
    Ok(LeaderKey {
        name: k.name,
        key: k.key,
        revision: k.revision,
        lease: k.lease,
    })
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<pb::ElectionLeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        caller.require_prefix(&queue_prefix(&r.name), Access::Readwrite)?;
        super::validate::value(&self.node.config().limits, "value", &r.value)?;
        let l = recipes::election::campaign(&self.kv(), &r.name, r.lease, &r.value)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::CampaignResponse {
            header: self.header(),
            leader: Some(pb::LeaderKey {
                name: l.name,
                key: l.key,
                revision: l.revision,
                lease: l.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        let l = leader_key(r.leader)?;
        caller.require_prefix(&queue_prefix(&l.name), Access::Readwrite)?;
        super::validate::value(&self.node.config().limits, "value", &r.value)?;
        recipes::election::proclaim(&self.kv(), &l, &r.value)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::ProclaimResponse {
            header: self.header(),
        }))
    }

    async fn leader(
        &self,
        req: Request<pb::ElectionLeaderRequest>,
    ) -> Result<Response<pb::ElectionLeaderResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        caller.require_prefix(&queue_prefix(&r.name), Access::Read)?;
        let kv = recipes::election::leader(&self.kv(), &r.name)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::ElectionLeaderResponse {
            header: self.header(),
            kv: kv.map(convert::kv),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<pb::ElectionLeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        caller.require_prefix(&queue_prefix(&r.name), Access::Read)?;
        let rx = recipes::election::observe(self.kv(), r.name, OBSERVE_BUFFER)
            .map_err(|e| status(&e))?;
        let node = self.node.clone();
        let out = ReceiverStream::new(rx).map(move |item| match item {
            Ok(kv) => Ok(pb::ElectionLeaderResponse {
                header: convert::header(node.header()),
                kv: Some(convert::kv(kv)),
            }),
            Err(e) => Err(status(&e)),
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn resign(
        &self,
        req: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        let l = leader_key(r.leader)?;
        caller.require_prefix(&queue_prefix(&l.name), Access::Readwrite)?;
        recipes::election::resign(&self.kv(), &l)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::ResignResponse {
            header: self.header(),
        }))
    }
}
