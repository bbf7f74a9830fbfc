//! The error convention of `dengine.v1` (see the header of
//! `proto/proto/dengine/v1/client.proto`), in both directions.
//!
//! On the wire an error is a gRPC status with a standard code and, in its
//! details, one `google.rpc.ErrorInfo` with domain [`DOMAIN`] whose `reason`
//! is an `ErrorCode` name (`"NOT_LEADER"`) and whose metadata carries the
//! specifics (`leader_id`, `leader_addr` for NOT_LEADER; `field`, `limit`
//! for limits). The status message is the error's human-readable text.
//!
//! Servers use [`to_status`] (or `tonic::Status::from(error)`); clients use
//! [`from_status`] (or `Error::from(status)`). A status that carries no
//! d-engine `ErrorInfo` (a transport failure, a proxy, another server) is
//! classified by its gRPC code alone.

use std::collections::HashMap;

use d_engine_proto::v1 as pb;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{Error, ErrorCode, WatchCancel};

/// `ErrorInfo.domain` of every d-engine error.
pub const DOMAIN: &str = d_engine_proto::ERROR_DOMAIN;
/// Metadata key: id of the leader (decimal; `"0"` if unknown).
pub const META_LEADER_ID: &str = "leader_id";
/// Metadata key: client address of the leader (empty if unknown).
pub const META_LEADER_ADDR: &str = "leader_addr";
/// Metadata key: the request field a limit applies to (e.g. `"key"`).
pub const META_FIELD: &str = "field";
/// Metadata key: the limit that was exceeded (decimal).
pub const META_LIMIT: &str = "limit";
/// Metadata key of a refused or ended watch: the oldest revision still in
/// the watch history (decimal; with COMPACTED).
pub const META_COMPACT_REVISION: &str = "compact_revision";
/// Metadata key of a refused or ended watch: the revision to watch again
/// from (decimal).
pub const META_RESUME_REVISION: &str = "resume_revision";

/// The gRPC status code an error travels with (per client.proto).
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::NotLeader | ErrorCode::NoLeader | ErrorCode::ShuttingDown => Code::Unavailable,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::Overloaded => Code::ResourceExhausted,
        ErrorCode::Timeout => Code::DeadlineExceeded,
        ErrorCode::Storage | ErrorCode::Internal => Code::Internal,
        ErrorCode::ChangeInProgress => Code::FailedPrecondition,
        ErrorCode::Compacted => Code::OutOfRange,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::UnknownNode => Code::NotFound,
        ErrorCode::NoSpace => Code::ResourceExhausted,
        ErrorCode::LeaseNotFound => Code::NotFound,
        ErrorCode::NotHeld => Code::FailedPrecondition,
        // Client-side only (never sent by a server). Not `Cancelled`: a bare
        // `Cancelled` decodes as a retryable `Timeout`; this decodes as
        // `Internal`, not retryable, like the original.
        ErrorCode::ClientClosed => Code::FailedPrecondition,
    }
}

/// The wire `dengine.v1.ErrorCode`, or `None` for the client-side classes
/// (`Unavailable`, `Internal`, `ClientClosed`) that have no wire code: those travel as a
/// bare gRPC status without `ErrorInfo`.
pub fn wire_code(code: ErrorCode) -> Option<pb::ErrorCode> {
    Some(match code {
        ErrorCode::NotLeader => pb::ErrorCode::NotLeader,
        ErrorCode::NoLeader => pb::ErrorCode::NoLeader,
        ErrorCode::InvalidArgument => pb::ErrorCode::InvalidArgument,
        ErrorCode::Overloaded => pb::ErrorCode::Overloaded,
        ErrorCode::Timeout => pb::ErrorCode::Timeout,
        ErrorCode::ShuttingDown => pb::ErrorCode::ShuttingDown,
        ErrorCode::Storage => pb::ErrorCode::Storage,
        ErrorCode::ChangeInProgress => pb::ErrorCode::ChangeInProgress,
        ErrorCode::Compacted => pb::ErrorCode::Compacted,
        ErrorCode::Unauthenticated => pb::ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied => pb::ErrorCode::PermissionDenied,
        ErrorCode::UnknownNode => pb::ErrorCode::UnknownNode,
        ErrorCode::NoSpace => pb::ErrorCode::NoSpace,
        ErrorCode::LeaseNotFound => pb::ErrorCode::LeaseNotFound,
        ErrorCode::NotHeld => pb::ErrorCode::NotHeld,
        ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::ClientClosed => return None,
    })
}

