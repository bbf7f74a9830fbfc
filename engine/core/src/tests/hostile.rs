//! Hostile but well-formed peer messages (issue 16, finding 2 and the core
//! half of finding 1): every invariant that depends on a message is a
//! refusal of that message, never a panic, and a node with a configuration
//! ignores non-members entirely.
//!
//! The seeded property tests at the bottom run `HOSTILE_SEEDS` seeds
//! (default 40, a few seconds); set the variable for a longer sweep.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::harness::*;
use crate::rng::Rng;
use crate::*;

/// The term of the issue's reproduction.
const HUGE: Term = 1 << 40;

fn append(prev: (Index, Term), entries: Vec<Entry>, commit: Index) -> MessageBody {
    MessageBody::AppendEntries {
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries,
        leader_commit: commit,
        heartbeat_seq: 0,
    }
}

/// The node's observable state, to show a refused message changed nothing.
fn snapshot_of(n: &RaftNode) -> (Status, Vec<Entry>, Option<NodeId>) {
    let mut st = n.status();
    st.refused_messages = 0;
    let last = st.last_index;
    (st, n.entries(0, last + 1), n.voted_for)
}

fn assert_unchanged(n: &RaftNode, before: &(Status, Vec<Entry>, Option<NodeId>)) {
    assert_eq!(
        &snapshot_of(n),
        before,
        "a refused message changed the node"
    );
}

/// A single-node cluster (member 1 only) that leads and committed a write.
fn single_node_with_a_commit() -> Network {
    let mut net = Network::new(&[1], &[]);
    net.elect(1);
    let (i, _) = net.propose(1, "put k v");
    net.settle();
    assert!(net.status(1).commit >= i);
    net
}

/// The node still serves: it commits a fresh write.
fn still_commits(net: &mut Network, leader: NodeId) {
    let (i, _) = net.propose(leader, "after");
    net.settle();
    net.tick_all(2 * H);
    assert!(
        net.status(leader).commit >= i,
        "node {leader} stopped committing: {:?}",
        net.status(leader)
    );
}

#[test]
fn issue_repro_non_member_append_is_refused_and_the_node_keeps_serving() {
    let mut net = single_node_with_a_commit();
    let before = snapshot_of(net.node(1));
    let r = net
        .node_mut(1)
        .step(msg(2, 1, HUGE, append((0, 0), vec![noop(1, HUGE)], 1)));
    assert_eq!(r, Err(Refusal::NotAMember { from: 2 }));
    assert_unchanged(net.node(1), &before);
    assert_eq!(net.status(1).refused_messages, 1);
    assert!(
        !net.node(1).has_ready(),
        "a refused message produces no output"
    );
    // A forged Put from a stranger is not applied either.
    let r = net
        .node_mut(1)
        .step(msg(2, 1, HUGE, append((2, 1), vec![ent(3, HUGE)], 3)));
    assert!(matches!(r, Err(Refusal::NotAMember { .. })));
    net.settle();
    assert!(net.disks[&1].applied.iter().all(|e| e.term < HUGE));
    still_commits(&mut net, 1);
}

#[test]
fn member_append_conflicting_with_committed_entries_is_refused() {
    let mut net = Network::new(&[1, 2], &[]);
    net.elect(1);
    net.propose(1, "a");
    net.settle();
    net.tick_all(H);
    let commit = net.status(2).commit;
    assert!(commit >= 2, "{:?}", net.status(2));
    // The issue's message, from a member, against the leader and the follower.
    for (from, to) in [(2, 1), (1, 2)] {
        let before = snapshot_of(net.node(to));
        let r = net
            .node_mut(to)
            .step(msg(from, to, HUGE, append((0, 0), vec![noop(1, HUGE)], 1)));
        assert_eq!(
            r,
            Err(Refusal::ConflictsWithCommitted { index: 1, commit }),
            "node {to}"
        );
        assert_unchanged(net.node(to), &before);
    }
    still_commits(&mut net, 1);
}

