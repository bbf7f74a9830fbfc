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
//! The files are storage's: this module only moves bytes between the gRPC
//! stream and `d_engine_storage::snapshot::transfer` ([`SnapshotReader`] on
//! the sender; [`SnapshotStaging`] / `SnapshotReceiver` on the receiver),
//! which owns the staging file, resume offsets, the size and free-space
//! limits, the checksum and the validation of the complete file. What stays
//! here is the stream: the term check against [`PeerInbox::current_term`],
//! one transfer per sender, the idle timeout, acks and retries.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_engine_core::{NodeId, SnapshotMeta, Term};
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::raft_client::RaftClient;
use d_engine_storage::snapshot::{
    InboundLimits, InboundOffer, SnapshotReader, SnapshotReceiver, SnapshotStaging,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use super::tonic_common::{add_peer_metadata, connect, TransportOptions};
use super::tonic_convert::{snapshot_meta_from_pb, snapshot_meta_to_pb};
use super::{PeerInbox, TransportError};

/// Senders with a transfer in progress on this node (one at a time each).
pub(crate) type ActiveTransfers = Arc<Mutex<HashSet<NodeId>>>;

pub use d_engine_storage::snapshot::{free_space_margin, MAX_FREE_MARGIN_BYTES};

/// CRC32C and length of a file, computed off the async threads.
pub async fn file_crc32c(path: &Path) -> std::io::Result<(u64, u32)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || d_engine_storage::snapshot::file_crc32c(&path))
        .await
        .map_err(std::io::Error::other)?
}

/// Runs storage's blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("snapshot file task failed: {e}"))
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
    let open = {
        let path = path.clone();
        blocking(move || SnapshotReader::open(&path).map_err(|e| e.to_string())).await
    };
    let reader = Arc::new(open.and_then(|r| r).map_err(|e| {
        TransportError(format!(
            "cannot read snapshot file {} to send to node {to}: {e}",
            path.display()
        ))
    })?);
    let total_size = reader.len();
    let attempts = opts.snapshot_attempts.max(1);
    let mut backoff = opts.backoff_min;
    let mut last_err = String::new();
    for attempt in 1..=attempts {
        match send_once(&opts, (to, &addr), term, &meta, &reader).await {
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
    reader: &Arc<SnapshotReader>,
) -> Result<(), String> {
    let (to, addr) = target;
    let (total_size, checksum) = (reader.len(), reader.checksum());
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
    let reader = reader.clone();
    let producer = tokio::spawn(async move {
        let mut offset = start;
        loop {
            let r = reader.clone();
            let data = blocking(move || r.read_chunk(offset, chunk))
                .await?
                .map_err(|e| e.to_string())?;
            let want = data.len() as u64;
            let done = offset + want == total_size;
            let msg = pb::SnapshotChunk {
                offset,
                data,
                done,
                ..Default::default()
            };
            if tx.send(msg).await.is_err() {
                return Ok::<(), String>(()); // stream ended; the ack loop reports why
            }
            offset += want;
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

/// Stages one inbound transfer; every outcome is reported on `acks`.
///
/// Refused here, before storage is asked for anything: a second transfer
/// from the same sender, a transfer sent in a term below
/// [`PeerInbox::current_term`]. Storage then refuses an announced size
/// above `opts.snapshot_max_inbound_bytes` or one that would leave less
/// than [`free_space_margin`] free, and a chunk beyond the announced size,
/// and validates the complete file while still staged (one that fails is
/// deleted, never handed to the node). A transfer idle for
/// `opts.snapshot_idle_timeout` (no chunk, or no room for an ack) ends and
/// its staging file is discarded, so its slot is released.
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
    let mut receiver = None;
    let res = receive_inner(from, chunks, inbox.as_ref(), &opts, &acks, &mut receiver).await;
    drop(release);
    if let Err(e) = res {
        if e.remove_staging {
            if let Some(r) = receiver.take() {
                let _ = blocking(move || r.discard()).await;
            }
        }
        tracing::warn!(peer = from, error = %e.msg, "inbound snapshot transfer refused or failed");
        // Bounded too: a sender that reads no acks cannot hold this task.
        let _ =
            tokio::time::timeout(opts.snapshot_idle_timeout, acks.send(Ok(refusal(e.msg)))).await;
    }
}

/// Why a transfer ended early; `remove_staging`: its staging file must go
/// (it cannot be resumed: the sender went idle).
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

/// Runs one transfer; the receiver storage opened is left in `receiver`
/// while the stream is awaited, so [`receive`] can discard it.
async fn receive_inner(
    from: NodeId,
    mut chunks: Streaming<pb::SnapshotChunk>,
    inbox: &dyn PeerInbox,
    opts: &TransportOptions,
    acks: &mpsc::Sender<Result<pb::SnapshotChunkAck, Status>>,
    receiver: &mut Option<SnapshotReceiver>,
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
    let current = inbox.current_term();
    if term < current {
        return Err(format!(
            "snapshot {} from node {from} was sent in term {term}, but this node is at term \
             {current}: a stale leader's transfer, refused before staging",
            meta.last_index
        )
        .into());
    }
    let total = header.total_size;
    let offer = InboundOffer {
        from,
        meta,
        total_size: total,
        checksum: header.checksum,
    };
    let limits = InboundLimits {
        local_id: opts.local_id,
        max_bytes: opts.snapshot_max_inbound_bytes,
    };
    let staging = SnapshotStaging::new(inbox.snapshot_staging_dir());
    let r = blocking(move || staging.begin(offer, limits))
        .await?
        .map_err(|e| e.to_string())?;
    let mut len = r.resume_offset();
    let index = r.offer().meta.last_index;
    *receiver = Some(r);
    send_ack(acks, len, idle).await?;
    if len > 0 {
        tracing::info!(
            peer = from,
            index,
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
        let had_data = !chunk.data.is_empty();
        if had_data {
            let mut r = receiver.take().ok_or("snapshot receiver lost")?;
            let (offset, data) = (chunk.offset, chunk.data);
            let (r, res) = blocking(move || {
                let res = r.accept(offset, &data);
                (r, res)
            })
            .await?;
            *receiver = Some(r);
            len = res.map_err(|e| e.to_string())?;
        }
        if chunk.done {
            break;
        }
        // The header was answered with the resume offset already.
        if !is_header || had_data {
            send_ack(acks, len, idle).await?;
        }
    }
    let r = receiver.take().ok_or("snapshot receiver lost")?;
    let staged = blocking(move || r.finish())
        .await?
        .map_err(|e| e.to_string())?;
    tracing::info!(
        peer = from,
        index,
        bytes = total,
        "snapshot staged and validated"
    );
    inbox.snapshot_staged(from, term, staged.meta, staged.path);
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
