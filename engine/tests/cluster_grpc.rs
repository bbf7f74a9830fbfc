//! A 3-node cluster in one process over real gRPC on 127.0.0.1 (ephemeral
//! ports): election, replication, NotLeader hints, failover, growth.

use std::time::{Duration, Instant};

use d_engine_node::config::MemberConfig;
use d_engine_node::{Config, Consistency, EmbeddedEngine, Error};
use tokio::net::TcpListener;

struct Node {
    cfg: Config,
    engine: Option<EmbeddedEngine>,
    _dir: tempfile::TempDir,
}

fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap().to_string();
    (l, a)
}

fn base_config(id: u64, dir: &std::path::Path, peer: &str, client: &str) -> Config {
    let mut c = Config::single_node(dir);
    c.node_id = id;
    c.peer_addr = peer.to_string();
    c.client_addr = client.to_string();
    c.raft.tick_ms = 10;
    c.raft.election_timeout_ms = 150;
    c.raft.heartbeat_interval_ms = 30;
    c
}

async fn cluster(n: u64, forward: bool) -> Vec<Node> {
    cluster_with(n, forward, 150).await
}

/// [`cluster`] with another election timeout (heartbeats at a fifth of it).
async fn cluster_with(n: u64, forward: bool, election_timeout_ms: u64) -> Vec<Node> {
    cluster_tuned(n, election_timeout_ms, |c| {
        c.embedded.forward_to_leader = forward
    })
    .await
}

/// [`cluster_with`], each node's configuration changed by `tune`.
async fn cluster_tuned(n: u64, election_timeout_ms: u64, tune: impl Fn(&mut Config)) -> Vec<Node> {
    init_log();
    let mut ls = Vec::new();
    for _ in 0..n {
        ls.push((listener().await, listener().await));
    }
    let members: Vec<MemberConfig> = ls
        .iter()
        .enumerate()
        .map(|(i, ((_, p), (_, c)))| MemberConfig {
            id: i as u64 + 1,
            peer_addr: p.clone(),
            client_addr: c.clone(),
        })
        .collect();
    let mut nodes = Vec::new();
    for (i, ((pl, pa), (cl, ca))) in ls.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = base_config(i as u64 + 1, dir.path(), &pa, &ca);
        cfg.members = members.clone();
        cfg.raft.election_timeout_ms = election_timeout_ms;
        cfg.raft.heartbeat_interval_ms = election_timeout_ms / 5;
        tune(&mut cfg);
        let engine = EmbeddedEngine::builder(cfg.clone())
            .peer_listener(pl)
            .client_listener(cl)
            .start()
            .await
            .unwrap();
        nodes.push(Node {
            cfg,
            engine: Some(engine),
            _dir: dir,
        });
    }
    nodes
}

fn e(n: &Node) -> &EmbeddedEngine {
    n.engine.as_ref().unwrap()
}

