use super::harness::*;
use crate::*;

fn add_learner(id: NodeId) -> ConfChange {
    ConfChange::AddLearner {
        id,
        addr: format!("n{id}"),
    }
}

/// Adds a new node to the network. Like every node it is started with the
/// cluster's bootstrap membership (it learns later changes from the log).
fn add_blank_node(net: &mut Network, id: NodeId) {
    net.nodes
        .insert(id, node_with(id, &membership(&[1, 2, 3], &[]), 0, vec![]));
    net.disks.insert(id, Disk::default());
}

#[test]
fn learner_is_never_counted_in_a_quorum() {
    let mut net = Network::new(&[1, 2, 3], &[4]);
    net.elect(1);
    net.cut.extend([(1, 2), (1, 3), (2, 1), (3, 1)]);
    let (idx, _) = net.propose(1, "x");
    net.settle();
    assert_eq!(
        net.node(1).progress[&4].match_index,
        idx,
        "the learner has it"
    );
    assert_eq!(net.status(1).commit, 1, "leader + learner is not a quorum");
    net.heal();
    net.tick_all(E + 2 * H);
    assert_eq!(net.status(1).commit, idx);
    assert_eq!(net.disks[&4].applied.last().unwrap().index, idx);
}

#[test]
fn conf_change_needs_a_committed_entry_of_the_leaders_term() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.node_mut(1).campaign(false, false);
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
    assert_eq!(
        net.node_mut(1).propose_conf_change(add_learner(4)),
        Err(ProposeError::ConfChangeInProgress)
    );
    net.settle();
    assert!(net.node_mut(1).propose_conf_change(add_learner(4)).is_ok());
}

#[test]
fn one_uncommitted_change_at_a_time_and_it_takes_effect_when_appended() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    add_blank_node(&mut net, 4);
    // Followers receive everything but their answers are lost.
    net.cut.extend([(2, 1), (3, 1)]);
    let (idx, _) = net.node_mut(1).propose_conf_change(add_learner(4)).unwrap();
    // In force on the leader right away, before it commits.
    assert_eq!(net.status(1).membership, membership(&[1, 2, 3], &[4]));
    assert!(net.node(1).progress.contains_key(&4));
    assert_eq!(
        net.node_mut(1)
            .propose_conf_change(ConfChange::Promote { id: 4 }),
        Err(ProposeError::ConfChangeInProgress)
    );
    net.settle();
    // ... and on a follower as soon as it appended the entry.
    assert_eq!(net.status(2).last_index, idx);
    assert_eq!(net.status(2).commit, idx - 1);
    assert_eq!(net.status(2).membership, membership(&[1, 2, 3], &[4]));
    assert_eq!(net.status(1).commit, idx - 1);
    net.heal();
    net.tick_all(H);
    assert_eq!(net.status(1).commit, idx);
    assert!(net
        .node_mut(1)
        .propose_conf_change(ConfChange::Promote { id: 4 })
        .is_ok());
    net.tick_all(3 * H);
    assert_eq!(net.status(4).role, Role::Follower);
    assert_eq!(net.status(4).membership, membership(&[1, 2, 3, 4], &[]));
    assert_eq!(net.status(1).membership, membership(&[1, 2, 3, 4], &[]));
}

#[test]
fn invalid_changes_are_refused_with_a_reason() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    for (c, needle) in [
        (ConfChange::Promote { id: 9 }, "not a member"),
        (ConfChange::Promote { id: 2 }, "already a voter"),
        (ConfChange::Remove { id: 9 }, "not a member"),
        (add_learner(2), "already a member"),
    ] {
        match net.node_mut(1).propose_conf_change(c) {
            Err(ProposeError::InvalidConfChange(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("expected InvalidConfChange, got {other:?}"),
        }
    }
    assert_eq!(
        net.node_mut(2).propose_conf_change(add_learner(5)),
        Err(ProposeError::NotLeader { leader: Some(1) })
    );
}

#[test]
fn truncated_config_entry_is_reverted() {
    let m = membership(&[1, 2, 3], &[]);
    let mut f = node_with(2, &m, 1, vec![noop(1, 1)]);
    let cfg_entry = Entry {
        index: 2,
        term: 1,
        payload: EntryPayload::Config(add_learner(4)),
    };
    f.step(msg(
        1,
        2,
        1,
        MessageBody::AppendEntries {
            prev_log_index: 1,
            prev_log_term: 1,
            entries: vec![cfg_entry],
            leader_commit: 1,
            heartbeat_seq: 1,
        },
    ))
    .unwrap();
    assert!(f.status().membership.contains(4));
    // A new leader of term 2 overwrites index 2.
    f.step(msg(
        3,
        2,
        2,
        MessageBody::AppendEntries {
            prev_log_index: 1,
            prev_log_term: 1,
            entries: vec![noop(2, 2)],
            leader_commit: 1,
            heartbeat_seq: 1,
        },
    ))
    .unwrap();
    assert_eq!(f.status().membership, m);
}

#[test]
fn leader_that_removes_itself_steps_down_after_commit_and_stays_quiet() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.hold_persist.insert(1);
    let (idx, _) = net
        .node_mut(1)
        .propose_conf_change(ConfChange::Remove { id: 1 })
        .unwrap();
    net.settle();
    // Committed by 2 and 3 alone (the leader is no longer a voter).
    assert_eq!(net.status(2).last_index, idx);
    assert_eq!(net.status(1).commit, idx);
    assert_eq!(net.status(1).role, Role::Follower);
    net.hold_persist.clear();
    net.persist(1);
    net.trace.clear();
    net.tick_all(5 * E);
    assert!(
        !net.trace
            .iter()
            .any(|m| m.from == 1 && matches!(m.body, MessageBody::RequestVote { .. })),
        "a removed node never campaigns"
    );
    let leader = [2, 3]
        .into_iter()
        .find(|id| net.status(*id).role == Role::Leader)
        .expect("2 or 3 leads");
    assert!(!net.status(leader).membership.contains(1));
    let (i2, _) = net.propose(leader, "after");
    net.tick_all(H);
    assert_eq!(net.status(leader).commit, i2);
}

