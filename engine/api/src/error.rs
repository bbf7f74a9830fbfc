//! The client error type: values a caller can act on.

/// Machine-readable error class (mirrors `dengine.v1.ErrorCode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NotLeader,
    NoLeader,
    InvalidArgument,
    Overloaded,
    Timeout,
    ShuttingDown,
    Storage,
    ChangeInProgress,
    Compacted,
    Unauthenticated,
    PermissionDenied,
    UnknownNode,
    /// The storage quota is reached.
    NoSpace,
    /// The lease does not exist (never granted, revoked or expired).
    LeaseNotFound,
    /// The lock or election leadership is not held.
    NotHeld,
    /// Transport failure (connection refused, reset...).
    Unavailable,
    /// Anything else the server reported.
    Internal,
    /// Client-side, never on the wire: the client was closed
    /// (`Client::close`). Not retryable. Go `CLIENT_CLOSED`, Python
    /// `ClientClosed` (`CLOSED`).
    ClientClosed,
}

/// Errors returned by every d-engine client operation.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// This node is not the leader; retry on `leader_addr` (client address) if known.
    #[error("not leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    /// No leader is known (election in progress); retry after a short backoff.
    #[error("no leader available: {0}")]
    NoLeader(String),
    /// A request field is invalid; not retryable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The node is overloaded; back off and retry.
    #[error("overloaded, retry later: {0}")]
    Overloaded(String),
    /// The operation did not complete in time; a write's outcome is unknown.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The engine is stopping or stopped.
    #[error("shutting down: {0}")]
    ShuttingDown(String),
    /// A storage failure (e.g. disk full); the node refuses writes.
    #[error("storage error: {0}")]
    Storage(String),
    /// A membership or leadership change is in progress.
    #[error("change in progress: {0}")]
    ChangeInProgress(String),
    /// A watch's start revision is no longer in the history.
    #[error("compacted: {0}")]
    Compacted(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("unknown node: {0}")]
    UnknownNode(String),
    /// The write would take the stored data past the node's storage quota
    /// (`storage.quota_bytes`): nothing was written, and the NOSPACE alarm
    /// is raised in the node status. Reads and deletes still work; delete
    /// keys to free space or raise the quota. Not retryable as is.
    #[error("no space: {0}")]
    NoSpace(String),
    /// The lease does not exist: never granted, revoked, or expired. Not
    /// retryable: grant a new lease.
    #[error("lease not found: {0}")]
    LeaseNotFound(String),
    /// The lock or election leadership named is not held (its key is gone:
    /// unlocked, resigned, or its lease ended). Not retryable.
    #[error("not held: {0}")]
    NotHeld(String),
    /// The server could not be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The client was closed (`Client::close` on it or on any clone): every
    /// call after that fails at once with this error, and every watch or
    /// stream it had open ends with it. Not retryable: build a new client.
    /// A watch ended by the close carries where to watch again from (one
    /// past its last delivered event, as [`WatchCancel::resume_revision`]);
    /// 0 for everything else (or not known).
    #[error("the client is closed (Client::close was called)")]
    ClientClosed { resume_revision: u64 },
    /// The server ended a watch (see [`WatchCancel`]); [`Error::code`] is
    /// the cancel code (`Compacted`, `Overloaded`, `ShuttingDown`,
    /// `NotLeader`, `Unauthenticated`, `PermissionDenied`, ...).
    #[error("watch canceled ({:?}): {}", .0.code, .0.reason)]
    WatchCanceled(WatchCancel),
}

/// Why and where the server ended a watch. Decided from the wire's
/// `cancel_code`, never from the reason text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchCancel {
    /// `Compacted`: the next revision is no longer in the history (re-read,
    /// then watch from `compact_revision` or later). `Overloaded`: the
    /// consumer fell behind. `ShuttingDown` / `NotLeader`: the node is going
    /// away; watch again (elsewhere) from `resume_revision`.
    pub code: ErrorCode,
    /// Text for humans.
    pub reason: String,
    /// With `Compacted`: the oldest revision still in the history (0 = not known).
    pub compact_revision: u64,
    /// Watch again from this revision to miss nothing: one past the last
    /// event delivered (or the watch's start revision). 0 = not known.
    pub resume_revision: u64,
}

impl Error {
    /// `ClientClosed` for a call (no resume revision).
    pub const CLIENT_CLOSED: Error = Error::ClientClosed { resume_revision: 0 };

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NotLeader { .. } => ErrorCode::NotLeader,
            Error::NoLeader(_) => ErrorCode::NoLeader,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Overloaded(_) => ErrorCode::Overloaded,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::ShuttingDown(_) => ErrorCode::ShuttingDown,
            Error::Storage(_) => ErrorCode::Storage,
            Error::ChangeInProgress(_) => ErrorCode::ChangeInProgress,
            Error::Compacted(_) => ErrorCode::Compacted,
            Error::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Error::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Error::UnknownNode(_) => ErrorCode::UnknownNode,
            Error::NoSpace(_) => ErrorCode::NoSpace,
            Error::LeaseNotFound(_) => ErrorCode::LeaseNotFound,
            Error::NotHeld(_) => ErrorCode::NotHeld,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Internal(_) => ErrorCode::Internal,
            Error::ClientClosed { .. } => ErrorCode::ClientClosed,
            Error::WatchCanceled(c) => c.code,
        }
    }

    /// For a watch the server (or `Client::close`) ended: the revision to
    /// watch again from.
    pub fn resume_revision(&self) -> Option<u64> {
        match self {
            Error::WatchCanceled(c) if c.resume_revision > 0 => Some(c.resume_revision),
            Error::ClientClosed { resume_revision } if *resume_revision > 0 => {
                Some(*resume_revision)
            }
            _ => None,
        }
    }

    /// For a watch ended by compaction: the oldest revision still in the history.
    pub fn compact_revision(&self) -> Option<u64> {
        match self {
            Error::WatchCanceled(c) if c.compact_revision > 0 => Some(c.compact_revision),
            _ => None,
        }
    }

    /// True if retrying the same request (after backoff or on another node)
    /// may succeed: the "retried" column of the error table in
    /// `docs/clients.md` — `NotLeader`, `NoLeader`, `Overloaded`,
    /// `Unavailable`, `ChangeInProgress`, `Timeout` and `ShuttingDown`,
    /// the codes the gRPC client's router retries by itself.
    ///
    /// "May succeed" is not "is safe to repeat": after `Timeout` or
    /// `Unavailable` a write's outcome is unknown, and a write the caller
    /// repeats is a new write (a new write id, not deduplicated against the
    /// first); repeat it only if it is idempotent or conditional. A watch
    /// the server ended answers by its cancel code (a `ShuttingDown` cancel
    /// is retryable, a `Compacted` one is not).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code(),
            ErrorCode::NotLeader
                | ErrorCode::NoLeader
                | ErrorCode::Overloaded
                | ErrorCode::Unavailable
                | ErrorCode::ChangeInProgress
                | ErrorCode::Timeout
                | ErrorCode::ShuttingDown
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
