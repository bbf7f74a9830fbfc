//! A 3-node standalone cluster of real `d-engine-server` processes.

use std::time::Duration;

use d_engine_client::Consistency;
use d_engine_proto::v1 as pb;
use d_engine_tests::cluster::{Cluster, ClusterConfig};
use tonic::Code;

const ELECTION_BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_replicates_redirects_and_shuts_down_cleanly() {
    let mut c = Cluster::start(ClusterConfig::default());
    let leader = c.wait_leader(ELECTION_BOUND).await.unwrap();
    let follower = *c.ids().iter().find(|id| **id != leader).unwrap();

    // Writes through the Rust client (any endpoint; it finds the leader).
    let client = c.client().await;
    let kv = client.kv();
    let mut last_rev = 0;
    for i in 0..50u32 {
        last_rev = kv
            .put(format!("k{i:03}"), format!("v{i}"))
            .await
            .unwrap_or_else(|e| panic!("put {i}: {e}\n{}", c.log_tails(20)));
    }
    assert_eq!(
        kv.get("k049").await.unwrap().expect("present").value,
        b"v49"[..]
    );

    // Every node applies the writes; eventual reads on each node see them.
    for id in c.ids() {
        c.wait_applied(id, last_rev, Duration::from_secs(20))
            .await
            .unwrap();
        let got = c
            .kv(id)
            .await
            .unwrap()
            .get(pb::GetRequest {
                key: b"k010".to_vec(),
                consistency: pb::Consistency::Eventual as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.kv.expect("replicated").value, &b"v10"[..], "node {id}");
    }

    // A write sent straight to a follower: NOT_LEADER naming the leader's
    // id and client address.
    let err = c
        .kv(follower)
        .await
        .unwrap()
        .put(pb::PutRequest {
            key: b"direct".to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    match d_engine_client::status_codec::from_status(&err) {
        d_engine_client::Error::NotLeader {
            leader_id,
            leader_addr,
        } => {
            assert_eq!(leader_id, Some(leader));
            assert_eq!(leader_addr.as_deref(), Some(c.client_addr(leader).as_str()));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }

    // Linearizable read via the client after all that.
    assert_eq!(
        kv.get_with("k000", Consistency::Linearizable)
            .await
            .unwrap()
            .unwrap()
            .value,
        b"v0"[..]
    );

    // Graceful shutdown: SIGTERM → exit code 0, and the data survives a restart.
    let st = c
        .terminate(follower, Duration::from_secs(20))
        .expect("follower exits on SIGTERM");
    assert!(st.success(), "exit status {st}\n{}", c.log_tails(20));
    let log = c.node(follower).log();
    assert!(
        log.contains("stopped cleanly"),
        "{}",
        c.node(follower).log_tail(20)
    );
    c.restart(follower);
    c.wait_serving(follower, Duration::from_secs(20))
        .await
        .unwrap();
    c.wait_applied(follower, last_rev, Duration::from_secs(20))
        .await
        .unwrap();
}
