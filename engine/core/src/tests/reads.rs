use super::harness::*;
use crate::*;

fn heartbeat_seqs(msgs: &[Message]) -> Vec<(NodeId, u64)> {
    msgs.iter()
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries {
                entries,
                heartbeat_seq,
                ..
            } if entries.is_empty() => Some((m.to, *heartbeat_seq)),
            _ => None,
        })
        .collect()
}

#[test]
fn read_index_waits_for_a_quorum_heartbeat_round() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.node_mut(1).read(7, ReadConsistency::Linearizable);
    let out = net.take_msgs(1);
    let seqs = heartbeat_seqs(&out);
    assert_eq!(seqs.len(), 2, "one heartbeat per follower: {out:?}");
    let seq = seqs[0].1;
    assert!(seqs.iter().all(|(_, s)| *s == seq));
    assert!(
        net.reads[&1].is_empty(),
        "not before the round is acknowledged"
    );
    // Deliver the heartbeat to 2 only and its answer: with the leader, a quorum.
    let to2 = out.iter().find(|m| m.to == 2).unwrap().clone();
    net.node_mut(2).step(to2).unwrap();
    let resp = net.take_msgs(2);
    assert_eq!(resp.len(), 1);
    net.node_mut(1).step(resp[0].clone()).unwrap();
    net.process(1);
    assert_eq!(
        net.reads[&1],
        vec![ReadReady {
            id: 7,
            read_index: 1
        }]
    );
}

#[test]
fn read_index_is_not_confirmed_by_a_round_sent_before_the_read() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.tick_all(H - 1);
    // A heartbeat round goes out (tick), the read arrives after it.
    net.node_mut(1).tick();
    let before = net.take_msgs(1);
    net.node_mut(1).read(1, ReadConsistency::Linearizable);
    // Answers to the earlier round do not confirm the read.
    net.queue.extend(before);
    while net.queue.iter().any(|m| m.from == 1) {
        net.deliver_one();
        for id in [2, 3] {
            net.process(id);
        }
    }
    while let Some(m) = net.queue.pop_front() {
        if m.to == 1 {
            net.node_mut(1).step(m).unwrap();
        }
    }
    let rd = net.node_mut(1).ready();
    assert!(rd.reads.is_empty(), "confirmed by an older round: {rd:?}");
    assert_eq!(
        heartbeat_seqs(&rd.messages).len(),
        2,
        "a new round for the read"
    );
    net.queue.extend(rd.messages);
    net.settle();
    assert_eq!(net.reads[&1].len(), 1);
}

#[test]
fn new_leader_delays_read_index_until_its_noop_commits() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.node_mut(1).campaign(false, false);
    // Deliver the vote requests and responses but not the no-op's acks.
    net.process(1);
    for _ in 0..2 {
        net.deliver_one();
    }
    net.process_all();
    while let Some(m) = net.queue.pop_front() {
        if matches!(m.body, MessageBody::RequestVoteResponse { .. }) {
            net.node_mut(1).step(m).unwrap();
        }
    }
    assert_eq!(net.status(1).role, Role::Leader);
    net.node_mut(1).read(9, ReadConsistency::Linearizable);
    net.process(1);
    assert!(net.reads[&1].is_empty());
    net.settle();
    assert_eq!(
        net.reads[&1],
        vec![ReadReady {
            id: 9,
            read_index: 1
        }]
    );
}

#[test]
fn lease_read_is_immediate_inside_the_lease_and_falls_back_after_it() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.tick_all(H); // one heartbeat round acknowledged
    let st = net.status(1);
    assert!(st.lease_until_tick > st.now_tick, "lease held: {st:?}");
    let sent_tick = st.lease_until_tick - (E - MARGIN);
    assert!(sent_tick <= st.now_tick);
    net.node_mut(1).read(1, ReadConsistency::Lease);
    let out = net.take_msgs(1);
    assert!(out.is_empty(), "a lease read needs no messages");
    assert_eq!(
        net.reads[&1],
        vec![ReadReady {
            id: 1,
            read_index: 1
        }]
    );
    // Cut the leader off; the lease runs out before check-quorum fires.
    net.isolate(1);
    let until = net.status(1).lease_until_tick;
    while net.status(1).now_tick < until {
        net.tick_all(1);
    }
    assert_eq!(net.status(1).role, Role::Leader);
    net.node_mut(1).read(2, ReadConsistency::Lease);
    let out = net.take_msgs(1);
    assert_eq!(
        heartbeat_seqs(&out).len(),
        2,
        "fell back to a ReadIndex round"
    );
    assert_eq!(net.reads[&1].len(), 1, "read 2 is not answered");
    net.heal();
    net.queue.extend(out);
    net.settle();
    assert_eq!(
        net.reads[&1][1],
        ReadReady {
            id: 2,
            read_index: 1
        }
    );
}

