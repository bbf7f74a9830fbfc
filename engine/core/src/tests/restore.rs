use super::harness::*;
use crate::*;

#[test]
fn restore_rebuilds_membership_from_snapshot_and_log_config_entries() {
    let snap_m = membership(&[1, 2, 3], &[]);
    let restore = RestoreState {
        hard_state: HardState {
            term: 3,
            voted_for: Some(2),
            commit: 12,
        },
        snapshot: Some(SnapshotMeta {
            last_index: 10,
            last_term: 2,
            membership: snap_m,
        }),
        entries: vec![
            ent(11, 2),
            Entry {
                index: 12,
                term: 3,
                payload: EntryPayload::Config(ConfChange::AddLearner {
                    id: 4,
                    addr: "n4".into(),
                }),
            },
            ent(13, 3),
        ],
        initial_membership: membership(&[7], &[]),
        applied: 11,
    };
    let mut n = RaftNode::new(cfg(1), restore).unwrap();
    let st = n.status();
    assert_eq!(st.membership, membership(&[1, 2, 3], &[4]));
    assert_eq!(
        (
            st.term,
            st.commit,
            st.last_index,
            st.durable_index,
            st.snapshot_index
        ),
        (3, 12, 13, 13, 10)
    );
    assert_eq!(st.applied_handed_out, 11);
    assert_eq!(n.hard_state().voted_for, Some(2));
    let rd = n.ready();
    assert_eq!(rd.hard_state, None, "nothing changed since restore");
    assert_eq!(
        rd.committed.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![12]
    );
}

#[test]
#[should_panic(expected = "beyond the last durable log index")]
fn restore_refuses_a_state_machine_ahead_of_the_log() {
    let _ = RaftNode::new(
        cfg(1),
        RestoreState {
            entries: vec![ent(1, 1)],
            hard_state: HardState {
                term: 1,
                voted_for: None,
                commit: 1,
            },
            applied: 5,
            initial_membership: membership(&[1], &[]),
            ..Default::default()
        },
    );
}

#[test]
fn invalid_config_is_refused_with_the_field_named() {
    let mut c = cfg(1);
    c.lease_drift_margin_ticks = E;
    let err = RaftNode::new(c, RestoreState::default()).err().unwrap();
    assert!(err.0.contains("lease_drift_margin_ticks"), "{err}");
}

#[test]
fn hard_state_commit_never_exceeds_the_durable_log() {
    let m = membership(&[1, 2, 3], &[]);
    let mut f = node_with(2, &m, 1, vec![ent(1, 1)]);
    f.step(msg(
        1,
        2,
        2,
        MessageBody::AppendEntries {
            prev_log_index: 1,
            prev_log_term: 1,
            entries: vec![ent(2, 2), ent(3, 2)],
            leader_commit: 3,
            heartbeat_seq: 1,
        },
    ))
    .unwrap();
    let rd = f.ready();
    assert_eq!(f.status().commit, 3);
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 2,
            voted_for: None,
            commit: 1
        })
    );
    assert!(
        rd.committed.len() == 1,
        "only durable committed entries are applied"
    );
}

#[test]
fn stale_leader_is_told_the_current_term() {
    let m = membership(&[1, 2, 3], &[]);
    let mut f = node_with(2, &m, 5, vec![]);
    f.step(msg(
        1,
        2,
        4,
        MessageBody::AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
            heartbeat_seq: 9,
        },
    ))
    .unwrap();
    assert_eq!(
        f.ready().messages,
        vec![msg(
            2,
            1,
            5,
            MessageBody::AppendEntriesResponse {
                success: false,
                match_index: 0,
                conflict_index: 0,
                conflict_term: None,
                heartbeat_seq: 0
            }
        )]
    );
    assert_eq!(f.status().term, 5);
}

#[test]
fn pre_vote_is_granted_in_the_requested_term_without_changing_state() {
    let m = membership(&[1, 2, 3], &[]);
    let mut f = node_with(2, &m, 3, vec![ent(1, 3)]);
    f.step(msg(
        1,
        2,
        4,
        MessageBody::RequestVote {
            pre_vote: true,
            last_log_index: 1,
            last_log_term: 3,
            leader_transfer: false,
        },
    ))
    .unwrap();
    let rd = f.ready();
    assert_eq!(rd.hard_state, None);
    assert_eq!(
        rd.messages,
        vec![msg(
            2,
            1,
            4,
            MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: true
            }
        )]
    );
    assert_eq!(f.status().term, 3);
}

#[test]
fn leader_transfer_vote_bypasses_stickiness() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    let vote = |transfer| {
        msg(
            3,
            2,
            2,
            MessageBody::RequestVote {
                pre_vote: false,
                last_log_index: 1,
                last_log_term: 1,
                leader_transfer: transfer,
            },
        )
    };
    net.node_mut(2).step(vote(false)).unwrap();
    assert!(
        net.node_mut(2).ready().messages.is_empty(),
        "sticky: ignored"
    );
    assert_eq!(net.status(2).term, 1);
    net.node_mut(2).step(vote(true)).unwrap();
    assert_eq!(
        net.node_mut(2).ready().messages,
        vec![msg(
            2,
            3,
            2,
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true
            }
        )]
    );
}

#[test]
fn leader_steps_down_on_a_higher_term_answer() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.node_mut(1).read(1, ReadConsistency::Linearizable);
    net.node_mut(1)
        .step(msg(
            2,
            1,
            7,
            MessageBody::AppendEntriesResponse {
                success: false,
                match_index: 0,
                conflict_index: 0,
                conflict_term: None,
                heartbeat_seq: 0,
            },
        ))
        .unwrap();
    let st = net.status(1);
    assert_eq!((st.role, st.term, st.leader), (Role::Follower, 7, None));
    let rd = net.node_mut(1).ready();
    assert_eq!(
        rd.refused_reads,
        vec![ReadRefused {
            id: 1,
            error: ProposeError::NotLeader { leader: None }
        }]
    );
    assert_eq!(
        net.node_mut(1).propose(vec![bytes::Bytes::from("x")]),
        Err(ProposeError::NotLeader { leader: None })
    );
}

#[test]
fn zero_lease_margin_is_refused() {
    let mut c = cfg(1);
    c.lease_drift_margin_ticks = 0;
    let err = c.validate().unwrap_err();
    assert!(
        err.0.contains("lease_drift_margin_ticks must be >= 1"),
        "{err}"
    );
}
