use super::harness::*;
use crate::*;

fn append(
    from: NodeId,
    to: NodeId,
    term: Term,
    prev: (Index, Term),
    entries: Vec<Entry>,
    commit: Index,
    seq: u64,
) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::AppendEntries {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit: commit,
            heartbeat_seq: seq,
        },
    )
}

fn ok(from: NodeId, to: NodeId, term: Term, match_index: Index, seq: u64) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::AppendEntriesResponse {
            success: true,
            match_index,
            conflict_index: 0,
            conflict_term: None,
            heartbeat_seq: seq,
        },
    )
}

#[test]
fn follower_replaces_conflicting_suffix_and_acks_only_after_persisting() {
    let m = membership(&[1, 2, 3], &[]);
    let mut f = node_with(2, &m, 2, vec![ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2)]);
    // Leader of term 3 says index 4 has term 3: mismatch, hint the whole term-2 run.
    f.step(append(1, 2, 3, (4, 3), vec![], 1, 7)).unwrap();
    let rd = f.ready();
    assert_eq!(
        rd.messages,
        vec![msg(
            2,
            1,
            3,
            MessageBody::AppendEntriesResponse {
                success: false,
                match_index: 4,
                conflict_index: 3,
                conflict_term: Some(2),
                heartbeat_seq: 7
            }
        )]
    );
    // The leader backs up to 2 and sends its entry 3 (term 3).
    f.step(append(1, 2, 3, (2, 1), vec![ent(3, 3)], 1, 8))
        .unwrap();
    let rd = f.ready();
    assert_eq!(
        rd.entries,
        vec![ent(3, 3)],
        "the host rewrites from index 3"
    );
    assert!(rd.messages.is_empty(), "no ack before the entry is durable");
    assert_eq!(rd.committed, vec![ent(1, 1)]);
    assert_eq!(f.status().last_index, 3);
    assert_eq!(f.status().durable_index, 2);
    // A stale durability report for the replaced entry is ignored.
    f.log_persisted(4, 2);
    assert!(!f.has_ready());
    f.log_persisted(3, 3);
    let rd = f.ready();
    assert_eq!(rd.messages, vec![ok(2, 1, 3, 3, 8)]);
}

#[test]
fn follower_hints_its_last_index_when_prev_is_beyond_its_log() {
    let m = membership(&[1, 2, 3], &[]);
    let mut f = node_with(2, &m, 1, vec![ent(1, 1)]);
    f.step(append(1, 2, 1, (5, 1), vec![ent(6, 1)], 0, 1))
        .unwrap();
    let rd = f.ready();
    assert_eq!(
        rd.messages,
        vec![msg(
            2,
            1,
            1,
            MessageBody::AppendEntriesResponse {
                success: false,
                match_index: 5,
                conflict_index: 2,
                conflict_term: None,
                heartbeat_seq: 1
            }
        )]
    );
}

#[test]
fn heartbeat_is_answered_at_once_with_the_durable_matching_prefix() {
    let m = membership(&[1, 2, 3], &[]);
    let mut f = node_with(2, &m, 1, vec![ent(1, 1), ent(2, 1)]);
    f.step(append(1, 2, 1, (2, 1), vec![ent(3, 1)], 0, 1))
        .unwrap();
    let rd = f.ready();
    assert!(rd.messages.is_empty());
    f.step(append(1, 2, 1, (2, 1), vec![], 2, 2)).unwrap();
    let rd = f.ready();
    assert_eq!(rd.messages, vec![ok(2, 1, 1, 2, 2)]);
    assert_eq!(f.status().commit, 2);
}

