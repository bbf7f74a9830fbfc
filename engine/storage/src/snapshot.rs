//! Snapshot files: a checksummed point-in-time image of the state machine.
//!
//! - [`format`]: the file format (header with meta, records, CRC32C trailer),
//!   streaming writer and verifying reader.
//! - [`store`]: the `snapshots/` directory: durable creation (temp file,
//!   fsync, rename, fsync dir), listing, keeping the latest
//!   [`store::KEEP_SNAPSHOTS`].
//! - [`transfer`]: chunked transfer to a follower: [`SnapshotReader`] on the
//!   sender, [`SnapshotReceiver`] (staging, resume, verification) on the
//!   receiver. Installation is `StateMachine::install_snapshot`.
//! - [`priority`]: builder threads run at a lower scheduling priority.

pub mod format;
pub mod priority;
pub mod store;
pub mod transfer;

pub use format::{verify_snapshot_file, SnapshotFileReader};
pub use store::{
    Quarantined, SnapshotInfo, SnapshotStore, ValidLatest, KEEP_SNAPSHOTS, QUARANTINE_DIR,
};
pub use transfer::{SnapshotReader, SnapshotReceiver, DEFAULT_CHUNK_BYTES};

use std::fmt;
use std::path::PathBuf;

/// A snapshot file or transfer problem. Every variant names the file.
#[derive(Debug)]
pub enum SnapshotError {
    Io {
        path: PathBuf,
        context: &'static str,
        source: std::io::Error,
    },
    /// The file is damaged or not a snapshot; `offset` is where reading failed.
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    /// A transfer chunk arrived at the wrong offset.
    UnexpectedOffset {
        path: PathBuf,
        expected: u64,
        got: u64,
    },
    /// A re-sent chunk differs from the bytes already staged.
    ChunkMismatch { path: PathBuf, offset: u64 },
    /// The staged snapshot is valid but for another index than announced.
    WrongIndex {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io {
                path,
                context,
                source,
            } => write!(f, "snapshot I/O error ({context}) on {}: {source}", path.display()),
            SnapshotError::Corrupt { path, offset, what } => write!(
                f,
                "snapshot file {} is corrupt at byte offset {offset}: {what}; delete it and fetch a fresh snapshot from the leader",
                path.display()
            ),
            SnapshotError::UnexpectedOffset {
                path,
                expected,
                got,
            } => write!(
                f,
                "snapshot chunk for {} at offset {got} refused: the next expected offset is {expected}; resume sending from {expected}",
                path.display()
            ),
            SnapshotError::ChunkMismatch { path, offset } => write!(
                f,
                "re-sent snapshot chunk at offset {offset} differs from the bytes already staged in {}; restart the transfer",
                path.display()
            ),
            SnapshotError::WrongIndex {
                path,
                expected,
                found,
            } => write!(
                f,
                "snapshot {} covers index {found}, but index {expected} was announced",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SnapshotError {}

pub(crate) fn io_err<'a>(
    path: &'a std::path::Path,
    context: &'static str,
) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        context,
        source,
    }
}

/// fsyncs a directory so a rename or creation inside it is durable.
pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<(), SnapshotError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}
