//! Bad input against real server processes: garbage on the ports, a port
//! already in use, malformed configuration, a node id not in the cluster.
//! In every case the error is clear and a running node keeps serving.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use d_engine_tests::cluster::{free_ports, server_binary, Cluster, ClusterConfig};

/// Runs the server with `args` (cwd `dir`), expecting it to exit by itself
/// within 30 s; returns (exit code, stderr+stdout).
fn run_to_exit(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(server_binary())
        .args(args)
        .current_dir(dir)
        .env_remove("DENGINE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server with {args:?} did not exit within 30s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.code().unwrap_or(-1), out)
}

fn single_node() -> Cluster {
    Cluster::start(ClusterConfig {
        nodes: 1,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_client_and_peer_ports_does_not_stop_the_node() {
    let mut c = single_node();
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let garbage: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        &[0xff; 8192],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00garbage-frame",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello start
    ];
    for addr in [c.client_addr(1), c.peer_addr(1)] {
        for g in garbage {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(g);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink); // the server closes it
        }
    }
    assert!(c.node(1).is_running(), "{}", c.log_tails(30));
    let client = c.client().await;
    let rev = client.kv().put("after-garbage", "ok").await.unwrap();
    assert!(rev > 0);
    assert_eq!(
        client
            .kv()
            .get("after-garbage")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"ok"[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    // Something else holds the client port (bound to an ephemeral port
    // directly: a port picked first and bound later can be taken by a
    // concurrent test in between).
    let blocker = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let client = blocker.local_addr().unwrap().to_string();
    let peer = format!("127.0.0.1:{}", free_ports(1)[0]);
    let (code, out) = run_to_exit(
        dir.path(),
        &[
            "--listen-client",
            &client,
            "--listen-peer",
            &peer,
            "--data-dir",
            "data",
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!(
            "client address {client} is already in use: stop the other process or set --listen-client"
        )),
        "{out}"
    );
    drop(blocker);

    // Same for the peer port.
    let blocker = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let peer = blocker.local_addr().unwrap().to_string();
    let client = format!("127.0.0.1:{}", free_ports(1)[0]);
    let (code, out) = run_to_exit(
        dir.path(),
        &[
            "--listen-client",
            &client,
            "--listen-peer",
            &peer,
            "--data-dir",
            "data",
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("set --listen-peer"), "{out}");
    drop(blocker);
}

#[test]
fn malformed_configuration_names_the_key_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str); 4] = [
        // Not TOML at all.
        ("this is = = not toml", "d-engine.toml"),
        // Wrong type.
        ("node_id = \"one\"", "node_id"),
        // Out of range.
        (
            "[raft]\nelection_timeout_ms = 1",
            "raft.election_timeout_ms",
        ),
        // Unknown key (a typo).
        ("electon_timeout_ms = 300", "electon_timeout_ms"),
    ];
    for (text, expect) in cases {
        let path = dir.path().join("d-engine.toml");
        std::fs::write(&path, text).unwrap();
        let (code, out) = run_to_exit(dir.path(), &["--config", path.to_str().unwrap()]);
        assert_eq!(code, 2, "config {text:?}: {out}");
        assert!(
            out.contains(expect),
            "config {text:?} should name {expect}: {out}"
        );
    }
    // A missing file.
    let (code, out) = run_to_exit(dir.path(), &["--config", "no-such-file.toml"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no-such-file.toml"), "{out}");
    // A bad flag value names the flag.
    let (code, out) = run_to_exit(dir.path(), &["--node-id", "0"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--node-id"), "{out}");
    let (code, out) = run_to_exit(dir.path(), &["--peers", "garbage"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("ID=PEER_ADDR"), "{out}");
}

#[test]
fn a_node_id_that_is_not_in_the_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(4);
    let peers = format!(
        "1=127.0.0.1:{}/127.0.0.1:{},2=127.0.0.1:{}/127.0.0.1:{}",
        ports[0], ports[1], ports[2], ports[3]
    );
    let (code, out) = run_to_exit(
        dir.path(),
        &["--node-id", "7", "--peers", &peers, "--data-dir", "data"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("node_id 7 is not one of the members"), "{out}");
}