#[test]
fn a_term_near_u64_max_is_refused_and_never_overflows() {
    for pre_vote in [true, false] {
        let mut net = Network::new(&[1, 2, 3], &[]);
        for id in [1, 2, 3] {
            net.node_mut(id).cfg.pre_vote = pre_vote;
        }
        net.elect(1);
        let before = snapshot_of(net.node(2));
        let r = net
            .node_mut(2)
            .step(msg(1, 2, u64::MAX, append((0, 0), vec![], 0)));
        assert_eq!(r, Err(Refusal::TermTooHigh { term: u64::MAX }));
        assert_unchanged(net.node(2), &before);
        // The highest accepted term: the node follows it, then times out and
        // must not campaign past it (`term + 1` would overflow or wrap).
        net.node_mut(2)
            .step(msg(1, 2, MAX_TERM, append((0, 0), vec![], 0)))
            .expect("MAX_TERM itself is accepted");
        net.isolate(2);
        for _ in 0..4 * E {
            net.node_mut(2).tick();
            net.process(2);
        }
        let st = net.status(2);
        assert_eq!(st.term, MAX_TERM, "pre_vote {pre_vote}");
        assert_ne!(st.role, Role::Leader);
    }
}

#[test]
fn leader_traffic_in_the_term_this_node_leads_is_refused() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.settle();
    let t = net.status(1).term;
    let last = net.status(1).last_index;
    let bodies = [
        append((last, t), vec![], 0),
        MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                last_index: last + 5,
                last_term: t,
                membership: membership(&[1, 2, 3], &[]),
            },
        },
    ];
    for body in bodies {
        let before = snapshot_of(net.node(1));
        let r = net.node_mut(1).step(msg(2, 1, t, body));
        assert_eq!(r, Err(Refusal::SecondLeader { term: t }));
        assert_unchanged(net.node(1), &before);
    }
    still_commits(&mut net, 1);
}

#[test]
fn an_ack_beyond_the_leaders_log_is_refused() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.settle();
    let t = net.status(1).term;
    let last = net.status(1).last_index;
    for success in [true, false] {
        let before = snapshot_of(net.node(1));
        let r = net.node_mut(1).step(msg(
            2,
            1,
            t,
            MessageBody::AppendEntriesResponse {
                success,
                match_index: u64::MAX,
                conflict_index: 1,
                conflict_term: None,
                heartbeat_seq: 1,
            },
        ));
        assert_eq!(
            r,
            Err(Refusal::AckBeyondLog {
                match_index: u64::MAX,
                last_index: last
            })
        );
        assert_unchanged(net.node(1), &before);
    }
    still_commits(&mut net, 1);
}

#[test]
fn a_snapshot_answer_with_index_u64_max_does_not_overflow() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.node_mut(1).cfg.snapshot_threshold = 3;
    net.elect(1);
    net.isolate(3);
    for i in 0..6 {
        net.propose(1, &format!("c{i}"));
        net.settle();
    }
    net.tick_all(2 * H + E);
    assert!(
        net.trace
            .iter()
            .any(|m| m.to == 3 && matches!(m.body, MessageBody::InstallSnapshot { .. })),
        "the leader is sending node 3 a snapshot"
    );
    let t = net.status(1).term;
    net.node_mut(1)
        .step(msg(
            3,
            1,
            t,
            MessageBody::InstallSnapshotResponse {
                last_index: u64::MAX,
            },
        ))
        .expect("accepted: a follower may be ahead of the leader's log");
    net.heal();
    still_commits(&mut net, 1);
}

#[test]
fn malformed_entries_are_refused() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.settle();
    let t = net.status(1).term;
    let last = net.status(2).last_index;
    let cases = [
        // A gap after prev.
        append((last, t), vec![ent(last + 5, t)], 0),
        // Not contiguous.
        append((last, t), vec![ent(last + 1, t), ent(last + 3, t)], 0),
        // Decreasing terms.
        append((last, t), vec![ent(last + 1, t), ent(last + 2, t - 1)], 0),
        // A term above the message's.
        append((last, t), vec![ent(last + 1, t + 7)], 0),
        // An index that leaves no headroom.
        append((u64::MAX, t), vec![ent(0, t)], 0),
    ];
    for body in cases {
        let before = snapshot_of(net.node(2));
        let r = net.node_mut(2).step(msg(1, 2, t, body.clone()));
        assert!(
            matches!(
                r,
                Err(Refusal::MalformedEntries { .. } | Refusal::IndexTooHigh { .. })
            ),
            "{body:?}: {r:?}"
        );
        assert_unchanged(net.node(2), &before);
    }
    still_commits(&mut net, 1);
}

