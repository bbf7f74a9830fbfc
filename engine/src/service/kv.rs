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
use d_engine_client::Error;
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::kv_server::Kv;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use super::status::{limit, status};
use super::validate;
use crate::auth::{Access, Gate};
use crate::runtime::NodeHandle;

/// Events packed into one `WatchResponse` at most.
const WATCH_EVENTS_PER_MESSAGE: usize = 256;
/// Watch responses buffered per stream before back-pressure reaches the
/// node's watcher (which cancels a watcher that falls too far behind).
const WATCH_STREAM_BUFFER: usize = 16;
/// Response bytes kept free for headers and framing.
const RESPONSE_SLACK: usize = 64 << 10;

pub struct KvService {
    node: NodeHandle,
    shutdown: watch::Receiver<bool>,
    /// Authentication and per-key authorization (`[auth]`).
    gate: Gate,
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

    fn limits(&self) -> &crate::config::LimitsConfig {
        &self.node.config().limits
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
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
        let wid = validate::write_id(r.write_id)?.map(|w| w.owned_by(caller.user()));
        let revision = self
            .node
            .put(Bytes::from(r.key), Bytes::from(r.value), ttl, wid)
            .await
            .map_err(|e| status(&e))?;
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
            .get(Bytes::from(r.key), c)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::GetResponse {
            header: self.header(),
            kv: kv.map(convert::kv),
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
        let max = l.max_request_bytes;
        let keys: Vec<Bytes> = r.keys.into_iter().map(Bytes::from).collect();
        let got = self.node.get_multi(keys, c).await.map_err(|e| status(&e))?;
        let header = self.header();
        let mut total = 0usize;
        let mut results = Vec::with_capacity(got.len());
        for kv in got {
            let kv = kv.map(convert::kv);
            total += kv.as_ref().map(convert::kv_encoded_len).unwrap_or(4);
            results.push(pb::GetResponse { header: None, kv });
        }
        if total + RESPONSE_SLACK > max {
            return Err(limit(
                "keys",
                max as u64,
                format!(
                    "the requested keys hold {total} bytes, more than one response may carry \
                     ({max} bytes, limits.max_request_bytes); request fewer keys per call"
                ),
            ));
        }
        Ok(Response::new(pb::GetMultiResponse { header, results }))
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
        let budget = l.max_request_bytes.saturating_sub(RESPONSE_SLACK);
        let out = self
            .node
            .scan_prefix(Bytes::from(r.prefix), r.limit, c)
            .await
            .map_err(|e| status(&e))?;
        // Cut the page where it would exceed one response; `more` tells
        // the client to continue after the last key returned.
        let mut kvs = Vec::with_capacity(out.kvs.len());
        let mut total = 0usize;
        let mut more = out.more;
        for kv in out.kvs {
            let kv = convert::kv(kv);
            let n = convert::kv_encoded_len(&kv);
            if total + n > budget && !kvs.is_empty() {
                more = true;
                break;
            }
            total += n;
            kvs.push(kv);
        }
        Ok(Response::new(pb::ScanPrefixResponse {
            header: self.header(),
            kvs,
            more,
        }))
    }

    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let permit = self.watch_quota.acquire(caller.user(), req.remote_addr())?;
        let r = req.into_inner();
        let l = self.limits();
        if r.prefix {
            validate::prefix(l, "key", &r.key)?;
            caller.require_prefix(&r.key, Access::Read)?;
        } else {
            validate::key(l, "key", &r.key)?;
            caller.require_key(&r.key, Access::Read)?;
        }
        let events = self
            .node
            .watch(Bytes::from(r.key), r.prefix, r.start_revision)
            .map_err(|e| status(&e))?;
        let (tx, rx) = mpsc::channel(WATCH_STREAM_BUFFER);
        let created = pb::WatchResponse {
            header: self.header(),
            created: true,
            ..Default::default()
        };
        // Cannot fail: the channel is new and has room.
        let _ = tx.try_send(Ok(created));
        let node = self.node.clone();
        let shutdown = self.shutdown.clone();
        let max = l.max_request_bytes;
        tokio::spawn(async move {
            let _permit = permit; // the quota place lasts as long as the watch
            pump_watch(node, events, tx, shutdown, max).await
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Forwards a node watch to a gRPC stream until the client goes away (the
/// node watch is dropped, which cancels it), the node cancels it, or the
/// server shuts down; the last two end with a `canceled` message whose
/// reason starts with an `ErrorCode` name.
async fn pump_watch(
    node: NodeHandle,
    mut events: crate::runtime::WatchStream,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    mut shutdown: watch::Receiver<bool>,
    max_message_bytes: usize,
) {
    let budget = max_message_bytes.saturating_sub(RESPONSE_SLACK);
    let cancel = |reason: String| pb::WatchResponse {
        header: convert::header(node.header()),
        canceled: true,
        cancel_reason: reason,
        ..Default::default()
    };
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = stopping(&mut shutdown) => {
                let _ = tx.send(Ok(cancel("SHUTTING_DOWN: the server is shutting down; reconnect to another node".into()))).await;
                return;
            }
            ev = events.recv() => {
                let first = match ev {
                    None => {
                        let _ = tx.send(Ok(cancel("SHUTTING_DOWN: the node stopped".into()))).await;
                        return;
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Ok(cancel(cancel_reason(&e)))).await;
                        return;
                    }
                    Some(Ok(ev)) => ev,
                };
                let events_msg = |events: Vec<pb::WatchEvent>| pb::WatchResponse {
                    header: convert::header(node.header()),
                    events,
                    ..Default::default()
                };
                // Batch what is already queued, cutting a message before it
                // would exceed the response budget (history replays can
                // hold many large values).
                let first = convert::event(first);
                let mut size = prost::Message::encoded_len(&first);
                let mut batch = vec![first];
                let mut end: Option<Error> = None;
                while batch.len() < WATCH_EVENTS_PER_MESSAGE {
                    match events.try_recv() {
                        Ok(Ok(ev)) => {
                            let ev = convert::event(ev);
                            let n = prost::Message::encoded_len(&ev) + 8;
                            if size + n > budget {
                                let full = std::mem::take(&mut batch);
                                if tx.send(Ok(events_msg(full))).await.is_err() {
                                    return;
                                }
                                size = 0;
                            }
                            size += n;
                            batch.push(ev);
                        }
                        Ok(Err(e)) => { end = Some(e); break; }
                        Err(_) => break,
                    }
                }
                if tx.send(Ok(events_msg(batch))).await.is_err() {
                    return;
                }
                if let Some(e) = end {
                    let _ = tx.send(Ok(cancel(cancel_reason(&e)))).await;
                    return;
                }
            }
        }
    }
}

/// Resolves once the server begins shutting down (or its flag is gone).
async fn stopping(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}

/// `"<ERROR_CODE>: <text>"`, the form `d_engine_client::cancel_error` parses.
fn cancel_reason(e: &Error) -> String {
    let code = d_engine_client::status_codec::wire_code(e.code())
        .map(|c| c.as_str_name())
        .unwrap_or("ERROR_CODE_UNSPECIFIED");
    format!("{code}: {e}")
}
