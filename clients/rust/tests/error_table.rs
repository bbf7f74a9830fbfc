//! The Rust row of the error table in `docs/clients.md`: every server
//! `ErrorCode` and every transport failure, as it arrives on the wire
//! (a gRPC status, with or without the d-engine `ErrorInfo`), becomes the
//! documented `Error` variant, and `is_retryable()` answers the table's
//! "retried" column (the same answer the router acts on; see the router's
//! own unit test `on_error_retries_exactly_the_retryable_errors`).

use std::collections::HashMap;

use d_engine_client::status_codec::{from_status, DOMAIN};
use d_engine_client::{Error, ErrorCode};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A status as a d-engine server sends it: `code`, and an `ErrorInfo` whose
/// reason is the wire `ErrorCode` name.
fn server_status(reason: &str, code: Code, meta: &[(&str, &str)]) -> Status {
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let details = ErrorDetails::with_error_info(reason, DOMAIN, meta);
    Status::with_error_details(code, format!("{reason} from the table test"), details)
}

#[test]
fn server_error_row() {
    // (wire reason, gRPC status code, Error class, retried)
    let rows: &[(&str, Code, ErrorCode, bool)] = &[
        ("NOT_LEADER", Code::Unavailable, ErrorCode::NotLeader, true),
        ("NO_LEADER", Code::Unavailable, ErrorCode::NoLeader, true),
        (
            "INVALID_ARGUMENT",
            Code::InvalidArgument,
            ErrorCode::InvalidArgument,
            false,
        ),
        (
            "OVERLOADED",
            Code::ResourceExhausted,
            ErrorCode::Overloaded,
            true,
        ),
        ("TIMEOUT", Code::DeadlineExceeded, ErrorCode::Timeout, true),
        (
            "SHUTTING_DOWN",
            Code::Unavailable,
            ErrorCode::ShuttingDown,
            true,
        ),
        ("STORAGE", Code::Internal, ErrorCode::Storage, false),
        (
            "CHANGE_IN_PROGRESS",
            Code::FailedPrecondition,
            ErrorCode::ChangeInProgress,
            true,
        ),
        ("COMPACTED", Code::OutOfRange, ErrorCode::Compacted, false),
        (
            "UNAUTHENTICATED",
            Code::Unauthenticated,
            ErrorCode::Unauthenticated,
            false,
        ),
        (
            "PERMISSION_DENIED",
            Code::PermissionDenied,
            ErrorCode::PermissionDenied,
            false,
        ),
        (
            "UNKNOWN_NODE",
            Code::NotFound,
            ErrorCode::UnknownNode,
            false,
        ),
        (
            "NO_SPACE",
            Code::ResourceExhausted,
            ErrorCode::NoSpace,
            false,
        ),
        (
            "LEASE_NOT_FOUND",
            Code::NotFound,
            ErrorCode::LeaseNotFound,
            false,
        ),
        (
            "NOT_HELD",
            Code::FailedPrecondition,
            ErrorCode::NotHeld,
            false,
        ),
    ];
    // Every wire code but UNSPECIFIED has a row.
    let mut wire = 1;
    while let Ok(c) = d_engine_proto::v1::ErrorCode::try_from(wire) {
        assert!(
            rows.iter().any(|r| r.0 == c.as_str_name()),
            "{} has no row in the table test (and maybe none in docs/clients.md)",
            c.as_str_name()
        );
        wire += 1;
    }
    for &(reason, code, class, retried) in rows {
        let err = from_status(&server_status(reason, code, &[]));
        assert_eq!(err.code(), class, "{reason}: {err:?}");
        assert_eq!(err.is_retryable(), retried, "{reason}: is_retryable");
        // The same answer through `From<Status>`, the path every call takes.
        let via_from: Error = server_status(reason, code, &[]).into();
        assert_eq!(via_from.code(), class, "{reason}");
    }
}

#[test]
fn not_leader_row_carries_the_hint() {
    let st = server_status(
        "NOT_LEADER",
        Code::Unavailable,
        &[("leader_id", "3"), ("leader_addr", "10.0.0.3:9083")],
    );
    assert_eq!(
        from_status(&st),
        Error::NotLeader {
            leader_id: Some(3),
            leader_addr: Some("10.0.0.3:9083".into()),
        }
    );
}

#[test]
fn transport_failure_row() {
    // Statuses without a d-engine ErrorInfo: the transport, a proxy, tonic.
    // (gRPC code, Error class, retried)
    let rows: &[(Code, ErrorCode, bool)] = &[
        // connection refused / reset, keepalive timeout
        (Code::Unavailable, ErrorCode::Unavailable, true),
        // the attempt timed out
        (Code::DeadlineExceeded, ErrorCode::Timeout, true),
        // a CANCELLED the caller did not ask for (tonic's expired timeout,
        // a stream reset by a node going away)
        (Code::Cancelled, ErrorCode::Timeout, true),
        // a message larger than the limit: tonic's OUT_OF_RANGE ...
        (Code::OutOfRange, ErrorCode::InvalidArgument, false),
        // ... and a bare RESOURCE_EXHAUSTED (documented as differing)
        (Code::ResourceExhausted, ErrorCode::Overloaded, true),
        (Code::Internal, ErrorCode::Internal, false),
        (Code::Unknown, ErrorCode::Internal, false),
        (Code::Unauthenticated, ErrorCode::Unauthenticated, false),
        (Code::PermissionDenied, ErrorCode::PermissionDenied, false),
    ];
    for &(code, class, retried) in rows {
        let err = from_status(&Status::new(code, "no ErrorInfo"));
        assert_eq!(err.code(), class, "{code:?}: {err:?}");
        assert_eq!(err.is_retryable(), retried, "{code:?}: is_retryable");
    }
}

#[test]
fn watch_cancels_answer_by_their_code() {
    // A watch the server ended: retryable as its cancel code is.
    for (code, retried) in [
        (ErrorCode::ShuttingDown, true),
        (ErrorCode::NotLeader, true),
        (ErrorCode::Compacted, false),
        (ErrorCode::Overloaded, true),
        (ErrorCode::Internal, false),
    ] {
        let e = Error::WatchCanceled(d_engine_client::WatchCancel {
            code,
            reason: "test".into(),
            compact_revision: 0,
            resume_revision: 7,
        });
        assert_eq!(e.is_retryable(), retried, "{code:?}");
        assert_eq!(e.resume_revision(), Some(7));
    }
}

/// "the client was closed": a client-side class with no wire code (the
/// proto loop in `server_error_row` does not see it), not retryable, and
/// never produced from a status a server sends.
#[test]
fn closed_client_row() {
    let e = Error::CLIENT_CLOSED;
    assert_eq!(e.code(), ErrorCode::ClientClosed);
    assert!(!e.is_retryable());
    assert_eq!(e.resume_revision(), None);
    assert_eq!(d_engine_client::status_codec::wire_code(e.code()), None);
    // Encoded (e.g. by a proxy) it carries no ErrorInfo; decoded back it is
    // not mistaken for a server error with a retryable code.
    let back = from_status(&d_engine_client::status_codec::to_status(&e));
    assert!(!back.is_retryable(), "{back:?}");
    let watch_end = Error::ClientClosed { resume_revision: 9 };
    assert_eq!(watch_end.resume_revision(), Some(9));
    assert!(!watch_end.is_retryable());
}
