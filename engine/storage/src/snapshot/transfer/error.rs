//! Why an inbound snapshot transfer was refused or failed.

use std::fmt;
use std::io;
use std::path::PathBuf;

use d_engine_core::{Index, NodeId, Term};

use super::receive::InboundLimits;
use crate::snapshot::SnapshotError;

/// Why an inbound transfer was refused or failed. The message tells the
/// sender (and the operator) what to do; [`InboundError::staging_deleted`]
/// says whether the staged prefix is gone.
#[derive(Debug)]
pub enum InboundError {
    /// The announced size is above [`InboundLimits::max_bytes`].
    TooLarge {
        index: Index,
        from: NodeId,
        total: u64,
        limits: InboundLimits,
    },
    /// Staging it would leave less than [`super::free_space_margin`] free.
    NoSpace {
        index: Index,
        from: NodeId,
        local_id: NodeId,
        dir: PathBuf,
        needed: u64,
        available: u64,
        margin: u64,
    },
    /// A chunk that does not start at or before the staged length, or runs
    /// past the announced size.
    ChunkDoesNotFit {
        offset: u64,
        len: usize,
        expected: u64,
        total: u64,
    },
    /// `finish` before every announced byte arrived.
    Incomplete {
        len: u64,
        total: u64,
    },
    ChecksumMismatch {
        announced: u32,
        total: u64,
        got: u32,
        got_len: u64,
    },
    /// The checksum matched but the content is not a snapshot.
    NotASnapshot {
        index: Index,
        from: NodeId,
        source: Box<SnapshotError>,
    },
    /// A valid snapshot, but not the announced one (index, term or
    /// membership differ).
    NotTheAnnounced {
        from: NodeId,
        announced: (Index, Term),
        found: (Index, Term),
    },
    Io {
        what: String,
        source: io::Error,
    },
}

impl InboundError {
    /// True if the staging file was deleted (the next attempt starts at 0).
    pub fn staging_deleted(&self) -> bool {
        matches!(
            self,
            InboundError::ChecksumMismatch { .. }
                | InboundError::NotASnapshot { .. }
                | InboundError::NotTheAnnounced { .. }
        )
    }
}

impl fmt::Display for InboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InboundError::TooLarge {
                index,
                from,
                total,
                limits,
            } => write!(
                f,
                "snapshot {index} from node {from} announces {total} bytes, more than \
                 snapshot.max_inbound_bytes = {} on node {}: refused before staging; raise \
                 snapshot.max_inbound_bytes on this node if snapshots this large are expected",
                limits.max_bytes, limits.local_id
            ),
            InboundError::NoSpace {
                index,
                from,
                local_id,
                dir,
                needed,
                available,
                margin,
            } => write!(
                f,
                "snapshot {index} from node {from} needs {needed} more bytes, but the filesystem \
                 of {} has {available} bytes free and {margin} must stay free: refused before \
                 staging; free disk space on node {local_id}",
                dir.display()
            ),
            InboundError::ChunkDoesNotFit {
                offset,
                len,
                expected,
                total,
            } => write!(
                f,
                "chunk at offset {offset} ({len} bytes) does not fit: expected offset \
                 {expected}, announced size {total}"
            ),
            InboundError::Incomplete { len, total } => {
                write!(f, "transfer marked done at {len} bytes, announced {total}")
            }
            InboundError::ChecksumMismatch {
                announced,
                total,
                got,
                got_len,
            } => write!(
                f,
                "snapshot checksum mismatch: announced crc32c {announced:08x} over {total} \
                 bytes, received {got:08x} over {got_len} bytes; staging file deleted, resend \
                 from 0"
            ),
            InboundError::NotASnapshot {
                index,
                from,
                source,
            } => write!(
                f,
                "snapshot {index} from node {from} has the announced checksum but is not a \
                 valid snapshot ({source}); staging file deleted"
            ),
            InboundError::NotTheAnnounced {
                from,
                announced,
                found,
            } => write!(
                f,
                "snapshot from node {from} was announced as index {} term {} but the file holds \
                 index {} term {} (or another membership); staging file deleted",
                announced.0, announced.1, found.0, found.1
            ),
            InboundError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for InboundError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InboundError::NotASnapshot { source, .. } => Some(source.as_ref()),
            InboundError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
