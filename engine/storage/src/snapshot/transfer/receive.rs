//! The receiving half of [`super`]: the staging area and one transfer
//! being staged (steps 1 to 3 of the parent module's contract).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use d_engine_core::{NodeId, SnapshotMeta};

use super::error::InboundError;
use super::{file_crc32c, free_space_margin};
use crate::data_dir::{create_private_dir_all, fs_space, FILE_MODE};
use crate::snapshot::format::verify_snapshot_file;
use crate::snapshot::{io_err, SnapshotError};

/// What a sender announces before the first byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundOffer {
    pub from: NodeId,
    pub meta: SnapshotMeta,
    pub total_size: u64,
    /// CRC32C of the whole file.
    pub checksum: u32,
}

/// Bounds on what a node accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundLimits {
    /// This node (named in refusals).
    pub local_id: NodeId,
    /// Largest snapshot accepted (`snapshot.max_inbound_bytes`).
    pub max_bytes: u64,
}

fn io_fail(what: String) -> impl FnOnce(io::Error) -> InboundError {
    move |source| InboundError::Io { what, source }
}

const PART_PREFIX: &str = "incoming-from";
const PART_SUFFIX: &str = ".part";
const STAGED_PREFIX: &str = "staged-";

fn part_prefix(from: NodeId) -> String {
    format!("{PART_PREFIX}{from}-")
}

/// The staging directory for inbound transfers
/// (`<data_dir>/snapshot-staging`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotStaging {
    dir: PathBuf,
}

