//! Hostile but well-formed Raft messages against real `d-engine-server`
//! processes (issue 16, findings 1 and 2), sent over the peer gRPC port.
//!
//! 1. A stranger (no cluster secret, a wrong one, or the right one but a
//!    non-member id) sending a forged `Put` and the reproduction to
//!    a single node is refused by the *transport* (UNAUTHENTICATED /
//!    PERMISSION_DENIED; nothing reaches the core). The node stays alive and
//!    leader, serves a write and a read, and the forged key is never
//!    readable. (`peer_auth.rs` covers the transport's checks in more
//!    detail; this keeps only the messages.)
//! 2. A *member*: a 3-node cluster whose nodes 1 and 2 run, the test
//!    impersonating node 3 with the cluster secret (handshake signed with
//!    the engine's own `PeerSecret::sign`), so the messages pass the
//!    transport and exercise the Raft *core*. The reproduction
//!    (`append_entries{prev 0/0, entries [{1, 2^40, noop}]}` at term 2^40,
//!    which before the fix made a node panic in `log.rs`) and messages with
//!    terms above `MAX_TERM` are refused by the core and logged ("refused a
//!    peer message": `ConflictsWithCommitted`, `TermTooHigh`) without
//!    changing the nodes' terms. Then a bounded, seeded fuzz of 200
//!    well-formed messages of every kind; an `InstallSnapshot` message on a
//!    raft stream is refused by the transport (INVALID_ARGUMENT: snapshots
//!    only arrive staged, on the `InstallSnapshot` call; before, the core
//!    accepted one and the node exited with "the core asked to install
//!    snapshot N which was never staged"). Both nodes must never exit, the
//!    keys written before keep their values, and once the traffic stops the
//!    two nodes elect a leader again and serve a write and a linearizable
//!    read.
//!
//!    A member is trusted by Raft: a forged vote grant, a successful ack
//!    within the leader's log or a commit index beyond what is committed
//!    can break Raft's *safety* by design (two leaders, a fake quorum), not
//!    the node's crash-safety. The fuzz therefore never forges those three
//!    (votes granted are pre-votes only, successful acks are beyond the log,
//!    `leader_commit` never exceeds the commit index reached before it), so
//!    that the recovery check is deterministic; every other field is
//!    arbitrary, including terms up to `u64::MAX` and indices up to
//!    `u64::MAX`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use d_engine::transport::peer_auth::{PeerCall, PeerSecret, AUTH_HEADER, TO_HEADER};
use d_engine::transport::tonic_common::{CLUSTER_ID_HEADER, FROM_HEADER};
use d_engine_core::MAX_TERM;
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::raft_client::RaftClient;
use d_engine_storage::command::{Command, Op};
use d_engine_tests::cluster::{Cluster, ClusterConfig};
use tonic::codegen::tokio_stream;
use tonic::transport::Endpoint;

/// The term of the reproduction.
const HUGE: u64 = 1 << 40;
const BOUND: Duration = Duration::from_secs(15);

fn entry(index: u64, term: u64, payload: pb::raft_entry::Payload) -> pb::RaftEntry {
    pb::RaftEntry {
        term,
        index,
        payload: Some(payload),
    }
}

fn msg(from: u64, to: u64, term: u64, body: pb::raft_message::Body) -> pb::RaftMessage {
    pb::RaftMessage {
        from,
        to,
        term,
        body: Some(body),
    }
}

fn append_body(
    prev: (u64, u64),
    entries: Vec<pb::RaftEntry>,
    leader_commit: u64,
) -> pb::raft_message::Body {
    pb::raft_message::Body::AppendEntries(pb::AppendEntries {
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries,
        leader_commit,
        heartbeat_seq: 1,
    })
}

fn noop() -> pb::raft_entry::Payload {
    pb::raft_entry::Payload::Noop(true)
}

fn put(key: &str) -> pb::raft_entry::Payload {
    let cmd = Command::new(Op::Put {
        key: Bytes::from(key.to_string()),
        value: Bytes::from_static(b"hostile"),
        expires_at_ms: None,
        lease: 0,
    });
    pb::raft_entry::Payload::Command(cmd.encode().to_vec())
}

