//! The host contract, checked on the core's output (see `engine/core/src/ready.rs`):
//!
//! * term and vote only move forward; a node never changes its vote within a
//!   term (it would let two candidates win the same term);
//! * every message (pre-votes aside) leaves only once the hard state it
//!   depends on is durable: its term, and for a granted vote the vote itself;
//! * a follower acknowledges only a log prefix that is durable on its disk;
//! * an index counts as committed only when durable on a quorum of voters (so
//!   the leader counts itself only for entries it reported durable).

use d_engine_core::{HardState, Index, Message, MessageBody, NodeId, Term};

use super::{Check, Violation};

/// A durable hard state moves from `old` to `new` on `node`.
pub fn check_hard_state(node: NodeId, old: &HardState, new: &HardState) -> Check {
    if new.term < old.term {
        return Err(Violation::new(
            "vote-safety",
            format!(
                "node {node} persisted term {} after term {}: terms never go back",
                new.term, old.term
            ),
        ));
    }
    if new.term == old.term && old.voted_for.is_some() && new.voted_for != old.voted_for {
        return Err(Violation::new(
            "vote-safety",
            format!(
                "node {node} changed its vote in term {} from {:?} to {:?}",
                new.term, old.voted_for, new.voted_for
            ),
        ));
    }
    Ok(())
}

/// `msg` is about to leave `msg.from`, whose durable hard state is `durable`.
pub fn check_send(msg: &Message, durable: &HardState) -> Check {
    let pre_vote = matches!(
        msg.body,
        MessageBody::RequestVote { pre_vote: true, .. }
            | MessageBody::RequestVoteResponse { pre_vote: true, .. }
    );
    if pre_vote {
        return Ok(());
    }
    if durable.term < msg.term {
        return Err(Violation::new(
            "persist-before-send",
            format!(
                "node {} sent {:?} in term {} while its durable term is {}",
                msg.from,
                body_name(&msg.body),
                msg.term,
                durable.term
            ),
        ));
    }
    let vote_needed = match msg.body {
        MessageBody::RequestVoteResponse { granted: true, .. } => Some(msg.to),
        MessageBody::RequestVote { .. } => Some(msg.from),
        _ => None,
    };
    if let Some(candidate) = vote_needed {
        if durable.term != msg.term || durable.voted_for != Some(candidate) {
            return Err(Violation::new(
                "persist-before-send",
                format!(
                    "node {} sent {} for node {candidate} in term {} but its durable hard state \
                     is (term {}, vote {:?})",
                    msg.from,
                    body_name(&msg.body),
                    msg.term,
                    durable.term,
                    durable.voted_for
                ),
            ));
        }
    }
    Ok(())
}

/// `node` acknowledges its log up to `match_index`; `durable` says whether its
/// disk holds that prefix (with the same entry at `match_index`).
pub fn check_ack(node: NodeId, to: NodeId, match_index: Index, durable: bool) -> Check {
    if durable {
        Ok(())
    } else {
        Err(Violation::new(
            "ack-durability",
            format!(
                "node {node} told leader {to} its log matches up to {match_index}, but that \
                 prefix is not durable on its disk"
            ),
        ))
    }
}

/// Index `index` (term `term`) became committed on `observer` whose voters are
/// `voters`; `holders` are the nodes whose disks hold that entry.
pub fn check_commit_quorum(
    observer: NodeId,
    index: Index,
    term: Term,
    voters: &[NodeId],
    holders: &[NodeId],
) -> Check {
    let n = voters.iter().filter(|v| holders.contains(v)).count();
    if voters.is_empty() || 2 * n > voters.len() {
        Ok(())
    } else {
        Err(Violation::new(
            "commit-durability",
            format!(
                "node {observer} considers (index {index}, term {term}) committed but it is \
                 durable only on {holders:?}, not on a majority of voters {voters:?}"
            ),
        ))
    }
}

pub fn body_name(b: &MessageBody) -> &'static str {
    match b {
        MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
        MessageBody::RequestVote { .. } => "RequestVote",
        MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResponse",
        MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
        MessageBody::AppendEntries { .. } => "AppendEntries",
        MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
        MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
        MessageBody::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
        MessageBody::TimeoutNow => "TimeoutNow",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(term: Term, voted_for: Option<NodeId>) -> HardState {
        HardState {
            term,
            voted_for,
            commit: 0,
        }
    }

    fn msg(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
        Message {
            from,
            to,
            term,
            body,
        }
    }

    #[test]
    fn hard_state_fires_on_term_regression_and_double_vote() {
        assert!(check_hard_state(1, &hs(3, None), &hs(2, None)).is_err());
        let v = check_hard_state(1, &hs(3, Some(2)), &hs(3, Some(3))).unwrap_err();
        assert_eq!(v.checker, "vote-safety");
        assert!(check_hard_state(1, &hs(3, Some(2)), &hs(3, None)).is_err());
    }

    #[test]
    fn hard_state_accepts_forward_moves() {
        check_hard_state(1, &hs(3, None), &hs(3, Some(2))).unwrap();
        check_hard_state(1, &hs(3, Some(2)), &hs(3, Some(2))).unwrap();
        check_hard_state(1, &hs(3, Some(2)), &hs(4, None)).unwrap();
    }

    #[test]
    fn send_fires_before_term_or_vote_is_durable() {
        let grant = MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        };
        // Term not yet durable.
        assert!(check_send(&msg(2, 1, 5, grant.clone()), &hs(4, None)).is_err());
        // Vote not yet durable.
        assert!(check_send(&msg(2, 1, 5, grant.clone()), &hs(5, None)).is_err());
        let ae = MessageBody::AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
            heartbeat_seq: 0,
        };
        let v = check_send(&msg(1, 2, 7, ae), &hs(6, Some(1))).unwrap_err();
        assert_eq!(v.checker, "persist-before-send");
        let rv = MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: 0,
            last_log_term: 0,
            leader_transfer: false,
        };
        assert!(check_send(&msg(1, 2, 7, rv), &hs(7, None)).is_err());
    }

    #[test]
    fn send_accepts_durable_state_and_pre_votes() {
        let grant = MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        };
        check_send(&msg(2, 1, 5, grant), &hs(5, Some(1))).unwrap();
        let pre = MessageBody::RequestVote {
            pre_vote: true,
            last_log_index: 0,
            last_log_term: 0,
            leader_transfer: false,
        };
        check_send(&msg(1, 2, 9, pre), &hs(8, None)).unwrap();
        let refuse = MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: false,
        };
        check_send(&msg(2, 1, 5, refuse), &hs(5, Some(3))).unwrap();
    }

    #[test]
    fn ack_and_commit_quorum() {
        assert!(check_ack(2, 1, 7, false).is_err());
        check_ack(2, 1, 7, true).unwrap();
        let v = check_commit_quorum(1, 4, 2, &[1, 2, 3], &[1]).unwrap_err();
        assert_eq!(v.checker, "commit-durability");
        // A learner's copy does not count.
        assert!(check_commit_quorum(1, 4, 2, &[1, 2, 3], &[1, 9]).is_err());
        check_commit_quorum(1, 4, 2, &[1, 2, 3], &[2, 3]).unwrap();
        assert!(check_commit_quorum(1, 4, 2, &[1, 2, 3, 4], &[1, 2]).is_err());
    }
}