#[test]
fn entries_that_contradict_the_snapshot_are_refused() {
    let m = membership(&[1, 2, 3], &[]);
    let restore = RestoreState {
        hard_state: HardState {
            term: 5,
            voted_for: None,
            commit: 10,
        },
        snapshot: Some(SnapshotMeta {
            last_index: 10,
            last_term: 5,
            membership: m.clone(),
        }),
        entries: vec![],
        initial_membership: m,
        applied: 10,
    };
    let mut n = RaftNode::new(cfg(2), restore).expect("valid");
    for body in [
        // prev is our snapshot's last entry but with another term.
        append((10, 1), vec![ent(11, 2)], 11),
        // The entries cover the snapshot's last entry with another term.
        append((9, 1), vec![ent(10, 1), ent(11, 2)], 11),
    ] {
        let before = snapshot_of(&n);
        let r = n.step(msg(1, 2, 6, body));
        assert_eq!(
            r,
            Err(Refusal::ConflictsWithCommitted {
                index: 10,
                commit: 10
            })
        );
        assert_unchanged(&n, &before);
    }
    // The honest version is accepted.
    n.step(msg(1, 2, 6, append((10, 5), vec![ent(11, 6)], 11)))
        .expect("accepted");
    assert_eq!(n.status().last_index, 11);
}

#[test]
fn inconsistent_snapshot_metadata_is_refused() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.settle();
    let t = net.status(1).term;
    let commit = net.status(2).commit;
    let bad = [
        // From a future term: after a restart the hard state's term would
        // be below the log's last term.
        SnapshotMeta {
            last_index: commit + 10,
            last_term: t + 50,
            membership: membership(&[1, 2, 3], &[]),
        },
        // No voter: nobody could ever be elected again.
        SnapshotMeta {
            last_index: commit + 10,
            last_term: t,
            membership: membership(&[], &[1, 2, 3]),
        },
        // Index with no headroom.
        SnapshotMeta {
            last_index: u64::MAX,
            last_term: t,
            membership: membership(&[1, 2, 3], &[]),
        },
    ];
    for meta in bad {
        let before = snapshot_of(net.node(2));
        let r = net.node_mut(2).step(msg(
            1,
            2,
            t,
            MessageBody::InstallSnapshot { meta: meta.clone() },
        ));
        assert!(
            matches!(
                r,
                Err(Refusal::InvalidSnapshot { .. } | Refusal::IndexTooHigh { .. })
            ),
            "{meta:?}: {r:?}"
        );
        assert_unchanged(net.node(2), &before);
        assert!(net.node_mut(2).ready().snapshot_to_install.is_none());
    }
}

#[test]
fn a_configuration_entry_the_leader_could_not_have_appended_is_refused() {
    let mut net = Network::new(&[1, 2], &[]);
    net.elect(1);
    net.settle();
    let t = net.status(1).term;
    let last = net.status(2).last_index;
    let conf = |index, change| Entry {
        index,
        term: t,
        payload: EntryPayload::Config(change),
    };
    // Removing every voter would leave node 2 with an empty configuration,
    // in which it would accept anyone.
    let body = append(
        (last, t),
        vec![
            conf(last + 1, ConfChange::Remove { id: 1 }),
            conf(last + 2, ConfChange::Remove { id: 2 }),
        ],
        0,
    );
    let before = snapshot_of(net.node(2));
    let r = net.node_mut(2).step(msg(1, 2, t, body));
    assert!(
        matches!(r, Err(Refusal::InvalidConfChange { index, .. }) if index == last + 2),
        "{r:?}"
    );
    assert_unchanged(net.node(2), &before);
    assert_eq!(net.status(2).membership, membership(&[1, 2], &[]));
}

#[test]
fn a_non_member_cannot_force_a_step_down_with_a_transfer_vote() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.settle();
    let t = net.status(1).term;
    for to in [1, 2] {
        let before = snapshot_of(net.node(to));
        let r = net.node_mut(to).step(msg(
            9,
            to,
            t + 1,
            MessageBody::RequestVote {
                pre_vote: false,
                last_log_index: 1_000,
                last_log_term: t + 1,
                leader_transfer: true,
            },
        ));
        assert_eq!(r, Err(Refusal::NotAMember { from: 9 }));
        assert_unchanged(net.node(to), &before);
    }
    // A non-member's fake quorum does not commit anything either.
    let r = net.node_mut(1).step(msg(
        9,
        1,
        t,
        MessageBody::AppendEntriesResponse {
            success: true,
            match_index: 1,
            conflict_index: 0,
            conflict_term: None,
            heartbeat_seq: 1,
        },
    ));
    assert_eq!(r, Err(Refusal::NotAMember { from: 9 }));
    assert_eq!(net.status(1).role, Role::Leader);
}

