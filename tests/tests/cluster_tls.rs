//! TLS and mutual TLS on real `d-engine-server` processes, with
//! certificates from `d-engine-server certs`:
//! - a 3-node cluster with peer mTLS and a TLS client API serves writes
//!   and reads through the Rust client trusting the cluster CA;
//! - a plaintext client and a client trusting another CA are refused;
//! - a learner with a certificate from another CA, or with another node's
//!   certificate, never receives the log; one with its own certificate does;
//! - `client_auth = "require"`: no client certificate → refused, with one → served;
//! - a node whose `[tls]` files are missing exits with code 2 naming the key.

use std::path::Path;
use std::time::{Duration, Instant};

use d_engine_client::{Client, ClientBuilder, Error, TlsOptions};
use d_engine_tests::cluster::{make_certs, server_binary, TlsCluster, TlsClusterConfig};

const ELECTION_BOUND: Duration = Duration::from_secs(30);

/// A client of `endpoints` that gives up after a few seconds.
async fn try_client(endpoints: Vec<String>, tls: Option<TlsOptions>) -> Result<Client, Error> {
    let mut b = ClientBuilder::new(endpoints)
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(4))
        .max_attempts(2);
    if let Some(t) = tls {
        b = b.tls(t);
    }
    b.build().await
}

/// A put through a fresh client: the client may build lazily and fail on use.
async fn try_put(endpoints: Vec<String>, tls: Option<TlsOptions>) -> Result<u64, Error> {
    let c = try_client(endpoints, tls).await?;
    c.kv().put("probe", "x").await
}

