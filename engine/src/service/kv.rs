//! The `dengine.v1.Kv` service over a [`NodeHandle`].
//!
//! Writes on a follower or learner fail with UNAVAILABLE / `NOT_LEADER`
//! carrying the leader's id and **client** address (`leader_id`,
//! `leader_addr` in the `ErrorInfo`); the clients retry there. The server
//! does not forward: a redirect costs the client one round trip once per
//! leader change, and keeps every node's load and failure modes simple.
//! Linearizable and lease reads go to the leader the same way; eventual
//! reads and watches are served by any node.

use bytes::Bytes;
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::kv_server::Kv;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::convert;
use super::convert::RESPONSE_SLACK;
use super::status::{limit, status};
use super::validate;
use crate::auth::{Access, Gate};
use crate::runtime::reads::MultiRead;
use crate::runtime::NodeHandle;

pub struct KvService {
    pub(super) node: NodeHandle,
    shutdown: watch::Receiver<bool>,
    /// Authentication and per-key authorization (`[auth]`).
    pub(super) gate: Gate,
    /// Watches per user and per connection (`watch.max_watchers_per_*`).
    watch_quota: std::sync::Arc<super::quota::WatchQuota>,
}

impl KvService {
    /// `shutdown` turns true when the server stops: open watches then end
    /// with a `canceled` message so the server can drain.
    /// Auth follows the node's `[auth]` config.
    pub fn new(node: NodeHandle, shutdown: watch::Receiver<bool>) -> Self {
        let gate = Gate::from_config(&node.config().auth);
        let w = &node.config().watch;
        let watch_quota =
            super::quota::WatchQuota::new(w.max_watchers_per_user, w.max_watchers_per_connection);
        KvService {
            node,
            shutdown,
            gate,
            watch_quota,
        }
    }

