//! Errors returned by the write-ahead log and by any [`super::LogStore`].

use std::fmt;
use std::io;
use std::path::PathBuf;

use d_engine_core::{Index, Term};

/// What an operator should do when the log on disk cannot be trusted.
pub const RESTORE_ADVICE: &str = "this node's log cannot be trusted: stop the node, move its \
data dir aside (keep it for inspection), then re-add the node to the cluster as a learner so \
it is restored from a leader snapshot";

/// An error from the write-ahead log.
#[derive(Debug)]
pub enum WalError {
    /// An operating-system call failed. If it happened while writing or
    /// syncing, the log is now poisoned (see [`WalError::Poisoned`]).
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The bytes at `offset` of `file` are damaged in a place that cannot be
    /// a torn tail (data proven durable, or not in the last segment).
    /// The log refuses to open; see [`RESTORE_ADVICE`].
    Corrupt {
        file: PathBuf,
        offset: u64,
        detail: String,
    },
    /// A file in the log directory that the log did not write.
    Foreign { file: PathBuf, detail: String },
    /// An earlier write or sync failed. The log accepts nothing more: a
    /// failed `fdatasync` may have dropped dirty pages, so retrying it could
    /// report data as durable that is not. Restart the process; recovery
    /// keeps everything that was acknowledged.
    Poisoned { cause: String, kind: io::ErrorKind },
    /// `append`/`truncate_suffix` would remove entry `from`, which is at or
    /// below the committed floor set with `set_committed`.
    TruncateCommitted { from: Index, committed: Index },
    /// Appended entries must continue the log: the first one at most at
    /// `last_index + 1`, the rest consecutive.
    NotContiguous { expected: Index, got: Index },
    /// Raft terms never decrease along a log.
    TermRegression {
        index: Index,
        term: Term,
        prev_term: Term,
    },
    /// The requested index lies outside `[first_index, last_index + 1]`.
    OutOfRange {
        index: Index,
        first: Index,
        last: Index,
    },
    /// An entry larger than the record format allows.
    EntryTooLarge {
        index: Index,
        bytes: usize,
        max: usize,
    },
    /// Invalid [`super::WalOptions`].
    InvalidOptions(String),
    /// A failure of a log store other than the built-in WAL (an
    /// embedder's [`super::LogStore`]); the node stops, as on any log
    /// error. Make it with [`WalError::store`].
    Store(Box<dyn std::error::Error + Send + Sync>),
}

impl WalError {
    /// True if the underlying cause is a full disk (ENOSPC) or a file-size
    /// limit (EFBIG): the node must stop accepting writes.
    pub fn is_disk_full(&self) -> bool {
        let kind = match self {
            WalError::Io { source, .. } => source.kind(),
            WalError::Poisoned { kind, .. } => *kind,
            _ => return false,
        };
        matches!(
            kind,
            io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge | io::ErrorKind::QuotaExceeded
        )
    }

    /// True for damage or foreign data found on disk (the node must not start).
    pub fn is_corruption(&self) -> bool {
        matches!(self, WalError::Corrupt { .. } | WalError::Foreign { .. })
    }

    /// An embedder's log-store failure (see [`WalError::Store`]); its
    /// text should name what failed and what the operator should do.
    pub fn store(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        WalError::Store(e.into())
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Io { op, path, source } => {
                write!(f, "WAL {op} failed on {}: {source}", path.display())?;
                if source.kind() == io::ErrorKind::StorageFull {
                    write!(f, " (disk full: free space, then restart the node)")?;
                }
                Ok(())
            }
            WalError::Corrupt {
                file,
                offset,
                detail,
            } => write!(
                f,
                "WAL file {} is corrupt at byte offset {offset}: {detail}; {RESTORE_ADVICE}",
                file.display()
            ),
            WalError::Foreign { file, detail } => write!(
                f,
                "{} is not a d-engine WAL segment ({detail}); remove it from the WAL directory \
                 if it does not belong there, or {RESTORE_ADVICE}",
                file.display()
            ),
            WalError::Poisoned { cause, .. } => write!(
                f,
                "WAL is stopped after an earlier I/O failure ({cause}); it accepts no more \
                 writes: fix the cause (e.g. free disk space) and restart the node, recovery \
                 keeps every acknowledged entry"
            ),
            WalError::TruncateCommitted { from, committed } => write!(
                f,
                "refusing to truncate the log from index {from}: entries up to {committed} are \
                 committed and must never be removed"
            ),
            WalError::NotContiguous { expected, got } => write!(
                f,
                "log entries must be contiguous: expected index {expected}, got {got}"
            ),
            WalError::TermRegression {
                index,
                term,
                prev_term,
            } => write!(
                f,
                "entry {index} has term {term}, lower than the preceding entry's term \
                 {prev_term}; Raft terms never decrease along a log"
            ),
            WalError::OutOfRange { index, first, last } => write!(
                f,
                "index {index} is outside the log (first index {first}, last index {last})"
            ),
            WalError::EntryTooLarge { index, bytes, max } => write!(
                f,
                "entry {index} is {bytes} bytes encoded; the WAL limit is {max} bytes per entry"
            ),
            WalError::InvalidOptions(msg) => write!(f, "invalid WAL options: {msg}"),
            WalError::Store(e) => write!(f, "log store failed: {e}"),
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalError::Io { source, .. } => Some(source),
            WalError::Store(e) => Some(&**e),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, WalError>;
