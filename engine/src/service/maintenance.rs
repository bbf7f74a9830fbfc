//! The `dengine.v1.Maintenance` service: backups of a live member.
//!
//! `Snapshot` takes a fresh point-in-time snapshot
//! ([`NodeHandle::backup_snapshot`]) and streams the file in chunks of at
//! most [`BACKUP_CHUNK_BYTES`] (smaller if `limits.max_request_bytes` is):
//! a reader thread reads one chunk at a time into a channel of
//! [`BACKUP_CHUNKS_BUFFERED`], so a backup holds at most a few MiB in memory
//! whatever the snapshot size. Every chunk names the snapshot's revision,
//! term and total size; the last one (`last = true`) carries the sha256 of
//! the whole file. A stream that ends without it is not a backup. With auth
//! on it needs the `admin` role.

use std::os::unix::fs::FileExt;
use std::pin::Pin;

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::maintenance_server::Maintenance;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status};

use super::convert;
use super::status::status;
use crate::auth::Gate;
use crate::runtime::{BackupSnapshot, NodeHandle};

/// Largest `data` of one chunk.
pub const BACKUP_CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of the client.
pub const BACKUP_CHUNKS_BUFFERED: usize = 4;

pub struct MaintenanceService {
    node: NodeHandle,
    /// With auth on, every Maintenance RPC needs the built-in `admin` role.
    gate: Gate,
}

impl MaintenanceService {
    /// Auth follows the node's `[auth]` config.
    pub fn new(node: NodeHandle) -> Self {
        let gate = Gate::from_config(&node.config().auth);
        MaintenanceService { node, gate }
    }

    /// Uses `gate` (shared with the other services of one server).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    /// Chunk size: 1 MiB, or less so a chunk (plus framing) fits the
    /// configured message limit.
    fn chunk_bytes(&self) -> usize {
        let max = self.node.config().limits.max_request_bytes;
        BACKUP_CHUNK_BYTES.min(max.saturating_sub(4 << 10).max(4 << 10))
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type SnapshotStream = ChunkStream;

    async fn snapshot(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.gate
            .authenticate_request(&req)
            .await?
            .require_admin("Maintenance.Snapshot")?;
        let backup = self.node.backup_snapshot().await.map_err(|e| status(&e))?;
        tracing::info!(
            revision = backup.index,
            term = backup.term,
            bytes = backup.len,
            "streaming a backup"
        );
        let header = convert::header(self.node.header());
        let (tx, rx) = mpsc::channel(BACKUP_CHUNKS_BUFFERED);
        let chunk = self.chunk_bytes();
        std::thread::Builder::new()
            .name("dengine-backup".into())
            .spawn(move || stream_file(backup, header, chunk, tx))
            .map_err(|e| Status::internal(format!("cannot start the backup reader: {e}")))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Reads `b.file` chunk by chunk into `tx` (blocking; stops when the client
/// goes away). The last chunk carries the sha256 of everything sent.
fn stream_file(
    b: BackupSnapshot,
    mut header: Option<pb::ResponseHeader>,
    chunk: usize,
    tx: mpsc::Sender<Result<pb::BackupChunk, Status>>,
) {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    loop {
        let n = ((b.len - offset) as usize).min(chunk);
        let mut data = vec![0u8; n];
        if let Err(e) = b.file.read_exact_at(&mut data, offset) {
            let _ = tx.blocking_send(Err(Status::internal(format!(
                "backup: reading the snapshot at byte {offset}: {e}"
            ))));
            return;
        }
        hasher.update(&data);
        offset += n as u64;
        let last = offset == b.len;
        let msg = pb::BackupChunk {
            header: header.take(),
            data,
            revision: b.index,
            term: b.term,
            total_bytes: b.len,
            sha256: if last {
                hasher.clone().finalize().to_vec()
            } else {
                Default::default()
            },
            last,
        };
        if tx.blocking_send(Ok(msg)).is_err() || last {
            return;
        }
    }
}
