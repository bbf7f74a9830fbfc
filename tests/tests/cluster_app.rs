//! An application state machine (`engine/facade/examples/app_jobs.rs`:
//! counters and a job queue) as a 3-process cluster on 127.0.0.1, with
//! snapshots every 40 entries:
//!
//! 1. writes; a write proposed on a follower is forwarded to the leader and
//!    applied once on every replica (the same write id again, through the
//!    other follower, gets the first output); a follower is killed, the
//!    leader writes past several snapshots (its log is compacted), the
//!    follower restarts and catches up by snapshot;
//! 2. the leader's process is killed while a follower forwards a stream of
//!    writes: each either succeeds or fails retryably, and retried under its
//!    write id it is applied once (the outputs are exactly 1..=N); a new
//!    leader takes writes; the old leader restarts from its snapshot + log;
//! 3. every replica ends at the same applied index with the same state,
//!    which matches the outputs the writes were acknowledged with.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use d_engine_tests::cluster::{free_ports, NodeProcess, NodeSpec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ELECTION_TIMEOUT_MS: u64 = 500;

struct Node {
    id: u64,
    app_addr: String,
    process: NodeProcess,
}

fn write_config(dir: &Path, id: u64, ports: &[u16]) -> PathBuf {
    let p = |id: u64, k: usize| ports[3 * (id as usize - 1) + k];
    let mut toml = format!(
        "node_id = {id}\ncluster_id = \"app-test\"\ndata_dir = \"{}\"\n\
         peer_addr = \"127.0.0.1:{}\"\nclient_addr = \"127.0.0.1:{}\"\n",
        dir.join(format!("data-{id}")).display(),
        p(id, 0),
        p(id, 1),
    );
    for m in 1..=3u64 {
        toml.push_str(&format!(
            "\n[[members]]\nid = {m}\npeer_addr = \"127.0.0.1:{}\"\nclient_addr = \"127.0.0.1:{}\"\n",
            p(m, 0),
            p(m, 1)
        ));
    }
    toml.push_str(&format!(
        "\n[raft]\nelection_timeout_ms = {ELECTION_TIMEOUT_MS}\nheartbeat_interval_ms = 50\n\
         \n[snapshot]\nthreshold_entries = 40\n"
    ));
    let path = dir.join(format!("node-{id}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

fn spawn(dir: &Path, ports: &[u16]) -> Vec<Node> {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_app-jobs"));
    (1..=3u64)
        .map(|id| {
            let config = write_config(dir, id, ports);
            let app_addr = format!("127.0.0.1:{}", ports[3 * (id as usize - 1) + 2]);
            let spec = NodeSpec {
                id,
                peer_addr: format!("127.0.0.1:{}", ports[3 * (id as usize - 1)]),
                client_addr: format!("127.0.0.1:{}", ports[3 * (id as usize - 1) + 1]),
                data_dir: dir.join(format!("data-{id}")),
                log_path: dir.join(format!("node-{id}.log")),
                binary: binary.clone(),
                args: vec![config.display().to_string(), app_addr.clone()],
                env: vec![],
            };
            Node {
                id,
                app_addr,
                process: NodeProcess::spawn(spec).unwrap(),
            }
        })
        .collect()
}

/// One request line to a node's app port; `None` if it is unreachable.
async fn ask(node: &Node, line: &str) -> Option<String> {
    ask_addr(&node.app_addr, line).await
}

/// [`ask`] by the app port's address.
async fn ask_addr(app_addr: &str, line: &str) -> Option<String> {
    let fut = async {
        let mut s = TcpStream::connect(app_addr).await.ok()?;
        s.write_all(format!("{line}\n").as_bytes()).await.ok()?;
        let mut r = BufReader::new(s);
        let mut reply = String::new();
        r.read_line(&mut reply).await.ok()?;
        Some(reply.trim_end().to_string())
    };
    tokio::time::timeout(Duration::from_secs(12), fut)
        .await
        .ok()
        .flatten()
}

fn field(status: &str, key: &str) -> u64 {
    status
        .split_whitespace()
        .find_map(|f| f.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn dump(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- node {}\n{}", n.id, n.process.log_tail(20)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Proposes `cmd` on the first live node that answers OK (bounded retries).
async fn propose(nodes: &[Node], live: &[usize], cmd: &str) -> String {
    propose_line(nodes, live, &format!("P {cmd}")).await
}

/// [`propose`] with a whole request line (`P ...` or `W <id> <seq> ...`).
async fn propose_line(nodes: &[Node], live: &[usize], cmd: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for &i in live {
            if let Some(r) = ask(&nodes[i], cmd).await {
                if let Some(out) = r.strip_prefix("OK ") {
                    return out.to_string();
                }
                if r == "OK" {
                    return String::new();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no live node took {cmd:?}:\n{}",
            dump(nodes)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leader(nodes: &[Node], live: &[usize]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for &i in live {
            if let Some(s) = ask(&nodes[i], "S").await {
                if s.contains("role=Leader") {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader:\n{}", dump(nodes));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_cluster_survives_kills_and_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(9);
    let mut nodes = spawn(dir.path(), &ports);
    let all = [0usize, 1, 2];

    // Writes through the leader.
    let mut expected_total = 0u64;
    for i in 0..30u64 {
        let out = propose(&nodes, &all, &format!("incr hits {i}")).await;
        expected_total += i;
        assert_eq!(out, expected_total.to_string(), "incr output");
    }
    assert_eq!(propose(&nodes, &all, "push job-a").await, "1");

    // A write on a follower is forwarded to the leader, applied once; the
    // same write id through the other follower gets the first output.
    let l0 = leader(&nodes, &all).await;
    let (f0, f1) = ((l0 + 1) % 3, (l0 + 2) % 3);
    let r = ask(&nodes[f0], "W 4242 1 incr fwd 5").await;
    assert_eq!(
        r.as_deref(),
        Some("OK 5"),
        "forwarded write:\n{}",
        dump(&nodes)
    );
    let r = ask(&nodes[f1], "W 4242 1 incr fwd 5").await;
    assert_eq!(
        r.as_deref(),
        Some("OK 5"),
        "retry through the other follower"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in &nodes {
        loop {
            let got = ask(n, "Q e counter fwd").await.unwrap_or_default();
            if got == "OK 5" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} has fwd {got:?}, expected 5 (applied once)",
                n.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A follower dies; the leader writes past several snapshots.
    let l = leader(&nodes, &all).await;
    let f = (0..3).find(|&i| i != l).unwrap();
    let f_applied = field(&ask(&nodes[f], "S").await.unwrap(), "applied=");
    nodes[f].process.kill();
    let up: Vec<usize> = (0..3).filter(|&i| i != f).collect();
    for i in 0..130u64 {
        propose(&nodes, &up, &format!("push job-{i}")).await;
    }
    assert_eq!(propose(&nodes, &up, "pop").await, "job-a");
    let lead_snap = field(&ask(&nodes[l], "S").await.unwrap(), "snapshot=");
    assert!(
        lead_snap > f_applied + 40,
        "the leader took no snapshot past the follower (snapshot {lead_snap}, follower at {f_applied})"
    );

    // The follower restarts and catches up: its log ended at f_applied, the
    // leader's starts after its snapshot, so only a snapshot can bring it.
    nodes[f].process.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = ask(&nodes[f], "S").await.unwrap_or_default();
        if field(&s, "snapshot=") >= lead_snap {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "follower never installed the leader's snapshot ({s}):\n{}",
            dump(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The leader's process dies while a follower forwards writes to it.
    const FORWARDED: u64 = 12;
    let rest: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let sender_addr = nodes[rest[0]].app_addr.clone();
    let (sent_tx, mut sent) = tokio::sync::watch::channel(0u64);
    let sender = tokio::spawn(async move {
        let mut results = Vec::new();
        for seq in 1..=FORWARDED {
            let r = ask_addr(&sender_addr, &format!("W 4343 {seq} incr kill 1")).await;
            results.push(r);
            sent_tx.send_replace(seq);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        results
    });
    tokio::time::timeout(Duration::from_secs(30), sent.wait_for(|n| *n >= 3))
        .await
        .expect("the first forwarded writes answered")
        .unwrap();
    nodes[l].process.kill();
    let results = sender.await.unwrap();
    let mut outputs = Vec::new();
    let mut retried = 0;
    for (i, r) in results.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let out = match r.as_deref().and_then(|r| r.strip_prefix("OK ")) {
            Some(out) => out.to_string(),
            None => {
                // Unknown outcome (an error or no answer): the same write id
                // again, on any live node.
                retried += 1;
                eprintln!("forwarded write {seq} answered {r:?}; retrying it");
                propose_line(&nodes, &rest, &format!("W 4343 {seq} incr kill 1")).await
            }
        };
        outputs.push(out.parse::<u64>().expect("incr answers a number"));
    }
    outputs.sort_unstable();
    assert_eq!(
        outputs,
        (1..=FORWARDED).collect::<Vec<_>>(),
        "each forwarded write applied exactly once ({retried} retried)"
    );
    eprintln!("{FORWARDED} writes forwarded across the leader kill, {retried} retried");
    let new_leader = leader(&nodes, &rest).await;
    assert_ne!(new_leader, l);
    expected_total += 1000;
    assert_eq!(
        propose(&nodes, &rest, "incr hits 1000").await,
        expected_total.to_string()
    );
    assert_eq!(propose(&nodes, &rest, "pop").await, "job-0");

    // The old leader restarts from its snapshot + log and catches up.
    nodes[l].process.start().unwrap();
    assert_eq!(propose(&nodes, &all, "push last").await, "130");

    eprintln!(
        "follower {} was at {f_applied}, caught up to leader snapshot {lead_snap}; \
         old leader {} killed, new leader {}",
        nodes[f].id, nodes[l].id, nodes[new_leader].id
    );

    // Every replica: same applied index, same state.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut states = Vec::new();
        for n in &nodes {
            let s = ask(n, "S").await.unwrap_or_default();
            let d = ask(n, "Q e dump").await.unwrap_or_default();
            states.push((field(&s, "applied="), d));
        }
        let same = states.windows(2).all(|w| w[0] == w[1]) && states[0].0 > 0;
        if same {
            eprintln!("converged: {states:?}");
            let d = &states[0].1;
            assert!(d.contains(&format!("hits:{expected_total}")), "{d}");
            assert!(d.contains("popped=2"), "{d}");
            assert!(d.contains(&format!(",kill:{FORWARDED} ")), "{d}");
            assert!(d.contains("counters=fwd:5,"), "{d}");
            assert!(d.ends_with("|last popped=2"), "{d}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never converged: {states:?}\n{}",
            dump(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in nodes.iter_mut() {
        n.process.kill();
    }
}
