//! Watches over gRPC: open (consuming the server's `created` message),
//! forward events (and progress notifications, if asked for) into the
//! caller's [`WatchStream`], resume after a broken stream, and turn a
//! server-side cancellation into a final typed `Err`.
//!
//! Delivery contract: events arrive in revision order, each at most once.
//! After a transport failure, leader change or node shutdown the watch is
//! re-opened (within the retry policy and request timeout) where it left
//! off, so nothing is skipped as long as the server still holds that
//! history (otherwise the final error is a `Compacted` cancel). Where it
//! left off: one past the last delivered event, or further when a progress
//! notification or the server's `resume_revision` says so; when the
//! server's cancel says a revision was cut in the middle (`resume_revision`
//! = the last delivered revision), the watch resumes at that revision and
//! drops the events of it already delivered.
//!
//! Decisions are made on the cancel's `cancel_code`, never on its text:
//! `SHUTTING_DOWN` and `NOT_LEADER` are resumed like a broken stream; any
//! other cancel (`OVERLOADED` slow consumer, `COMPACTED`, auth, ...) yields
//! one `Err(Error::WatchCanceled(..))` carrying the code, the
//! `compact_revision` and the `resume_revision`, then `None`; so does a
//! failed re-open, or any break when `watch_resume` is off. Dropping the
//! stream ends the watch; closing the client (`Client::close`) ends it
//! with one `Err(Error::ClientClosed { resume_revision })` (after the
//! events already buffered; `resume_revision` as a cancel's), then `None`.

use std::sync::Arc;

use d_engine_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::convert;
use crate::error::{Error, ErrorCode, Result};
use crate::kv::WatchStream;
use crate::router::{Inner, Retry, Route};
use crate::status_codec::cancel_from_wire;
use crate::types::WatchEvent;

/// Errors after which a broken watch is re-opened.
/// A status that did not come from a d-engine handler (no error details)
/// but from the connection breaking mid-stream: an HTTP/2 reset or a
/// closed socket surfaces as `Unknown`, `Internal` or `Cancelled`.
/// Re-opening a watch has no side effects, so such breaks are resumed.
fn is_transport_break(st: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(st.code(), Code::Unknown | Code::Internal | Code::Cancelled) && st.details().is_empty()
}

/// A broken stream (transport or node) after which the watch is re-opened.
fn resumable(e: &Error) -> bool {
    if matches!(e, Error::WatchCanceled(_)) {
        return resumable_cancel(e.code());
    }
    matches!(
        e.code(),
        ErrorCode::NotLeader
            | ErrorCode::NoLeader
            | ErrorCode::Unavailable
            | ErrorCode::ChangeInProgress
            | ErrorCode::ShuttingDown
            | ErrorCode::Timeout
    )
}

/// A server cancel that means "this node is going away, watch elsewhere".
fn resumable_cancel(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::ShuttingDown | ErrorCode::NotLeader)
}