    /// Uses `gate` (shared with the other services of one server).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    pub(super) fn limits(&self) -> &crate::config::LimitsConfig {
        &self.node.config().limits
    }

    pub(super) fn header(&self) -> Option<pb::ResponseHeader> {
        convert::header(self.node.header())
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        validate::key(self.limits(), "key", &r.key)?;
        caller.require_key(&r.key, Access::Readwrite)?;
        validate::value(self.limits(), "value", &r.value)?;
        let ttl = validate::ttl("ttl_ms", r.ttl_ms)?;
        if r.lease != 0 && ttl.is_some() {
            return Err(super::status::invalid(
                "lease",
                "lease and ttl_ms are both set; a key has one or the other (attach it to a \
                 lease with the TTL you want)",
            ));
        }
        let wid = validate::write_id(r.write_id)?.map(|w| w.owned_by(caller.user()));
        let (key, value) = (Bytes::from(r.key), Bytes::from(r.value));
        let revision = if r.lease != 0 {
            self.node.put_with_lease(key, value, r.lease, wid).await
        } else {
            self.node.put(key, value, ttl, wid).await
        }
        .map_err(|e| super::status::lease_status(&e, r.lease))?;
        Ok(Response::new(pb::PutResponse {
            header: self.header(),
            revision,
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        validate::key(self.limits(), "key", &r.key)?;
        caller.require_key(&r.key, Access::Read)?;
        let c = validate::consistency(r.consistency)?;
        let kv = self
            .node
            .get_shared(Bytes::from(r.key), c)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::GetResponse {
            header: self.header(),
            kv: kv.as_ref().map(convert::shared_kv),
        }))
    }

    async fn get_multi(
        &self,
        req: Request<pb::GetMultiRequest>,
    ) -> Result<Response<pb::GetMultiResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        let l = self.limits();
        if r.keys.len() > l.max_get_multi_keys {
            return Err(limit(
                "keys",
                l.max_get_multi_keys as u64,
                format!(
                    "keys has {} entries; the limit is {} (limits.max_get_multi_keys)",
                    r.keys.len(),
                    l.max_get_multi_keys
                ),
            ));
        }
        for (i, k) in r.keys.iter().enumerate() {
            validate::key(l, &format!("keys[{i}]"), k)?;
        }
        for k in &r.keys {
            caller.require_key(k, Access::Read)?;
        }
        let c = validate::consistency(r.consistency)?;
        let keys: Vec<Bytes> = r.keys.into_iter().map(Bytes::from).collect();
        validate::distinct_keys("keys", &keys)?;
        // Read against the response budget: the node stops at it rather
        // than reading (or copying) every key and measuring afterwards.
        let max = l.max_request_bytes;
        let budget = max.saturating_sub(RESPONSE_SLACK);
        let got = self
            .node
            .get_multi_shared(keys, c, Some(budget))
            .await
            .map_err(|e| status(&e))?;
        let got = match got {
            MultiRead::Complete(got) => got,
            MultiRead::OverBudget { read, bytes } => {
                return Err(limit(
                    "keys",
                    max as u64,
                    format!(
                        "the first {read} of the requested keys already hold {bytes} bytes, \
                         more than one response may carry ({max} bytes, \
                         limits.max_request_bytes); request fewer keys per call"
                    ),
                ))
            }
        };
        let results = got
            .iter()
            .map(|kv| pb::GetResponse {
                header: None,
                kv: kv.as_ref().map(convert::shared_kv),
            })
            .collect();
        Ok(Response::new(pb::GetMultiResponse {
            header: self.header(),
            results,
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        validate::key(self.limits(), "key", &r.key)?;
        caller.require_key(&r.key, Access::Readwrite)?;
        let wid = validate::write_id(r.write_id)?.map(|w| w.owned_by(caller.user()));
        let out = self
            .node
            .delete(Bytes::from(r.key), wid)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::DeleteResponse {
            header: self.header(),
            deleted: out.deleted,
            revision: out.revision,
        }))
    }

    async fn compare_and_swap(
        &self,
        req: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        let l = self.limits();
        validate::key(l, "key", &r.key)?;
        caller.require_key(&r.key, Access::Readwrite)?;
        if let Some(v) = &r.expected_value {
            validate::value(l, "expected_value", v)?;
        }
        if let Some(v) = &r.new_value {
            validate::value(l, "new_value", v)?;
        }
        let ttl = validate::ttl("ttl_ms", r.ttl_ms)?;
        let wid = validate::write_id(r.write_id)?.map(|w| w.owned_by(caller.user()));
        let out = self
            .node
            .compare_and_swap(
                Bytes::from(r.key),
                r.expected_value.map(Bytes::from),
                r.new_value.map(Bytes::from),
                ttl,
                wid,
            )
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::CompareAndSwapResponse {
            header: self.header(),
            succeeded: out.succeeded,
            current: out.current.map(convert::kv),
            revision: out.revision,
        }))
    }

    async fn scan_prefix(
        &self,
        req: Request<pb::ScanPrefixRequest>,
    ) -> Result<Response<pb::ScanPrefixResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        let l = self.limits();
        validate::prefix(l, "prefix", &r.prefix)?;
        caller.require_prefix(&r.prefix, Access::Read)?;
        let c = validate::consistency(r.consistency)?;
        // The page ends where it would exceed one response, before reading
        // the pair that would pass it; `more` tells the client so.
        let budget = l.max_request_bytes.saturating_sub(RESPONSE_SLACK);
        let out = self
            .node
            .scan_prefix_shared(Bytes::from(r.prefix), r.limit, c, Some(budget))
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::ScanPrefixResponse {
            header: self.header(),
            kvs: out.kvs.iter().map(convert::shared_kv).collect(),
            more: out.more,
        }))
    }

    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.range_impl(req).await
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        self.delete_range_impl(req).await
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        self.txn_impl(req).await
    }

    type WatchStream = super::watch_stream::WatchOut;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let watches = super::watch_stream::Watches {
            node: &self.node,
            gate: &self.gate,
            quota: &self.watch_quota,
            shutdown: &self.shutdown,
        };
        watches.open(req).await
    }
}
