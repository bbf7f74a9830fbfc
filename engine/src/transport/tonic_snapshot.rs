//! Chunked snapshot transfer over `Raft.InstallSnapshot`, with resume.
//!
//! Protocol (one bidi stream per attempt):
//! 1. The sender sends a header chunk: `meta`, `term`, `total_size`,
//!    `checksum` (CRC32C of the whole file), no data.
//! 2. The receiver answers with the offset to resume from: the length of
//!    its staging file for this exact snapshot (same sender, index, term,
//!    size and checksum), 0 for a new transfer.
//! 3. The sender streams chunks from that offset, at most
//!    `snapshot_window` ahead of the acks; the last carries `done`.
//! 4. The receiver writes and fsyncs each chunk, then acks `next_offset`.
//!    On `done` it checks size and CRC32C, then parses the whole file
//!    (every record, the trailer, the meta against the announced one),
//!    renames it to its final staged name, calls
//!    [`PeerInbox::snapshot_staged`], and only then sends the final ack
//!    (`next_offset == total_size`). A checksum mismatch or an invalid file
//!    deletes the staging file (the next attempt starts from 0).
//!
//! A broken stream or a refusal is retried by the sender up to
//! `snapshot_attempts` times with backoff; each retry resumes from what the
//! receiver durably staged.
//!
//! The receiver treats everything from the sender as input (see
//! [`receive`]): stale terms, oversized or disk-filling transfers are
//! refused before anything is staged; idle transfers are dropped; and a
//! complete file is validated whole (format, every record, trailer, meta)
//! before it is handed to the node, so a file that fails can never reach
//! `snapshots/`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_engine_core::{NodeId, SnapshotMeta, Term};
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::raft_client::RaftClient;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use super::tonic_common::{add_peer_metadata, connect, TransportOptions};
use super::tonic_convert::{snapshot_meta_from_pb, snapshot_meta_to_pb};
use super::{PeerInbox, TransportError};

/// Senders with a transfer in progress on this node (one at a time each).
pub(crate) type ActiveTransfers = Arc<Mutex<HashSet<NodeId>>>;

/// CRC32C and length of a file, computed off the async threads.
pub async fn file_crc32c(path: &Path) -> std::io::Result<(u64, u32)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 256 << 10];
        let mut crc = 0u32;
        let mut len = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            len += n as u64;
        }
        Ok((len, crc))
    })
    .await
    .map_err(std::io::Error::other)?
}

// ---- sender -----------------------------------------------------------

/// Sends the snapshot file at `path` to the peer at `addr`, retrying and
/// resuming; resolves once the receiver has staged and verified it.
pub async fn send(
    opts: Arc<TransportOptions>,
    to: NodeId,
    addr: String,
    term: Term,
    meta: SnapshotMeta,
    path: PathBuf,
) -> Result<(), TransportError> {
    let (total_size, checksum) = file_crc32c(&path).await.map_err(|e| {
        TransportError(format!(
            "cannot read snapshot file {} to send to node {to}: {e}",
            path.display()
        ))
    })?;
    let attempts = opts.snapshot_attempts.max(1);
    let mut backoff = opts.backoff_min;
    let mut last_err = String::new();
    for attempt in 1..=attempts {
        match send_once(&opts, (to, &addr), term, &meta, &path, total_size, checksum).await {
            Ok(()) => {
                tracing::info!(
                    peer = to,
                    index = meta.last_index,
                    bytes = total_size,
                    attempt,
                    "snapshot sent"
                );
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(peer = to, attempt, error = %e, "snapshot transfer attempt failed");
                last_err = e;
                if attempt < attempts {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(opts.backoff_max);
                }
            }
        }
    }
    Err(TransportError(format!(
        "snapshot {} to node {to} at {addr} failed after {attempts} attempts: {last_err}",
        meta.last_index
    )))
}