/// The reproduction, from `from` to `to`: a conflicting entry at
/// index 1 (below any commit index) in term 2^40.
fn reproduction(from: u64, to: u64) -> pb::RaftMessage {
    msg(
        from,
        to,
        HUGE,
        append_body((0, 0), vec![entry(1, HUGE, noop())], 1),
    )
}

/// How the test authenticates a `Raft.Stream` call.
enum Creds<'a> {
    None,
    Signed(&'a PeerSecret),
}

/// Opens a `Raft.Stream` call to `addr` claiming to be node `from` and
/// sends `msgs` on it; returns the call's outcome. A signed call carries
/// exactly the metadata the engine's transport sends (`add_peer_metadata`,
/// without an advertised address).
async fn send(
    addr: &str,
    cluster_id: &str,
    from: u64,
    to: u64,
    creds: Creds<'_>,
    msgs: Vec<pb::RaftMessage>,
) -> Result<(), tonic::Status> {
    let ch = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the peer port");
    let mut req = tonic::Request::new(tokio_stream::iter(msgs));
    let md = req.metadata_mut();
    md.insert(CLUSTER_ID_HEADER, cluster_id.parse().unwrap());
    md.insert(FROM_HEADER, from.to_string().parse().unwrap());
    md.insert(TO_HEADER, to.to_string().parse().unwrap());
    if let Creds::Signed(secret) = creds {
        let mac = secret.sign(cluster_id, from, to, PeerCall::Stream, "");
        md.insert(AUTH_HEADER, mac.parse().unwrap());
    }
    RaftClient::new(ch).stream(req).await.map(|_| ())
}

fn client_for(c: &Cluster, ids: &[u64]) -> d_engine_client::ClientBuilder {
    d_engine_client::ClientBuilder::new(
        ids.iter()
            .map(|id| format!("http://{}", c.client_addr(*id)))
            .collect::<Vec<_>>(),
    )
    .request_timeout(Duration::from_secs(10))
}

async fn term_of(c: &Cluster, id: u64) -> u64 {
    let s = c.status(id).await.expect("status");
    s.header.map(|h| h.term).unwrap_or(0)
}