#[test]
fn addressing_is_checked() {
    let mut net = single_node_with_a_commit();
    let t = net.status(1).term;
    let hb = || append((0, 0), vec![], 0);
    assert_eq!(
        net.node_mut(1).step(msg(1, 1, t, hb())),
        Err(Refusal::InvalidSender { from: 1 })
    );
    assert_eq!(
        net.node_mut(1).step(msg(0, 1, t, hb())),
        Err(Refusal::InvalidSender { from: 0 })
    );
    assert_eq!(
        net.node_mut(1).step(msg(2, 3, t, hb())),
        Err(Refusal::WrongRecipient { to: 3 })
    );
    assert_eq!(net.status(1).refused_messages, 3);
}

#[test]
fn a_node_waiting_to_join_accepts_an_unknown_sender_until_it_knows_its_membership() {
    // Node 4 starts with an empty configuration: it must hear from whoever
    // leads the cluster it is being added to.
    let mut n = node_with(4, &Membership::default(), 0, vec![]);
    n.step(msg(7, 4, 3, append((0, 0), vec![], 0)))
        .expect("a joiner accepts an unknown leader");
    let rd = n.ready();
    assert_eq!(rd.messages.len(), 1, "it answers the leader");
    assert_eq!(rd.messages[0].to, 7);
    // Once it installed a snapshot carrying the membership, strangers are refused.
    let meta = SnapshotMeta {
        last_index: 5,
        last_term: 3,
        membership: membership(&[7, 8], &[4]),
    };
    n.step(msg(
        7,
        4,
        3,
        MessageBody::InstallSnapshot { meta: meta.clone() },
    ))
    .expect("accepted");
    let rd = n.ready();
    let to_install = rd.snapshot_to_install.expect("asked to install");
    n.snapshot_installed(to_install);
    assert_eq!(
        n.step(msg(9, 4, 3, append((5, 3), vec![], 5))),
        Err(Refusal::NotAMember { from: 9 })
    );
    n.step(msg(8, 4, 4, append((5, 3), vec![], 5)))
        .expect("a member is accepted");
}

// ---- seeded property tests ---------------------------------------------