#[test]
fn removing_a_follower_shrinks_the_quorum() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.node_mut(1)
        .propose_conf_change(ConfChange::Remove { id: 3 })
        .unwrap();
    net.settle();
    net.tick_all(H);
    net.isolate(3);
    net.cut.remove(&(1, 3));
    net.cut.remove(&(3, 1));
    net.isolate(2);
    // Only 1 and 3 talk now; 3 is not a member so nothing commits.
    let (i, _) = net.propose(1, "x");
    net.settle();
    assert!(net.status(1).commit < i);
    assert!(!net.node(1).progress.contains_key(&3));
}

#[test]
fn joiner_without_bootstrap_membership_starts_from_a_snapshot() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.nodes
        .insert(4, node_with(4, &Membership::default(), 0, vec![]));
    net.disks.insert(4, Disk::default());
    net.node_mut(1)
        .propose_conf_change(ConfChange::AddLearner {
            id: 4,
            addr: "n4".into(),
        })
        .unwrap();
    net.trace.clear();
    net.tick_all(3 * H);
    // No entry was ever sent to 4 from index 1: it would derive a membership
    // from an empty base. It got a snapshot instead.
    assert!(!net.trace.iter().any(|m| m.to == 4
        && matches!(&m.body, MessageBody::AppendEntries { prev_log_index: 0, entries, .. } if !entries.is_empty())));
    assert!(net
        .trace
        .iter()
        .any(|m| m.to == 4 && matches!(m.body, MessageBody::InstallSnapshot { .. })));
    assert_eq!(net.status(4).membership, membership(&[1, 2, 3], &[4]));
    net.node_mut(1)
        .propose_conf_change(ConfChange::Promote { id: 4 })
        .unwrap();
    net.tick_all(2 * H);
    assert_eq!(net.status(4).membership, membership(&[1, 2, 3, 4], &[]));
    assert_eq!(net.status(4).role, Role::Follower);
}

#[test]
fn joiner_ignores_entries_from_index_one() {
    let mut f = node_with(4, &Membership::default(), 0, vec![]);
    f.step(msg(
        1,
        4,
        1,
        MessageBody::AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![noop(1, 1)],
            leader_commit: 1,
            heartbeat_seq: 1,
        },
    ))
    .unwrap();
    assert_eq!(f.status().last_index, 0);
    assert_eq!(
        f.ready().messages,
        vec![msg(
            4,
            1,
            1,
            MessageBody::AppendEntriesResponse {
                success: false,
                match_index: 0,
                conflict_index: 0,
                conflict_term: None,
                heartbeat_seq: 1
            }
        )],
        "asks for a snapshot"
    );
}

#[test]
fn founding_member_started_without_its_membership_gets_a_snapshot() {
    // Node 3's host forgot to pass the bootstrap membership: it asks for a
    // snapshot instead of waiting forever for a log it cannot interpret.
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.nodes
        .insert(3, node_with(3, &Membership::default(), 0, vec![]));
    net.elect(1);
    for i in 0..3 {
        net.propose(1, &format!("c{i}"));
    }
    net.tick_all(4 * H);
    let st = net.status(3);
    assert_eq!(st.last_index, 4);
    assert!(st.snapshot_index >= 1);
    assert_eq!(st.membership, membership(&[1, 2, 3], &[]));
    assert!(net.node(1).progress[&3].needs_snapshot);
}

#[test]
fn joiner_gets_the_snapshot_that_was_made_while_it_kept_rejecting() {
    // The host makes snapshots asynchronously: while the snapshot a joiner
    // needs is being written, the joiner keeps answering heartbeats; once
    // the snapshot exists (with nothing applied since), the leader must
    // still send it rather than wait for another one.
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.propose(1, "a");
    net.settle();
    net.nodes
        .insert(4, node_with(4, &Membership::default(), 0, vec![]));
    net.disks.insert(4, Disk::default());
    net.auto_snapshot = false;
    net.node_mut(1)
        .propose_conf_change(ConfChange::AddLearner {
            id: 4,
            addr: "n4".into(),
        })
        .unwrap();
    net.tick_all(2 * H);
    assert!(
        net.node(1).snapshot_requested,
        "the joiner's rejections asked for a snapshot"
    );
    assert_eq!(net.status(4).last_index, 0);
    // The host finishes the snapshot now, at the leader's applied index.
    let last = net.disks[&1].applied.last().cloned().expect("applied");
    let meta = SnapshotMeta {
        last_index: last.index,
        last_term: last.term,
        membership: net.node(1).membership_at(last.index).expect("in memory"),
    };
    net.node_mut(1).snapshot_created(meta);
    net.auto_snapshot = true;
    net.tick_all(3 * H);
    assert!(
        net.status(4).snapshot_index >= last.index,
        "the learner installed the snapshot"
    );
    assert_eq!(net.status(4).membership, membership(&[1, 2, 3], &[4]));
    assert_eq!(net.status(4).commit, net.status(1).commit);
}
