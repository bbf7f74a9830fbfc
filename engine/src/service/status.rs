//! Errors → gRPC statuses, following the convention in `client.proto`
//! (implemented once, in `d_engine_api::status_codec`, and shared with
//! the client so both sides agree byte for byte).

use d_engine_api::status_codec;
use d_engine_api::Error;
use tonic::Status;

/// Any node error as a status (NotLeader carries `leader_id` and the
/// leader's client address `leader_addr` in its `ErrorInfo`).
pub fn status(e: &Error) -> Status {
    status_codec::to_status(e)
}

/// Like [`status`]; a `LeaseNotFound` carries the lease id in the
/// `lease_id` metadata.
pub fn lease_status(e: &Error, lease_id: u64) -> Status {
    match e {
        Error::LeaseNotFound(_) => status_codec::to_status_with_metadata(
            e,
            [("lease_id".to_string(), lease_id.to_string())],
        ),
        _ => status(e),
    }
}

/// A size or count limit: INVALID_ARGUMENT with `field` and `limit` metadata.
pub fn limit(field: &str, limit: u64, msg: impl Into<String>) -> Status {
    status_codec::limit_status(field, limit, msg)
}

/// Any other invalid request field: INVALID_ARGUMENT with `field` metadata.
pub fn invalid(field: &str, msg: impl Into<String>) -> Status {
    status_codec::to_status_with_metadata(
        &Error::InvalidArgument(msg.into()),
        [(status_codec::META_FIELD.to_string(), field.to_string())],
    )
}