/// Waits (bounded) until node `id`'s log contains every one of `needles`.
async fn wait_log(c: &mut Cluster, id: u64, needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = c.node(id).log();
        if needles.iter().all(|n| log.contains(n)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id}'s log lacks one of {needles:?}:\n{}",
            c.node(id).log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_hostile_messages_are_refused_at_the_transport_of_a_real_node() {
    // One node with a cluster secret (the harness' default).
    let mut c = Cluster::start(ClusterConfig {
        nodes: 1,
        ..Default::default()
    });
    c.wait_leader(BOUND).await.unwrap();
    let client = c.client().await;
    client.kv().put("k", "v").await.expect("first write");
    let last = c.status(1).await.expect("status").last_log_index;
    let term = term_of(&c, 1).await;

    // The forged Put of the issue (right after the node's log, committed
    // by the forger) and the reproduction.
    let forged = msg(
        2,
        1,
        HUGE,
        append_body(
            (last, term),
            vec![entry(last + 1, HUGE, put("forged"))],
            last + 1,
        ),
    );
    let msgs = vec![forged, reproduction(2, 1)];
    let cid = c.config.cluster_id.clone();
    let peer = c.peer_addr(1);
    let wrong = PeerSecret::from_bytes(&[9u8; 32]).unwrap();
    let right = PeerSecret::load(&c.secret_path()).expect("the harness' secret");
    for (creds, code, what) in [
        (Creds::None, tonic::Code::Unauthenticated, "no handshake"),
        (
            Creds::Signed(&wrong),
            tonic::Code::Unauthenticated,
            "another secret",
        ),
        // Holding the secret does not make a stranger a member: a single
        // node accepts no peer at all.
        (
            Creds::Signed(&right),
            tonic::Code::PermissionDenied,
            "the secret, non-member id",
        ),
    ] {
        let e = send(&peer, &cid, 2, 1, creds, msgs.clone())
            .await
            .expect_err(what);
        assert_eq!(e.code(), code, "{what}: {e:?}");
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.node(1).is_running(), "exited: {}", c.log_tails(40));
    let st = c.status(1).await.expect("status");
    assert_eq!(st.role, "leader", "{st:?}");
    client.kv().put("after", "ok").await.expect("write after");
    assert_eq!(
        client.kv().get("after").await.unwrap().unwrap().value,
        b"ok"[..]
    );
    assert!(client.kv().get("forged").await.unwrap().is_none());
    let log = c.node(1).log();
    assert!(log.contains("refused a peer call"), "{log}");
    // Nothing reached the core.
    assert!(!log.contains("refused a peer message"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_member_is_refused_by_the_core_and_the_cluster_recovers() {
    // A 3-node configuration of which only nodes 1 and 2 run: the test
    // plays node 3.
    let mut c = Cluster::prepare(ClusterConfig::default());
    c.node(1).start().unwrap();
    c.node(2).start().unwrap();
    let running = [1u64, 2];
    c.wait_leader(BOUND).await.unwrap();
    let client = client_for(&c, &running).build().await.expect("client");
    let mut rev = 0;
    for i in 0..5 {
        rev = client
            .kv()
            .put(format!("before-{i}"), format!("v{i}"))
            .await
            .expect("write before");
    }
    for id in running {
        c.wait_applied(id, rev, BOUND).await.unwrap();
    }
    // Everything committed so far; the fuzz never claims more.
    let mut base_commit = u64::MAX;
    for id in running {
        base_commit = base_commit.min(c.status(id).await.unwrap().commit_index);
    }
    assert!(base_commit >= 1);

    let secret = PeerSecret::load(&c.secret_path()).expect("the harness' secret");
    let cid = c.config.cluster_id.clone();
    use pb::raft_message::Body;

    // The reproduction and terms above MAX_TERM, to both nodes.
    for to in running {
        let term_before = term_of(&c, to).await;
        let msgs = vec![
            reproduction(3, to),
            msg(
                3,
                to,
                u64::MAX,
                append_body((0, 0), vec![entry(1, u64::MAX, noop())], u64::MAX),
            ),
            msg(
                3,
                to,
                MAX_TERM + 1,
                Body::RequestVote(pb::RequestVote {
                    pre_vote: false,
                    last_log_index: u64::MAX,
                    last_log_term: MAX_TERM + 1,
                    leader_transfer: true,
                }),
            ),
            msg(3, to, u64::MAX, Body::TimeoutNow(pb::TimeoutNow {})),
        ];
        send(&c.peer_addr(to), &cid, 3, to, Creds::Signed(&secret), msgs)
            .await
            .expect("a member's signed stream is admitted by the transport");
        wait_log(
            &mut c,
            to,
            &[
                "refused a peer message: the message contradicts committed entry 1",
                &format!("term {} is above the maximum term", u64::MAX),
                &format!("term {} is above the maximum term", MAX_TERM + 1),
            ],
        )
        .await;
        // Refused messages change nothing: not even the term.
        let term_after = term_of(&c, to).await;
        assert!(
            term_after < HUGE,
            "node {to}: term {term_before} -> {term_after}"
        );
    }

    // A bounded, seeded fuzz: 200 well-formed messages of every kind.
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut kinds = [0u32; 7];
    for round in 0..20u64 {
        let to = running[(round % 2) as usize];
        let mut msgs = Vec::new();
        // InstallSnapshot messages, each on its own stream: a snapshot
        // travels only on the InstallSnapshot call (staged first), so the
        // transport refuses one on a raft stream and closes it. (Before,
        // the core accepted it and the node stopped with "the core asked to
        // install snapshot N which was never staged".)
        let mut alone = Vec::new();
        for i in 0..10u64 {
            // Current-ish terms, the huge one, and refused ones
            // (never between 2^41 and MAX_TERM: a member pushing the term
            // there stops elections by design).
            let term = match next() % 5 {
                0 | 1 => 1 + next() % 8,
                2 => HUGE + next() % 8,
                3 => u64::MAX,
                _ => MAX_TERM + 1 + next() % 1000,
            };
            let index = match next() % 4 {
                0 | 1 => next() % (rev + 4),
                2 => u64::MAX,
                _ => next(),
            };
            let kind = (next() % 7) as usize;
            kinds[kind] += 1;
            let body = match kind {
                0 => Body::RequestVote(pb::RequestVote {
                    pre_vote: next() % 2 == 0,
                    last_log_index: index,
                    last_log_term: next() % (term.saturating_add(1)).max(1),
                    leader_transfer: next() % 2 == 0,
                }),
                1 => {
                    let pre_vote = next() % 2 == 0;
                    Body::RequestVoteResponse(pb::RequestVoteResponse {
                        pre_vote,
                        granted: pre_vote && next() % 2 == 0,
                    })
                }
                2 => {
                    // Entries directly after `prev`, terms non-decreasing
                    // between prev_log_term and the message term.
                    let prev = index;
                    let prev_term = if term == 0 { 0 } else { next() % term.min(9) };
                    let n = if prev > u64::MAX - 8 { 0 } else { next() % 4 };
                    let mut t = prev_term;
                    let entries = (0..n)
                        .map(|j| {
                            if next() % 3 == 0 {
                                t = term;
                            }
                            let payload = if next() % 2 == 0 {
                                noop()
                            } else {
                                put(&format!("fuzz-{round}-{i}-{j}"))
                            };
                            entry(prev + 1 + j, t, payload)
                        })
                        .collect();
                    append_body((prev, prev_term), entries, next() % (base_commit + 1))
                }
                3 => {
                    // Never a successful ack within the leader's log.
                    let success = next() % 2 == 0;
                    Body::AppendEntriesResponse(pb::AppendEntriesResponse {
                        success,
                        match_index: if success {
                            u64::MAX - next() % 1000
                        } else {
                            index
                        },
                        conflict_index: next() % (rev + 4),
                        conflict_term: next() % 3,
                        heartbeat_seq: next(),
                    })
                }
                4 => Body::InstallSnapshot(pb::InstallSnapshot {
                    meta: Some(pb::SnapshotMeta {
                        last_index: index,
                        last_term: next() % term.saturating_add(1),
                        membership: Some(pb::RaftMembership {
                            members: (1..=3)
                                .map(|id| pb::RaftMember {
                                    id,
                                    learner: false,
                                    addr: String::new(),
                                })
                                .collect(),
                        }),
                    }),
                }),
                5 => {
                    Body::InstallSnapshotResponse(pb::InstallSnapshotResponse { last_index: index })
                }
                _ => Body::TimeoutNow(pb::TimeoutNow {}),
            };
            let m = msg(3, to, term, body);
            if kind == 4 {
                alone.push(m);
            } else {
                msgs.push(m);
            }
        }
        if let Err(e) = send(&c.peer_addr(to), &cid, 3, to, Creds::Signed(&secret), msgs).await {
            // The stream may be cut when the node is busy electing; a
            // refusal of well-formed messages at the transport is a bug.
            assert!(
                !matches!(
                    e.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::Unauthenticated
                        | tonic::Code::PermissionDenied
                        | tonic::Code::FailedPrecondition
                ),
                "round {round}: {e:?}"
            );
        }
        for m in alone {
            let e = send(
                &c.peer_addr(to),
                &cid,
                3,
                to,
                Creds::Signed(&secret),
                vec![m],
            )
            .await
            .expect_err("an InstallSnapshot message on a raft stream is refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        }
        for id in running {
            assert!(
                c.node(id).is_running(),
                "node {id} exited during fuzz round {round}:\n{}",
                c.log_tails(60)
            );
        }
    }
    assert!(
        kinds.iter().all(|k| *k > 0),
        "every kind was sent: {kinds:?}"
    );

    // The hostile traffic stops: the two nodes elect a leader and serve.
    let started = Instant::now();
    c.wait_leader(BOUND).await.unwrap_or_else(|e| {
        panic!(
            "no leader after the hostile traffic: {e}\n{}",
            c.log_tails(60)
        )
    });
    let client = client_for(&c, &running).build().await.expect("client");
    client.kv().put("after", "ok").await.expect("write after");
    assert_eq!(
        client.kv().get("after").await.unwrap().unwrap().value,
        b"ok"[..]
    );
    assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
    for i in 0..5 {
        let kv = client
            .kv()
            .get(format!("before-{i}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("before-{i} vanished"));
        assert_eq!(kv.value, format!("v{i}").as_bytes());
    }
    for id in running {
        assert!(c.node(id).is_running(), "{}", c.log_tails(60));
    }
}
