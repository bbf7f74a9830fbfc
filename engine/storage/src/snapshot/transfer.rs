//! Snapshot files in transit: the only code that reads a snapshot for a
//! peer or writes one received from a peer. A transport moves the bytes
//! and calls these; it never touches the files.
//!
//! Sending: [`SnapshotReader`] opens a complete snapshot, computes its size
//! and CRC32C once (announced to the receiver) and serves chunks at any
//! offset, so a sender resumes wherever the receiver says.
//!
//! Receiving, into `<data_dir>/snapshot-staging/` ([`SnapshotStaging`]):
//! 1. [`SnapshotStaging::begin`] refuses, before anything is staged (no
//!    file, not even the directory, is created), an announced size above
//!    [`InboundLimits::max_bytes`] or one that would leave less than
//!    [`free_space_margin`] free on the staging filesystem. Otherwise it
//!    opens `incoming-from<id>-<index>-<term>-<size>-<crc>.part` (0600, in
//!    a 0700 directory), deletes older partial transfers of that sender,
//!    and reports the staged length as the resume offset.
//! 2. [`SnapshotReceiver::accept`] takes a chunk only if it starts at or
//!    before the staged length and ends within the announced size; bytes
//!    already staged are skipped, the rest written and fsynced before it
//!    returns the next offset.
//! 3. [`SnapshotReceiver::finish`] checks the size and CRC32C against the
//!    announced ones, then parses the whole file (every record, trailer,
//!    meta equal to the announced one) while it is still staged. A file
//!    that fails is deleted (the next attempt starts from 0); one that
//!    passes is renamed `staged-from<id>-<index>-<term>.snap`.
//! 4. [`SnapshotStore::adopt_staged`](super::SnapshotStore::adopt_staged)
//!    moves it into `snapshots/` when the node installs it.
//!
//! A transfer the host abandons as idle is [`SnapshotReceiver::discard`]ed;
//! one broken for any other reason keeps its staged prefix for resume.
//! Staged files a restart finds are deleted by
//! [`DataDir::open_snapshot_staging`](crate::data_dir::DataDir::open_snapshot_staging).

mod error;
mod receive;

pub use error::InboundError;
pub use receive::{InboundLimits, InboundOffer, SnapshotReceiver, SnapshotStaging, StagedSnapshot};

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{io_err, SnapshotError};

/// Default transfer chunk size (1 MiB).
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// Free space an inbound snapshot must leave on the staging filesystem:
/// 1/20 of its size, at most this much.
pub const MAX_FREE_MARGIN_BYTES: u64 = 64 << 20;

/// Free space an inbound snapshot must leave on a filesystem of `total`
/// bytes: 1/20 of it, at most [`MAX_FREE_MARGIN_BYTES`] (the WAL and the
/// state machine need room to keep serving writes). Capped, not floored: on
/// a small disk a fixed floor would refuse every snapshot, and a follower
/// behind the leader's log could then never catch up.
pub fn free_space_margin(total: u64) -> u64 {
    (total / 20).min(MAX_FREE_MARGIN_BYTES)
}

/// Length and CRC32C of the file at `path`.
pub fn file_crc32c(path: &Path) -> io::Result<(u64, u32)> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 256 << 10];
    let mut crc = 0u32;
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((len, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        len += n as u64;
    }
}

// ---- sending ----------------------------------------------------------

/// A snapshot file opened for sending. Reads are positional, so one reader
/// may serve several attempts (and threads) at once.
#[derive(Debug)]
pub struct SnapshotReader {
    file: File,
    path: PathBuf,
    len: u64,
    checksum: u32,
}

impl SnapshotReader {
    /// Opens `path` and computes its size and CRC32C (reads it once).
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let file = File::open(path).map_err(io_err(path, "open snapshot for sending"))?;
        let (len, checksum) = file_crc32c(path).map_err(io_err(path, "checksum snapshot"))?;
        Ok(SnapshotReader {
            file,
            path: path.to_path_buf(),
            len,
            checksum,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Total size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// CRC32C of the whole file, as announced to the receiver.
    pub fn checksum(&self) -> u32 {
        self.checksum
    }

    /// Up to `max` bytes starting at `offset` (empty at or past the end).
    pub fn read_chunk(&self, offset: u64, max: usize) -> Result<Vec<u8>, SnapshotError> {
        if offset >= self.len {
            return Ok(Vec::new());
        }
        let n = (self.len - offset).min(max as u64) as usize;
        let mut buf = vec![0u8; n];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(io_err(&self.path, "read snapshot chunk"))?;
        Ok(buf)
    }
}
