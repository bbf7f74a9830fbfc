//! `Cluster.WatchCluster` on real server processes: a raw stream on one
//! follower and the Rust client's `cluster_changes()` (which follows the
//! stream across nodes) see the leader killed and a new leader with a
//! higher term, a learner added, and the raw stream ends with
//! SHUTTING_DOWN when its node stops; the client stream moves on to
//! another node and keeps reporting.

use std::time::{Duration, Instant};

use d_engine_client::{ClusterState, Error, ErrorCode, MemberRole};
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::cluster_client::ClusterClient;
use d_engine_tests::cluster::{Cluster, ClusterConfig};
use tonic::transport::Endpoint;
use tonic::Streaming;

/// Generous for a loaded 2-core machine: detection + election.
const EVENT_BOUND: Duration = Duration::from_secs(20);

/// Reads `stream` until `pred` holds for a message; panics with what it
/// saw on timeout, on an error or on the end of the stream.
async fn raw_until(
    stream: &mut Streaming<pb::ClusterEvent>,
    what: &str,
    pred: impl Fn(&pb::ClusterEvent) -> bool,
) -> pb::ClusterEvent {
    let deadline = Instant::now() + EVENT_BOUND;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(ev))) if pred(&ev) => return ev,
            Ok(Ok(Some(ev))) => seen.push(ev),
            Ok(Ok(None)) => panic!("raw stream ended waiting for {what}; saw {seen:#?}"),
            Ok(Err(st)) => panic!("raw stream failed waiting for {what}: {st}; saw {seen:#?}"),
            Err(_) => panic!("no {what} within {EVENT_BOUND:?}; saw {seen:#?}"),
        }
    }
}

/// Reads the client stream until `pred` holds for an item.
async fn client_until(
    stream: &mut d_engine_client::ClusterChangeStream,
    what: &str,
    pred: impl Fn(&ClusterState) -> bool,
) -> ClusterState {
    let deadline = Instant::now() + EVENT_BOUND;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.recv()).await {
            Ok(Some(Ok(s))) if pred(&s) => return s,
            Ok(Some(Ok(s))) => seen.push(s),
            Ok(Some(Err(e))) => {
                panic!("client stream failed waiting for {what}: {e}; saw {seen:#?}")
            }
            Ok(None) => panic!("client stream ended waiting for {what}; saw {seen:#?}"),
            Err(_) => panic!("client stream: no {what} within {EVENT_BOUND:?}; saw {seen:#?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_events_follow_failover_membership_and_shutdown() {
    let mut c = Cluster::start(ClusterConfig::default());
    let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
    let (f, o) = (others[0], others[1]);

    // A raw stream on follower f (a channel without a request timeout).
    let ch = Endpoint::from_shared(format!("http://{}", c.client_addr(f)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = ClusterClient::new(ch)
        .watch_cluster(pb::WatchClusterRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = raw_until(&mut raw, "first event", |_| true).await;
    assert!(first.leader_changed && first.members_changed, "{first:?}");
    assert_eq!(first.leader_id, leader);
    assert_eq!(first.members.len(), 3);
    assert_eq!(first.header.as_ref().unwrap().node_id, f);
    let old_term = first.term;

    // The client lists the leader first, so its stream starts there and
    // must move when the leader dies.
    let endpoints: Vec<String> = [leader, f, o]
        .iter()
        .map(|id| format!("http://{}", c.client_addr(*id)))
        .collect();
    let client = d_engine_client::ClientBuilder::new(endpoints)
        .request_timeout(Duration::from_secs(15))
        .build()
        .await
        .unwrap();
    let mut changes = client.cluster_changes().await.unwrap();
    let s = client_until(&mut changes, "first item", |_| true).await;
    assert!(s.leader_changed && s.members_changed, "{s:?}");
    assert_eq!((s.leader.id, s.node_id), (leader, leader));

    // Kill the leader: both streams report a new leader in a later term.
    c.kill(leader);
    let ev = raw_until(&mut raw, "a new leader", |e| {
        e.leader_changed && e.leader_id != 0 && e.leader_id != leader
    })
    .await;
    assert!(
        ev.term > old_term,
        "new leader's term {} <= {old_term}",
        ev.term
    );
    assert!(!ev.members_changed, "{ev:?}");
    let new_leader = ev.leader_id;
    let s = client_until(&mut changes, "the new leader", |s| {
        s.leader.id == new_leader
    })
    .await;
    assert!(s.leader.term > old_term && s.leader_changed, "{s:?}");
    assert_ne!(s.node_id, leader, "served by a live node");

    // Add a learner: members_changed with 4 members, the new one a learner.
    let (peer, client_addr) = c.spawn_joiner(4);
    c.wait_serving(4, Duration::from_secs(30)).await.unwrap();
    client
        .admin()
        .add_learner(4, peer, client_addr)
        .await
        .unwrap_or_else(|e| panic!("add learner: {e}\n{}", c.log_tails(30)));
    let is_learner_4 = |ms: &[pb::Member]| {
        ms.iter()
            .any(|m| m.id == 4 && m.role == pb::MemberRole::Learner as i32)
    };
    let ev = raw_until(&mut raw, "learner 4", |e| {
        e.members_changed && is_learner_4(&e.members)
    })
    .await;
    assert_eq!(ev.members.len(), 4);
    let s = client_until(&mut changes, "learner 4", |s| {
        s.members_changed
            && s.members
                .iter()
                .any(|m| m.id == 4 && m.role == MemberRole::Learner)
    })
    .await;
    assert_eq!(s.members.len(), 4);

    // Stop f gracefully: its raw stream ends with SHUTTING_DOWN.
    c.terminate(f, Duration::from_secs(10))
        .expect("node stops on SIGTERM");
    let deadline = Instant::now() + EVENT_BOUND;
    let end = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, raw.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("raw stream ended without SHUTTING_DOWN"),
            Ok(Err(st)) => break Error::from(st),
            Err(_) => panic!("raw stream did not end within {EVENT_BOUND:?} of SIGTERM"),
        }
    };
    assert_eq!(end.code(), ErrorCode::ShuttingDown, "{end}");

    // The client stream was on f (the endpoint after the dead leader) and
    // moves to o. Bring the old leader back (a majority with o again) and
    // remove the learner: the client stream reports it from its new node.
    c.restart(leader);
    c.wait_leader(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.log_tails(30)));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.admin().remove_member(4).await {
            Ok(_) => break,
            Err(e @ (Error::ChangeInProgress(_) | Error::Timeout(_) | Error::NoLeader(_))) => {
                assert!(Instant::now() < deadline, "remove learner 4: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(Error::UnknownNode(_)) => break, // a retried remove already applied
            Err(e) => panic!("remove learner 4: {e}\n{}", c.log_tails(30)),
        }
    }
    let s = client_until(&mut changes, "learner 4 removed", |s| {
        s.members_changed && !s.members.iter().any(|m| m.id == 4)
    })
    .await;
    assert_eq!(s.members.len(), 3, "{s:?}");
    assert!(
        [leader, o].contains(&s.node_id),
        "served by a live node: {s:?}"
    );
}