/// The error's text without the class prefix `Display` adds.
fn message(err: &Error) -> String {
    match err {
        Error::NotLeader { .. } | Error::ClientClosed { .. } => err.to_string(),
        Error::NoLeader(m)
        | Error::InvalidArgument(m)
        | Error::Overloaded(m)
        | Error::Timeout(m)
        | Error::ShuttingDown(m)
        | Error::Storage(m)
        | Error::ChangeInProgress(m)
        | Error::Compacted(m)
        | Error::Unauthenticated(m)
        | Error::PermissionDenied(m)
        | Error::UnknownNode(m)
        | Error::NoSpace(m)
        | Error::LeaseNotFound(m)
        | Error::NotHeld(m)
        | Error::Unavailable(m)
        | Error::Internal(m) => m.clone(),
        Error::WatchCanceled(c) => c.reason.clone(),
    }
}

/// Encodes an error as a gRPC status following the convention.
pub fn to_status(err: &Error) -> Status {
    to_status_with_metadata(err, [])
}

/// Like [`to_status`], adding metadata entries to the `ErrorInfo` (e.g.
/// [`META_FIELD`] / [`META_LIMIT`] for a size limit). Entries are ignored
/// for `Unavailable` / `Internal`, which carry no `ErrorInfo`.
pub fn to_status_with_metadata(
    err: &Error,
    extra: impl IntoIterator<Item = (String, String)>,
) -> Status {
    let code = err.code();
    let Some(wire) = wire_code(code) else {
        return Status::new(grpc_code(code), message(err));
    };
    let mut meta: HashMap<String, String> = extra.into_iter().collect();
    if let Error::NotLeader {
        leader_id,
        leader_addr,
    } = err
    {
        meta.insert(META_LEADER_ID.into(), leader_id.unwrap_or(0).to_string());
        meta.insert(
            META_LEADER_ADDR.into(),
            leader_addr.clone().unwrap_or_default(),
        );
    }
    if let Error::WatchCanceled(c) = err {
        if c.compact_revision > 0 {
            meta.insert(META_COMPACT_REVISION.into(), c.compact_revision.to_string());
        }
        if c.resume_revision > 0 {
            meta.insert(META_RESUME_REVISION.into(), c.resume_revision.to_string());
        }
    }
    let details = ErrorDetails::with_error_info(wire.as_str_name(), DOMAIN, meta);
    Status::with_error_details(grpc_code(code), message(err), details)
}

/// A size-limit violation as the server reports it: `InvalidArgument` with
/// `field` and `limit` in the `ErrorInfo` metadata.
pub fn limit_status(field: &str, limit: u64, msg: impl Into<String>) -> Status {
    to_status_with_metadata(
        &Error::InvalidArgument(msg.into()),
        [
            (META_FIELD.to_string(), field.to_string()),
            (META_LIMIT.to_string(), limit.to_string()),
        ],
    )
}

/// Decodes a status received from a server (or produced by the transport).
pub fn from_status(status: &Status) -> Error {
    let msg = status.message().to_string();
    if let Some(info) = status.get_details_error_info() {
        if info.domain == DOMAIN {
            if let Some(err) = from_error_info(&info.reason, &info.metadata, &msg) {
                return err;
            }
        }
    }
    from_code(status.code(), with_causes(status, msg))
}