#[test]
fn figure_8_leader_does_not_commit_previous_term_entries_by_counting() {
    let m = membership(&[1, 2, 3], &[]);
    // Node 1 has an uncommitted entry from term 2; it becomes leader of term 4.
    let mut l = node_with(1, &m, 3, vec![ent(1, 1), ent(2, 2)]);
    l.campaign(false, false);
    let _ = l.ready();
    l.step(msg(
        2,
        1,
        4,
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        },
    ))
    .unwrap();
    assert_eq!(l.status().role, Role::Leader);
    let rd = l.ready();
    assert_eq!(rd.entries, vec![noop(3, 4)]);
    l.log_persisted(3, 4);
    // Follower 2 now holds index 2 (term 2): a majority has it, but it is from
    // an older term, so it must not be committed by counting.
    l.step(ok(2, 1, 4, 2, 0)).unwrap();
    assert_eq!(l.status().commit, 0);
    let rd = l.ready();
    assert!(rd.committed.is_empty());
    // Once the term-4 no-op is on a majority, everything up to it commits.
    l.step(ok(2, 1, 4, 3, 0)).unwrap();
    assert_eq!(l.status().commit, 3);
    let rd = l.ready();
    assert_eq!(rd.committed, vec![ent(1, 1), ent(2, 2), noop(3, 4)]);
}

#[test]
fn leader_counts_itself_only_once_durable() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.hold_persist.insert(1);
    net.isolate(3);
    let (idx, _) = net.propose(1, "x");
    net.settle();
    // Follower 2 acked index 2, but the leader's own copy is not durable yet
    // and 3 is unreachable: no quorum.
    assert_eq!(net.node(1).progress[&2].match_index, idx);
    assert_eq!(net.status(1).commit, 1);
    net.persist(1);
    assert_eq!(net.status(1).commit, idx);
    net.settle();
    assert_eq!(net.disks[&1].applied.last().unwrap().index, idx);
}

#[test]
fn leader_fsync_runs_in_parallel_with_replication() {
    // With its own log not yet durable, the leader still commits once two
    // followers have the entry durable.
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.hold_persist.insert(1);
    let (idx, _) = net.propose(1, "x");
    net.settle();
    assert_eq!(net.status(1).commit, idx);
    // ... but it hands the entry out for applying only once durable locally.
    assert_eq!(net.disks[&1].applied.last().unwrap().index, 1);
    net.persist(1);
    net.settle();
    assert_eq!(net.disks[&1].applied.last().unwrap().index, idx);
}

#[test]
fn proposals_between_two_readies_are_batched_and_pipelined() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    {
        let l = net.node_mut(1);
        l.cfg.max_entries_per_msg = 4;
        l.cfg.max_inflight_msgs = 2;
    }
    for i in 0..10 {
        net.propose(1, &format!("c{i}"));
    }
    let out = net.take_msgs(1);
    let to2: Vec<Vec<Index>> = out
        .iter()
        .filter(|m| m.to == 2)
        .map(|m| match &m.body {
            MessageBody::AppendEntries { entries, .. } => entries.iter().map(|e| e.index).collect(),
            b => panic!("unexpected {b:?}"),
        })
        .collect();
    // Two messages of four entries each: the in-flight window is full.
    assert_eq!(to2, vec![vec![2, 3, 4, 5], vec![6, 7, 8, 9]]);
    net.queue.extend(out);
    net.settle();
    assert_eq!(net.status(1).commit, 11);
    assert_eq!(net.node(1).progress[&2].match_index, 11);
}

#[test]
fn lagging_follower_is_caught_up_by_fast_backtracking() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.isolate(3);
    for i in 0..20 {
        net.propose(1, &format!("c{i}"));
        net.settle();
    }
    net.heal();
    // Everything sent to 3 was lost; the stalled pipeline drops back to
    // probing within an election timeout and catches up in a few round trips.
    net.tick_all(E + H);
    assert_eq!(net.status(3).last_index, 21);
    net.tick_all(H);
    assert_eq!(net.disks[&3].applied.len(), 21);
    assert_eq!(net.disks[&3].applied, net.disks[&1].applied);
}

#[test]
fn lost_pipelined_messages_are_resent_after_a_stall() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.propose(1, "a");
    net.settle();
    // Drop everything to 3 once, then restore the link.
    net.cut.insert((1, 3));
    net.propose(1, "b");
    net.settle();
    net.cut.clear();
    net.tick_all(2 * E);
    assert_eq!(net.status(3).last_index, 3);
    assert_eq!(net.node(1).progress[&3].match_index, 3);
}
