//! The storage quota against real `d-engine-server` processes (issue 16,
//! finding 5): a 3-node cluster with `[storage] quota_bytes = 4096` refuses a
//! put past the quota with `NoSpace` through the Rust client, reports the
//! NOSPACE alarm in `Admin.NodeStatus`, keeps serving reads and deletes, and
//! accepts writes again once a delete freed space. Every replica counts the
//! same data size.

use std::time::{Duration, Instant};

use d_engine_client::Error;
use d_engine_tests::cluster::{Cluster, ClusterConfig};

const QUOTA: u64 = 4096;
const VALUE: usize = 1000;
/// Key + value + 32 bytes of metadata per key ("kN" keys).
const PER_KEY: u64 = 2 + VALUE as u64 + 32;

fn cluster_with_quota() -> (Cluster, tempfile::TempDir) {
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("quota.toml");
    std::fs::write(&path, format!("[storage]\nquota_bytes = {QUOTA}\n")).unwrap();
    let c = Cluster::start(ClusterConfig {
        nodes: 3,
        extra_args: vec!["--config".into(), path.display().to_string()],
        ..Default::default()
    });
    (c, conf)
}

/// Waits until every node reports `data_bytes == want` (replicas apply
/// asynchronously).
async fn wait_data_bytes(c: &Cluster, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut got = Vec::new();
        for id in c.ids() {
            got.push(c.status(id).await.map(|s| s.data_bytes));
        }
        if got.iter().all(|g| g.as_ref().ok() == Some(&want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas do not agree on data_bytes = {want}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_at_its_quota_refuses_puts_with_no_space_and_recovers_after_a_delete() {
    let (mut c, _conf) = cluster_with_quota();
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let client = c.client().await;
    let kv = client.kv();
    let v = vec![9u8; VALUE];
    for k in ["k1", "k2", "k3"] {
        kv.put(k, &v).await.expect("under the quota");
    }
    wait_data_bytes(&c, 3 * PER_KEY).await;

    let err = kv.put("k4", &v).await.expect_err("past the quota");
    match &err {
        Error::NoSpace(m) => {
            for want in ["storage.quota_bytes = 4096", "delete keys"] {
                assert!(m.contains(want), "the message lacks {want:?}: {m}");
            }
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    let st = c.status(leader).await.unwrap();
    assert_eq!(st.alarms, vec!["NOSPACE".to_string()], "{st:?}");
    assert_eq!(st.quota_bytes, QUOTA);
    let via_client = client.admin().node_status_at(&c.client_addr(leader)).await;
    assert_eq!(
        via_client.unwrap().alarms,
        vec![d_engine_client::Alarm::NoSpace]
    );

    // Reads and deletes still work; the delete frees space and clears the
    // alarm; writes are accepted again.
    assert_eq!(kv.get("k1").await.unwrap().unwrap().value, v);
    assert_eq!(kv.get("k4").await.unwrap(), None, "nothing was written");
    assert!(kv.delete("k1").await.unwrap());
    wait_data_bytes(&c, 2 * PER_KEY).await;
    let st = c.status(leader).await.unwrap();
    assert!(st.alarms.is_empty(), "{st:?}");
    kv.put("k4", &v).await.expect("space was freed");
    wait_data_bytes(&c, 3 * PER_KEY).await;
}
