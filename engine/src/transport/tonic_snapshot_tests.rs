//! Inbound snapshot transfers treated as untrusted input (issue 16,
//! finding 3): stale terms, sizes beyond the limit or the free disk space,
//! bytes beyond the announced size, stalled streams, and files whose
//! checksum is right but whose content is not the announced snapshot.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use d_engine_core::{Message, NodeId, SnapshotMeta, Term};
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::raft_client::RaftClient;
use d_engine_storage::sm::{KeyValue, SnapshotRecord};
use d_engine_storage::snapshot::format::SnapshotWriter;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::tonic_common::{CLUSTER_ID_HEADER, FROM_HEADER};
use super::tonic_snapshot::file_crc32c;
use super::*;

/// Writes a valid snapshot file for `meta` at `dir/source.snap`, padded with
/// key-value records to at least `min_len` bytes.
pub(super) fn write_snapshot(dir: &Path, meta: &SnapshotMeta, min_len: usize) -> PathBuf {
    let p = dir.join("source.snap");
    let f = std::fs::File::create(&p).unwrap();
    let mut w = SnapshotWriter::new(f, &p, meta).unwrap();
    let mut written = 0;
    let mut i = 0u64;
    while written < min_len {
        let value = vec![(i % 251) as u8; 4000];
        written += value.len() + 64;
        w.record(&SnapshotRecord::Kv(KeyValue {
            key: Bytes::from(format!("key-{i:08}")),
            value: Bytes::from(value),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            expires_at_ms: None,
            lease: 0,
        }))
        .unwrap();
        i += 1;
    }
    w.finish().unwrap();
    p
}

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_index: index,
        last_term: 2,
        membership: Default::default(),
    }
}

type Staged = (NodeId, Term, SnapshotMeta, PathBuf);

struct TestInbox {
    staging: PathBuf,
    staged: Mutex<Vec<Staged>>,
    term: AtomicU64,
}

impl PeerInbox for TestInbox {
    fn deliver(&self, _msg: Message) {}
    fn unreachable(&self, _peer: NodeId) {}
    fn snapshot_staging_dir(&self) -> PathBuf {
        self.staging.clone()
    }
    fn snapshot_staged(&self, from: NodeId, term: Term, meta: SnapshotMeta, path: PathBuf) {
        self.staged.lock().unwrap().push((from, term, meta, path));
    }
    fn current_term(&self) -> Term {
        self.term.load(Ordering::SeqCst)
    }
}

struct Node {
    transport: TonicTransport,
    inbox: Arc<TestInbox>,
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn opts(id: NodeId) -> TransportOptions {
    let mut o = TransportOptions::new(id, "test-cluster");
    o.backoff_min = Duration::from_millis(10);
    o.backoff_max = Duration::from_millis(100);
    o.snapshot_chunk_bytes = 64 << 10;
    o.snapshot_attempts = 1;
    o
}

async fn start_node(
    o: TransportOptions,
    listener: TcpListener,
    peers: &[(NodeId, String)],
) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Arc::new(TestInbox {
        staging: dir.path().join("staging"),
        staged: Mutex::new(Vec::new()),
        term: AtomicU64::new(0),
    });
    let addr = listener.local_addr().unwrap().to_string();
    let peers: BTreeMap<NodeId, String> = peers.iter().cloned().collect();
    let transport = TonicTransport::new(o, inbox.clone(), peers);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_peers(listener, transport.raft_service(), async {
        let _ = stopped.await;
    }));
    Node {
        transport,
        inbox,
        addr,
        stop: Some(stop),
        _dir: dir,
    }
}

/// Node 1 (a sender) and node 2 (the receiver, with `receiver` options);
/// node 2 also accepts senders 3 and 4 (raw test clients).
async fn pair(receiver: TransportOptions) -> (Node, Node) {
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a1, a2) = (
        l1.local_addr().unwrap().to_string(),
        l2.local_addr().unwrap().to_string(),
    );
    let n1 = start_node(opts(1), l1, &[(2, a2)]).await;
    let others = [
        (1, a1),
        (3, "127.0.0.1:1".into()),
        (4, "127.0.0.1:1".into()),
    ];
    let n2 = start_node(receiver, l2, &others).await;
    (n1, n2)
}