/// One transfer attempt to `target` (node id, peer address).
async fn send_once(
    opts: &TransportOptions,
    target: (NodeId, &str),
    term: Term,
    meta: &SnapshotMeta,
    path: &Path,
    total_size: u64,
    checksum: u32,
) -> Result<(), String> {
    let (to, addr) = target;
    let channel = connect(addr, to, opts).await?;
    let mut client = RaftClient::new(channel)
        .max_decoding_message_size(opts.max_message_bytes)
        .max_encoding_message_size(opts.max_message_bytes);
    let (tx, rx) = mpsc::channel::<pb::SnapshotChunk>(opts.snapshot_window.max(1));
    tx.send(pb::SnapshotChunk {
        meta: Some(snapshot_meta_to_pb(meta)),
        term,
        total_size,
        checksum,
        offset: 0,
        data: Vec::new(),
        done: false,
    })
    .await
    .map_err(|_| "snapshot request stream closed".to_string())?;
    let mut req = Request::new(ReceiverStream::new(rx));
    add_peer_metadata(
        req.metadata_mut(),
        opts,
        to,
        super::peer_auth::PeerCall::Snapshot,
    );
    let mut acks = client
        .install_snapshot(req)
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    let first = next_ack(&mut acks, opts.snapshot_ack_timeout).await?;
    let start = first.next_offset;
    if start > total_size {
        return Err(format!(
            "receiver asked to resume at {start}, beyond the snapshot size {total_size}"
        ));
    }
    // Producer: chunks from `start`, bounded by the channel (the window).
    let chunk = opts.effective_chunk_bytes();
    let path = path.to_path_buf();
    let producer = tokio::spawn(async move {
        let mut f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        f.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| format!("seek {}: {e}", path.display()))?;
        let mut offset = start;
        loop {
            let want = ((total_size - offset) as usize).min(chunk);
            let mut data = vec![0u8; want];
            f.read_exact(&mut data)
                .await
                .map_err(|e| format!("read {} at {offset}: {e}", path.display()))?;
            let done = offset + want as u64 == total_size;
            let msg = pb::SnapshotChunk {
                offset,
                data,
                done,
                ..Default::default()
            };
            if tx.send(msg).await.is_err() {
                return Ok::<(), String>(()); // stream ended; the ack loop reports why
            }
            offset += want as u64;
            if done {
                return Ok(());
            }
        }
    });
    let result = loop {
        let ack = match next_ack(&mut acks, opts.snapshot_ack_timeout).await {
            Ok(a) => a,
            Err(e) => break Err(e),
        };
        // Only the final ack (sent after verification) reaches total_size:
        // the chunk completing the file is the one marked `done`.
        if ack.next_offset == total_size {
            break Ok(());
        }
    };
    producer.abort();
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_millis(1), producer).await {
        return Err(e);
    }
    result
}

async fn next_ack(
    acks: &mut Streaming<pb::SnapshotChunkAck>,
    timeout: Duration,
) -> Result<pb::SnapshotChunkAck, String> {
    match tokio::time::timeout(timeout, acks.message()).await {
        Err(_) => Err(format!("no snapshot ack within {timeout:?}")),
        Ok(Err(s)) => Err(status_text(&s)),
        Ok(Ok(None)) => Err("receiver closed the snapshot stream before the end".into()),
        Ok(Ok(Some(a))) if !a.error.is_empty() => Err(format!("receiver refused: {}", a.error)),
        Ok(Ok(Some(a))) => Ok(a),
    }
}