/// Appends the status' source chain (e.g. "Connection refused (os error
/// 111)" under tonic's "tcp connect error") when the message lacks it.
fn with_causes(status: &Status, mut msg: String) -> String {
    let mut cause = std::error::Error::source(status);
    let mut depth = 0;
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
        depth += 1;
        if depth >= 8 {
            break;
        }
    }
    msg
}

fn from_error_info(reason: &str, meta: &HashMap<String, String>, msg: &str) -> Option<Error> {
    let m = msg.to_string();
    let revision = |key: &str| {
        meta.get(key)
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (compact_revision, resume_revision) = (
        revision(META_COMPACT_REVISION),
        revision(META_RESUME_REVISION),
    );
    if compact_revision > 0 || resume_revision > 0 {
        // A watch refused or ended with the revisions to continue from.
        let code = code_from_wire(pb::ErrorCode::from_str_name(reason)?)?;
        return Some(Error::WatchCanceled(WatchCancel {
            code,
            reason: m,
            compact_revision,
            resume_revision,
        }));
    }
    Some(match pb::ErrorCode::from_str_name(reason)? {
        pb::ErrorCode::Unspecified => return None,
        pb::ErrorCode::NotLeader => Error::NotLeader {
            leader_id: meta
                .get(META_LEADER_ID)
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|id| *id != 0),
            leader_addr: meta
                .get(META_LEADER_ADDR)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        },
        pb::ErrorCode::NoLeader => Error::NoLeader(m),
        pb::ErrorCode::InvalidArgument => Error::InvalidArgument(m),
        pb::ErrorCode::Overloaded => Error::Overloaded(m),
        pb::ErrorCode::Timeout => Error::Timeout(m),
        pb::ErrorCode::ShuttingDown => Error::ShuttingDown(m),
        pb::ErrorCode::Storage => Error::Storage(m),
        pb::ErrorCode::ChangeInProgress => Error::ChangeInProgress(m),
        pb::ErrorCode::Compacted => Error::Compacted(m),
        pb::ErrorCode::Unauthenticated => Error::Unauthenticated(m),
        pb::ErrorCode::PermissionDenied => Error::PermissionDenied(m),
        pb::ErrorCode::UnknownNode => Error::UnknownNode(m),
        pb::ErrorCode::NoSpace => Error::NoSpace(m),
        pb::ErrorCode::LeaseNotFound => Error::LeaseNotFound(m),
        pb::ErrorCode::NotHeld => Error::NotHeld(m),
    })
}

/// Classification of a status without a d-engine `ErrorInfo`.
fn from_code(code: Code, msg: String) -> Error {
    match code {
        Code::Unavailable => Error::Unavailable(msg),
        // tonic reports a connection that broke under a call (reset, broken
        // pipe, the node killed) as Unknown "transport error: ...": the
        // node is gone, as with Unavailable. A server never sends that.
        Code::Unknown if msg.starts_with("transport error") => Error::Unavailable(msg),
        // tonic reports an expired grpc-timeout as Cancelled.
        Code::DeadlineExceeded | Code::Cancelled => Error::Timeout(msg),
        Code::ResourceExhausted => Error::Overloaded(msg),
        // tonic reports an oversized message as OutOfRange.
        Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(msg),
        Code::Unauthenticated => Error::Unauthenticated(msg),
        Code::PermissionDenied => Error::PermissionDenied(msg),
        Code::Internal => Error::Internal(msg),
        other => Error::Internal(format!("gRPC {other:?}: {msg}")),
    }
}

