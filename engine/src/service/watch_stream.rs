//! `Kv.Watch` over gRPC: admission (quota, validation, authorization),
//! then a pump that forwards a node watch to the response stream in
//! byte-bounded messages, with progress notifications, periodic re-checks
//! of the caller's credentials, and typed cancels that say where to resume.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use d_engine_api::{status_codec, Error};
use d_engine_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert;
use super::convert::RESPONSE_SLACK;
use super::quota::WatchQuota;
use super::status::{invalid, status};
use super::validate;
use crate::auth::{Access, Gate};
use crate::runtime::watch_hub::{Delivery, HubStream};
use crate::runtime::NodeHandle;

/// Events packed into one `WatchResponse` at most.
const WATCH_EVENTS_PER_MESSAGE: usize = 256;
/// Watch responses buffered per stream before back-pressure reaches the
/// node's watcher (which cancels a watcher that falls too far behind; the
/// events of buffered responses still count in its byte budget).
const WATCH_STREAM_BUFFER: usize = 16;

/// What opening a watch needs from the Kv service.
pub(super) struct Watches<'a> {
    pub node: &'a NodeHandle,
    pub gate: &'a Gate,
    /// Watches per user and per connection (`watch.max_watchers_per_*`).
    pub quota: &'a std::sync::Arc<WatchQuota>,
    /// Turns true when the server stops: open watches then end with a
    /// SHUTTING_DOWN cancel.
    pub shutdown: &'a watch::Receiver<bool>,
}

impl Watches<'_> {
    /// Opens a watch for `req`: refused with RESOURCE_EXHAUSTED over the
    /// caller's watch quota, INVALID_ARGUMENT naming the field for a
    /// malformed request, PERMISSION_DENIED without read access to the key,
    /// prefix or range; otherwise the stream starts with a `created`
    /// message.
    pub(super) async fn open(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchOut>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let permit = self
            .quota
            .acquire(caller.user(), req.remote_addr())
            .inspect_err(|st| {
                let limit = tonic_types::StatusExt::get_error_details(st)
                    .error_info()
                    .and_then(|i| i.metadata.get("limit").cloned())
                    .unwrap_or_else(|| "watch.per_user".into());
                self.node.shared.metrics.overloaded(&limit);
            })?;
        let r = req.into_inner();
        let l = &self.node.config().limits;
        if r.prefix && !r.range_end.is_empty() {
            return Err(invalid(
                "range_end",
                "a watch has either `prefix` or `range_end`, not both: drop one",
            ));
        }
        // With auth on, the watch re-checks its caller while it runs: a
        // revoked or expired credential, a deleted user or a lost grant
        // ends it with a typed cancel (UNAUTHENTICATED / PERMISSION_DENIED).
        let recheck: Option<Recheck> = self.gate.enabled().then(|| {
            let (gate, caller) = (self.gate.clone(), caller.clone());
            let (key, end, prefix) = (r.key.clone(), r.range_end.clone(), r.prefix);
            Box::new(move || {
                let c = gate.recheck(&caller)?;
                if prefix {
                    c.require_prefix(&key, Access::Read)
                } else {
                    c.require_range(&key, &end, Access::Read)
                }
            }) as Recheck
        });
        if r.prefix {
            validate::prefix(l, "key", &r.key)?;
            caller.require_prefix(&r.key, Access::Read)?;
        } else {
            // One key (empty range_end) or a range, with the rules of Range.
            validate::range(l, "key", "range_end", &r.key, &r.range_end)?;
            caller.require_range(&r.key, &r.range_end, Access::Read)?;
        }
        let (key, options) =
            d_engine_api::convert::watch_request_from_wire(r).map_err(|e| status(&e))?;
        let events = self
            .node
            .watch_shared(Bytes::from(key), &options)
            .map_err(|e| status(&e))?;
        let (tx, rx) = mpsc::channel(WATCH_STREAM_BUFFER);
        let created = pb::WatchResponse {
            header: convert::header(self.node.header()),
            created: true,
            ..Default::default()
        };
        // Cannot fail: the channel is new and has room.
        let _ = tx.try_send((Ok(created), Vec::new()));
        let node = self.node.clone();
        let shutdown = self.shutdown.clone();
        let max = l.max_request_bytes;
        let progress = options
            .progress_notify
            .then(|| self.node.watch_progress_interval());
        tokio::spawn(async move {
            let _permit = permit; // the quota place lasts as long as the watch
            pump_watch(node, events, tx, shutdown, max, progress, recheck).await
        });
        Ok(Response::new(WatchOut(rx)))
    }
}

/// Re-checks a watch's caller (see [`KvService::watch`]).
type Recheck = Box<dyn Fn() -> Result<(), Status> + Send + Sync>;

/// How often a watch re-checks its caller's credentials and grants.
const AUTH_RECHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A watch response and the events it carries, which stay charged to the
/// watcher's `watch.max_buffer_bytes` until the transport takes the message.
type Outgoing = (Result<pb::WatchResponse, Status>, Vec<Delivery>);

/// The response stream of one watch. Each message's [`Delivery`]s are
/// dropped (uncharged) when the transport polls the message out, so the
/// watcher's byte budget covers the messages queued here too.
pub struct WatchOut(mpsc::Receiver<Outgoing>);