#[test]
fn lease_is_measured_from_when_the_round_was_sent() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.node_mut(1).read(1, ReadConsistency::Linearizable);
    let out = net.take_msgs(1);
    let sent_at = net.status(1).now_tick;
    // The answers take 5 ticks to come back.
    for _ in 0..5 {
        net.node_mut(1).tick();
        let _ = net.take_msgs(1);
    }
    net.queue.extend(out);
    net.settle();
    assert_eq!(net.status(1).lease_until_tick, sent_at + E - MARGIN);
}

#[test]
fn followers_refuse_strong_reads_with_a_leader_hint_and_serve_eventual_ones() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.tick_all(H);
    let f = net.node_mut(2);
    f.read(1, ReadConsistency::Linearizable);
    f.read(2, ReadConsistency::Lease);
    f.read(3, ReadConsistency::Eventual);
    let rd = f.ready();
    assert_eq!(
        rd.refused_reads,
        vec![
            ReadRefused {
                id: 1,
                error: ProposeError::NotLeader { leader: Some(1) }
            },
            ReadRefused {
                id: 2,
                error: ProposeError::NotLeader { leader: Some(1) }
            },
        ]
    );
    assert_eq!(
        rd.reads,
        vec![ReadReady {
            id: 3,
            read_index: 1
        }]
    );
}

#[test]
fn single_voter_answers_reads_at_once() {
    let mut net = Network::new(&[1], &[]);
    net.elect(1);
    net.settle();
    net.node_mut(1).read(1, ReadConsistency::Linearizable);
    net.node_mut(1).read(2, ReadConsistency::Lease);
    let rd = net.node_mut(1).ready();
    assert_eq!(rd.reads.len(), 2);
    assert!(rd.messages.is_empty());
}

#[test]
fn pending_reads_are_refused_when_leadership_is_lost() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.isolate(1);
    net.node_mut(1).read(5, ReadConsistency::Linearizable);
    net.tick_all(3 * E);
    assert_ne!(net.status(1).role, Role::Leader);
    assert_eq!(net.refused[&1].len(), 1);
    assert_eq!(net.refused[&1][0].id, 5);
    assert!(net.reads[&1].is_empty());
}

/// Delivers `msgs` to their followers and the followers' answers back to
/// the leader `1`, stepping only (no `ready()` of the leader).
fn answer_round(net: &mut Network, msgs: Vec<Message>) {
    for m in msgs {
        let to = m.to;
        net.node_mut(to).step(m).unwrap();
        for r in net.take_msgs(to) {
            net.node_mut(1).step(r).unwrap();
        }
    }
}

#[test]
fn a_read_registered_after_a_read_round_started_is_not_released_by_it() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.node_mut(1).read(1, ReadConsistency::Linearizable);
    let round1 = net.take_msgs(1);
    assert_eq!(heartbeat_seqs(&round1).len(), 2, "round for read 1");
    // Read 2 arrives while round 1 is out: no second round meanwhile.
    net.node_mut(1).read(2, ReadConsistency::Linearizable);
    assert!(
        heartbeat_seqs(&net.take_msgs(1)).is_empty(),
        "one read round in flight at a time"
    );
    let seq1 = heartbeat_seqs(&round1)[0].1;
    answer_round(&mut net, round1);
    let rd = net.node_mut(1).ready();
    assert_eq!(
        rd.reads.iter().map(|r| r.id).collect::<Vec<_>>(),
        [1],
        "round 1 releases read 1 only: {rd:?}"
    );
    // The next round starts in the same `ready()` that released round 1.
    let round2 = heartbeat_seqs(&rd.messages);
    assert_eq!(round2.len(), 2, "round 2 starts at once: {rd:?}");
    assert!(round2.iter().all(|(_, s)| *s == seq1 + 1));
    answer_round(&mut net, rd.messages);
    net.process(1);
    assert_eq!(net.reads[&1].iter().map(|r| r.id).collect::<Vec<_>>(), [2]);
}