/// Names of the files in the receiver's staging dir (none if it does not exist).
fn staging_files(n: &Node) -> Vec<String> {
    match std::fs::read_dir(&n.inbox.staging) {
        Err(_) => Vec::new(),
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
    }
}

/// A raw InstallSnapshot call from `from`: the header is sent, the chunk
/// sender and the ack stream are returned.
async fn raw_transfer(
    addr: &str,
    from: NodeId,
    header: pb::SnapshotChunk,
) -> (
    mpsc::Sender<pb::SnapshotChunk>,
    tonic::Streaming<pb::SnapshotChunkAck>,
) {
    let mut c = RaftClient::connect(format!("http://{addr}")).await.unwrap();
    let (tx, rx) = mpsc::channel(8);
    tx.send(header).await.unwrap();
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert(CLUSTER_ID_HEADER, "test-cluster".parse().unwrap());
    req.metadata_mut()
        .insert(FROM_HEADER, from.to_string().parse().unwrap());
    let acks = c.install_snapshot(req).await.unwrap().into_inner();
    (tx, acks)
}

fn header(index: u64, term: Term, total_size: u64, checksum: u32) -> pb::SnapshotChunk {
    pb::SnapshotChunk {
        meta: Some(super::tonic_convert::snapshot_meta_to_pb(&meta(index))),
        term,
        total_size,
        checksum,
        ..Default::default()
    }
}

async fn next_ack(acks: &mut tonic::Streaming<pb::SnapshotChunkAck>) -> pb::SnapshotChunkAck {
    tokio::time::timeout(Duration::from_secs(10), acks.message())
        .await
        .expect("no ack within 10s")
        .expect("stream error")
        .expect("stream ended")
}

#[tokio::test]
async fn a_valid_snapshot_is_staged_with_private_modes() {
    let (n1, n2) = pair(opts(2)).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = write_snapshot(src_dir.path(), &meta(77), 300_000);
    n1.transport
        .send_snapshot(2, 5, meta(77), src.clone())
        .await
        .unwrap();
    let staged = n2.inbox.staged.lock().unwrap().clone();
    assert_eq!(staged.len(), 1);
    assert_eq!(
        std::fs::read(&staged[0].3).unwrap(),
        std::fs::read(&src).unwrap()
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&n2.inbox.staging), 0o700, "staging dir");
    assert_eq!(mode(&staged[0].3), 0o600, "staged file");
}

#[tokio::test]
async fn a_transfer_from_a_stale_term_is_refused_before_anything_is_staged() {
    let (n1, n2) = pair(opts(2)).await;
    n2.inbox.term.store(7, Ordering::SeqCst);
    let src_dir = tempfile::tempdir().unwrap();
    let src = write_snapshot(src_dir.path(), &meta(40), 100_000);
    let err = n1
        .transport
        .send_snapshot(2, 5, meta(40), src.clone())
        .await
        .unwrap_err();
    assert!(
        err.0.contains("sent in term 5") && err.0.contains("at term 7"),
        "{err}"
    );
    assert!(n2.inbox.staged.lock().unwrap().is_empty());
    assert_eq!(staging_files(&n2), Vec::<String>::new());
    // The current term itself is fine.
    n1.transport
        .send_snapshot(2, 7, meta(40), src)
        .await
        .expect("a transfer in the receiver's term is accepted");
}

#[tokio::test]
async fn a_size_above_the_configured_limit_is_refused_before_staging() {
    let mut o = opts(2);
    o.snapshot_max_inbound_bytes = 1 << 20;
    let (n1, n2) = pair(o).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = write_snapshot(src_dir.path(), &meta(9), 2 << 20);
    let err = n1
        .transport
        .send_snapshot(2, 1, meta(9), src)
        .await
        .unwrap_err();
    assert!(
        err.0.contains("snapshot.max_inbound_bytes = 1048576"),
        "{err}"
    );
    assert_eq!(staging_files(&n2), Vec::<String>::new());
}

#[tokio::test]
async fn a_size_beyond_the_free_disk_space_is_refused_before_staging() {
    let mut o = opts(2);
    o.snapshot_max_inbound_bytes = u64::MAX;
    let (_n1, n2) = pair(o).await;
    // 1 EiB: no test machine has that much free.
    let (_tx, mut acks) = raw_transfer(&n2.addr, 3, header(9, 1, 1 << 60, 0)).await;
    let ack = next_ack(&mut acks).await;
    assert!(
        ack.error.contains("must stay free") && ack.error.contains("free disk space"),
        "{ack:?}"
    );
    assert!(!staging_files(&n2).iter().any(|f| f.ends_with(".part")));
}

