//! Backups: [`GrpcAdmin::snapshot_save`] streams a point-in-time snapshot of
//! a live member (`Maintenance.Snapshot`) into a file.
//!
//! Contract: the file at `path` appears only complete and verified. The
//! stream is written to a temporary file beside `path` (same directory,
//! `.<name>.part-…`), its sha256 is checked against the one the server sent
//! with the last chunk (and the byte count against the announced size), the
//! file is fsynced, then moved to `path` and the directory fsynced. On any
//! failure the temporary file is removed and `path` is untouched. An
//! existing `path` is refused unless `overwrite` is set (without it the
//! final step is a hard link, which cannot replace a file created
//! meanwhile). Restore the file with `d-engine-server restore`
//! (`docs/operations.md`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use d_engine_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::admin::GrpcAdmin;
use crate::error::{Error, Result};
use crate::router::{Retry, Route};

/// A chunk that does not arrive within this time ends the backup
/// (`Timeout`); the server sends the next chunk as soon as it is read.
pub const BACKUP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A backup written by [`GrpcAdmin::snapshot_save`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedSnapshot {
    pub path: PathBuf,
    /// The node that served it (0 if it did not say).
    pub node_id: u64,
    /// Every write at or below this revision is in the backup, none above.
    pub revision: u64,
    /// Raft term of the snapshot's last entry.
    pub term: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
}

impl GrpcAdmin {
    /// Saves a backup from the leader (which first confirms its leadership,
    /// so the backup covers every write acknowledged before the call) into
    /// `path`; see the module docs. `overwrite` allows replacing an
    /// existing file.
    pub async fn snapshot_save(
        &self,
        path: impl AsRef<Path>,
        overwrite: bool,
    ) -> Result<SavedSnapshot> {
        self.save(Route::Leader, path.as_ref(), overwrite).await
    }

    /// [`GrpcAdmin::snapshot_save`] from the node at `addr` (no redirect);
    /// from a follower the backup covers what that member has applied.
    pub async fn snapshot_save_from(
        &self,
        addr: &str,
        path: impl AsRef<Path>,
        overwrite: bool,
    ) -> Result<SavedSnapshot> {
        let addr = self.client.inner.normalize(addr)?;
        self.save(Route::Node(addr), path.as_ref(), overwrite).await
    }

    async fn save(&self, route: Route, path: &Path, overwrite: bool) -> Result<SavedSnapshot> {
        if !overwrite && tokio::fs::symlink_metadata(path).await.is_ok() {
            return Err(already_exists(path));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "backup path {} names no file; give a file path",
                    path.display()
                ))
            })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(
            ".{name}.part-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let inner = &self.client.inner;
        // Opening the stream waits for the snapshot; the per-attempt timeout
        // bounds only that (the request itself carries no deadline).
        let stream = inner
            .execute("snapshot_save", route, Retry::Safe, |ch, _| {
                let mut rpc = inner.maintenance_rpc(ch);
                async move {
                    Ok(rpc
                        .snapshot(tonic::Request::new(pb::BackupRequest {}))
                        .await?
                        .into_inner())
                }
            })
            .await?;
        let res = receive(stream, &tmp).await;
        let res = match res {
            Ok(mut saved) => finish(&tmp, path, overwrite).await.map(|()| {
                saved.path = path.to_path_buf();
                saved
            }),
            Err(e) => Err(e),
        };
        if res.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        res
    }
}

fn already_exists(path: &Path) -> Error {
    Error::InvalidArgument(format!(
        "{} already exists; choose another file name, or allow overwriting it \
         (overwrite = true, `dengine snapshot save --overwrite`)",
        path.display()
    ))
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let msg = format!("backup: {what} {}", path.display());
    move |e| Error::Storage(format!("{msg}: {e}"))
}

/// Writes the stream into `tmp` (created new), checks size and sha256,
/// fsyncs it.
async fn receive(
    mut stream: tonic::Streaming<pb::BackupChunk>,
    tmp: &Path,
) -> Result<SavedSnapshot> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .await
        .map_err(io("cannot create", tmp))?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut node_id = 0;
    loop {
        let next = tokio::time::timeout(BACKUP_IDLE_TIMEOUT, stream.message())
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "backup: no data from the server for {BACKUP_IDLE_TIMEOUT:?} after {got} \
                     bytes; retry"
                ))
            })?;
        let Some(chunk) = next? else {
            return Err(Error::Unavailable(format!(
                "backup: the stream ended after {got} bytes without its final chunk (the \
                 server stopped or the connection broke); retry"
            )));
        };
        if let Some(h) = &chunk.header {
            node_id = h.node_id;
        }
        hasher.update(&chunk.data);
        got += chunk.data.len() as u64;
        if got > chunk.total_bytes {
            return Err(Error::Internal(format!(
                "backup: received {got} bytes, more than the announced {}",
                chunk.total_bytes
            )));
        }
        file.write_all(&chunk.data)
            .await
            .map_err(io("cannot write", tmp))?;
        if !chunk.last {
            continue;
        }
        let digest = hasher.finalize();
        if got != chunk.total_bytes || chunk.sha256.as_slice() != digest.as_slice() {
            return Err(Error::Internal(format!(
                "backup: checksum mismatch: received {got} of {} bytes hashing to {}, the \
                 server's sha256 is {}; nothing was saved, retry",
                chunk.total_bytes,
                hex(&digest),
                hex(&chunk.sha256)
            )));
        }
        file.flush().await.map_err(io("cannot write", tmp))?;
        file.sync_all().await.map_err(io("cannot fsync", tmp))?;
        return Ok(SavedSnapshot {
            path: tmp.to_path_buf(),
            node_id,
            revision: chunk.revision,
            term: chunk.term,
            bytes: got,
            sha256: hex(&digest),
        });
    }
}

/// Moves the verified `tmp` to `path` (never replacing a file unless
/// `overwrite`), then fsyncs the directory.
async fn finish(tmp: &Path, path: &Path, overwrite: bool) -> Result<()> {
    if overwrite {
        tokio::fs::rename(tmp, path)
            .await
            .map_err(io("cannot move the backup to", path))?;
    } else {
        match tokio::fs::hard_link(tmp, path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(already_exists(path))
            }
            Err(e) => return Err(io("cannot move the backup to", path)(e)),
        }
        let _ = tokio::fs::remove_file(tmp).await;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let d = tokio::fs::File::open(&dir)
        .await
        .map_err(io("cannot open directory", &dir))?;
    d.sync_all()
        .await
        .map_err(io("cannot fsync directory", &dir))?;
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