fn status_text(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

// ---- receiver ---------------------------------------------------------

/// Free space an inbound snapshot must leave on the staging filesystem:
/// 1/20 of its size, at most this much.
pub const MAX_FREE_MARGIN_BYTES: u64 = 64 << 20;

/// Stages one inbound transfer; every outcome is reported on `acks`.
///
/// Refused before anything is staged: a second transfer from the same
/// sender, a transfer sent in a term below [`PeerInbox::current_term`], an
/// announced size above `opts.snapshot_max_inbound_bytes` or one that would
/// leave less than [`free_space_margin`] free. A chunk beyond the announced
/// size is refused. A transfer idle for `opts.snapshot_idle_timeout` (no
/// chunk, or no room for an ack) ends and its staging file is deleted, so
/// its slot is released. A complete file is validated whole (checksum, then
/// every record, the trailer and the meta against the announced one) while
/// still staged; one that fails is deleted, never handed to the node.
pub(crate) async fn receive(
    from: NodeId,
    chunks: Streaming<pb::SnapshotChunk>,
    inbox: Arc<dyn PeerInbox>,
    active: ActiveTransfers,
    opts: Arc<TransportOptions>,
    acks: mpsc::Sender<Result<pb::SnapshotChunkAck, Status>>,
) {
    let inserted = active
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(from);
    if !inserted {
        let _ = acks
            .send(Ok(refusal(format!(
                "a snapshot transfer from node {from} is already in progress; retry"
            ))))
            .await;
        return;
    }
    // Removes `from` from the active set however this task ends.
    struct Release(ActiveTransfers, NodeId);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.1);
        }
    }
    let release = Release(active, from);
    let mut staging = None;
    let res = receive_inner(from, chunks, inbox.as_ref(), &opts, &acks, &mut staging).await;
    drop(release);
    if let Err(e) = res {
        if e.remove_staging {
            if let Some(p) = &staging {
                let _ = tokio::fs::remove_file(p).await;
            }
        }
        tracing::warn!(peer = from, error = %e.msg, "inbound snapshot transfer refused or failed");
        // Bounded too: a sender that reads no acks cannot hold this task.
        let _ =
            tokio::time::timeout(opts.snapshot_idle_timeout, acks.send(Ok(refusal(e.msg)))).await;
    }
}

/// Why a transfer ended early; `remove_staging`: its staging file must go
/// (it cannot be resumed: idle, invalid content).
struct RecvError {
    msg: String,
    remove_staging: bool,
}

impl From<String> for RecvError {
    fn from(msg: String) -> Self {
        RecvError {
            msg,
            remove_staging: false,
        }
    }
}

impl From<&str> for RecvError {
    fn from(msg: &str) -> Self {
        msg.to_string().into()
    }
}

fn discard(msg: String) -> RecvError {
    RecvError {
        msg,
        remove_staging: true,
    }
}

fn refusal(error: String) -> pb::SnapshotChunkAck {
    pb::SnapshotChunkAck {
        next_offset: 0,
        error,
    }
}

fn staging_prefix(from: NodeId) -> String {
    format!("incoming-from{from}-")
}

/// Free space an inbound snapshot must leave on a filesystem of `total`
/// bytes: 1/20 of it, at most [`MAX_FREE_MARGIN_BYTES`] (the WAL and the
/// state machine need room to keep serving writes). Capped, not floored: on
/// a small disk a fixed floor would refuse every snapshot, and a follower
/// behind the leader's log could then never catch up.
pub fn free_space_margin(total: u64) -> u64 {
    (total / 20).min(MAX_FREE_MARGIN_BYTES)
}

/// The next chunk, or an error once `idle` passes without one.
async fn next_chunk(
    chunks: &mut Streaming<pb::SnapshotChunk>,
    idle: Duration,
    at: u64,
) -> Result<Option<pb::SnapshotChunk>, RecvError> {
    match tokio::time::timeout(idle, chunks.message()).await {
        Err(_) => Err(discard(format!(
            "no snapshot chunk for {idle:?} at offset {at} (snapshot.inbound_idle_timeout_ms); \
             transfer dropped and its staging file deleted"
        ))),
        Ok(Err(s)) => Err(status_text(&s).into()),
        Ok(Ok(c)) => Ok(c),
    }
}