/// The client class of a wire `ErrorCode` (`None` for `UNSPECIFIED`).
pub fn code_from_wire(code: pb::ErrorCode) -> Option<ErrorCode> {
    Some(match code {
        pb::ErrorCode::Unspecified => return None,
        pb::ErrorCode::NotLeader => ErrorCode::NotLeader,
        pb::ErrorCode::NoLeader => ErrorCode::NoLeader,
        pb::ErrorCode::InvalidArgument => ErrorCode::InvalidArgument,
        pb::ErrorCode::Overloaded => ErrorCode::Overloaded,
        pb::ErrorCode::Timeout => ErrorCode::Timeout,
        pb::ErrorCode::ShuttingDown => ErrorCode::ShuttingDown,
        pb::ErrorCode::Storage => ErrorCode::Storage,
        pb::ErrorCode::ChangeInProgress => ErrorCode::ChangeInProgress,
        pb::ErrorCode::Compacted => ErrorCode::Compacted,
        pb::ErrorCode::Unauthenticated => ErrorCode::Unauthenticated,
        pb::ErrorCode::PermissionDenied => ErrorCode::PermissionDenied,
        pb::ErrorCode::UnknownNode => ErrorCode::UnknownNode,
        pb::ErrorCode::NoSpace => ErrorCode::NoSpace,
        pb::ErrorCode::LeaseNotFound => ErrorCode::LeaseNotFound,
        pb::ErrorCode::NotHeld => ErrorCode::NotHeld,
    })
}

/// `err` as a [`WatchCancel`]: the cancel itself, or any other error with
/// `resume_revision` as where to watch again from (0 = not known).
pub fn watch_cancel(err: &Error, resume_revision: u64) -> WatchCancel {
    match err {
        Error::WatchCanceled(c) => WatchCancel {
            resume_revision: if c.resume_revision > 0 {
                c.resume_revision
            } else {
                resume_revision
            },
            ..c.clone()
        },
        other => WatchCancel {
            code: other.code(),
            reason: message(other),
            compact_revision: 0,
            resume_revision,
        },
    }
}

/// The final message of a watch the server ends with `cancel` (server
/// side): `canceled`, the typed `cancel_code`, `compact_revision`,
/// `resume_revision`, and a `cancel_reason` text that starts with the code
/// name (what clients before `cancel_code` parsed).
pub fn cancel_response(
    header: Option<pb::ResponseHeader>,
    cancel: &WatchCancel,
) -> pb::WatchResponse {
    let code = wire_code(cancel.code).unwrap_or(pb::ErrorCode::Unspecified);
    pb::WatchResponse {
        header,
        canceled: true,
        cancel_code: code as i32,
        cancel_reason: format!("{}: {}", code.as_str_name(), cancel.reason),
        compact_revision: cancel.compact_revision,
        resume_revision: cancel.resume_revision,
        ..Default::default()
    }
}

/// The error a `canceled` watch message becomes (client side), decided by
/// its `cancel_code`. Only a message without a code (a server older than
/// the code) falls back to [`cancel_error`] on the reason text.
pub fn cancel_from_wire(resp: &pb::WatchResponse) -> Error {
    let code = pb::ErrorCode::try_from(resp.cancel_code)
        .ok()
        .and_then(code_from_wire)
        .unwrap_or_else(|| cancel_error(&resp.cancel_reason).code());
    let reason = if resp.cancel_reason.trim().is_empty() {
        "watch canceled by the server (no reason given)".to_string()
    } else {
        resp.cancel_reason.clone()
    };
    Error::WatchCanceled(WatchCancel {
        code,
        reason,
        compact_revision: resp.compact_revision,
        resume_revision: resp.resume_revision,
    })
}

