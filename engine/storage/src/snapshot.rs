//! Snapshot files: a checksummed point-in-time image of the state machine.
//!
//! - [`format`]: the file format (header with meta, records, CRC32C trailer),
//!   streaming writer and verifying reader.
//! - [`store`]: the `snapshots/` directory: durable creation (temp file,
//!   fsync, rename, fsync dir), listing, keeping the latest
//!   [`store::KEEP_SNAPSHOTS`], quarantine of invalid files on start,
//!   adoption of a received file ([`SnapshotStore::adopt_staged`]).
//! - [`transfer`]: snapshot files in transit, the one implementation a
//!   transport calls: [`SnapshotReader`] (size, CRC32C, chunks) on the
//!   sender; [`SnapshotStaging`] and [`SnapshotReceiver`] (limits, staging,
//!   resume, checksum and full validation while staged) on the receiver.
//!   Installation into the state machine is `StateMachine::install_snapshot`.
//! - [`priority`]: builder threads run at a lower scheduling priority.

pub mod format;
pub mod priority;
pub mod store;
pub mod transfer;

pub use format::{verify_snapshot_file, SnapshotFileReader};
pub use store::{
    Quarantined, SnapshotInfo, SnapshotStore, ValidLatest, KEEP_SNAPSHOTS, QUARANTINE_DIR,
};
pub use transfer::{
    file_crc32c, free_space_margin, InboundError, InboundLimits, InboundOffer, SnapshotReader,
    SnapshotReceiver, SnapshotStaging, StagedSnapshot, DEFAULT_CHUNK_BYTES, MAX_FREE_MARGIN_BYTES,
};

use std::fmt;
use std::path::PathBuf;

/// A snapshot file problem. Every variant names the file.
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