async fn receive_inner(
    from: NodeId,
    mut chunks: Streaming<pb::SnapshotChunk>,
    inbox: &dyn PeerInbox,
    opts: &TransportOptions,
    acks: &mpsc::Sender<Result<pb::SnapshotChunkAck, Status>>,
    staging: &mut Option<PathBuf>,
) -> Result<(), RecvError> {
    let idle = opts.snapshot_idle_timeout;
    let header = match next_chunk(&mut chunks, idle, 0).await? {
        Some(h) => h,
        None => return Ok(()),
    };
    let meta = snapshot_meta_from_pb(
        header
            .meta
            .as_ref()
            .ok_or("the first snapshot chunk must carry meta, total_size and checksum")?,
    )
    .map_err(|e| e.to_string())?;
    let term = header.term;
    let total = header.total_size;
    let checksum = header.checksum;
    let current = inbox.current_term();
    if term < current {
        return Err(format!(
            "snapshot {} from node {from} was sent in term {term}, but this node is at term \
             {current}: a stale leader's transfer, refused before staging",
            meta.last_index
        )
        .into());
    }
    let max = opts.snapshot_max_inbound_bytes;
    if total > max {
        return Err(format!(
            "snapshot {} from node {from} announces {total} bytes, more than \
             snapshot.max_inbound_bytes = {max} on node {}: refused before staging; raise \
             snapshot.max_inbound_bytes on this node if snapshots this large are expected",
            meta.last_index, opts.local_id
        )
        .into());
    }
    let dir = inbox.snapshot_staging_dir();
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(d_engine_storage::data_dir::DIR_MODE)
        .create(&dir)
        .await
        .map_err(|e| format!("cannot create staging dir {}: {e}", dir.display()))?;
    let name = format!(
        "{}{}-{}-{total}-{checksum:08x}.part",
        staging_prefix(from),
        meta.last_index,
        meta.last_term
    );
    let part = dir.join(&name);
    remove_stale_parts(&dir, from, &name).await;

    // Disk space: what is still to come must fit, leaving a margin.
    let have = match tokio::fs::metadata(&part).await {
        Ok(m) if m.len() <= total => m.len(),
        _ => 0,
    };
    let space_dir = dir.clone();
    let space =
        tokio::task::spawn_blocking(move || d_engine_storage::data_dir::fs_space(&space_dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read the free space of {}: {e}", dir.display()))?;
    let margin = free_space_margin(space.total);
    let needed = total - have;
    if needed.saturating_add(margin) > space.available {
        return Err(format!(
            "snapshot {} from node {from} needs {needed} more bytes, but the filesystem of {} \
             has {} bytes free and {margin} must stay free: refused before staging; free disk \
             space on node {}",
            meta.last_index,
            dir.display(),
            space.available,
            opts.local_id
        )
        .into());
    }

    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(d_engine_storage::data_dir::FILE_MODE)
        .open(&part)
        .await
        .map_err(|e| format!("cannot open staging file {}: {e}", part.display()))?;
    *staging = Some(part.clone());
    let mut len = file
        .metadata()
        .await
        .map_err(|e| format!("stat {}: {e}", part.display()))?
        .len();
    if len > total {
        file.set_len(0)
            .await
            .map_err(|e| format!("truncate {}: {e}", part.display()))?;
        len = 0;
    }
    send_ack(acks, len, idle).await?;
    if len > 0 {
        tracing::info!(
            peer = from,
            index = meta.last_index,
            resume_at = len,
            "resuming snapshot transfer"
        );
    }
    // Data may also ride on the header chunk.
    let mut pending = Some(header);
    loop {
        let is_header = pending.is_some();
        let chunk = match pending.take() {
            Some(c) => c,
            None => match next_chunk(&mut chunks, idle, len).await? {
                Some(c) => c,
                None => return Err(format!("stream ended at offset {len} of {total}").into()),
            },
        };
        if !chunk.data.is_empty() {
            let end = chunk.offset.saturating_add(chunk.data.len() as u64);
            if chunk.offset > len || end > total {
                return Err(format!(
                    "chunk at offset {} ({} bytes) does not fit: expected offset {len}, \
                     announced size {total}",
                    chunk.offset,
                    chunk.data.len()
                )
                .into());
            }
            if end > len {
                let skip = (len - chunk.offset) as usize;
                file.seek(std::io::SeekFrom::Start(len))
                    .await
                    .map_err(|e| format!("seek {}: {e}", part.display()))?;
                file.write_all(&chunk.data[skip..])
                    .await
                    .map_err(|e| format!("write {}: {e}", part.display()))?;
                file.sync_data()
                    .await
                    .map_err(|e| format!("fsync {}: {e}", part.display()))?;
                len = end;
            }
        }
        if chunk.done {
            break;
        }
        // The header was answered with the resume offset already.
        if !is_header || !chunk.data.is_empty() {
            send_ack(acks, len, idle).await?;
        }
    }
    if len != total {
        return Err(format!("transfer marked done at {len} bytes, announced {total}").into());
    }
    drop(file);
    let (got_len, got_crc) = file_crc32c(&part)
        .await
        .map_err(|e| format!("cannot read back {}: {e}", part.display()))?;
    if got_len != total || got_crc != checksum {
        return Err(discard(format!(
            "snapshot checksum mismatch: announced crc32c {checksum:08x} over {total} bytes, \
             received {got_crc:08x} over {got_len} bytes; staging file deleted, resend from 0"
        )));
    }
    // Validate the whole file while it is still staged: only a snapshot
    // that parses completely and is the one announced reaches the node.
    let check = part.clone();
    let verified = tokio::task::spawn_blocking(move || {
        d_engine_storage::snapshot::verify_snapshot_file(&check)
    })
    .await
    .map_err(|e| e.to_string())?;
    match verified {
        Err(e) => {
            return Err(discard(format!(
                "snapshot {} from node {from} has the announced checksum but is not a valid \
                 snapshot ({e}); staging file deleted",
                meta.last_index
            )))
        }
        Ok(found) if found != meta => {
            return Err(discard(format!(
                "snapshot from node {from} was announced as index {} term {} but the file \
                 holds index {} term {} (or another membership); staging file deleted",
                meta.last_index, meta.last_term, found.last_index, found.last_term
            )))
        }
        Ok(_) => {}
    }
    let staged = dir.join(format!(
        "staged-from{from}-{}-{}.snap",
        meta.last_index, meta.last_term
    ));
    tokio::fs::rename(&part, &staged)
        .await
        .map_err(|e| format!("rename {} -> {}: {e}", part.display(), staged.display()))?;
    if let Ok(d) = tokio::fs::File::open(&dir).await {
        let _ = d.sync_all().await;
    }
    tracing::info!(
        peer = from,
        index = meta.last_index,
        bytes = total,
        "snapshot staged and validated"
    );
    inbox.snapshot_staged(from, term, meta, staged);
    send_ack(acks, total, idle).await?;
    Ok(())
}

/// Sends an ack; a sender that leaves no room for it for `idle` is dropped.
async fn send_ack(
    acks: &mpsc::Sender<Result<pb::SnapshotChunkAck, Status>>,
    next_offset: u64,
    idle: Duration,
) -> Result<(), RecvError> {
    let ack = Ok(pb::SnapshotChunkAck {
        next_offset,
        error: String::new(),
    });
    match tokio::time::timeout(idle, acks.send(ack)).await {
        Err(_) => Err(discard(format!(
            "the sender read no snapshot ack for {idle:?} at offset {next_offset}; transfer \
             dropped and its staging file deleted"
        ))),
        Ok(Err(_)) => Err("sender went away".to_string().into()),
        Ok(Ok(())) => Ok(()),
    }
}

/// Deletes older partial transfers from the same sender (a new snapshot
/// supersedes them), keeping `keep`.
async fn remove_stale_parts(dir: &Path, from: NodeId, keep: &str) {
    let prefix = staging_prefix(from);
    let Ok(mut rd) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(e)) = rd.next_entry().await {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".part") && name != keep {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
    }
}