/// Seeds per property test: `HOSTILE_SEEDS` (default 40).
fn seeds() -> u64 {
    std::env::var("HOSTILE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

fn arb_term(rng: &mut Rng, cur: Term) -> Term {
    match rng.below(10) {
        0 => 0,
        1 | 2 => cur,
        3 => cur.saturating_add(1),
        4 => cur.saturating_sub(1),
        5 => HUGE,
        6 => u64::MAX,
        7 => MAX_TERM,
        8 => MAX_TERM + 1,
        _ => rng.next_u64(),
    }
}

fn arb_index(rng: &mut Rng, st: &Status) -> Index {
    match rng.below(9) {
        0 => 0,
        1 => st.last_index,
        2 => st.last_index.saturating_add(1),
        3 => st.commit,
        4 => st.commit.saturating_sub(1),
        5 => st.snapshot_index,
        6 => u64::MAX,
        7 => MAX_INDEX + 1,
        _ => rng.below(st.last_index.saturating_add(10)),
    }
}

fn arb_membership(rng: &mut Rng, ids: &[NodeId]) -> Membership {
    let mut m = Membership::default();
    for id in ids {
        match rng.below(3) {
            0 => {}
            1 => {
                m.members.insert(
                    *id,
                    Member {
                        role: MemberRole::Voter,
                        addr: format!("n{id}"),
                    },
                );
            }
            _ => {
                m.members.insert(
                    *id,
                    Member {
                        role: MemberRole::Learner,
                        addr: format!("n{id}"),
                    },
                );
            }
        }
    }
    m
}

/// An arbitrary well-formed message from `from` to `to`, with fields drawn
/// around the target's state and at the edges of their types.
fn arb_message(rng: &mut Rng, from: NodeId, to: NodeId, st: &Status, ids: &[NodeId]) -> Message {
    let term = arb_term(rng, st.term);
    let body = match rng.below(8) {
        0 => MessageBody::RequestVote {
            pre_vote: rng.below(2) == 0,
            last_log_index: arb_index(rng, st),
            last_log_term: arb_term(rng, st.term),
            leader_transfer: rng.below(2) == 0,
        },
        1 => MessageBody::RequestVoteResponse {
            pre_vote: rng.below(2) == 0,
            granted: rng.below(2) == 0,
        },
        2 | 3 => {
            let prev = arb_index(rng, st);
            let mut t = arb_term(rng, st.term);
            let n = rng.below(4);
            let contiguous = rng.below(4) > 0;
            let entries = (0..n)
                .map(|i| {
                    if rng.below(3) == 0 {
                        t = arb_term(rng, st.term);
                    }
                    let index = if contiguous {
                        prev.wrapping_add(1 + i)
                    } else {
                        arb_index(rng, st)
                    };
                    let payload = match rng.below(6) {
                        0 => EntryPayload::Noop,
                        1 => EntryPayload::Config(match rng.below(3) {
                            0 => ConfChange::AddLearner {
                                id: ids[rng.below(ids.len() as u64) as usize],
                                addr: "x".into(),
                            },
                            1 => ConfChange::Promote {
                                id: ids[rng.below(ids.len() as u64) as usize],
                            },
                            _ => ConfChange::Remove {
                                id: ids[rng.below(ids.len() as u64) as usize],
                            },
                        }),
                        _ => EntryPayload::Command(Bytes::from(format!("forged{}", rng.below(9)))),
                    };
                    Entry {
                        index,
                        term: t,
                        payload,
                    }
                })
                .collect();
            MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: arb_term(rng, st.term),
                entries,
                leader_commit: arb_index(rng, st),
                heartbeat_seq: rng.next_u64(),
            }
        }
        4 => MessageBody::AppendEntriesResponse {
            success: rng.below(2) == 0,
            match_index: arb_index(rng, st),
            conflict_index: arb_index(rng, st),
            conflict_term: if rng.below(2) == 0 {
                None
            } else {
                Some(arb_term(rng, st.term))
            },
            heartbeat_seq: rng.next_u64(),
        },
        5 => MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                last_index: arb_index(rng, st),
                last_term: arb_term(rng, st.term),
                membership: arb_membership(rng, ids),
            },
        },
        6 => MessageBody::InstallSnapshotResponse {
            last_index: arb_index(rng, st),
        },
        _ => MessageBody::TimeoutNow,
    };
    Message {
        from,
        to,
        term,
        body,
    }
}

/// Election safety and state-machine safety over the whole run.
#[derive(Default)]
struct Safety {
    leaders: BTreeMap<Term, NodeId>,
    applied: BTreeMap<Index, (Term, EntryPayload)>,
}

impl Safety {
    fn check(&mut self, net: &Network, ctx: &str) {
        for (id, n) in &net.nodes {
            let st = n.status();
            if st.role == Role::Leader {
                let prev = *self.leaders.entry(st.term).or_insert(*id);
                assert_eq!(prev, *id, "{ctx}: two leaders in term {}", st.term);
            }
        }
        for (id, d) in &net.disks {
            for e in &d.applied {
                let seen = self
                    .applied
                    .entry(e.index)
                    .or_insert((e.term, e.payload.clone()));
                assert_eq!(
                    *seen,
                    (e.term, e.payload.clone()),
                    "{ctx}: node {id} applied a different entry at {}",
                    e.index
                );
                if let EntryPayload::Command(c) = &e.payload {
                    assert!(!c.starts_with(b"forged"), "{ctx}: node {id} applied {e:?}");
                }
            }
        }
    }
}