#[tokio::test]
async fn bytes_beyond_the_announced_size_are_refused() {
    let (_n1, n2) = pair(opts(2)).await;
    let (tx, mut acks) = raw_transfer(&n2.addr, 3, header(9, 1, 1000, 0)).await;
    assert_eq!(next_ack(&mut acks).await.next_offset, 0);
    tx.send(pb::SnapshotChunk {
        offset: 0,
        data: vec![7u8; 2000],
        done: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let ack = next_ack(&mut acks).await;
    assert!(ack.error.contains("announced size 1000"), "{ack:?}");
    assert!(n2.inbox.staged.lock().unwrap().is_empty());
}

#[tokio::test]
async fn stalled_transfers_release_their_slots_and_staging_files() {
    let mut o = opts(2);
    o.max_inbound_snapshots = 2;
    o.snapshot_idle_timeout = Duration::from_millis(300);
    let (n1, n2) = pair(o).await;
    // Two senders take both inbound slots, send a header and a first chunk,
    // then stall with their streams open.
    let mut stalled = Vec::new();
    for from in [3, 4] {
        let (tx, mut acks) = raw_transfer(&n2.addr, from, header(9, 1, 10_000, 0)).await;
        assert_eq!(next_ack(&mut acks).await.next_offset, 0);
        tx.send(pb::SnapshotChunk {
            offset: 0,
            data: vec![1u8; 4000],
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(next_ack(&mut acks).await.next_offset, 4000);
        stalled.push((tx, acks));
    }
    assert_eq!(
        staging_files(&n2)
            .iter()
            .filter(|f| f.ends_with(".part"))
            .count(),
        2
    );
    // A third transfer is refused while they hold the slots, and gets
    // through once the idle timeout frees them (bounded retries).
    let src_dir = tempfile::tempdir().unwrap();
    let src = write_snapshot(src_dir.path(), &meta(50), 100_000);
    let started = std::time::Instant::now();
    let mut sent = Err(TransportError(String::new()));
    for _ in 0..40 {
        sent = n1
            .transport
            .send_snapshot(2, 1, meta(50), src.clone())
            .await;
        if sent.is_ok() || started.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sent.expect("the stalled transfers never released their slots");
    assert_eq!(n2.inbox.staged.lock().unwrap().len(), 1);
    // The stalled senders were told why, and their files are gone.
    for (_tx, acks) in &mut stalled {
        let ack = next_ack(acks).await;
        assert!(ack.error.contains("inbound_idle_timeout_ms"), "{ack:?}");
    }
    let parts: Vec<_> = staging_files(&n2)
        .into_iter()
        .filter(|f| f.ends_with(".part"))
        .collect();
    assert!(parts.is_empty(), "{parts:?}");
}

#[tokio::test]
async fn a_file_with_the_right_checksum_but_not_a_snapshot_is_refused_and_deleted() {
    let (n1, n2) = pair(opts(2)).await;
    let src_dir = tempfile::tempdir().unwrap();
    // Random bytes: the sender computes their CRC, so the checksum matches.
    let junk = src_dir.path().join("junk.snap");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&junk, &data).unwrap();
    let err = n1
        .transport
        .send_snapshot(2, 1, meta(11), junk)
        .await
        .unwrap_err();
    assert!(err.0.contains("not a valid snapshot"), "{err}");
    assert!(n2.inbox.staged.lock().unwrap().is_empty());
    assert_eq!(staging_files(&n2), Vec::<String>::new());

    // A valid snapshot file announced as another one.
    let real = write_snapshot(src_dir.path(), &meta(12), 50_000);
    let (len, crc) = file_crc32c(&real).await.unwrap();
    assert!(len > 0 && crc != 0);
    let err = n1
        .transport
        .send_snapshot(2, 1, meta(13), real)
        .await
        .unwrap_err();
    assert!(
        err.0.contains("announced as index 13") && err.0.contains("holds index 12"),
        "{err}"
    );
    assert!(n2.inbox.staged.lock().unwrap().is_empty());
    assert_eq!(staging_files(&n2), Vec::<String>::new());
}
