use super::harness::*;
use crate::*;

#[test]
fn create_snapshot_is_requested_past_the_threshold_and_compacts() {
    let mut net = Network::new(&[1], &[]);
    net.node_mut(1).cfg.snapshot_threshold = 5;
    net.auto_snapshot = false;
    net.elect(1);
    for i in 0..3 {
        net.propose(1, &format!("c{i}"));
    }
    let rd = net.node_mut(1).ready();
    assert!(!rd.create_snapshot);
    net.node_mut(1).log_persisted(4, 1);
    for i in 3..6 {
        net.propose(1, &format!("c{i}"));
    }
    let rd = net.node_mut(1).ready();
    net.node_mut(1).log_persisted(7, 1);
    let rd2 = net.node_mut(1).ready();
    assert!(!rd.create_snapshot && rd2.create_snapshot);
    assert_eq!(rd2.committed.last().unwrap().index, 7);
    // Not asked again while the host is making it.
    net.propose(1, "more");
    let _ = net.node_mut(1).ready();
    net.node_mut(1).log_persisted(8, 1);
    assert!(!net.node_mut(1).ready().create_snapshot);
    net.node_mut(1).snapshot_created(SnapshotMeta {
        last_index: 7,
        last_term: 1,
        membership: Membership::default(),
    });
    let st = net.status(1);
    assert_eq!(st.snapshot_index, 7);
    assert_eq!(net.node(1).entries(1, 9).len(), 1);
    assert_eq!(
        net.node(1).snapshot_meta().membership,
        membership(&[1], &[])
    );
}

#[test]
fn a_request_the_host_made_no_snapshot_for_is_asked_again_later() {
    // Before `snapshot_not_created`, a request the host dropped (its image
    // was no newer than the latest snapshot, or writing it failed) left the
    // core waiting for it forever: no snapshot was ever asked for again, so
    // a learner that needed one never caught up.
    let mut net = Network::new(&[1], &[]);
    net.node_mut(1).cfg.snapshot_threshold = 3;
    net.auto_snapshot = false;
    net.elect(1);
    for i in 0..4 {
        net.propose(1, &format!("c{i}"));
    }
    let _ = net.node_mut(1).ready();
    let last = net.status(1).last_index;
    net.node_mut(1).log_persisted(last, 1);
    let _ = net.node_mut(1).ready();
    assert!(
        net.node(1).snapshot_requested,
        "past the threshold the core asked for a snapshot"
    );
    assert!(
        !net.node_mut(1).ready().create_snapshot,
        "not asked twice while the host works on it"
    );
    net.node_mut(1).snapshot_not_created();
    assert!(
        !net.node_mut(1).ready().create_snapshot,
        "not asked again at once"
    );
    let election = net.node(1).cfg.election_ticks;
    for _ in 0..election {
        net.node_mut(1).tick();
    }
    assert!(
        net.node_mut(1).has_ready() && net.node_mut(1).ready().create_snapshot,
        "asked again one election timeout later"
    );
}

#[test]
fn lagging_follower_gets_the_snapshot_and_catches_up() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.node_mut(1).cfg.snapshot_threshold = 4;
    net.elect(1);
    net.isolate(3);
    for i in 0..6 {
        net.propose(1, &format!("c{i}"));
        net.settle();
    }
    net.tick_all(H);
    assert!(net.status(1).snapshot_index >= 4, "{:?}", net.status(1));
    net.heal();
    net.trace.clear();
    net.tick_all(E + 2 * H);
    let install = net
        .trace
        .iter()
        .find(|m| matches!(m.body, MessageBody::InstallSnapshot { .. }))
        .expect("snapshot sent");
    assert_eq!((install.from, install.to), (1, 3));
    assert!(net
        .trace
        .iter()
        .any(|m| m.from == 3 && matches!(m.body, MessageBody::InstallSnapshotResponse { .. })));
    let st3 = net.status(3);
    assert_eq!(st3.last_index, 7);
    assert_eq!(st3.commit, 7);
    assert!(st3.snapshot_index >= 4);
    assert_eq!(
        net.disks[&3].snapshot.as_ref().unwrap().membership,
        membership(&[1, 2, 3], &[])
    );
}