/// Normal traffic on a 3-voter cluster (ticks, proposals, lossy delivery,
/// partitions) interleaved with hostile messages. `members_too`: the
/// hostile sender may claim a member's id; otherwise it claims ids no
/// member has. Returns (hostile messages, refused, commits at the end).
fn hostile_run(seed: u64, steps: usize, members_too: bool) -> (u64, u64, Index) {
    let mut rng = Rng::new(seed);
    let voters = [1, 2, 3];
    let mut net = Network::new(&voters, &[]);
    net.auto_snapshot = !members_too;
    for id in voters {
        let n = net.node_mut(id);
        n.cfg.pre_vote = rng.below(2) == 0;
        n.cfg.check_quorum = rng.below(2) == 0;
        n.cfg.snapshot_threshold = if members_too { 0 } else { 3 + rng.below(10) };
    }
    let strangers: [NodeId; 4] = [4, 9, 1 << 40, u64::MAX];
    let all_ids: Vec<NodeId> = voters.iter().chain(&strangers).copied().collect();
    let mut safety = Safety::default();
    let (mut hostile, mut refused) = (0u64, 0u64);
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step} members_too {members_too}");
        match rng.below(100) {
            0..=24 => {
                for id in voters {
                    if rng.below(8) > 0 {
                        net.node_mut(id).tick();
                    }
                }
            }
            25..=54 => {
                for _ in 0..1 + rng.below(5) {
                    let Some(m) = net.queue.pop_front() else {
                        break;
                    };
                    if rng.below(12) > 0 {
                        net.queue.push_front(m);
                        net.deliver_one();
                    }
                    net.process_all();
                }
            }
            55..=64 => {
                let leader = net
                    .nodes
                    .values()
                    .find(|n| n.status().role == Role::Leader)
                    .map(|n| n.status().id);
                if let Some(l) = leader {
                    let _ = net
                        .node_mut(l)
                        .propose(vec![Bytes::from(format!("ok{seed}-{step}"))]);
                }
            }
            65..=67 => {
                let (a, b) = (1 + rng.below(3), 1 + rng.below(3));
                if a != b {
                    net.cut.insert((a, b));
                }
            }
            68..=70 => net.heal(),
            _ => {
                let to = voters[rng.below(3) as usize];
                let from = if members_too && rng.below(2) == 0 {
                    voters[rng.below(3) as usize]
                } else {
                    strangers[rng.below(strangers.len() as u64) as usize]
                };
                net.process(to);
                let st = net.status(to);
                let m = arb_message(&mut rng, from, to, &st, &all_ids);
                let is_member = st.membership.contains(from) || st.membership.members.is_empty();
                let before = snapshot_of(net.node(to));
                let had_ready = net.node(to).has_ready();
                hostile += 1;
                let r = net.node_mut(to).step(m.clone());
                if r.is_err() {
                    refused += 1;
                }
                if from == to {
                    assert_eq!(r, Err(Refusal::InvalidSender { from }), "{ctx}");
                } else if !is_member {
                    // A non-member is ignored entirely.
                    assert!(
                        matches!(r, Err(Refusal::NotAMember { .. })),
                        "{ctx}: {m:?} -> {r:?}"
                    );
                }
                if r.is_err() {
                    assert_unchanged(net.node(to), &before);
                    assert_eq!(net.node(to).has_ready(), had_ready, "{ctx}: {m:?}");
                }
            }
        }
        net.process_all();
        if !members_too {
            safety.check(&net, &ctx);
        }
    }
    // Whatever happened, every node keeps running: it ticks, steps and hands
    // out its output without panicking.
    net.heal();
    for _ in 0..3 * E {
        net.tick_all(1);
    }
    if !members_too {
        safety.check(&net, &format!("seed {seed} after healing"));
    }
    let commit = voters
        .iter()
        .map(|id| net.status(*id).commit)
        .max()
        .unwrap_or(0);
    (hostile, refused, commit)
}

#[test]
fn non_member_messages_are_ignored_and_safety_holds() {
    let (mut hostile, mut refused, mut commits) = (0, 0, 0);
    for seed in 0..seeds() {
        let (h, r, c) = hostile_run(seed, 1_500, false);
        hostile += h;
        refused += r;
        commits += c;
    }
    println!("non-members: {hostile} hostile messages, {refused} refused, {commits} commits");
    assert_eq!(hostile, refused, "every non-member message is refused");
    assert!(hostile > 1_000 && commits > 100, "{hostile} {commits}");
}

#[test]
fn hostile_member_messages_never_crash_a_node() {
    let (mut hostile, mut refused) = (0, 0);
    for seed in 0..seeds() {
        let (h, r, _) = hostile_run(1_000 + seed, 1_500, true);
        hostile += h;
        refused += r;
    }
    println!("members: {hostile} hostile messages, {refused} refused");
    assert!(hostile > 1_000 && refused > 0 && refused < hostile);
}
