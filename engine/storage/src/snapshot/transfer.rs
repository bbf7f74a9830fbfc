//! Chunked snapshot transfer with resume.
//!
//! Sender: [`SnapshotReader::read_chunk`] returns the bytes at any offset, so
//! the sender can resume wherever the receiver says. Receiver:
//! [`SnapshotReceiver`] stages chunks in `<data_dir>/snapshots/incoming-<index>.tmp`,
//! accepts a chunk only at the next expected offset (a re-sent chunk whose
//! bytes are already staged is acknowledged again), fsyncs each accepted
//! chunk before acknowledging it, reports [`SnapshotReceiver::resume_offset`]
//! after a restart, and verifies the whole file in [`SnapshotReceiver::finish`].

use super::format::verify_snapshot_file;
use super::store::{snapshot_file_name, SnapshotInfo, SnapshotStore};
use super::{io_err, sync_dir, SnapshotError};
use d_engine_core::Index;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Default transfer chunk size (1 MiB).
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// Reads a snapshot file in chunks for sending.
pub struct SnapshotReader {
    file: File,
    path: PathBuf,
    len: u64,
}

impl SnapshotReader {
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let file = File::open(path).map_err(io_err(path, "open snapshot for sending"))?;
        let len = file
            .metadata()
            .map_err(io_err(path, "stat snapshot"))?
            .len();
        Ok(SnapshotReader {
            file,
            path: path.to_path_buf(),
            len,
        })
    }

    /// Total size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `max` bytes starting at `offset` (empty at or past the end).
    pub fn read_chunk(&mut self, offset: u64, max: usize) -> Result<Vec<u8>, SnapshotError> {
        if offset >= self.len {
            return Ok(Vec::new());
        }
        let n = (self.len - offset).min(max as u64) as usize;
        let mut buf = vec![0u8; n];
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut buf))
            .map_err(io_err(&self.path, "read snapshot chunk"))?;
        Ok(buf)
    }
}

/// Stages an incoming snapshot.
pub struct SnapshotReceiver {
    store: SnapshotStore,
    index: Index,
    path: PathBuf,
    file: File,
    len: u64,
}

impl SnapshotReceiver {
    /// Opens (or resumes) the staging file for the snapshot at `index`.
    pub fn open(store: &SnapshotStore, index: Index) -> Result<Self, SnapshotError> {
        let path = store.dir().join(format!("incoming-{index}.tmp"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::data_dir::FILE_MODE)
            .open(&path)
            .map_err(io_err(&path, "open incoming snapshot"))?;
        let len = file
            .metadata()
            .map_err(io_err(&path, "stat incoming snapshot"))?
            .len();
        Ok(SnapshotReceiver {
            store: store.clone(),
            index,
            path,
            file,
            len,
        })
    }

    /// The offset the sender should continue from (bytes durably staged).
    pub fn resume_offset(&self) -> u64 {
        self.len
    }

    pub fn index(&self) -> Index {
        self.index
    }

    /// Stages `data` at `offset`; returns the next expected offset once the
    /// chunk is durable. A chunk overlapping already-staged bytes must match
    /// them (an idempotent re-send); a chunk past the end is refused.
    pub fn accept(&mut self, offset: u64, data: &[u8]) -> Result<u64, SnapshotError> {
        if offset > self.len {
            return Err(SnapshotError::UnexpectedOffset {
                path: self.path.clone(),
                expected: self.len,
                got: offset,
            });
        }
        let overlap = ((self.len - offset) as usize).min(data.len());
        if overlap > 0 {
            let mut staged = vec![0u8; overlap];
            self.file
                .seek(SeekFrom::Start(offset))
                .and_then(|_| self.file.read_exact(&mut staged))
                .map_err(io_err(&self.path, "read staged snapshot"))?;
            if staged != data[..overlap] {
                return Err(SnapshotError::ChunkMismatch {
                    path: self.path.clone(),
                    offset,
                });
            }
        }
        let fresh = &data[overlap..];
        if !fresh.is_empty() {
            self.file
                .seek(SeekFrom::Start(self.len))
                .and_then(|_| self.file.write_all(fresh))
                .and_then(|_| self.file.sync_data())
                .map_err(io_err(&self.path, "stage snapshot chunk"))?;
            self.len += fresh.len() as u64;
        }
        Ok(self.len)
    }

    /// Verifies the staged file (checksum and every record) and moves it into
    /// the store as a complete snapshot. On a verification failure the staged
    /// file is deleted so the transfer restarts from offset 0.
    pub fn finish(self) -> Result<SnapshotInfo, SnapshotError> {
        self.file
            .sync_all()
            .map_err(io_err(&self.path, "fsync incoming snapshot"))?;
        let meta = match verify_snapshot_file(&self.path) {
            Ok(m) => m,
            Err(e) => {
                let _ = fs::remove_file(&self.path);
                return Err(e);
            }
        };
        if meta.last_index != self.index {
            let _ = fs::remove_file(&self.path);
            return Err(SnapshotError::WrongIndex {
                path: self.path.clone(),
                expected: self.index,
                found: meta.last_index,
            });
        }
        let dest = self
            .store
            .dir()
            .join(snapshot_file_name(meta.last_index, meta.last_term));
        fs::rename(&self.path, &dest).map_err(io_err(&dest, "rename received snapshot"))?;
        sync_dir(self.store.dir())?;
        self.store.prune()?;
        Ok(SnapshotInfo {
            meta,
            path: dest,
            size: self.len,
            records: 0,
        })
    }
}