/// The error a server cancellation becomes. A reason that starts with an
/// `ErrorCode` name (`"OVERLOADED: watcher too slow"`) maps to that class;
/// otherwise the class is inferred from keywords (compact, shut/stop,
/// slow/lag/overload/full), and anything else is `Internal`. The message
/// always quotes the reason.
pub fn cancel_error(reason: &str) -> Error {
    let reason = reason.trim();
    let msg = if reason.is_empty() {
        "watch canceled by the server (no reason given)".to_string()
    } else {
        format!("watch canceled by the server: {reason}")
    };
    let head = reason
        .split(|c: char| c == ':' || c.is_whitespace())
        .next()
        .unwrap_or("");
    if let Some(code) = pb::ErrorCode::from_str_name(head) {
        return match code {
            pb::ErrorCode::NoLeader => Error::NoLeader(msg),
            pb::ErrorCode::InvalidArgument => Error::InvalidArgument(msg),
            pb::ErrorCode::Overloaded => Error::Overloaded(msg),
            pb::ErrorCode::Timeout => Error::Timeout(msg),
            pb::ErrorCode::ShuttingDown => Error::ShuttingDown(msg),
            pb::ErrorCode::Storage => Error::Storage(msg),
            pb::ErrorCode::ChangeInProgress => Error::ChangeInProgress(msg),
            pb::ErrorCode::Compacted => Error::Compacted(msg),
            pb::ErrorCode::Unauthenticated => Error::Unauthenticated(msg),
            pb::ErrorCode::PermissionDenied => Error::PermissionDenied(msg),
            pb::ErrorCode::UnknownNode => Error::UnknownNode(msg),
            pb::ErrorCode::NoSpace => Error::NoSpace(msg),
            pb::ErrorCode::LeaseNotFound => Error::LeaseNotFound(msg),
            pb::ErrorCode::NotHeld => Error::NotHeld(msg),
            // A cancellation carries no leader hint.
            pb::ErrorCode::NotLeader => Error::NotLeader {
                leader_id: None,
                leader_addr: None,
            },
            pb::ErrorCode::Unspecified => Error::Internal(msg),
        };
    }
    let lower = reason.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if has(&["compact"]) {
        Error::Compacted(msg)
    } else if has(&["shut", "stopp"]) {
        Error::ShuttingDown(msg)
    } else if has(&["slow", "lag", "overload", "full", "behind"]) {
        Error::Overloaded(msg)
    } else {
        Error::Internal(msg)
    }
}