/// A failure to open (or re-open) a watch. A transport break (a connection
/// reset by a node that was just killed, no d-engine details) is
/// `Unavailable`, so the router tries another node: opening a watch has no
/// side effects. Without this a watch resuming after its node was killed
/// could end with `Internal` when the re-open hit the dead connection.
fn open_error(st: tonic::Status) -> Error {
    if is_transport_break(&st) {
        Error::Unavailable(format!("opening the watch: {}", Error::from(st)))
    } else {
        Error::from(st)
    }
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
                    let mut stream = rpc.watch(req).await.map_err(open_error)?.into_inner();
                    match stream.message().await.map_err(open_error)? {
                        Some(first) if first.canceled => Err(cancel_from_wire(&first)),
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

/// Where a watch stands: what it delivered, and where to re-open it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Position {
    /// Revision of the last delivered event (0 = none yet).
    last: u64,
    /// Events of revision `last` delivered.
    at_last: usize,
    /// Every revision below this one is delivered or known to have no
    /// event for this watch (start revision, progress, server resume).
    floor: u64,
    /// The current stream was opened at this revision: its events below
    /// it, and the first `skip` at it, were delivered before.
    from: u64,
    skip: usize,
}

impl Position {
    fn starting_at(start: u64) -> Self {
        Position {
            floor: start,
            from: start,
            ..Default::default()
        }
    }

    /// Whether an event of revision `rev` from the current stream is new;
    /// records it as delivered if so.
    fn admit(&mut self, rev: u64) -> bool {
        if rev < self.from {
            return false;
        }
        if rev == self.from && self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        if rev == self.last {
            self.at_last += 1;
        } else {
            self.last = rev;
            self.at_last = 1;
        }
        true
    }

    /// Everything at or below `rev` is delivered (a progress notification).
    fn caught_up(&mut self, rev: u64) {
        self.floor = self.floor.max(rev + 1);
    }

    /// The watch's end on `Client::close`: `ClientClosed` carrying where to
    /// watch again from (one past the last delivered event, or the floor;
    /// 0 when nothing is known).
    fn closed(&self) -> Error {
        let resume_revision = if self.last == 0 && self.floor == 0 {
            0
        } else {
            self.floor.max(self.last + 1)
        };
        Error::ClientClosed { resume_revision }
    }

    /// Where to re-open: `server_resume` is the cancel's `resume_revision`
    /// (0 = none). Returns the start revision of the next stream and sets
    /// up dropping the events already delivered.
    fn reopen(&mut self, server_resume: u64) -> u64 {
        if server_resume > 0 && server_resume == self.last {
            // The server cut revision `last` in the middle.
            self.from = self.last;
            self.skip = self.at_last;
        } else {
            self.from = self.floor.max(self.last + 1).max(server_resume);
            self.skip = 0;
        }
        self.from
    }
}

/// Opens a watch and spawns the task that feeds the returned stream.
pub(crate) async fn open(inner: Arc<Inner>, mut req: pb::WatchRequest) -> Result<WatchStream> {
    let (stream, created_rev) = establish(&inner, &req).await?;
    let (tx, rx) = mpsc::channel(inner.cfg.watch_buffer);
    // First revision this watch can deliver.
    let start = if req.start_revision > 0 {
        req.start_revision
    } else if created_rev > 0 {
        created_rev + 1
    } else {
        0
    };
    req.start_revision = start;
    tokio::spawn(forward(
        inner,
        req,
        stream,
        tx,
        Position::starting_at(start),
    ));
    Ok(rx)
}

/// Feeds `tx` until the caller drops it, the server cancels, or a broken
/// stream cannot be re-opened.
async fn forward(
    inner: Arc<Inner>,
    mut req: pb::WatchRequest,
    mut stream: Streaming<pb::WatchResponse>,
    tx: mpsc::Sender<Result<WatchEvent>>,
    mut pos: Position,
) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = tx.closed() => return,
            _ = inner.wait_closed() => {
                let _ = tx.send(Err(pos.closed())).await;
                return;
            }
            m = stream.message() => m,
        };
        let (broken, server_resume) = match msg {
            Ok(Some(resp)) if resp.canceled => {
                let e = cancel_from_wire(&resp);
                if !resumable_cancel(e.code()) {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                // The node is going away: same as a broken stream.
                (e, resp.resume_revision)
            }
            Ok(Some(resp)) if resp.progress => {
                let rev = resp.header.map_or(0, |h| h.revision);
                pos.caught_up(rev);
                if tx.send(Ok(WatchEvent::progress(rev))).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Some(resp)) => {
                for ev in resp.events {
                    match convert::watch_event(ev) {
                        Ok(e) => {
                            if !pos.admit(e.kv.mod_revision) {
                                continue; // already delivered before a resume
                            }
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
            Ok(None) => (
                Error::Unavailable("watch stream ended without a cancel message".into()),
                0,
            ),
            Err(st) => {
                let transport = is_transport_break(&st);
                let e = Error::from(st);
                if transport && inner.cfg.watch_resume {
                    tracing::debug!(error = %e, "watch stream broken by the transport");
                    (Error::Unavailable(format!("watch stream broken: {e}")), 0)
                } else {
                    (e, 0)
                }
            }
        };
        if !inner.cfg.watch_resume || !resumable(&broken) {
            let _ = tx.send(Err(broken)).await;
            return;
        }
        req.start_revision = pos.reopen(server_resume);
        tracing::debug!(error = %broken, from = req.start_revision, "re-opening watch");
        // `establish` ends with `ClientClosed` if the client is closed.
        let reopened = tokio::select! {
            _ = tx.closed() => return,
            r = establish(&inner, &req) => r,
        };
        match reopened {
            Ok((s, created_rev)) => {
                stream = s;
                if req.start_revision == 0 && created_rev > 0 {
                    // Nothing known yet: from the re-opened watch's start.
                    pos = Position::starting_at(created_rev + 1);
                }
            }
            Err(e) => {
                let e = match e {
                    Error::ClientClosed { .. } => pos.closed(),
                    e => e,
                };
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

    #[test]
    fn a_transport_break_while_opening_is_retried_elsewhere() {
        use tonic::{Code, Status};
        let e = open_error(Status::new(
            Code::Unknown,
            "transport error: connection error: connection reset",
        ));
        assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}");
        assert!(resumable(&e));
        let e = open_error(Status::new(Code::InvalidArgument, "bad range"));
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn resume_decisions_follow_the_cancel_code() {
        let cancel = |code| {
            Error::WatchCanceled(crate::WatchCancel {
                code,
                reason: "x".into(),
                compact_revision: 0,
                resume_revision: 5,
            })
        };
        assert!(resumable(&cancel(ErrorCode::ShuttingDown)));
        assert!(resumable(&cancel(ErrorCode::NotLeader)));
        assert!(
            !resumable(&cancel(ErrorCode::Overloaded)),
            "slow consumer ends the watch"
        );
        assert!(!resumable(&cancel(ErrorCode::Compacted)));
        assert!(!resumable(&cancel(ErrorCode::PermissionDenied)));
        assert!(resumable(&Error::Unavailable("reset".into())));
        assert!(!resumable(&Error::Overloaded("queue full".into())));
    }

    #[test]
    fn a_resume_skips_nothing_and_repeats_nothing() {
        let mut p = Position::starting_at(10);
        assert!(p.admit(10) && p.admit(12) && p.admit(12));
        // A broken stream: re-open past the last delivered event.
        assert_eq!(p.reopen(0), 13);
        assert!(!p.admit(12), "older than the re-open point");
        assert!(p.admit(13));
        // The server cut revision 13 in the middle (resume_revision = 13):
        // re-open at 13 and drop the one event of it already delivered.
        assert_eq!(p.reopen(13), 13);
        assert!(!p.admit(13));
        assert!(p.admit(13), "the rest of revision 13 is new");
        assert!(p.admit(14));
        // A progress notification moves the floor past idle revisions.
        p.caught_up(40);
        assert_eq!(p.reopen(0), 41);
        // The server's resume revision wins when it is further.
        assert_eq!(p.reopen(50), 50);
    }
}