#[test]
fn with_two_read_rounds_allowed_the_second_starts_while_the_first_is_out() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.node_mut(1).cfg.max_read_rounds_in_flight = 2;
    net.node_mut(1).read(1, ReadConsistency::Linearizable);
    let round1 = net.take_msgs(1);
    assert_eq!(heartbeat_seqs(&round1).len(), 2, "round for read 1");
    // Read 2 arrives while round 1 is out: round 2 starts at once.
    net.node_mut(1).read(2, ReadConsistency::Linearizable);
    let round2 = net.take_msgs(1);
    assert_eq!(heartbeat_seqs(&round2).len(), 2, "round 2 while 1 is out");
    // Read 3: two rounds are out, so it waits.
    net.node_mut(1).read(3, ReadConsistency::Linearizable);
    assert!(
        heartbeat_seqs(&net.take_msgs(1)).is_empty(),
        "at most two read rounds out"
    );
    // Round 1's answers release read 1 only (2 and 3 came after it
    // started), and make room for round 3, which read 3 waits for.
    answer_round(&mut net, round1);
    let rd = net.node_mut(1).ready();
    assert_eq!(rd.reads.iter().map(|r| r.id).collect::<Vec<_>>(), [1]);
    let round3 = rd.messages;
    assert_eq!(heartbeat_seqs(&round3).len(), 2, "round 3 for read 3");
    // Round 2 releases read 2 but not read 3 (registered after it started).
    answer_round(&mut net, round2);
    let rd = net.node_mut(1).ready();
    assert_eq!(rd.reads.iter().map(|r| r.id).collect::<Vec<_>>(), [2]);
    assert!(heartbeat_seqs(&rd.messages).is_empty(), "nobody else waits");
    answer_round(&mut net, round3);
    net.process(1);
    assert_eq!(net.reads[&1].iter().map(|r| r.id).collect::<Vec<_>>(), [3]);
}

#[test]
fn one_round_releases_every_read_that_waited_for_it() {
    const N: u64 = 50;
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.node_mut(1).read(0, ReadConsistency::Linearizable);
    let round1 = net.take_msgs(1);
    for id in 1..=N {
        net.node_mut(1).read(id, ReadConsistency::Linearizable);
        // A host iteration per read: still no new round.
        assert!(heartbeat_seqs(&net.take_msgs(1)).is_empty());
    }
    answer_round(&mut net, round1);
    let rd = net.node_mut(1).ready();
    assert_eq!(rd.reads.len(), 1);
    let round2 = rd.messages;
    assert_eq!(heartbeat_seqs(&round2).len(), 2, "one message per follower");
    // Only one follower answers: with the leader, a quorum.
    let to2: Vec<Message> = round2.into_iter().filter(|m| m.to == 2).collect();
    answer_round(&mut net, to2);
    let rd = net.node_mut(1).ready();
    assert_eq!(
        rd.reads.iter().map(|r| r.id).collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>(),
        "one round releases all {N} waiting reads"
    );
    assert!(heartbeat_seqs(&rd.messages).is_empty(), "nobody waits");
}

#[test]
fn a_lost_read_round_is_replaced_by_the_next_periodic_heartbeat() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.node_mut(1).read(1, ReadConsistency::Linearizable);
    let _lost = net.take_msgs(1);
    net.node_mut(1).read(2, ReadConsistency::Linearizable);
    for _ in 0..H {
        net.node_mut(1).tick();
    }
    let hb = net.take_msgs(1);
    assert_eq!(heartbeat_seqs(&hb).len(), 2, "periodic round");
    answer_round(&mut net, hb);
    net.process(1);
    assert_eq!(
        net.reads[&1].iter().map(|r| r.id).collect::<Vec<_>>(),
        [1, 2],
        "the periodic round started after both reads confirms both"
    );
}

#[test]
fn a_deposed_leader_never_releases_a_read() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.tick_all(H);
    // 1 is cut off; 2 and 3 elect 2 and commit a write 1 never sees.
    net.isolate(1);
    for _ in 0..4 * E {
        for id in [2, 3] {
            net.node_mut(id).tick();
        }
        net.settle();
        if net.status(2).role == Role::Leader || net.status(3).role == Role::Leader {
            break;
        }
    }
    let new_leader = if net.status(2).role == Role::Leader {
        2
    } else {
        3
    };
    let (index, _) = net.propose(new_leader, "written under the new leader");
    net.settle();
    assert!(net.status(new_leader).commit >= index);
    // 1 has not noticed (its clock stood still: no check-quorum) and takes
    // a ReadIndex read, which does not depend on clocks. (A lease read
    // would be served here: leases assume bounded clock drift, which the
    // simulation's lease checker covers.)
    assert_eq!(net.status(1).role, Role::Leader);
    net.node_mut(1).read(7, ReadConsistency::Linearizable);
    let out = net.take_msgs(1);
    assert_eq!(heartbeat_seqs(&out).len(), 2);
    // Its round reaches the others once the partition heals; they answer
    // with the newer term.
    net.heal();
    net.queue.extend(out);
    net.settle();
    net.tick_all(2 * E);
    assert!(
        net.reads
            .get(&1)
            .is_none_or(|r| r.iter().all(|r| r.id != 7)),
        "a deposed leader released a read: {:?}",
        net.reads.get(&1)
    );
    let refused: Vec<ReadId> = net.refused[&1].iter().map(|r| r.id).collect();
    assert_eq!(refused, [7]);
    assert_ne!(net.status(1).role, Role::Leader);
}
