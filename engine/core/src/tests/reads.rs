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
