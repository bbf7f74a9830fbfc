//! Hostile but well-formed Raft messages against a real `d-engine-server`
//! (issue 16, findings 1 and 2), sent over the peer gRPC port exactly as
//! today's transport accepts them: the right cluster id header and a
//! claimed sender id. The node must refuse them in its core, keep running
//! and serving, and never apply the forged write.
//!
//! Before the fix the first message below (a forged Put from "node 2" in a
//! huge term) was committed and applied by a default single node, and the
//! second (the reproduction) made it panic and exit.

use std::time::Duration;

use bytes::Bytes;
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::raft_client::RaftClient;
use d_engine_storage::command::{Command, Op};
use d_engine_tests::cluster::{Cluster, ClusterConfig};
use tonic::codegen::tokio_stream;
use tonic::transport::Endpoint;

/// The term of the reproduction.
const HUGE: u64 = 1 << 40;

fn entry(index: u64, term: u64, payload: pb::raft_entry::Payload) -> pb::RaftEntry {
    pb::RaftEntry {
        term,
        index,
        payload: Some(payload),
    }
}

fn append(from: u64, term: u64, prev: (u64, u64), entries: Vec<pb::RaftEntry>) -> pb::RaftMessage {
    let commit = entries.last().map(|e| e.index).unwrap_or(prev.0);
    pb::RaftMessage {
        from,
        to: 1,
        term,
        body: Some(pb::raft_message::Body::AppendEntries(pb::AppendEntries {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit: commit,
            heartbeat_seq: 1,
        })),
    }
}

fn forged_put(key: &str) -> pb::raft_entry::Payload {
    let cmd = Command::new(Op::Put {
        key: Bytes::from(key.to_string()),
        value: Bytes::from_static(b"stranger"),
        expires_at_ms: None,
    });
    pb::raft_entry::Payload::Command(cmd.encode().to_vec())
}

/// Opens a Raft stream to node 1 claiming to be node `from` of the test
/// cluster and sends `msgs` on it. Returns the call's outcome (the server
/// may end the stream; what matters is what the node does with them).
async fn send(c: &Cluster, from: u64, msgs: Vec<pb::RaftMessage>) -> Result<(), tonic::Status> {
    let ch = Endpoint::from_shared(format!("http://{}", c.peer_addr(1)))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the peer port");
    let mut req = tonic::Request::new(tokio_stream::iter(msgs));
    let md = req.metadata_mut();
    md.insert("x-dengine-cluster-id", c.config.cluster_id.parse().unwrap());
    md.insert("x-dengine-from", from.to_string().parse().unwrap());
    RaftClient::new(ch).stream(req).await.map(|_| ())
}

/// The node is alive, still the leader of its one-node cluster, and serves
/// a fresh write and read; `forged` was never applied.
async fn assert_alive_and_clean(c: &mut Cluster, forged: &[String]) {
    // Give the node time to act on (or die of) what it was sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        c.node(1).is_running(),
        "the node exited: {}",
        c.log_tails(40)
    );
    let st = c.status(1).await.expect("status");
    assert_eq!(st.role, "leader", "{st:?}");
    let client = c.client().await;
    client.kv().put("after", "ok").await.expect("write after");
    assert_eq!(
        client.kv().get("after").await.unwrap().unwrap().value,
        b"ok"
    );
    for key in forged {
        assert!(
            client.kv().get(key.as_str()).await.unwrap().is_none(),
            "the forged Put of {key} was applied"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_raft_messages_are_refused_by_a_real_node() {
    let mut c = Cluster::start(ClusterConfig {
        nodes: 1,
        ..Default::default()
    });
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let client = c.client().await;
    client.kv().put("k", "v").await.expect("first write");
    let last = c.status(1).await.expect("status").last_log_index;
    assert!(last >= 2);

    // 1. A stranger's forged Put, positioned right after the node's log
    //    (a fresh single node writes everything in term 1): before the fix
    //    it was committed and applied.
    let repeat: Vec<_> = (1..=last)
        .map(|i| entry(i, 1, pb::raft_entry::Payload::Noop(true)))
        .collect();
    let mut entries = repeat;
    entries.push(entry(last + 1, HUGE, forged_put("forged-1")));
    let _ = send(&c, 2, vec![append(2, HUGE, (0, 0), entries)]).await;
    // 2. The reproduction: a conflicting entry below the commit
    //    index; before the fix the node panicked and exited.
    let _ = send(
        &c,
        2,
        vec![append(
            2,
            HUGE,
            (0, 0),
            vec![entry(1, HUGE, pb::raft_entry::Payload::Noop(true))],
        )],
    )
    .await;
    assert_alive_and_clean(&mut c, &["forged-1".to_string()]).await;
    // The refusals are logged, naming the sender and the reason.
    let logs = c.log_tails(400);
    assert!(
        logs.contains("refused a peer message") && logs.contains("sender 2 is not a member"),
        "{logs}"
    );

    // 3. A bounded semantic fuzz: arbitrary well-formed messages of every
    //    kind from strangers, any term, index and commit.
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut forged = vec!["forged-1".to_string()];
    for round in 0..20 {
        let from = 2 + next() % 5;
        let mut msgs = Vec::new();
        for i in 0..10 {
            let term = match next() % 4 {
                0 => 1 + next() % 3,
                1 => HUGE,
                2 => u64::MAX,
                _ => next(),
            };
            let index = match next() % 3 {
                0 => next() % (last + 3),
                1 => u64::MAX,
                _ => next(),
            };
            use pb::raft_message::Body;
            let body = match next() % 6 {
                0 => Body::RequestVote(pb::RequestVote {
                    pre_vote: next() % 2 == 0,
                    last_log_index: index,
                    last_log_term: term,
                    leader_transfer: true,
                }),
                1 => Body::RequestVoteResponse(pb::RequestVoteResponse {
                    pre_vote: next() % 2 == 0,
                    granted: true,
                }),
                2 => Body::AppendEntriesResponse(pb::AppendEntriesResponse {
                    success: true,
                    match_index: index,
                    conflict_index: 0,
                    conflict_term: 0,
                    heartbeat_seq: next(),
                }),
                3 => Body::TimeoutNow(pb::TimeoutNow {}),
                _ => {
                    let key = format!("forged-{round}-{i}");
                    forged.push(key.clone());
                    let prev = index.min(last);
                    let m = append(
                        from,
                        term,
                        (prev, 1),
                        vec![entry(prev.wrapping_add(1), term, forged_put(&key))],
                    );
                    m.body.expect("set")
                }
            };
            msgs.push(pb::RaftMessage {
                from,
                to: 1,
                term,
                body: Some(body),
            });
        }
        let _ = send(&c, from, msgs).await;
    }
    assert_alive_and_clean(&mut c, &forged).await;
}
