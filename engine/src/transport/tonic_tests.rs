//! Tests of the tonic peer transport over real sockets on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_engine_core::{Message, MessageBody, NodeId, SnapshotMeta, Term};
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::raft_client::RaftClient;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::tonic_common::{CLUSTER_ID_HEADER, FROM_HEADER};
use super::tonic_snapshot::file_crc32c;
use super::*;

/// A unique temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "dengine-transport-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Staged = (NodeId, Term, SnapshotMeta, PathBuf);

struct TestInbox {
    delivered: mpsc::UnboundedSender<Message>,
    unreachable: AtomicUsize,
    staging: PathBuf,
    staged: Mutex<Vec<Staged>>,
}

impl PeerInbox for TestInbox {
    fn deliver(&self, msg: Message) {
        let _ = self.delivered.send(msg);
    }
    fn unreachable(&self, _peer: NodeId) {
        self.unreachable.fetch_add(1, Ordering::SeqCst);
    }
    fn snapshot_staging_dir(&self) -> PathBuf {
        self.staging.clone()
    }
    fn snapshot_staged(&self, from: NodeId, term: Term, meta: SnapshotMeta, path: PathBuf) {
        self.staged.lock().unwrap().push((from, term, meta, path));
    }
}

fn inbox(staging: &Path) -> (Arc<TestInbox>, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Arc::new(TestInbox {
            delivered: tx,
            unreachable: AtomicUsize::new(0),
            staging: staging.to_path_buf(),
            staged: Mutex::new(Vec::new()),
        }),
        rx,
    )
}

fn heartbeat(from: NodeId, to: NodeId, seq: u64) -> Message {
    Message {
        from,
        to,
        term: 3,
        body: MessageBody::AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
            heartbeat_seq: seq,
        },
    }
}

fn opts(id: NodeId) -> TransportOptions {
    let mut o = TransportOptions::new(id, "test-cluster");
    o.backoff_min = Duration::from_millis(10);
    o.backoff_max = Duration::from_millis(100);
    o.snapshot_chunk_bytes = 64 << 10;
    o
}

