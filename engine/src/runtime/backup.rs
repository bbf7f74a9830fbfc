//! Backups of a live node: a fresh point-in-time snapshot file, opened for
//! streaming (`Maintenance.Snapshot`).
//!
//! Contract of [`NodeHandle::backup_snapshot`]:
//! - on the leader it first passes a linearizable read barrier, so the
//!   snapshot covers every write acknowledged before the call; elsewhere it
//!   covers what this member has applied;
//! - it asks for a snapshot at the applied index (the existing one if
//!   nothing was applied since) and opens that file; writes go on meanwhile
//!   (the snapshot is built from a point-in-time image);
//! - the returned file handle stays readable even if the file is pruned
//!   later (two newer snapshots), so the stream always reads one whole file.
//!
//! Errors: `NotLeader`/`NoLeader` only from the barrier on a deposed
//! leader, `Timeout`, `Storage` (building or opening the file),
//! `ShuttingDown`.

use std::fs::File;

use super::handle::NodeHandle;
use super::types::{Consistency, Error, Result};

/// A snapshot file opened for a backup.
#[derive(Debug)]
pub struct BackupSnapshot {
    /// The snapshot's index (= revision: every write at or below it is in
    /// the file) and term.
    pub index: u64,
    pub term: u64,
    /// Size of the file in bytes.
    pub len: u64,
    /// The file, opened (read it with positional reads).
    pub file: File,
}

impl NodeHandle {
    /// Takes a fresh snapshot and opens it for a backup (see the module docs).
    pub async fn backup_snapshot(&self) -> Result<BackupSnapshot> {
        if self.shared.is_leader() {
            self.read_barrier(Consistency::Linearizable).await?;
        } else {
            self.shared.check_running()?;
        }
        // A file can be pruned between its creation and our open only if two
        // newer snapshots were made meanwhile; a second request then finds
        // the newest one.
        for _ in 0..3 {
            let index = self.trigger_snapshot().await?;
            let data_dir = self.shared.config.data_dir.clone();
            let opened = tokio::task::spawn_blocking(move || open_snapshot(&data_dir, index))
                .await
                .map_err(|e| Error::Storage(format!("backup open task failed: {e}")))??;
            if let Some(b) = opened {
                return Ok(b);
            }
        }
        Err(Error::Storage(
            "the snapshot for the backup was replaced by newer ones before it could be opened \
             three times in a row; retry the backup"
                .into(),
        ))
    }
}

fn open_snapshot(data_dir: &std::path::Path, index: u64) -> Result<Option<BackupSnapshot>> {
    use d_engine_storage::snapshot::{SnapshotFileReader, SnapshotStore};
    let storage = |e: &dyn std::fmt::Display| Error::Storage(format!("backup: {e}"));
    let Some(path) = SnapshotStore::find_complete(data_dir, index).map_err(|e| storage(&e))? else {
        return Ok(None);
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(storage(&format!("opening {}: {e}", path.display()))),
    };
    let len = file
        .metadata()
        .map_err(|e| storage(&format!("stat {}: {e}", path.display())))?
        .len();
    // The header names the index and term (the file name does too; the
    // header is what a restore trusts).
    let meta = SnapshotFileReader::open(&path).map_err(|e| storage(&e))?;
    let meta = meta.meta();
    Ok(Some(BackupSnapshot {
        index: meta.last_index,
        term: meta.last_term,
        len,
        file,
    }))
}