/// The reason text of a watch cancellation for `err`:
/// `"<ERROR_CODE>: <text>"`, the form [`cancel_error`] parses back (servers
/// now send [`cancel_response`], which carries the code as data too).
pub fn cancel_reason(err: &Error) -> String {
    let code = wire_code(err.code())
        .map(|c| c.as_str_name())
        .unwrap_or("ERROR_CODE_UNSPECIFIED");
    format!("{code}: {err}")
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        to_status(&err)
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Error {
        from_status(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One value of every variant.
    fn every_error() -> Vec<Error> {
        vec![
            Error::NotLeader {
                leader_id: Some(3),
                leader_addr: Some("127.0.0.1:9085".into()),
            },
            Error::NotLeader {
                leader_id: None,
                leader_addr: None,
            },
            Error::NotLeader {
                leader_id: Some(2),
                leader_addr: None,
            },
            Error::NoLeader("election in progress".into()),
            Error::InvalidArgument("key is 5000 bytes; the limit is 4096".into()),
            Error::Overloaded("proposal queue full".into()),
            Error::Timeout("not committed within 5s".into()),
            Error::ShuttingDown("node stopping".into()),
            Error::Storage("disk full".into()),
            Error::ChangeInProgress("joint consensus".into()),
            Error::Compacted("revision 7 < 100".into()),
            Error::Unauthenticated("no token".into()),
            Error::PermissionDenied("read-only".into()),
            Error::UnknownNode("node 9".into()),
            Error::NoSpace("storage.quota_bytes = 4096 reached".into()),
            Error::LeaseNotFound("lease 7 not found".into()),
            Error::NotHeld("lock key gone".into()),
            Error::Unavailable("connection refused".into()),
            Error::Internal("bug".into()),
        ]
    }

    #[test]
    fn every_error_round_trips() {
        let all = every_error();
        let mut seen = std::collections::HashSet::new();
        for e in &all {
            seen.insert(e.code());
            let st = to_status(e);
            assert_eq!(st.code(), grpc_code(e.code()), "{e:?}");
            // Through the wire form too: details survive as bytes.
            let back = from_status(&st);
            assert_eq!(&back, e, "status {st:?}");
            let via_from: Error = Status::from(e.clone()).into();
            assert_eq!(&via_from, e);
        }
        assert_eq!(seen.len(), 17, "every ErrorCode covered");
    }

    #[test]
    fn no_space_is_resource_exhausted_told_apart_from_overloaded_by_its_reason() {
        let st = to_status(&Error::NoSpace("quota reached".into()));
        assert_eq!(st.code(), Code::ResourceExhausted);
        let info = st.get_details_error_info().expect("ErrorInfo present");
        assert_eq!(info.reason, "NO_SPACE");
        assert_eq!(from_status(&st), Error::NoSpace("quota reached".into()));
        assert!(!from_status(&st).is_retryable());
        // Without the ErrorInfo the code alone still means "overloaded".
        let bare = Status::new(Code::ResourceExhausted, "x");
        assert_eq!(from_status(&bare).code(), ErrorCode::Overloaded);
    }

    #[test]
    fn error_info_follows_the_convention() {
        let st = to_status(&Error::NotLeader {
            leader_id: Some(3),
            leader_addr: Some("10.0.0.3:9083".into()),
        });
        let info = st.get_details_error_info().expect("ErrorInfo present");
        assert_eq!(info.domain, "d-engine");
        assert_eq!(info.reason, "NOT_LEADER");
        assert_eq!(info.metadata.get("leader_id").unwrap(), "3");
        assert_eq!(info.metadata.get("leader_addr").unwrap(), "10.0.0.3:9083");
        assert_eq!(st.code(), Code::Unavailable);

        let unknown = to_status(&Error::NotLeader {
            leader_id: None,
            leader_addr: None,
        });
        let info = unknown.get_details_error_info().unwrap();
        assert_eq!(info.metadata.get("leader_id").unwrap(), "0");
        assert_eq!(info.metadata.get("leader_addr").unwrap(), "");

        let st = to_status(&Error::Overloaded("queue full".into()));
        assert_eq!(st.message(), "queue full");
        assert_eq!(st.get_details_error_info().unwrap().reason, "OVERLOADED");

        // Client-side classes carry no ErrorInfo.
        assert!(to_status(&Error::Unavailable("x".into()))
            .get_details_error_info()
            .is_none());
    }

    #[test]
    fn wire_reasons_are_the_proto_enum_names() {
        for e in every_error() {
            if let Some(w) = wire_code(e.code()) {
                let info = to_status(&e).get_details_error_info().unwrap();
                assert_eq!(info.reason, w.as_str_name());
                assert_eq!(pb::ErrorCode::from_str_name(&info.reason), Some(w));
            }
        }
    }

    #[test]
    fn limit_status_carries_field_and_limit() {
        let st = limit_status("key", 4096, "key is 5000 bytes; the limit is 4096");
        assert_eq!(st.code(), Code::InvalidArgument);
        let info = st.get_details_error_info().unwrap();
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.metadata.get("field").unwrap(), "key");
        assert_eq!(info.metadata.get("limit").unwrap(), "4096");
        assert_eq!(
            from_status(&st),
            Error::InvalidArgument("key is 5000 bytes; the limit is 4096".into())
        );
    }

    #[test]
    fn bare_statuses_are_classified_by_code() {
        let cases = [
            (Code::Unavailable, ErrorCode::Unavailable),
            (Code::DeadlineExceeded, ErrorCode::Timeout),
            (Code::Cancelled, ErrorCode::Timeout),
            (Code::ResourceExhausted, ErrorCode::Overloaded),
            (Code::InvalidArgument, ErrorCode::InvalidArgument),
            (Code::OutOfRange, ErrorCode::InvalidArgument),
            (Code::Unauthenticated, ErrorCode::Unauthenticated),
            (Code::PermissionDenied, ErrorCode::PermissionDenied),
            (Code::Unimplemented, ErrorCode::Internal),
            (Code::Unknown, ErrorCode::Internal),
            (Code::NotFound, ErrorCode::Internal),
            (Code::Internal, ErrorCode::Internal),
        ];
        for (code, want) in cases {
            let e = from_status(&Status::new(code, "boom"));
            assert_eq!(e.code(), want, "{code:?}");
            assert!(e.to_string().contains("boom"), "{e}");
        }
    }

    #[test]
    fn a_connection_broken_under_a_call_is_unavailable() {
        for m in [
            "transport error: connection error: stream closed because of a broken pipe",
            "transport error: connection error: connection reset",
        ] {
            let e = from_status(&Status::new(Code::Unknown, m));
            assert_eq!(e.code(), ErrorCode::Unavailable, "{m}");
            assert!(e.is_retryable(), "{m}");
        }
        // Any other bare Unknown stays Internal (not retried).
        let e = from_status(&Status::new(Code::Unknown, "handler panicked"));
        assert_eq!(e.code(), ErrorCode::Internal);
    }

    #[test]
    fn foreign_or_malformed_error_info_falls_back_to_the_code() {
        let other_domain = Status::with_error_details(
            Code::Unavailable,
            "m",
            ErrorDetails::with_error_info("NOT_LEADER", "example.com", HashMap::new()),
        );
        assert_eq!(from_status(&other_domain), Error::Unavailable("m".into()));
        let unknown_reason = Status::with_error_details(
            Code::FailedPrecondition,
            "m",
            ErrorDetails::with_error_info("SOMETHING_NEW", DOMAIN, HashMap::new()),
        );
        assert_eq!(unknown_reason.code(), Code::FailedPrecondition);
        assert_eq!(from_status(&unknown_reason).code(), ErrorCode::Internal);
        let unspecified = Status::with_error_details(
            Code::Unavailable,
            "m",
            ErrorDetails::with_error_info("ERROR_CODE_UNSPECIFIED", DOMAIN, HashMap::new()),
        );
        assert_eq!(from_status(&unspecified), Error::Unavailable("m".into()));
        // A garbage leader_id is "unknown", not an error.
        let garbage = Status::with_error_details(
            Code::Unavailable,
            "m",
            ErrorDetails::with_error_info(
                "NOT_LEADER",
                DOMAIN,
                HashMap::from([
                    ("leader_id".to_string(), "x".to_string()),
                    ("leader_addr".to_string(), " h:1 ".to_string()),
                ]),
            ),
        );
        assert_eq!(
            from_status(&garbage),
            Error::NotLeader {
                leader_id: None,
                leader_addr: Some("h:1".into())
            }
        );
    }

    #[test]
    fn cancel_reasons_map_to_classes() {
        let c = |r: &str| cancel_error(r).code();
        assert_eq!(c("OVERLOADED: watcher too slow"), ErrorCode::Overloaded);
        assert_eq!(c("COMPACTED: revision 5 compacted"), ErrorCode::Compacted);
        assert_eq!(c("SHUTTING_DOWN"), ErrorCode::ShuttingDown);
        assert_eq!(
            c("watcher too slow: 1024 events behind"),
            ErrorCode::Overloaded
        );
        assert_eq!(c("history compacted"), ErrorCode::Compacted);
        assert_eq!(c("node shutting down"), ErrorCode::ShuttingDown);
        assert_eq!(c("???"), ErrorCode::Internal);
        assert_eq!(c(""), ErrorCode::Internal);
        assert_eq!(c("NOT_LEADER: lost leadership"), ErrorCode::NotLeader);
        assert_eq!(c("ERROR_CODE_UNSPECIFIED"), ErrorCode::Internal);
        let e = cancel_error("slow consumer");
        assert!(
            e.to_string()
                .contains("watch canceled by the server: slow consumer"),
            "{e}"
        );
    }

    #[test]
    fn cancel_reason_round_trips_through_cancel_error() {
        for e in every_error() {
            if wire_code(e.code()).is_some() && !matches!(e, Error::NotLeader { .. }) {
                assert_eq!(cancel_error(&cancel_reason(&e)).code(), e.code(), "{e:?}");
            }
        }
    }
}