/// Waits until the node at `client_addr` (asked with `client`) applied
/// `index`; returns its last applied index on timeout.
async fn wait_applied(
    client: &Client,
    addr: &str,
    index: u64,
    within: Duration,
) -> Result<(), u64> {
    let deadline = Instant::now() + within;
    let mut applied = 0;
    loop {
        if let Ok(s) = client.admin().node_status_at(addr).await {
            applied = s.applied_index;
            if applied >= index {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(applied);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn other_ca_certs(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("other-ca");
    make_certs(&out, &[1, 2, 3, 4, 5, 6], &["app"]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_serves_trusted_clients_and_refuses_the_rest() {
    let mut c = TlsCluster::start(TlsClusterConfig::default());
    let leader = c
        .wait_leader(ELECTION_BOUND)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Writes and reads over TLS, trusting the cluster CA (no client cert).
    let client = c
        .client(TlsOptions::new().ca_file(c.ca()))
        .await
        .unwrap_or_else(|e| panic!("TLS client: {e}\n{}", c.log_tails(20)));
    let kv = client.kv();
    let mut rev = 0;
    for i in 0..20u32 {
        rev = kv.put(format!("k{i:02}"), format!("v{i}")).await.unwrap();
    }
    assert_eq!(
        kv.get("k19").await.unwrap().expect("present").value,
        b"v19"[..]
    );
    // Replicated over peer mTLS to every node.
    for id in c.ids() {
        wait_applied(&client, &c.client_addr(id), rev, Duration::from_secs(20))
            .await
            .unwrap_or_else(|a| panic!("node {id} applied only {a} < {rev}"));
    }

    // A plaintext client is refused by the TLS port.
    let plain: Vec<String> = c
        .ids()
        .iter()
        .map(|id| format!("http://{}", c.client_addr(*id)))
        .collect();
    let e = try_put(plain, None)
        .await
        .expect_err("plaintext client refused");
    eprintln!("plaintext client: {e}");

    // A client trusting another CA is refused (the server's certificate
    // does not verify).
    let other = other_ca_certs(c.dir());
    let e = try_put(
        c.endpoints(),
        Some(TlsOptions::new().ca_file(other.join("ca.pem"))),
    )
    .await
    .expect_err("client trusting the wrong CA refused");
    eprintln!("wrong CA: {e}");

    // Unreadable CA file: a clear error naming the path, before any I/O.
    let e = try_client(
        c.endpoints(),
        Some(TlsOptions::new().ca_file("/nonexistent/ca.pem")),
    )
    .await
    .expect_err("missing CA file");
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("/nonexistent/ca.pem")),
        "{e}"
    );

    // A learner with its own certificate from the cluster CA catches up.
    let admin = c.client(c.admin_tls()).await.unwrap();
    let (peer, client_addr) = c.spawn_joiner(6, &c.certs(), 6);
    admin
        .admin()
        .add_learner(6, peer, client_addr.clone())
        .await
        .unwrap();
    wait_applied(&admin, &client_addr, rev, Duration::from_secs(30))
        .await
        .unwrap_or_else(|a| panic!("learner 6 applied only {a}\n{}", c.log_tails(30)));

    // A learner whose certificate comes from another CA never gets the log
    // (both TLS handshakes fail).
    let (peer, addr4) = c.spawn_joiner(4, &other, 4);
    admin
        .admin()
        .add_learner(4, peer, addr4.clone())
        .await
        .unwrap();
    // A learner presenting node 1's (valid) certificate while claiming to be
    // node 5 is refused too: names are checked in both directions.
    let (peer, addr5) = c.spawn_joiner(5, &c.certs(), 1);
    admin
        .admin()
        .add_learner(5, peer, addr5.clone())
        .await
        .unwrap();

    // Keep writing; the cluster is unaffected.
    for i in 0..10u32 {
        rev = kv.put(format!("after{i}"), "x").await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let other_client = ClientBuilder::new([format!("https://{addr4}")])
        .tls(
            TlsOptions::new()
                .ca_file(other.join("ca.pem"))
                .client_cert_files(
                    other.join("client-app.pem"),
                    other.join("client-app-key.pem"),
                ),
        )
        .lazy(true)
        .build()
        .await
        .unwrap();
    let s4 = other_client.admin().node_status_at(&addr4).await.unwrap();
    assert_eq!(
        s4.applied_index, 0,
        "learner 4 (other CA) got the log: {s4:?}"
    );
    let s5 = admin.admin().node_status_at(&addr5).await.unwrap();
    assert_eq!(
        s5.applied_index, 0,
        "learner 5 (node 1's cert) got the log: {s5:?}"
    );
    wait_applied(&admin, &client_addr, rev, Duration::from_secs(20))
        .await
        .unwrap_or_else(|a| panic!("learner 6 applied only {a} < {rev}"));
    let _ = leader;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_require_needs_a_client_certificate() {
    let mut c = TlsCluster::start(TlsClusterConfig {
        nodes: 1,
        client_auth: "require".into(),
        ..TlsClusterConfig::default()
    });
    c.wait_leader(ELECTION_BOUND)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // No client certificate: refused.
    let e = try_put(c.endpoints(), Some(TlsOptions::new().ca_file(c.ca())))
        .await
        .expect_err("mTLS without a client certificate refused");
    eprintln!("no client certificate: {e}");

    // A client certificate from another CA: refused.
    let other = other_ca_certs(c.dir());
    let e = try_put(
        c.endpoints(),
        Some(TlsOptions::new().ca_file(c.ca()).client_cert_files(
            other.join("client-app.pem"),
            other.join("client-app-key.pem"),
        )),
    )
    .await
    .expect_err("client certificate of another CA refused");
    eprintln!("foreign client certificate: {e}");

    // With the cluster's client certificate: served.
    let client = c.client(c.admin_tls()).await.unwrap();
    let rev = client.kv().put("secure", "yes").await.unwrap();
    assert!(rev > 0);
    assert_eq!(
        client.kv().get("secure").await.unwrap().unwrap().value,
        b"yes"[..]
    );
}

#[test]
fn missing_tls_files_stop_the_server_with_the_key_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("n.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\nclient_addr = \"127.0.0.1:0\"\npeer_addr = \"127.0.0.1:0\"\n\
             [tls]\nclient_api = true\ncert_file = \"/nonexistent/node.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(server_binary())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("tls.cert_file") && stderr.contains("/nonexistent/node.pem"),
        "{stderr}"
    );

    // The certs tool says what it wrote and that it is for development.
    let out = std::process::Command::new(server_binary())
        .args(["certs", "--nodes", "1", "--out"])
        .arg(dir.path().join("certs"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("node-1-key.pem") && stdout.contains("development"),
        "{stdout}"
    );
}
