//! Watches over gRPC: open (consuming the server's `created` message),
//! forward events into the caller's [`WatchStream`], resume after a broken
//! stream, and turn a server-side cancellation into a final `Err`.
//!
//! Delivery contract: events arrive in revision order, each at most once.
//! After a transport failure, leader change or node shutdown the watch is
//! re-opened (within the retry policy and request timeout) from the
//! revision after the last delivered event, so nothing is skipped as long
//! as the server still holds that history (otherwise the final error is
//! `Compacted`). A cancellation because the node is shutting down
//! (`SHUTTING_DOWN: ...`) is treated the same way. Any other cancellation
//! (`canceled` + reason: slow consumer, compaction, ...) yields one `Err`
//! and then `None`; so does a failed re-open, or any break when
//! `watch_resume` is off. Dropping the stream ends the watch.

use std::sync::Arc;

use d_engine_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::convert;
use crate::error::{Error, ErrorCode, Result};
use crate::kv::WatchStream;
use crate::router::{Inner, Retry, Route};
use crate::status_codec::cancel_error;

/// Errors after which a broken watch is re-opened.
/// A status that did not come from a d-engine handler (no error details)
/// but from the connection breaking mid-stream: an HTTP/2 reset or a
/// closed socket surfaces as `Unknown`, `Internal` or `Cancelled`.
/// Re-opening a watch has no side effects, so such breaks are resumed.
fn is_transport_break(st: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(st.code(), Code::Unknown | Code::Internal | Code::Cancelled) && st.details().is_empty()
}

fn resumable(e: &Error) -> bool {
    e.is_retryable() || matches!(e.code(), ErrorCode::ShuttingDown | ErrorCode::Timeout)
}

/// Opens the watch on the leader (following redirects and retrying like
/// any read) and waits for its `created` message. Returns the stream and
/// the store revision the server reported at creation (0 if none).
async fn establish(
    inner: &Inner,
    req: &pb::WatchRequest,
) -> Result<(Streaming<pb::WatchResponse>, u64)> {
    inner
        .execute(
            "watch",
            Route::Leader,
            Retry::Safe,
            |ch, _attempt_budget| {
                let mut rpc = inner.kv_rpc(ch);
                // No grpc-timeout: it would end the stream; the attempt budget
                // bounds only the wait for `created`.
                let req = tonic::Request::new(req.clone());
                async move {
                    let mut stream = rpc.watch(req).await?.into_inner();
                    match stream.message().await? {
                        Some(first) if first.canceled => Err(cancel_error(&first.cancel_reason)),
                        Some(first) if first.created => {
                            Ok((stream, first.header.map_or(0, |h| h.revision)))
                        }
                        Some(_) => Err(Error::Internal(
                            "watch stream did not start with a `created` message".into(),
                        )),
                        None => Err(Error::Unavailable(
                            "watch stream closed before it was created".into(),
                        )),
                    }
                }
            },
        )
        .await
}

/// Opens a watch and spawns the task that feeds the returned stream.
pub(crate) async fn open(inner: Arc<Inner>, mut req: pb::WatchRequest) -> Result<WatchStream> {
    let (stream, created_rev) = establish(&inner, &req).await?;
    let (tx, rx) = mpsc::channel(inner.cfg.watch_buffer);
    // First revision not yet delivered.
    let next = if req.start_revision > 0 {
        req.start_revision
    } else if created_rev > 0 {
        created_rev + 1
    } else {
        0
    };
    req.start_revision = next;
    tokio::spawn(forward(inner, req, stream, tx));
    Ok(rx)
}

/// Feeds `tx` until the caller drops it, the server cancels, or a broken
/// stream cannot be re-opened. `req.start_revision` tracks the first
/// revision not yet delivered.
async fn forward(
    inner: Arc<Inner>,
    mut req: pb::WatchRequest,
    mut stream: Streaming<pb::WatchResponse>,
    tx: mpsc::Sender<Result<crate::types::WatchEvent>>,
) {
    loop {
        let msg = tokio::select! {
            _ = tx.closed() => return,
            m = stream.message() => m,
        };
        let broken = match msg {
            Ok(Some(resp)) if resp.canceled => {
                let e = cancel_error(&resp.cancel_reason);
                if e.code() != ErrorCode::ShuttingDown {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                // The node is going away: same as a broken stream.
                e
            }
            Ok(Some(resp)) => {
                for ev in resp.events {
                    match convert::watch_event(ev) {
                        Ok(e) => {
                            let rev = e.kv.mod_revision;
                            if req.start_revision > 0 && rev < req.start_revision {
                                continue; // already delivered before a resume
                            }
                            req.start_revision = rev + 1;
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
                continue;
            }
            Ok(None) => Error::Unavailable("watch stream ended without a cancel message".into()),
            Err(st) => {
                let transport = is_transport_break(&st);
                let e = Error::from(st);
                if transport && inner.cfg.watch_resume {
                    tracing::debug!(error = %e, "watch stream broken by the transport");
                    Error::Unavailable(format!("watch stream broken: {e}"))
                } else {
                    e
                }
            }
        };
        if !inner.cfg.watch_resume || !resumable(&broken) {
            let _ = tx.send(Err(broken)).await;
            return;
        }
        tracing::debug!(error = %broken, from = req.start_revision, "re-opening watch");
        let reopened = tokio::select! {
            _ = tx.closed() => return,
            r = establish(&inner, &req) => r,
        };
        match reopened {
            Ok((s, created_rev)) => {
                stream = s;
                if req.start_revision == 0 && created_rev > 0 {
                    req.start_revision = created_rev + 1;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_breaks_are_told_from_server_errors() {
        use tonic::{Code, Status};
        assert!(is_transport_break(&Status::new(
            Code::Unknown,
            "h2 protocol error: connection reset"
        )));
        assert!(is_transport_break(&Status::new(
            Code::Internal,
            "broken pipe"
        )));
        assert!(!is_transport_break(&Status::new(
            Code::InvalidArgument,
            "bad"
        )));
        // A handler's error carries d-engine details (ErrorInfo).
        let server_error = Status::with_details(
            Code::Internal,
            "storage",
            bytes::Bytes::from_static(b"\x0a\x01x"),
        );
        assert!(!is_transport_break(&server_error));
    }
}
