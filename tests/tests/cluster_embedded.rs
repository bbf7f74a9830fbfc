//! A 3-node cluster of *embedded* nodes: three application processes
//! (`embedded-app`, each embedding a d-engine node and writing through its
//! in-process client) on 127.0.0.1. The leader's process is killed with
//! SIGKILL while all three write: a new leader is elected among the
//! survivors within the bound, the survivors' writes carry on, and every
//! write any process printed as acknowledged — the dead one's included — is
//! in the cluster afterwards. A second test runs the three with TLS on both
//! ports: the followers' writes reach the leader over TLS.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use d_engine_client::{Client, Consistency};
use d_engine_tests::cluster::{free_ports, make_certs, NodeProcess, NodeSpec};

const ELECTION_TIMEOUT_MS: u64 = 500;
const NEW_LEADER_BOUND: Duration = Duration::from_millis(10 * ELECTION_TIMEOUT_MS);

struct App {
    id: u64,
    client_addr: String,
    process: NodeProcess,
}

/// Node `id`'s configuration file; `extra` is appended (more sections).
fn write_config(dir: &Path, id: u64, ports: &[u16], extra: &str) -> PathBuf {
    let mut toml = format!(
        "node_id = {id}\ncluster_id = \"embedded-test\"\ndata_dir = \"{}\"\n\
         peer_addr = \"127.0.0.1:{}\"\nclient_addr = \"127.0.0.1:{}\"\n",
        dir.join(format!("data-{id}")).display(),
        ports[2 * (id as usize - 1)],
        ports[2 * (id as usize - 1) + 1],
    );
    for m in 1..=3usize {
        toml.push_str(&format!(
            "\n[[members]]\nid = {m}\npeer_addr = \"127.0.0.1:{}\"\nclient_addr = \"127.0.0.1:{}\"\n",
            ports[2 * (m - 1)],
            ports[2 * (m - 1) + 1]
        ));
    }
    toml.push_str(&format!(
        "\n[raft]\nelection_timeout_ms = {ELECTION_TIMEOUT_MS}\nheartbeat_interval_ms = 50\n"
    ));
    toml.push_str(extra);
    let path = dir.join(format!("node-{id}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

fn acked(app: &App) -> Vec<String> {
    app.process
        .log()
        .lines()
        .filter_map(|l| l.strip_prefix("ACK "))
        .map(str::to_string)
        .collect()
}

async fn leader_id(client: &Client) -> Option<u64> {
    let info = client.cluster().leader().await.ok()?;
    (info.id != 0).then_some(info.id)
}

/// Starts the three `embedded-app` processes, node `id` configured with
/// `extra(id)` appended to its file.
fn spawn_apps(dir: &Path, ports: &[u16], extra: impl Fn(u64) -> String) -> Vec<App> {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_embedded-app"));
    (1..=3u64)
        .map(|id| {
            let config = write_config(dir, id, ports, &extra(id));
            let client_addr = format!("127.0.0.1:{}", ports[2 * (id as usize - 1) + 1]);
            let spec = NodeSpec {
                id,
                peer_addr: format!("127.0.0.1:{}", ports[2 * (id as usize - 1)]),
                client_addr: client_addr.clone(),
                data_dir: dir.join(format!("data-{id}")),
                log_path: dir.join(format!("node-{id}.log")),
                binary: binary.clone(),
                args: vec![config.display().to_string()],
                env: vec![("DENGINE_LOG".into(), "warn".into())],
            };
            App {
                id,
                client_addr,
                process: NodeProcess::spawn(spec).unwrap(),
            }
        })
        .collect()
}

fn dump(apps: &[App]) -> String {
    apps.iter()
        .map(|a| format!("--- node {}\n{}", a.id, a.process.log_tail(30)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_leader_killed_while_all_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(6);
    let mut apps = spawn_apps(dir.path(), &ports, |_| String::new());

    // All three acknowledge writes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while apps.iter().any(|a| acked(a).len() < 10) {
        assert!(
            Instant::now() < deadline,
            "apps never wrote:\n{}",
            dump(&apps)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let endpoints: Vec<String> = apps
        .iter()
        .map(|a| format!("http://{}", a.client_addr))
        .collect();
    let client = Client::builder(endpoints.clone()).build().await.unwrap();
    let leader = leader_id(&client).await.expect("a leader");

    // Kill the leader's whole application process.
    let victim = apps.iter().position(|a| a.id == leader).unwrap();
    apps[victim].process.kill();
    let killed_at = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let before: Vec<usize> = survivors.iter().map(|&i| acked(&apps[i]).len()).collect();
    let survivor_client = Client::builder(
        survivors
            .iter()
            .map(|&i| format!("http://{}", apps[i].client_addr))
            .collect::<Vec<_>>(),
    )
    .build()
    .await
    .unwrap();
    let new_leader = loop {
        if let Some(l) = leader_id(&survivor_client).await {
            if l != leader {
                break l;
            }
        }
        assert!(
            killed_at.elapsed() < NEW_LEADER_BOUND,
            "no new leader within {NEW_LEADER_BOUND:?}:\n{}",
            dump(&apps)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "node {leader} killed; node {new_leader} leads after {:?}",
        killed_at.elapsed()
    );

    // The survivors carry on writing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while survivors
        .iter()
        .zip(&before)
        .any(|(&i, &b)| acked(&apps[i]).len() < b + 10)
    {
        assert!(
            Instant::now() < deadline,
            "survivors stopped writing after the kill:\n{}",
            dump(&apps)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for &i in &survivors {
        assert!(
            apps[i].process.terminate(Duration::from_secs(20)).is_some(),
            "node {} did not stop on SIGTERM",
            apps[i].id
        );
    }

    // Every acknowledgement so far, taken before the restart: the restarted
    // apps write app/<id>/1, 2, ... again and append to the same logs, and
    // their new acknowledgements may come after the scan below.
    let acked_before_restart: Vec<(u64, Vec<String>)> =
        apps.iter().map(|a| (a.id, acked(a))).collect();

    // Restart everything and check every acknowledged key.
    for app in &mut apps {
        app.process.start().unwrap();
    }
    // Lazy: the restarted processes may not listen yet; the scan loop retries.
    let client = Client::builder(endpoints).lazy(true).build().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored: BTreeSet<String> = loop {
        match client
            .kv()
            .scan_prefix(b"app/", 0, Consistency::Linearizable)
            .await
        {
            Ok(kvs) => {
                assert!(kvs.len() < 10_000, "scan page full: raise the limit");
                break kvs
                    .into_iter()
                    .map(|kv| String::from_utf8(kv.key.to_vec()).unwrap())
                    .collect();
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "restarted cluster never served a scan: {e}\n{}",
                    dump(&apps)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut total = 0;
    let mut lost = Vec::new();
    for (id, acks) in &acked_before_restart {
        total += acks.len();
        for key in acks {
            if !stored.contains(key) {
                lost.push(format!("node {id} acknowledged {key}"));
            }
        }
    }
    if !lost.is_empty() {
        // Keep the data and logs for a post-mortem.
        let kept = dir.keep();
        panic!(
            "{} acknowledged writes (of {total}) are missing after the restart (the cluster \
             holds {} keys); data and logs kept in {}:\n{}\n{}",
            lost.len(),
            stored.len(),
            kept.display(),
            lost.join("\n"),
            dump(&apps)
        );
    }
    eprintln!("{total} acknowledged writes from 3 embedded processes, all present");
    for app in &mut apps {
        app.process.terminate(Duration::from_secs(20));
    }
}

/// TLS on the client and peer ports: the two followers forward their
/// writes to the leader's client API over TLS (trusting `tls.ca_file`,
/// presenting their node certificate), so all three keep acknowledging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_to_the_leader_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs, &[1, 2, 3], &[]);
    let path = |name: String| certs.join(name).display().to_string();
    let ports = free_ports(6);
    let mut apps = spawn_apps(dir.path(), &ports, |id| {
        format!(
            "\n[tls]\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\nclient_api = true\n\
             peer = true\n",
            path(format!("node-{id}.pem")),
            path(format!("node-{id}-key.pem")),
            path("ca.pem".into()),
        )
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while apps.iter().any(|a| acked(a).len() < 10) {
        assert!(
            Instant::now() < deadline,
            "not every app wrote over TLS:\n{}",
            dump(&apps)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for app in &mut apps {
        app.process.terminate(Duration::from_secs(20));
    }
}