impl SnapshotStaging {
    /// A staging area at `dir`; nothing is created until a transfer begins.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SnapshotStaging { dir: dir.into() }
    }

    /// Creates `dir` (0700) and deletes `staged-*` files left by an earlier
    /// run; the ones that could not be deleted are returned.
    pub(crate) fn open_on_start(dir: &Path) -> Result<(Self, Vec<SnapshotError>), SnapshotError> {
        create_private_dir_all(dir).map_err(io_err(dir, "create snapshot staging directory"))?;
        let mut not_removed = Vec::new();
        for e in fs::read_dir(dir)
            .map_err(io_err(dir, "list snapshot staging directory"))?
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(STAGED_PREFIX) {
                let p = e.path();
                if let Err(err) = fs::remove_file(&p) {
                    not_removed.push(io_err(&p, "remove an orphaned staged snapshot")(err));
                }
            }
        }
        Ok((SnapshotStaging::new(dir), not_removed))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens (or resumes) the staging file for `offer`, after the checks of
    /// step 1 in the module docs.
    pub fn begin(
        &self,
        offer: InboundOffer,
        limits: InboundLimits,
    ) -> Result<SnapshotReceiver, InboundError> {
        let total = offer.total_size;
        if total > limits.max_bytes {
            return Err(InboundError::TooLarge {
                index: offer.meta.last_index,
                from: offer.from,
                total,
                limits,
            });
        }
        let dir = &self.dir;
        create_private_dir_all(dir).map_err(io_fail(format!(
            "cannot create staging dir {}",
            dir.display()
        )))?;
        let name = format!(
            "{}{}-{}-{total}-{:08x}{PART_SUFFIX}",
            part_prefix(offer.from),
            offer.meta.last_index,
            offer.meta.last_term,
            offer.checksum
        );
        let part = dir.join(&name);
        self.remove_stale_parts(offer.from, &name);

        // What is still to come must fit, leaving a margin.
        let have = match fs::metadata(&part) {
            Ok(m) if m.len() <= total => m.len(),
            _ => 0,
        };
        let space = fs_space(dir).map_err(io_fail(format!(
            "cannot read the free space of {}",
            dir.display()
        )))?;
        let margin = free_space_margin(space.total);
        let needed = total - have;
        if needed.saturating_add(margin) > space.available {
            return Err(InboundError::NoSpace {
                index: offer.meta.last_index,
                from: offer.from,
                local_id: limits.local_id,
                dir: dir.clone(),
                needed,
                available: space.available,
                margin,
            });
        }

        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(FILE_MODE)
            .open(&part)
            .map_err(io_fail(format!(
                "cannot open staging file {}",
                part.display()
            )))?;
        let mut len = file
            .metadata()
            .map_err(io_fail(format!("stat {}", part.display())))?
            .len();
        if len > total {
            file.set_len(0)
                .map_err(io_fail(format!("truncate {}", part.display())))?;
            len = 0;
        }
        Ok(SnapshotReceiver {
            offer,
            dir: dir.clone(),
            part,
            file,
            len,
        })
    }

    /// Deletes partial transfers from `from` other than `keep` (a new
    /// snapshot supersedes them). Best effort.
    fn remove_stale_parts(&self, from: NodeId, keep: &str) {
        let prefix = part_prefix(from);
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(PART_SUFFIX) && name != keep {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// One inbound transfer being staged.
#[derive(Debug)]
pub struct SnapshotReceiver {
    offer: InboundOffer,
    dir: PathBuf,
    part: PathBuf,
    file: File,
    len: u64,
}

/// A received snapshot that passed every check, waiting to be installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedSnapshot {
    pub from: NodeId,
    pub meta: SnapshotMeta,
    pub path: PathBuf,
}

impl SnapshotReceiver {
    /// The offset the sender should continue from (bytes durably staged).
    pub fn resume_offset(&self) -> u64 {
        self.len
    }

    pub fn offer(&self) -> &InboundOffer {
        &self.offer
    }

    /// The staging file.
    pub fn path(&self) -> &Path {
        &self.part
    }

    /// Stages `data` at `offset` and returns the next expected offset once
    /// it is durable. Bytes already staged are skipped; a chunk starting
    /// past the staged length or ending past the announced size is refused.
    pub fn accept(&mut self, offset: u64, data: &[u8]) -> Result<u64, InboundError> {
        if data.is_empty() {
            return Ok(self.len);
        }
        let total = self.offer.total_size;
        let end = offset.saturating_add(data.len() as u64);
        if offset > self.len || end > total {
            return Err(InboundError::ChunkDoesNotFit {
                offset,
                len: data.len(),
                expected: self.len,
                total,
            });
        }
        if end > self.len {
            let skip = (self.len - offset) as usize;
            let p = &self.part;
            self.file
                .write_all_at(&data[skip..], self.len)
                .map_err(io_fail(format!("write {}", p.display())))?;
            self.file
                .sync_data()
                .map_err(io_fail(format!("fsync {}", p.display())))?;
            self.len = end;
        }
        Ok(self.len)
    }

    /// Checks the complete file (step 3 in the module docs) and renames it
    /// to its staged name. A file that fails the checksum or the content
    /// check is deleted.
    pub fn finish(self) -> Result<StagedSnapshot, InboundError> {
        let SnapshotReceiver {
            offer,
            dir,
            part,
            file,
            len,
        } = self;
        let total = offer.total_size;
        if len != total {
            return Err(InboundError::Incomplete { len, total });
        }
        drop(file);
        let (got_len, got) =
            file_crc32c(&part).map_err(io_fail(format!("cannot read back {}", part.display())))?;
        if got_len != total || got != offer.checksum {
            let _ = fs::remove_file(&part);
            return Err(InboundError::ChecksumMismatch {
                announced: offer.checksum,
                total,
                got,
                got_len,
            });
        }
        match verify_snapshot_file(&part) {
            Err(source) => {
                let _ = fs::remove_file(&part);
                return Err(InboundError::NotASnapshot {
                    index: offer.meta.last_index,
                    from: offer.from,
                    source: Box::new(source),
                });
            }
            Ok(found) if found != offer.meta => {
                let _ = fs::remove_file(&part);
                return Err(InboundError::NotTheAnnounced {
                    from: offer.from,
                    announced: (offer.meta.last_index, offer.meta.last_term),
                    found: (found.last_index, found.last_term),
                });
            }
            Ok(_) => {}
        }
        let staged = dir.join(format!(
            "{STAGED_PREFIX}from{}-{}-{}.snap",
            offer.from, offer.meta.last_index, offer.meta.last_term
        ));
        fs::rename(&part, &staged).map_err(io_fail(format!(
            "rename {} -> {}",
            part.display(),
            staged.display()
        )))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(StagedSnapshot {
            from: offer.from,
            meta: offer.meta,
            path: staged,
        })
    }

    /// Abandons the transfer and deletes its staging file (it will not be
    /// resumed: the sender went idle).
    pub fn discard(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.part);
    }
}
