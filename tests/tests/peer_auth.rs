//! Peer-port authentication on real `d-engine-server` processes (issue 16,
//! finding 1):
//! - a stranger's forged AppendEntries (a `Put` at a higher term) against a
//!   single-node server is refused, not applied, and the node keeps serving;
//! - a 3-node cluster with a cluster secret serves; calls without the
//!   secret's handshake or with another secret's are refused and logged;
//! - a multi-node configuration with a member off loopback, or a peer
//!   listener off loopback, without peer authentication refuses to start
//!   with an error naming the keys; the explicit opt-out starts and warns;
//! - with `tls.peer_ca_file`, a certificate signed by the client CA cannot
//!   act as a node on the peer port.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use d_engine::transport::peer_auth::{PeerCall, PeerSecret, AUTH_HEADER, TO_HEADER};
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::raft_client::RaftClient;
use d_engine_storage::command::{Command as KvCommand, Op};
use d_engine_tests::cluster::{
    free_ports, gen_secret, make_certs, server_binary, Cluster, ClusterConfig,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const ELECTION_BOUND: Duration = Duration::from_secs(30);

/// A forged AppendEntries from node `from` to node 1 that appends a `Put`
/// of `key` right after the log's last entry (`last_index`, `term`) at
/// `term + 1` and commits it: what a stranger needs to write without
/// passing `[auth]`.
fn forged_put(from: u64, term: u64, last_index: u64, key: &str) -> pb::RaftMessage {
    let cmd = KvCommand::new(Op::Put {
        key: key.as_bytes().to_vec().into(),
        value: b"forged".to_vec().into(),
        expires_at_ms: None,
        lease: 0,
    });
    pb::RaftMessage {
        from,
        to: 1,
        term: term + 1,
        body: Some(pb::raft_message::Body::AppendEntries(pb::AppendEntries {
            prev_log_index: last_index,
            prev_log_term: term,
            entries: vec![pb::RaftEntry {
                term: term + 1,
                index: last_index + 1,
                payload: Some(pb::raft_entry::Payload::Command(cmd.encode().to_vec())),
            }],
            leader_commit: last_index + 1,
            heartbeat_seq: 0,
        })),
    }
}

/// Opens a `Raft.Stream` call on `channel` with exactly the metadata `md`
/// and sends `msgs`.
async fn forge(
    channel: tonic::transport::Channel,
    md: &[(&'static str, String)],
    msgs: Vec<pb::RaftMessage>,
) -> Result<(), tonic::Status> {
    let mut c = RaftClient::new(channel);
    let mut req = tonic::Request::new(tokio_stream::iter(msgs));
    for (k, v) in md {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    c.stream(req).await.map(|_| ())
}

async fn plain_channel(addr: &str) -> tonic::transport::Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect to the peer port")
}

/// The node's term and last log index, from its status.
async fn term_and_last(c: &Cluster, id: u64) -> (u64, u64) {
    let s = c.status(id).await.expect("status");
    (s.header.map(|h| h.term).unwrap_or(0), s.last_log_index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_forged_write_on_the_peer_port_of_a_single_node_is_refused() {
    // The server's default shape: one node, no secret, loopback.
    let mut c = Cluster::start(ClusterConfig {
        nodes: 1,
        peer_secret: false,
        ..ClusterConfig::default()
    });
    c.wait_leader(ELECTION_BOUND).await.unwrap();
    let client = c.client().await;
    client.kv().put("before", "1").await.unwrap();
    let (term, last) = term_and_last(&c, 1).await;
    assert!(term > 0 && last > 0, "term {term} last {last}");

    let peer = c.peer_addr(1);
    let md = |from: &str| {
        vec![
            ("x-dengine-cluster-id", "test-cluster".to_string()),
            ("x-dengine-from", from.to_string()),
        ]
    };
    for from in [2u64, 77] {
        let res = forge(
            plain_channel(&peer).await,
            &md(&from.to_string()),
            vec![forged_put(from, term, last, "stolen")],
        )
        .await;
        let e = res.expect_err("a stranger's stream must be refused");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("not a member"), "{e:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.node(1).is_running(), "the node keeps running");
    // Nothing forged was applied; the node still serves its clients.
    assert!(client.kv().get("stolen").await.unwrap().is_none());
    client.kv().put("after", "2").await.unwrap();
    assert_eq!(
        client.kv().get("after").await.unwrap().unwrap().value,
        b"2"[..]
    );
    let log = c.node(1).log();
    assert!(log.contains("refused a peer call"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_a_secret_serves_and_refuses_calls_without_it() {
    let mut c = Cluster::start(ClusterConfig::default());
    let leader = c.wait_leader(ELECTION_BOUND).await.unwrap();
    let client = c.client().await;
    let rev = client.kv().put("k", "v").await.unwrap();
    for id in c.ids() {
        c.wait_applied(id, rev, Duration::from_secs(20))
            .await
            .unwrap();
    }
    let follower = *c.ids().iter().find(|id| **id != leader).unwrap();
    let (term, last) = term_and_last(&c, leader).await;
    let peer = c.peer_addr(leader);
    let base = vec![
        ("x-dengine-cluster-id", "test-cluster".to_string()),
        ("x-dengine-from", follower.to_string()),
        (TO_HEADER, leader.to_string()),
    ];
    let mut msg = forged_put(follower, term, last, "stolen");
    msg.to = leader;
    // A member id and the cluster id, but no handshake.
    let e = forge(plain_channel(&peer).await, &base, vec![msg.clone()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    // A handshake made with another secret.
    let wrong = PeerSecret::from_bytes(&[9u8; 32]).unwrap();
    let mut md = base.clone();
    md.push((
        AUTH_HEADER,
        wrong.sign("test-cluster", follower, leader, PeerCall::Stream, ""),
    ));
    let e = forge(plain_channel(&peer).await, &md, vec![msg.clone()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // The cluster keeps serving; nothing forged was applied.
    let rev = client.kv().put("k2", "v2").await.unwrap();
    c.wait_applied(leader, rev, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(client.kv().get("stolen").await.unwrap().is_none());
    let log = c.node(leader).log();
    assert!(log.contains("refused a peer call"), "{log}");
}

/// Runs the server with `args` and expects it to exit within 15 s (a
/// server that starts serving instead is killed and the test fails).
fn run_expecting_exit(args: &[String]) -> (Option<i32>, String) {
    let mut child = Command::new(server_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn d-engine-server");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "the server started instead of refusing:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Starts the server with `args`, checks it is still running after a
/// second, and returns its output after killing it.
fn run_expecting_start(args: &[String]) -> String {
    let mut child = Command::new(server_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn d-engine-server");
    std::thread::sleep(Duration::from_millis(1500));
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(running, "the server did not keep running:\n{out}");
    out
}

fn node_args(dir: &Path, peer: &str, extra: &[&str]) -> Vec<String> {
    let client = format!("127.0.0.1:{}", free_ports(1)[0]);
    let mut a: Vec<String> = vec![
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--listen-peer".into(),
        peer.into(),
        "--listen-client".into(),
        client,
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn a_multi_node_config_with_a_remote_member_and_no_peer_auth_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = free_ports(1)[0];
    let peer = format!("127.0.0.1:{p}");
    let peers = format!("1={peer},2=192.0.2.10:9081,3=192.0.2.11:9081");
    let (code, out) = run_expecting_exit(&node_args(
        dir.path(),
        &peer,
        &["--node-id", "1", "--peers", &peers],
    ));
    assert_eq!(code, Some(2), "{out}");
    for key in ["peer.secret_file", "tls.peer", "peer.allow_unauthenticated"] {
        assert!(out.contains(key), "names {key}: {out}");
    }
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn a_peer_listener_off_loopback_without_peer_auth_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = free_ports(1)[0];
    let (code, out) = run_expecting_exit(&node_args(dir.path(), &format!("0.0.0.0:{p}"), &[]));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("0.0.0.0"), "{out}");
    for key in ["peer.secret_file", "peer.allow_unauthenticated"] {
        assert!(out.contains(key), "names {key}: {out}");
    }

    // With a cluster secret it starts.
    let secret = dir.path().join("secret");
    gen_secret(&secret);
    let p = free_ports(1)[0];
    let out = run_expecting_start(&node_args(
        &dir.path().join("a"),
        &format!("0.0.0.0:{p}"),
        &["--peer-secret-file", &secret.display().to_string()],
    ));
    assert!(out.contains("cluster secret"), "{out}");

    // The explicit opt-out starts too, and warns.
    let cfg = dir.path().join("optout.toml");
    std::fs::write(&cfg, "[peer]\nallow_unauthenticated = true\n").unwrap();
    let p = free_ports(1)[0];
    let out = run_expecting_start(&node_args(
        &dir.path().join("b"),
        &format!("0.0.0.0:{p}"),
        &["--config", &cfg.display().to_string()],
    ));
    assert!(out.contains("peer authentication is OFF"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_peer_ca_file_a_client_ca_certificate_cannot_act_as_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let peer_certs = dir.path().join("peer-ca");
    let client_certs = dir.path().join("client-ca");
    make_certs(&peer_certs, &[1, 2], &[]);
    make_certs(&client_certs, &[1, 2], &["app"]);
    let f = |d: &Path, n: &str| d.join(n).display().to_string();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\nclient_api = true\n\
             peer = true\nclient_auth = \"optional\"\npeer_ca_file = {:?}\n\
             peer_cert_file = {:?}\npeer_key_file = {:?}\n",
            f(&client_certs, "node-1.pem"),
            f(&client_certs, "node-1-key.pem"),
            f(&client_certs, "ca.pem"),
            f(&peer_certs, "ca.pem"),
            f(&peer_certs, "node-1.pem"),
            f(&peer_certs, "node-1-key.pem"),
        ),
    )
    .unwrap();
    let peer = format!("127.0.0.1:{}", free_ports(1)[0]);
    let args = node_args(
        dir.path(),
        &peer,
        &[
            "--config",
            &cfg.display().to_string(),
            "--cluster-id",
            "ca-test",
        ],
    );
    let mut child = Command::new(server_binary())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(&peer).is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the server exited ({st}):\n{err}");
        }
        assert!(Instant::now() < deadline, "the peer port never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _guard = Kill(child);

    let read = |p: String| std::fs::read(p).unwrap();
    let call = |cert: String, key: String| {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(f(&peer_certs, "ca.pem"))))
            .domain_name("node-1")
            .identity(Identity::from_pem(read(cert), read(key)));
        let peer = peer.clone();
        async move {
            let ch = Endpoint::from_shared(format!("https://{peer}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(3))
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .map_err(|e| format!("connect: {e:?}"))?;
            let md = vec![
                ("x-dengine-cluster-id", "ca-test".to_string()),
                ("x-dengine-from", "2".to_string()),
            ];
            forge(ch, &md, vec![forged_put(2, 1, 1, "stolen")])
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        }
    };
    // The client CA's certificates (a client's, and a "node" one it
    // signed) fail the TLS handshake on the peer port.
    for (cert, key) in [
        ("client-app.pem", "client-app-key.pem"),
        ("node-2.pem", "node-2-key.pem"),
    ] {
        let e = call(f(&client_certs, cert), f(&client_certs, key))
            .await
            .unwrap_err();
        assert!(
            !e.contains("PermissionDenied") && !e.contains("not a member"),
            "{cert} signed by the client CA got past TLS: {e}"
        );
    }
    // A certificate from the peer CA passes TLS (and is then refused
    // because node 2 is not a member of this single-node cluster).
    let e = call(
        f(&peer_certs, "node-2.pem"),
        f(&peer_certs, "node-2-key.pem"),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("PermissionDenied") && e.contains("not a member"),
        "{e}"
    );
}
