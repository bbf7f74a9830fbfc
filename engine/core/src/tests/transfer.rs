use super::harness::*;
use crate::*;

#[test]
fn transfer_to_an_up_to_date_follower_sends_timeout_now_and_it_wins() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.tick_all(H);
    assert_eq!(net.node_mut(1).transfer_leadership(2), Ok(()));
    assert_eq!(
        net.node_mut(1).propose(vec![bytes::Bytes::from("x")]),
        Err(ProposeError::TransferInProgress)
    );
    assert_eq!(
        net.status(1).lease_until_tick,
        0,
        "no lease during a transfer"
    );
    let out = net.take_msgs(1);
    assert_eq!(out, vec![msg(1, 2, 1, MessageBody::TimeoutNow)]);
    net.queue.extend(out);
    net.process(1);
    net.deliver_one();
    let out = net.take_msgs(2);
    // The target skips pre-vote and bypasses leader stickiness.
    assert_eq!(
        out.iter()
            .map(|m| (m.to, m.term, m.body.clone()))
            .collect::<Vec<_>>(),
        [1, 3]
            .into_iter()
            .map(|to| (
                to,
                2,
                MessageBody::RequestVote {
                    pre_vote: false,
                    last_log_index: 1,
                    last_log_term: 1,
                    leader_transfer: true
                }
            ))
            .collect::<Vec<_>>()
    );
    net.queue.extend(out);
    net.settle();
    assert_eq!(net.status(2).role, Role::Leader);
    assert_eq!(net.status(2).term, 2);
    assert_eq!(net.status(1).role, Role::Follower);
    assert_eq!(net.status(1).leader, Some(2));
}

#[test]
fn transfer_first_catches_the_target_up() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.isolate(3);
    for i in 0..5 {
        net.propose(1, &format!("c{i}"));
        net.settle();
    }
    net.heal();
    assert_eq!(net.node_mut(1).transfer_leadership(3), Ok(()));
    let out = net.take_msgs(1);
    assert!(
        out.iter()
            .all(|m| !matches!(m.body, MessageBody::TimeoutNow)),
        "not before 3 has the whole log"
    );
    net.queue.extend(out);
    net.tick_all(E);
    assert_eq!(net.status(3).role, Role::Leader);
    assert_eq!(net.status(3).last_index, 7, "old log + new no-op");
}

#[test]
fn transfer_aborts_after_an_election_timeout() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.cut.insert((1, 2));
    net.cut.insert((2, 1));
    assert_eq!(net.node_mut(1).transfer_leadership(2), Ok(()));
    assert_eq!(
        net.node_mut(1).transfer_leadership(3),
        Err(ProposeError::TransferInProgress)
    );
    net.tick_all(E);
    assert_eq!(net.status(1).role, Role::Leader);
    assert!(net
        .node_mut(1)
        .propose(vec![bytes::Bytes::from("x")])
        .is_ok());
}

#[test]
fn transfer_refusals() {
    let mut net = Network::new(&[1, 2, 3], &[4]);
    net.elect(1);
    assert_eq!(
        net.node_mut(2).transfer_leadership(3),
        Err(ProposeError::NotLeader { leader: Some(1) })
    );
    assert!(matches!(
        net.node_mut(1).transfer_leadership(4),
        Err(ProposeError::InvalidConfChange(_))
    ));
    assert_eq!(net.node_mut(1).transfer_leadership(1), Ok(()));
}

#[test]
fn leader_that_sent_timeout_now_takes_no_lease_again_in_its_term() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.cut.insert((1, 2)); // TimeoutNow lost
    net.node_mut(1).transfer_leadership(2).unwrap();
    net.tick_all(E);
    net.heal();
    net.tick_all(2 * H);
    assert_eq!(net.status(1).role, Role::Leader);
    assert_eq!(net.status(1).term, 1);
    assert_eq!(net.status(1).lease_until_tick, 0);
    net.node_mut(1).read(1, ReadConsistency::Lease);
    let rd = net.node_mut(1).ready();
    assert!(rd.reads.is_empty(), "served by ReadIndex instead");
}

#[test]
fn lost_timeout_now_is_resent_on_the_next_answer() {
    let mut net = Network::new(&[1, 2, 3], &[]);
    net.elect(1);
    net.tick_all(H);
    net.node_mut(1).transfer_leadership(2).unwrap();
    let out = net.take_msgs(1);
    assert_eq!(out, vec![msg(1, 2, 1, MessageBody::TimeoutNow)]);
    // Dropped. The next heartbeat answer from 2 triggers another one.
    net.tick_all(H);
    assert_eq!(net.status(2).role, Role::Leader);
    assert_eq!(net.status(2).term, 2);
}