async fn leader_of(nodes: &[Node], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let leaders: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.engine.is_some())
            .filter(|(_, n)| e(n).status().role == d_engine_node::runtime::NodeRole::Leader)
            .map(|(i, _)| i)
            .collect();
        if leaders.len() == 1 {
            let i = leaders[0];
            if e(&nodes[i])
                .wait_ready(Duration::from_millis(50))
                .await
                .is_ok()
            {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no single leader within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn eventually_has(n: &Node, key: &[u8], value: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = e(n)
            .client()
            .get_with(key, Consistency::Eventual)
            .await
            .unwrap();
        if got.as_ref().map(|kv| &kv.value[..]) == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} never saw {key:?}: {:?}",
            n.cfg.node_id,
            e(n).status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_fail_over() {
    let mut nodes = cluster(3, false).await;
    for n in &nodes {
        e(n).wait_ready(Duration::from_secs(10)).await.unwrap();
    }
    let l = leader_of(&nodes, Duration::from_secs(10)).await;
    let lc = e(&nodes[l]).client();
    for i in 0..50u32 {
        lc.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    for n in &nodes {
        eventually_has(n, b"k49", b"v49").await;
        assert_eq!(e(n).status().members.len(), 3);
    }
    // A write on a follower (forwarding disabled) names the leader.
    let f = (l + 1) % 3;
    let err = e(&nodes[f]).client().put(b"x", b"y").await.unwrap_err();
    match err {
        Error::NotLeader {
            leader_id,
            leader_addr,
        } => {
            assert_eq!(leader_id, Some(nodes[l].cfg.node_id));
            assert_eq!(
                leader_addr.as_deref(),
                Some(nodes[l].cfg.client_addr.as_str())
            );
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    // Linearizable reads on a follower are refused the same way; eventual ones work.
    assert!(matches!(
        e(&nodes[f]).client().get(b"k1").await,
        Err(Error::NotLeader { .. })
    ));
    // Kill the leader: the other two elect a new one and keep every write.
    let old = nodes[l].engine.take().unwrap();
    old.stop().await.unwrap();
    let l2 = leader_of(&nodes, Duration::from_secs(10)).await;
    assert_ne!(l2, l);
    let c2 = e(&nodes[l2]).client();
    for i in 0..50u32 {
        let kv = c2.get(format!("k{i}")).await.unwrap().unwrap();
        assert_eq!(kv.value, format!("v{i}").as_bytes());
    }
    c2.put(b"after", b"failover").await.unwrap();
    for n in &nodes {
        if let Some(eng) = &n.engine {
            eng.stop().await.unwrap();
        }
    }
}

/// Restart in the same process on the same addresses and data directory:
/// the stopped node's peer streams end, its sled lock is released (or
/// waited for), and the restarted node catches up on what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up() {
    let mut nodes = cluster(3, false).await;
    let l = leader_of(&nodes, Duration::from_secs(10)).await;
    e(&nodes[l]).client().put(b"before", b"1").await.unwrap();
    let f = (l + 1) % 3;
    let old = nodes[f].engine.take().unwrap();
    old.stop().await.unwrap();
    e(&nodes[l]).client().put(b"after", b"2").await.unwrap();
    let cfg = nodes[f].cfg.clone();
    nodes[f].engine = Some(EmbeddedEngine::start_with_config(cfg).await.unwrap());
    eventually_has(&nodes[f], b"after", b"2").await;
    for n in &nodes {
        e(n).stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_one_to_three_and_transfer_leadership() {
    init_log();
    let dir1 = tempfile::tempdir().unwrap();
    let ((pl, pa), (cl, ca)) = (listener().await, listener().await);
    let cfg1 = base_config(1, dir1.path(), &pa, &ca);
    let e1 = EmbeddedEngine::builder(cfg1)
        .peer_listener(pl)
        .client_listener(cl)
        .start()
        .await
        .unwrap();
    e1.wait_ready(Duration::from_secs(5)).await.unwrap();
    assert!(
        e1.status().sole_voter,
        "a one-node cluster's leader is its only voter"
    );
    let c1 = e1.client();
    for i in 0..20u32 {
        c1.put(format!("g{i}"), b"v").await.unwrap();
    }
    // Compact the log so new members are caught up by snapshot.
    e1.handle().trigger_snapshot().await.unwrap();
    c1.put(b"after-snap", b"1").await.unwrap();

    let mut others = Vec::new();
    for id in 2..=3u64 {
        let dir = tempfile::tempdir().unwrap();
        let ((pl, pa), (cl, ca)) = (listener().await, listener().await);
        let mut cfg = base_config(id, dir.path(), &pa, &ca);
        cfg.join = true;
        cfg.members = vec![MemberConfig {
            id: 1,
            peer_addr: e1.peer_addr().unwrap().to_string(),
            client_addr: String::new(),
        }];
        let eng = EmbeddedEngine::builder(cfg)
            .peer_listener(pl)
            .client_listener(cl)
            .start()
            .await
            .unwrap();
        let members = c1.add_learner(id, pa.clone(), ca.clone()).await.unwrap();
        assert!(members
            .iter()
            .any(|m| m.id == id && m.role == d_engine_node::MemberRole::Learner));
        assert_eq!(
            e1.status().sole_voter,
            id == 2,
            "a learner does not vote; voter 2 was promoted before learner 3 was added"
        );
        // Wait until the learner has caught up, then promote it.
        let deadline = Instant::now() + Duration::from_secs(15);
        while eng.status().applied_index < e1.status().commit_index {
            assert!(Instant::now() < deadline, "learner {id} did not catch up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let members = match c1.promote(id).await {
            Ok(m) => m,
            Err(err) => panic!(
                "promote {id}: {err:?}\nleader {:?}\nlearner {:?}",
                e1.status(),
                eng.status()
            ),
        };
        assert!(members
            .iter()
            .any(|m| m.id == id && m.role == d_engine_node::MemberRole::Voter));
        // Linearizable reads must now go through a ReadIndex round.
        assert!(
            !e1.status().sole_voter,
            "voter {id} added, still sole voter"
        );
        assert!(!eng.status().sole_voter);
        let kv = c1
            .get_with(b"after-snap", Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(kv.map(|kv| kv.value.to_vec()), Some(b"1".to_vec()));
        others.push((eng, dir));
    }
    for (eng, _) in &others {
        let kv = eng
            .client()
            .get_with(b"after-snap", Consistency::Eventual)
            .await
            .unwrap();
        assert!(kv.is_some());
        assert_eq!(eng.status().members.len(), 3);
    }
    // Hand leadership to node 2.
    c1.transfer_leader(2).await.unwrap();
    let e2 = &others[0].0;
    e2.wait_ready(Duration::from_secs(5)).await.unwrap();
    assert_eq!(e2.status().role, d_engine_node::runtime::NodeRole::Leader);
    e2.client().put(b"from-2", b"ok").await.unwrap();
    // Remove node 3.
    let members = e2.client().remove_member(3).await.unwrap();
    assert_eq!(members.len(), 2);
    // Unknown node in an admin call: a clear error.
    assert!(matches!(
        e2.client().promote(42).await,
        Err(Error::UnknownNode(_))
    ));
    for (eng, _) in &others {
        eng.stop().await.unwrap();
    }
    e1.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_writes_are_forwarded_to_the_leader() {
    let nodes = cluster(3, true).await;
    let l = leader_of(&nodes, Duration::from_secs(10)).await;
    let f = (l + 1) % 3;
    let fc = e(&nodes[f]).client();
    // Writes and linearizable reads on a follower go to the leader over gRPC.
    let rev = fc.put(b"fwd", b"1").await.unwrap();
    assert!(rev > 0);
    assert_eq!(fc.get(b"fwd").await.unwrap().unwrap().value, b"1"[..]);
    let o = fc
        .compare_and_swap(b"fwd", Some(b"1".to_vec()), Some(b"2".to_vec()))
        .await
        .unwrap();
    assert!(o.succeeded);
    // CAS with a TTL is forwarded too, and the TTL reaches the leader.
    let o = fc
        .compare_and_swap_with_ttl(
            b"fwd",
            Some(b"2".to_vec()),
            Some(b"3".to_vec()),
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    assert!(o.succeeded);
    let kv = e(&nodes[l]).client().get(b"fwd").await.unwrap().unwrap();
    assert_eq!(kv.value, b"3"[..]);
    assert!(kv.expires_at_ms > 0, "the leader stored the TTL");
    assert!(fc.delete(b"fwd").await.unwrap());
    assert_eq!(fc.get(b"fwd").await.unwrap(), None);
    // The follower applies the same history (eventual read is local).
    fc.put(b"fwd2", b"x").await.unwrap();
    eventually_has(&nodes[f], b"fwd2", b"x").await;
    // Multi-key reads and scans at the leader's consistency are forwarded.
    fc.put_with_ttl(b"fwd3", b"y", Duration::from_secs(600))
        .await
        .unwrap();
    let got = fc
        .get_multi(
            vec![b"fwd2".to_vec(), b"nope".to_vec(), b"fwd3".to_vec()],
            Consistency::Lease,
        )
        .await
        .unwrap();
    let values: Vec<Option<Vec<u8>>> = got
        .into_iter()
        .map(|kv| kv.map(|kv| kv.value.to_vec()))
        .collect();
    assert_eq!(values, [Some(b"x".to_vec()), None, Some(b"y".to_vec())]);
    let kvs = fc
        .scan_prefix(b"fwd", 0, Consistency::Linearizable)
        .await
        .unwrap();
    let keys: Vec<&[u8]> = kvs.iter().map(|kv| &kv.key[..]).collect();
    assert_eq!(keys, [b"fwd2".as_slice(), b"fwd3".as_slice()]);
    assert!(kvs[1].expires_at_ms > 0, "the TTL was forwarded");
    for n in &nodes {
        e(n).stop().await.unwrap();
    }
}

/// With `[auth]` on, a follower's forwarded calls act as the user owning
/// `auth.forward_token` (checked by the leader like any client's), while
/// the application's calls on the leader's own node are not checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_calls_act_as_the_forward_token_user() {
    use d_engine_node::auth::{
        sha256_hex, Access, AuthConfig, GrantConfig, RoleConfig, UserConfig,
    };
    const TOKEN: &str = "forwarder-token";
    let nodes = cluster_tuned(3, 150, |c| {
        c.auth = AuthConfig {
            enabled: true,
            forward_token: Some(TOKEN.into()),
            roles: vec![RoleConfig {
                name: "app-rw".into(),
                grants: vec![GrantConfig {
                    prefix: "app/".into(),
                    access: Access::Readwrite,
                }],
            }],
            users: vec![UserConfig {
                name: "forwarder".into(),
                password_hash: None,
                tokens: vec![sha256_hex(TOKEN.as_bytes())],
                roles: vec!["app-rw".into()],
            }],
            ..AuthConfig::default()
        };
    })
    .await;
    let l = leader_of(&nodes, Duration::from_secs(10)).await;
    let fc = e(&nodes[(l + 1) % 3]).client();
    fc.put(b"app/1", b"ok")
        .await
        .expect("granted to the token's user");
    assert_eq!(fc.get(b"app/1").await.unwrap().unwrap().value, b"ok"[..]);
    let err = fc.put(b"other/1", b"no").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
    e(&nodes[l])
        .client()
        .put(b"other/1", b"local")
        .await
        .expect("the leader's own application is not checked");
    for n in &nodes {
        e(n).stop().await.unwrap();
    }
}

/// Peer traffic runs on the engine's own runtime: an application that blocks
/// its runtime's only thread for six election timeouts does not cost the
/// cluster its leader (before, heartbeats shared that runtime and stopped).
/// The timeout is 500 ms so that other tests running beside this one on 2
/// cores cannot cause an election of their own.
#[tokio::test(flavor = "current_thread")]
async fn a_blocked_application_runtime_does_not_depose_the_leader() {
    let nodes = cluster_with(3, false, 500).await;
    let l = leader_of(&nodes, Duration::from_secs(10)).await;
    let view = |nodes: &[Node]| -> Vec<(u64, u64)> {
        nodes
            .iter()
            .map(|n| {
                let s = e(n).status();
                (s.term, s.leader_id)
            })
            .collect()
    };
    let leader_id = nodes[l].cfg.node_id;
    let deadline = Instant::now() + Duration::from_secs(10);
    while view(&nodes).iter().any(|v| v.1 != leader_id) {
        assert!(
            Instant::now() < deadline,
            "followers never learned the leader"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = view(&nodes);
    // A badly behaved application: blocking work on its async runtime.
    std::thread::sleep(Duration::from_millis(3000));
    let after = view(&nodes);
    assert_eq!(
        before, after,
        "terms or leaders changed while the application's runtime was blocked"
    );
    e(&nodes[l]).client().put(b"after", b"block").await.unwrap();
    for n in &nodes {
        eventually_has(n, b"after", b"block").await;
    }
}

/// Many linearizable readers at once on the leader (they share ReadIndex
/// rounds through the read watermark) while one writer counts up: every
/// read sees at least the last value acknowledged before it started, and
/// none is lost or refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_linearizable_reads_see_every_acknowledged_write() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let nodes = cluster(3, false).await;
    let l = leader_of(&nodes, Duration::from_secs(10)).await;
    let lc = e(&nodes[l]).client();
    lc.put(b"counter", 0u64.to_be_bytes().to_vec())
        .await
        .unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (c, acked) = (lc.clone(), acked.clone());
        tokio::spawn(async move {
            for v in 1..=200u64 {
                c.put(b"counter", v.to_be_bytes().to_vec()).await.unwrap();
                acked.store(v, Ordering::SeqCst);
            }
        })
    };
    let mut readers = Vec::new();
    for _ in 0..50 {
        let (c, acked) = (lc.clone(), acked.clone());
        readers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while acked.load(Ordering::SeqCst) < 200 {
                let floor = acked.load(Ordering::SeqCst);
                let kv = c
                    .get_with(b"counter", Consistency::Linearizable)
                    .await
                    .unwrap()
                    .unwrap();
                let seen = u64::from_be_bytes(kv.value[..].try_into().unwrap());
                assert!(seen >= floor, "read {seen} after {floor} was acknowledged");
                n += 1;
            }
            n
        }));
    }
    writer.await.unwrap();
    let mut total = 0;
    for r in readers {
        total += r.await.unwrap();
    }
    assert!(total >= 50, "every reader read at least once: {total}");
    for n in &nodes {
        e(n).stop().await.unwrap();
    }
}