impl Stream for WatchOut {
    type Item = Result<pb::WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|o| o.map(|(msg, _charged)| msg))
    }
}

/// Forwards a node watch to a gRPC stream until the client goes away (the
/// node watch is dropped, which cancels it), the node cancels it, or the
/// server shuts down; the last two end with a `canceled` message carrying
/// the typed `cancel_code` and the `resume_revision` (one past what this
/// stream delivered, or where a revision it cut short begins). With
/// `progress` set, an idle stream gets a progress message (no events,
/// `header.revision` = the revision it has caught up to) after each
/// `progress` of silence.
async fn pump_watch(
    node: NodeHandle,
    mut events: HubStream,
    tx: mpsc::Sender<Outgoing>,
    mut shutdown: watch::Receiver<bool>,
    max_message_bytes: usize,
    progress: Option<std::time::Duration>,
    recheck: Option<Recheck>,
) {
    let budget = max_message_bytes.saturating_sub(RESPONSE_SLACK);
    // One past the last event sent (or the start): where a cancel with the
    // hub gone resumes.
    let mut resume = events.start;
    let cancel = |err: &Error, resume: u64| -> Outgoing {
        let c = status_codec::watch_cancel(err, resume);
        if c.code == d_engine_api::ErrorCode::Overloaded {
            // A watcher that fell behind its buffer (the hub's only
            // Overloaded cancel).
            node.shared.metrics.overloaded("watch.max_buffer_bytes");
        }
        (
            Ok(status_codec::cancel_response(
                convert::header(node.header()),
                &c,
            )),
            Vec::new(),
        )
    };
    let events_msg = |events: Vec<pb::WatchEvent>, held: Vec<Delivery>| -> Outgoing {
        (
            Ok(pb::WatchResponse {
                header: convert::header(node.header()),
                events,
                ..Default::default()
            }),
            held,
        )
    };
    let mut idle_since = tokio::time::Instant::now();
    loop {
        let tick = async {
            match progress {
                Some(every) => tokio::time::sleep_until(idle_since + every).await,
                None => std::future::pending().await,
            }
        };
        let auth_tick = async {
            match &recheck {
                Some(_) => tokio::time::sleep(AUTH_RECHECK_EVERY).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tx.closed() => return,
            _ = auth_tick => {
                if let Some(Err(st)) = recheck.as_ref().map(|f| f()) {
                    let e = status_codec::from_status(&st);
                    let _ = tx.send(cancel(&e, resume)).await;
                    return;
                }
            }
            _ = stopping(&mut shutdown) => {
                // Resume where this stream stops: at the next queued event
                // (possibly mid-revision), or past everything published.
                let resume = match events.try_recv() {
                    Ok(Ok(d)) => d.event().revision,
                    Ok(Err(e)) => e.resume_revision().unwrap_or(resume),
                    Err(_) => events.caught_up().map_or(resume, |p| resume.max(p + 1)),
                };
                let e = Error::ShuttingDown(
                    "the server is shutting down; watch again on another node from the \
                     resume revision".into(),
                );
                let _ = tx.send(cancel(&e, resume)).await;
                return;
            }
            _ = tick => {
                idle_since = tokio::time::Instant::now();
                if let Some(rev) = events.caught_up() {
                    let mut header = node.header();
                    header.revision = rev;
                    resume = resume.max(rev + 1);
                    let msg = pb::WatchResponse {
                        header: convert::header(header),
                        progress: true,
                        ..Default::default()
                    };
                    if tx.send((Ok(msg), Vec::new())).await.is_err() {
                        return;
                    }
                }
            }
            ev = events.recv() => {
                idle_since = tokio::time::Instant::now();
                let first = match ev {
                    None => {
                        let e = Error::ShuttingDown("the node stopped".into());
                        let _ = tx.send(cancel(&e, resume)).await;
                        return;
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(cancel(&e, resume)).await;
                        return;
                    }
                    Some(Ok(ev)) => ev,
                };
                // Batch what is already queued, cutting a message before it
                // would exceed the response budget (history replays can
                // hold many large values). The messages share the events'
                // bytes; the deliveries travel with them to stay charged.
                let ev = convert::event(&first);
                let mut last = first.event().revision;
                let mut size = prost::Message::encoded_len(&ev);
                let mut batch = vec![ev];
                let mut held = vec![first];
                let mut end: Option<Error> = None;
                while batch.len() < WATCH_EVENTS_PER_MESSAGE {
                    match events.try_recv() {
                        Ok(Ok(d)) => {
                            let ev = convert::event(&d);
                            let n = prost::Message::encoded_len(&ev) + 8;
                            if size + n > budget {
                                let full = std::mem::take(&mut batch);
                                let full_held = std::mem::take(&mut held);
                                if tx.send(events_msg(full, full_held)).await.is_err() {
                                    return;
                                }
                                size = 0;
                            }
                            size += n;
                            last = d.event().revision;
                            batch.push(ev);
                            held.push(d);
                        }
                        Ok(Err(e)) => { end = Some(e); break; }
                        Err(_) => break,
                    }
                }
                if tx.send(events_msg(batch, held)).await.is_err() {
                    return;
                }
                resume = resume.max(last + 1);
                if let Some(e) = end {
                    let _ = tx.send(cancel(&e, resume)).await;
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
