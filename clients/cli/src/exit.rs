//! Exit codes (stable; documented in `docs/cli.md`) and the error every
//! command returns: a message, a hint saying what to do, and the code.

use std::fmt;

use d_engine_client::{Error, ErrorCode};

/// Success.
pub const OK: i32 = 0;
/// Any error not listed below (server internal or storage error, I/O).
pub const ERROR: i32 = 1;
/// Bad usage: unknown flag, bad argument, malformed `txn` input, or a
/// request the server refused as invalid (`INVALID_ARGUMENT`).
pub const USAGE: i32 = 2;
/// What was named does not exist: the key of a single-key `get`, a lease,
/// a member id, a lock or leadership.
pub const NOT_FOUND: i32 = 3;
/// `txn`: the compares did not hold (the failure branch ran).
pub const COMPARE_FAILED: i32 = 4;
/// No endpoint reachable, no leader, node overloaded or shutting down, a
/// membership change already running: retrying later may succeed.
pub const UNAVAILABLE: i32 = 5;
/// The request timed out; a write's outcome is unknown.
pub const TIMEOUT: i32 = 6;
/// Missing or refused credentials, or not permitted.
pub const AUTH: i32 = 7;
/// The storage quota is reached (writes refused, reads work).
pub const NO_SPACE: i32 = 8;
/// `lock`/`elect`: the lease holding the lock or leadership was lost.
pub const LOST: i32 = 9;

/// A failed command: printed as `error: <message>` and `hint: <hint>` on
/// stderr, and the process exits with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub code: i32,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

/// The exit code for a client error class.
pub fn code_of(code: ErrorCode) -> i32 {
    match code {
        ErrorCode::InvalidArgument => USAGE,
        ErrorCode::LeaseNotFound | ErrorCode::UnknownNode | ErrorCode::NotHeld => NOT_FOUND,
        ErrorCode::NotLeader
        | ErrorCode::NoLeader
        | ErrorCode::Overloaded
        | ErrorCode::ShuttingDown
        | ErrorCode::ChangeInProgress
        | ErrorCode::Unavailable => UNAVAILABLE,
        ErrorCode::Timeout => TIMEOUT,
        ErrorCode::Unauthenticated | ErrorCode::PermissionDenied => AUTH,
        ErrorCode::NoSpace => NO_SPACE,
        ErrorCode::Compacted
        | ErrorCode::Storage
        | ErrorCode::Internal
        | ErrorCode::ClientClosed => ERROR,
    }
}

fn hint_of(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "check the arguments (`dengine <command> --help`)",
        ErrorCode::LeaseNotFound => {
            "the lease expired or was revoked: grant a new one with `dengine lease grant TTL`"
        }
        ErrorCode::UnknownNode => "`dengine member list` shows the members' ids",
        ErrorCode::NotHeld => "the lock or leadership ended (its lease expired or was revoked)",
        ErrorCode::NotLeader | ErrorCode::NoLeader => {
            "the cluster has no leader right now (election, or a majority is down): retry, \
             and check `dengine endpoint status`"
        }
        ErrorCode::Overloaded => "the node is overloaded: retry after a moment",
        ErrorCode::ShuttingDown => "the node is stopping: use another endpoint or retry",
        ErrorCode::ChangeInProgress => {
            "a membership or leadership change is running: wait for it, then retry"
        }
        ErrorCode::Unavailable => {
            "check --endpoints (DENGINE_ENDPOINTS: client addresses of cluster members, \
             host:port) and that d-engine-server runs there; TLS servers need --cacert"
        }
        ErrorCode::Timeout => {
            "raise --timeout if the cluster is slow; a write may or may not have been \
             applied: check with `dengine get` before repeating it"
        }
        ErrorCode::Unauthenticated => {
            "give --user and --password (DENGINE_USER, DENGINE_PASSWORD) or --token \
             (DENGINE_TOKEN)"
        }
        ErrorCode::PermissionDenied => "the user's role does not permit this request",
        ErrorCode::NoSpace => {
            "the storage quota is reached: delete keys, or raise storage.quota_bytes"
        }
        ErrorCode::Compacted => "that revision is no longer in the history: use a later --rev",
        ErrorCode::Storage => "the node has a storage failure: see its log",
        ErrorCode::Internal => "see the server's log",
        ErrorCode::ClientClosed => {
            "the command's client was closed before it finished: run it again"
        }
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::new(code_of(e.code()), e.to_string()).with_hint(hint_of(e.code()))
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::new(ERROR, e.to_string())
    }
}

pub type CliResult<T = i32> = std::result::Result<T, CliError>;