#[test]
fn follower_install_flow_emits_exact_actions() {
    let m = membership(&[1, 2, 3], &[]);
    let mut f = node_with(2, &m, 1, vec![noop(1, 1)]);
    let meta = SnapshotMeta {
        last_index: 10,
        last_term: 1,
        membership: m.clone(),
    };
    f.step(msg(
        1,
        2,
        1,
        MessageBody::InstallSnapshot { meta: meta.clone() },
    ))
    .unwrap();
    let rd = f.ready();
    assert_eq!(rd.snapshot_to_install, Some(meta.clone()));
    assert!(rd.messages.is_empty(), "answer only once installed");
    // Appends are ignored while the install is pending.
    f.step(msg(
        1,
        2,
        1,
        MessageBody::AppendEntries {
            prev_log_index: 10,
            prev_log_term: 1,
            entries: vec![ent(11, 1)],
            leader_commit: 10,
            heartbeat_seq: 3,
        },
    ))
    .unwrap();
    assert!(f.ready().is_empty());
    f.snapshot_installed(meta.clone());
    let rd = f.ready();
    assert_eq!(
        rd.messages,
        vec![msg(
            1 + 1,
            1,
            1,
            MessageBody::InstallSnapshotResponse { last_index: 10 }
        )]
    );
    assert!(
        rd.committed.is_empty(),
        "the snapshot replaces applying 1..=10"
    );
    let st = f.status();
    assert_eq!(
        (
            st.commit,
            st.last_index,
            st.durable_index,
            st.applied_handed_out
        ),
        (10, 10, 10, 10)
    );
    // A stale snapshot is answered with the current last index.
    f.step(msg(
        1,
        2,
        1,
        MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                last_index: 5,
                last_term: 1,
                membership: m,
            },
        },
    ))
    .unwrap();
    let rd = f.ready();
    assert_eq!(rd.snapshot_to_install, None);
    assert_eq!(
        rd.messages,
        vec![msg(
            2,
            1,
            1,
            MessageBody::InstallSnapshotResponse { last_index: 10 }
        )]
    );
}

#[test]
fn failed_snapshot_send_is_retried_after_an_election_timeout() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.node_mut(1).cfg.snapshot_threshold = 3;
    net.elect(1);
    net.isolate(3);
    for i in 0..4 {
        net.propose(1, &format!("c{i}"));
        net.settle();
    }
    net.tick_all(H);
    net.heal();
    // Intercept the snapshot requests: fail the first one.
    let mut asked = Vec::new();
    for _ in 0..3 * E {
        for n in net.nodes.values_mut() {
            n.tick();
        }
        if net.node(1).has_ready() {
            let rd = net.node_mut(1).ready();
            asked.push((net.status(1).now_tick, rd.send_snapshot_to.clone()));
            if !rd.send_snapshot_to.is_empty()
                && asked.iter().filter(|(_, v)| !v.is_empty()).count() == 1
            {
                net.node_mut(1).snapshot_send_failed(3);
            }
            net.queue.extend(rd.messages);
        }
        let ids = [2, 3];
        for id in ids {
            net.process(id);
        }
        while net.deliver_one() {
            for id in [2, 3] {
                net.process(id);
            }
        }
    }
    let times: Vec<u64> = asked
        .iter()
        .filter(|(_, v)| v == &vec![3])
        .map(|(t, _)| *t)
        .collect();
    assert!(times.len() >= 2, "asked again: {asked:?}");
    assert!(
        times[1] - times[0] >= E,
        "not before an election timeout: {times:?}"
    );
}

#[test]
fn membership_at_reports_the_configuration_at_an_index() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    let (i, _) = net
        .node_mut(1)
        .propose_conf_change(ConfChange::AddLearner {
            id: 4,
            addr: "n4".into(),
        })
        .unwrap();
    let n = net.node(1);
    assert_eq!(n.membership_at(i - 1), Some(membership(&[1, 2, 3], &[])));
    assert_eq!(n.membership_at(i), Some(membership(&[1, 2, 3], &[4])));
    assert_eq!(n.membership_at(i + 1), None);
}

#[test]
#[should_panic(expected = "would start from the wrong configuration")]
fn snapshot_with_a_wrong_membership_is_refused() {
    let mut net = Network::new(&[1], &[]);
    net.elect(1);
    net.node_mut(1).snapshot_created(SnapshotMeta {
        last_index: 1,
        last_term: 1,
        membership: membership(&[7], &[]),
    });
}

#[test]
fn empty_snapshot_membership_means_the_bootstrap_one() {
    let boot = membership(&[1, 2, 3], &[]);
    let n = RaftNode::new(
        cfg(1),
        RestoreState {
            hard_state: HardState {
                term: 2,
                voted_for: None,
                commit: 5,
            },
            snapshot: Some(SnapshotMeta {
                last_index: 5,
                last_term: 2,
                membership: Membership::default(),
            }),
            initial_membership: boot.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(n.status().membership, boot);
    assert_eq!(n.snapshot_meta().membership, boot);
}

#[test]
fn repeated_snapshot_installed_does_not_reset_a_newer_log() {
    let m = membership(&[1, 2, 3], &[]);
    let mut f = node_with(2, &m, 1, vec![]);
    let meta = SnapshotMeta {
        last_index: 10,
        last_term: 1,
        membership: m,
    };
    f.step(msg(
        1,
        2,
        1,
        MessageBody::InstallSnapshot { meta: meta.clone() },
    ))
    .unwrap();
    let _ = f.ready();
    f.snapshot_installed(meta.clone());
    f.step(msg(
        1,
        2,
        1,
        MessageBody::AppendEntries {
            prev_log_index: 10,
            prev_log_term: 1,
            entries: vec![ent(11, 1)],
            leader_commit: 11,
            heartbeat_seq: 1,
        },
    ))
    .unwrap();
    let _ = f.ready();
    f.log_persisted(11, 1);
    f.snapshot_installed(meta);
    let st = f.status();
    assert_eq!((st.last_index, st.durable_index, st.commit), (11, 11, 11));
}