/// A node: its transport plus its serving peer port.
struct Node {
    transport: TonicTransport,
    inbox: Arc<TestInbox>,
    rx: mpsc::UnboundedReceiver<Message>,
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start_node(
    id: NodeId,
    o: TransportOptions,
    listener: TcpListener,
    peers: BTreeMap<NodeId, String>,
) -> Node {
    let dir = TempDir::new("node");
    let (ib, rx) = inbox(&dir.0.join("staging"));
    let addr = listener.local_addr().unwrap().to_string();
    assert_eq!(o.local_id, id);
    let transport = TonicTransport::new(o, ib.clone(), peers);
    let (stop, stopped) = oneshot::channel::<()>();
    let svc = transport.raft_service();
    tokio::spawn(serve_peers(listener, svc, async {
        let _ = stopped.await;
    }));
    Node {
        transport,
        inbox: ib,
        rx,
        addr,
        stop: Some(stop),
        _dir: dir,
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no message within 10s")
        .expect("inbox closed")
}

async fn pair() -> (Node, Node) {
    let (l1, l2) = (listener().await, listener().await);
    let (a1, a2) = (
        l1.local_addr().unwrap().to_string(),
        l2.local_addr().unwrap().to_string(),
    );
    let n1 = start_node(1, opts(1), l1, [(2, a2)].into()).await;
    let n2 = start_node(2, opts(2), l2, [(1, a1)].into()).await;
    (n1, n2)
}

#[tokio::test]
async fn messages_arrive_in_order_in_both_directions() {
    let (mut n1, mut n2) = pair().await;
    for seq in 0..500 {
        n1.transport.send(heartbeat(1, 2, seq));
    }
    for seq in 0..500 {
        assert_eq!(recv(&mut n2.rx).await, heartbeat(1, 2, seq));
    }
    n2.transport.send(heartbeat(2, 1, 7));
    assert_eq!(recv(&mut n1.rx).await, heartbeat(2, 1, 7));
}

#[tokio::test]
async fn sending_to_an_unknown_peer_reports_it_unreachable() {
    let (n1, _n2) = pair().await;
    n1.transport.send(heartbeat(1, 9, 0));
    assert!(n1.inbox.unreachable.load(Ordering::SeqCst) >= 1);
}

async fn raw_stream_call(
    addr: &str,
    cluster: &str,
    from: &str,
    msgs: Vec<pb::RaftMessage>,
) -> Result<(), tonic::Status> {
    let mut c = RaftClient::connect(format!("http://{addr}")).await.unwrap();
    let mut req = tonic::Request::new(tokio_stream::iter(msgs));
    req.metadata_mut()
        .insert(CLUSTER_ID_HEADER, cluster.parse().unwrap());
    req.metadata_mut()
        .insert(FROM_HEADER, from.parse().unwrap());
    c.stream(req).await.map(|_| ())
}

#[tokio::test]
async fn calls_from_another_cluster_or_an_unknown_node_are_refused() {
    let (_n1, mut n2) = pair().await;
    let msg = super::tonic_convert::message_to_pb(&heartbeat(1, 2, 0));
    let e = raw_stream_call(&n2.addr, "other", "1", vec![msg.clone()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("cluster 'other'"), "{}", e.message());

    let e = raw_stream_call(&n2.addr, "test-cluster", "3", vec![msg.clone()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message().contains("node 3 is not a member"),
        "{}",
        e.message()
    );

    // A message claiming another sender than the stream's is refused.
    let forged = super::tonic_convert::message_to_pb(&heartbeat(5, 2, 0));
    let e = raw_stream_call(&n2.addr, "test-cluster", "1", vec![forged])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // A message addressed to someone else.
    let misrouted = super::tonic_convert::message_to_pb(&heartbeat(1, 7, 0));
    let e = raw_stream_call(&n2.addr, "test-cluster", "1", vec![misrouted])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("addressed to node 7"),
        "{}",
        e.message()
    );

    // Nothing reached the inbox; a valid call still works.
    raw_stream_call(&n2.addr, "test-cluster", "1", vec![msg])
        .await
        .unwrap();
    assert_eq!(recv(&mut n2.rx).await, heartbeat(1, 2, 0));
    assert!(n2.rx.try_recv().is_err());
}

#[tokio::test]
async fn garbage_on_the_peer_port_does_not_stop_the_node() {
    let (n1, mut n2) = pair().await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xffu8; 4096][..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\xff\xff\xff\xff"[..],
    ] {
        let mut s = tokio::net::TcpStream::connect(&n2.addr).await.unwrap();
        let _ = s.write_all(garbage).await;
        let _ = s.shutdown().await;
    }
    n1.transport.send(heartbeat(1, 2, 42));
    assert_eq!(recv(&mut n2.rx).await, heartbeat(1, 2, 42));
}

#[tokio::test]
async fn the_link_reconnects_when_the_peer_comes_back() {
    // Reserve a port for node 2, then close it: node 2 is "down".
    let l2 = listener().await;
    let a2 = l2.local_addr().unwrap();
    drop(l2);
    let n1 = start_node(1, opts(1), listener().await, [(2, a2.to_string())].into()).await;
    n1.transport.send(heartbeat(1, 2, 0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while n1.inbox.unreachable.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reported unreachable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Node 2 comes up on the same port.
    let l2 = TcpListener::bind(a2).await.unwrap();
    let mut n2 = start_node(2, opts(2), l2, [(1, n1.addr.clone())].into()).await;
    // Keep sending (messages sent while down are dropped) until one arrives.
    let mut seq = 1;
    let got = loop {
        n1.transport.send(heartbeat(1, 2, seq));
        seq += 1;
        match tokio::time::timeout(Duration::from_millis(50), n2.rx.recv()).await {
            Ok(Some(m)) => break m,
            _ => assert!(seq < 400, "no message after the peer came back"),
        }
    };
    assert_eq!(got.from, 1);
}

/// A valid snapshot file for `meta(index)` of at least `len` bytes (the
/// receiver validates what it stages).
fn write_test_file(dir: &Path, len: usize, index: u64) -> PathBuf {
    super::tonic_snapshot_tests::write_snapshot(dir, &meta(index), len)
}

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_index: index,
        last_term: 2,
        membership: Default::default(),
    }
}

#[tokio::test]
async fn a_snapshot_is_chunked_staged_and_verified() {
    let (n1, n2) = pair().await;
    let src_dir = TempDir::new("src");
    let src = write_test_file(&src_dir.0, (1 << 20) + 12345, 77);
    n1.transport
        .send_snapshot(2, 5, meta(77), src.clone())
        .await
        .unwrap();
    let staged = n2.inbox.staged.lock().unwrap().clone();
    assert_eq!(staged.len(), 1);
    let (from, term, m, path) = &staged[0];
    assert_eq!((*from, *term, m.clone()), (1, 5, meta(77)));
    assert_eq!(std::fs::read(path).unwrap(), std::fs::read(&src).unwrap());
    // No partial files left behind.
    let left: Vec<_> = std::fs::read_dir(&n2.inbox.staging)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn an_empty_file_is_refused_as_not_a_snapshot() {
    let (n1, n2) = pair().await;
    let src_dir = TempDir::new("src");
    let src = src_dir.0.join("empty.snap");
    std::fs::write(&src, b"").unwrap();
    let err = n1
        .transport
        .send_snapshot(2, 1, meta(1), src)
        .await
        .unwrap_err();
    assert!(err.0.contains("not a valid snapshot"), "{err}");
    assert!(n2.inbox.staged.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_receiver_resumes_from_what_it_staged() {
    let (_n1, n2) = pair().await;
    let src_dir = TempDir::new("src");
    let src = write_test_file(&src_dir.0, 300_000, 9);
    let bytes = std::fs::read(&src).unwrap();
    let (len, crc) = file_crc32c(&src).await.unwrap();
    // A previous attempt staged the first 100,000 bytes.
    std::fs::create_dir_all(&n2.inbox.staging).unwrap();
    let part = n2
        .inbox
        .staging
        .join(format!("incoming-from1-9-2-{len}-{crc:08x}.part"));
    std::fs::write(&part, &bytes[..100_000]).unwrap();

    let mut c = RaftClient::connect(format!("http://{}", n2.addr))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    tx.send(pb::SnapshotChunk {
        meta: Some(super::tonic_convert::snapshot_meta_to_pb(&meta(9))),
        term: 4,
        total_size: len,
        checksum: crc,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert(CLUSTER_ID_HEADER, "test-cluster".parse().unwrap());
    req.metadata_mut().insert(FROM_HEADER, "1".parse().unwrap());
    let mut acks = c.install_snapshot(req).await.unwrap().into_inner();
    let first = acks.message().await.unwrap().unwrap();
    assert_eq!(first.next_offset, 100_000, "{first:?}");
    tx.send(pb::SnapshotChunk {
        offset: 100_000,
        data: bytes[100_000..].to_vec(),
        done: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let last = acks.message().await.unwrap().unwrap();
    assert_eq!(last.error, "");
    assert_eq!(last.next_offset, len);
    let staged = n2.inbox.staged.lock().unwrap().clone();
    assert_eq!(std::fs::read(&staged[0].3).unwrap(), bytes);
}

#[tokio::test]
async fn a_corrupt_staged_prefix_is_detected_and_the_transfer_restarts() {
    let (n1, n2) = pair().await;
    let src_dir = TempDir::new("src");
    let src = write_test_file(&src_dir.0, 200_000, 11);
    let (len, crc) = file_crc32c(&src).await.unwrap();
    std::fs::create_dir_all(&n2.inbox.staging).unwrap();
    // Same name as the real transfer, but the staged bytes are wrong.
    let part = n2
        .inbox
        .staging
        .join(format!("incoming-from1-11-2-{len}-{crc:08x}.part"));
    std::fs::write(&part, vec![0u8; 50_000]).unwrap();
    n1.transport
        .send_snapshot(2, 3, meta(11), src.clone())
        .await
        .expect("the retry from offset 0 succeeds");
    let staged = n2.inbox.staged.lock().unwrap().clone();
    assert_eq!(staged.len(), 1);
    assert_eq!(
        std::fs::read(&staged[0].3).unwrap(),
        std::fs::read(&src).unwrap()
    );
}

#[tokio::test]
async fn a_snapshot_to_an_unreachable_peer_fails_after_bounded_attempts() {
    let l = listener().await;
    let dead = l.local_addr().unwrap().to_string();
    drop(l);
    let mut o = opts(1);
    o.snapshot_attempts = 2;
    let n1 = start_node(1, o, listener().await, [(2, dead)].into()).await;
    let src_dir = TempDir::new("src");
    let src = write_test_file(&src_dir.0, 1000, 1);
    let err = n1
        .transport
        .send_snapshot(2, 1, meta(1), src)
        .await
        .unwrap_err();
    assert!(err.0.contains("after 2 attempts"), "{err}");
}

fn with_secret(mut o: TransportOptions, byte: u8) -> TransportOptions {
    o.secret = Some(Arc::new(
        super::peer_auth::PeerSecret::from_bytes(&[byte; 32]).unwrap(),
    ));
    o
}

#[tokio::test]
async fn a_node_waiting_to_join_answers_the_leader_at_its_advertised_address() {
    let (l1, l2) = (listener().await, listener().await);
    let (a1, a2) = (
        l1.local_addr().unwrap().to_string(),
        l2.local_addr().unwrap().to_string(),
    );
    let mut o1 = with_secret(opts(1), 1);
    o1.advertise_addr = a1.clone();
    let mut o2 = with_secret(opts(2), 1);
    o2.joining = true;
    // Node 1 (the leader) knows node 2; node 2 knows nobody yet.
    let mut n1 = start_node(1, o1, l1, [(2, a2)].into()).await;
    let mut n2 = start_node(2, o2, l2, BTreeMap::new()).await;
    n1.transport.send(heartbeat(1, 2, 1));
    assert_eq!(recv(&mut n2.rx).await, heartbeat(1, 2, 1));
    // Node 2 can answer: it learned node 1's address from the stream.
    assert_eq!(n2.transport.learned_links(), 1);
    n2.transport.send(heartbeat(2, 1, 2));
    assert_eq!(recv(&mut n1.rx).await, heartbeat(2, 1, 2));
    // Once node 2 has a membership, unknown senders are refused again,
    // learned links are gone, and the configured peer keeps working.
    n2.transport.set_joining(false);
    n2.transport.set_peers([(1, a1)].into());
    assert_eq!(n2.transport.learned_links(), 0);
    n2.transport.send(heartbeat(2, 1, 3));
    assert_eq!(recv(&mut n1.rx).await, heartbeat(2, 1, 3));
}

/// A stream call with the given metadata (no defaults added).
async fn raw_call_md(
    addr: &str,
    md: &[(&'static str, String)],
    msgs: Vec<pb::RaftMessage>,
) -> Result<(), tonic::Status> {
    let mut c = RaftClient::connect(format!("http://{addr}")).await.unwrap();
    let mut req = tonic::Request::new(tokio_stream::iter(msgs));
    for (k, v) in md {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    c.stream(req).await.map(|_| ())
}

#[tokio::test]
async fn a_single_node_accepts_no_sender_at_all() {
    // Node 1 alone: its peer list is empty, and it is not waiting to join.
    let mut n1 = start_node(1, opts(1), listener().await, BTreeMap::new()).await;
    let forged = super::tonic_convert::message_to_pb(&heartbeat(2, 1, 0));
    for from in ["2", "9", "18446744073709551615"] {
        let mut m = super::tonic_convert::message_to_pb(&heartbeat(2, 1, 0));
        m.from = from.parse().unwrap();
        let e = raw_stream_call(&n1.addr, "test-cluster", from, vec![m])
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{from}: {e:?}");
    }
    let e = raw_stream_call(&n1.addr, "test-cluster", "1", vec![forged])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert_eq!(n1.transport.refused_calls(), 4);
    assert!(n1.rx.try_recv().is_err(), "nothing was delivered");
}

#[tokio::test]
async fn with_a_cluster_secret_strangers_wrong_secrets_and_replays_are_refused() {
    let (l1, l2) = (listener().await, listener().await);
    let (a1, a2) = (
        l1.local_addr().unwrap().to_string(),
        l2.local_addr().unwrap().to_string(),
    );
    let n1 = start_node(1, with_secret(opts(1), 5), l1, [(2, a2.clone())].into()).await;
    let mut n2 = start_node(2, with_secret(opts(2), 5), l2, [(1, a1)].into()).await;
    // Members with the secret talk.
    n1.transport.send(heartbeat(1, 2, 1));
    assert_eq!(recv(&mut n2.rx).await, heartbeat(1, 2, 1));

    let msg = super::tonic_convert::message_to_pb(&heartbeat(1, 2, 9));
    let base = |to: &str| {
        vec![
            (CLUSTER_ID_HEADER, "test-cluster".to_string()),
            (FROM_HEADER, "1".to_string()),
            (super::peer_auth::TO_HEADER, to.to_string()),
        ]
    };
    // No handshake at all (a stranger who knows the cluster id and a member id).
    let e = raw_call_md(&a2, &base("2"), vec![msg.clone()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    // A handshake made with another secret.
    let wrong = super::peer_auth::PeerSecret::from_bytes(&[6; 32]).unwrap();
    let mut md = base("2");
    md.push((
        super::peer_auth::AUTH_HEADER,
        wrong.sign("test-cluster", 1, 2, super::peer_auth::PeerCall::Stream, ""),
    ));
    let e = raw_call_md(&a2, &md, vec![msg.clone()]).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    // A valid handshake, used once, then replayed.
    let right = super::peer_auth::PeerSecret::from_bytes(&[5; 32]).unwrap();
    let mut md = base("2");
    md.push((
        super::peer_auth::AUTH_HEADER,
        right.sign("test-cluster", 1, 2, super::peer_auth::PeerCall::Stream, ""),
    ));
    raw_call_md(&a2, &md, vec![msg.clone()]).await.unwrap();
    assert_eq!(recv(&mut n2.rx).await, heartbeat(1, 2, 9));
    let e = raw_call_md(&a2, &md, vec![msg.clone()]).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("replay"), "{}", e.message());
    // A snapshot transfer without a handshake.
    let mut c = RaftClient::connect(format!("http://{a2}")).await.unwrap();
    let mut req = tonic::Request::new(tokio_stream::iter(Vec::<pb::SnapshotChunk>::new()));
    for (k, v) in base("2") {
        req.metadata_mut().insert(k, v.parse().unwrap());
    }
    let e = c.install_snapshot(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert_eq!(n2.transport.refused_calls(), 4);
    // Nothing forged arrived, and the member link still works.
    assert!(n2.rx.try_recv().is_err());
    n1.transport.send(heartbeat(1, 2, 10));
    assert_eq!(recv(&mut n2.rx).await, heartbeat(1, 2, 10));
}

#[tokio::test]
async fn learned_return_links_need_authentication_are_bounded_and_expire() {
    // Without peer authentication a joining node learns no return link.
    let mut o = opts(2);
    o.joining = true;
    let n = start_node(2, o, listener().await, BTreeMap::new()).await;
    let hb = |from: NodeId| {
        let mut m = super::tonic_convert::message_to_pb(&heartbeat(from, 2, 0));
        m.from = from;
        m
    };
    let md = |from: NodeId| {
        vec![
            (CLUSTER_ID_HEADER, "test-cluster".to_string()),
            (FROM_HEADER, from.to_string()),
            (
                super::tonic_common::FROM_ADDR_HEADER,
                format!("127.0.0.1:{}", 1000 + from),
            ),
        ]
    };
    raw_call_md(&n.addr, &md(7), vec![hb(7)]).await.unwrap();
    assert_eq!(n.transport.learned_links(), 0);

    // A loopback-only cluster without peer authentication (what the config
    // admits): loopback addresses are learned, others are not.
    let mut o = opts(2);
    o.joining = true;
    o.unauthenticated_return_links = super::UnauthenticatedReturnLinks::LoopbackOnly;
    let n = start_node(2, o, listener().await, BTreeMap::new()).await;
    let mut remote = md(6);
    remote[2].1 = "10.1.2.3:9082".to_string();
    raw_call_md(&n.addr, &remote, vec![hb(6)]).await.unwrap();
    assert_eq!(n.transport.learned_links(), 0, "a non-loopback address");
    raw_call_md(&n.addr, &md(7), vec![hb(7)]).await.unwrap();
    assert_eq!(n.transport.learned_links(), 1, "a loopback address");

    // With the secret: at most max_learned_links, each for learned_link_ttl.
    let mut o = with_secret(opts(2), 3);
    o.joining = true;
    o.max_learned_links = 2;
    o.learned_link_ttl = Duration::from_millis(300);
    let n = start_node(2, o, listener().await, BTreeMap::new()).await;
    let secret = super::peer_auth::PeerSecret::from_bytes(&[3; 32]).unwrap();
    let signed = |from: NodeId| {
        let mut m = md(from);
        let addr = m[2].1.clone();
        m.push((super::peer_auth::TO_HEADER, "2".to_string()));
        m.push((
            super::peer_auth::AUTH_HEADER,
            secret.sign(
                "test-cluster",
                from,
                2,
                super::peer_auth::PeerCall::Stream,
                &addr,
            ),
        ));
        m
    };
    for from in [7, 8, 9] {
        raw_call_md(&n.addr, &signed(from), vec![hb(from)])
            .await
            .unwrap();
    }
    assert_eq!(n.transport.learned_links(), 2, "bounded");
    tokio::time::sleep(Duration::from_millis(400)).await;
    raw_call_md(&n.addr, &signed(9), vec![hb(9)]).await.unwrap();
    assert_eq!(n.transport.learned_links(), 1, "the expired ones are gone");
}

#[tokio::test]
async fn a_stopped_peer_server_breaks_streams_so_senders_reach_its_successor() {
    let (n1, mut n2) = pair().await;
    n1.transport.send(heartbeat(1, 2, 1));
    assert_eq!(recv(&mut n2.rx).await, heartbeat(1, 2, 1));
    // Node 2 stops serving (its process lives on, as in an in-process restart).
    let a2: std::net::SocketAddr = n2.addr.parse().unwrap();
    let _ = n2.stop.take().unwrap().send(());
    // Its successor binds the same address (retry while the old one drains).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let l2 = loop {
        match TcpListener::bind(a2).await {
            Ok(l) => break l,
            Err(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "address never freed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut n2b = start_node(2, opts(2), l2, [(1, n1.addr.clone())].into()).await;
    let mut seq = 2;
    loop {
        n1.transport.send(heartbeat(1, 2, seq));
        seq += 1;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), n2b.rx.recv()).await {
            assert_eq!(m.from, 1);
            break;
        }
        assert!(seq < 400, "the sender never reached the new server");
    }
    drop(n2);
}
