//! Leader election: randomized timeouts, pre-vote, votes, leader stickiness,
//! check-quorum and leadership transfer (TimeoutNow).

use crate::membership::quorum;
use crate::node::{RaftNode, Transfer};
use crate::progress::Progress;
use crate::ready::ReadRefused;
use crate::types::*;

impl RaftNode {
    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let e = self.cfg.election_ticks;
        self.randomized_timeout = e + self.rng.below(e);
    }

    /// True while this node believes a live leader exists (it heard from one
    /// less than an election timeout ago), and during the first election
    /// timeout after (re)start, when it cannot know. Vote requests without
    /// `leader_transfer` are then ignored, which is what makes lease reads safe.
    pub(crate) fn in_leader_lease(&self) -> bool {
        let e = self.cfg.election_ticks;
        if self.role == Role::Leader {
            // A leader is its own live leader. (Without check-quorum a stale
            // leader still steps down on any higher-term append or answer.)
            return true;
        }
        (self.leader.is_some() && self.election_elapsed < e) || self.now < e
    }

    /// Follower/learner/candidate tick: start an election on timeout.
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_timeout {
            if self.membership.is_voter(self.id) && self.pending_install.is_none() {
                self.campaign(self.cfg.pre_vote, false);
            } else {
                self.reset_election_timer();
            }
        }
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let was_leader = self.role == Role::Leader;
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.ack_wait = None;
        }
        if self.leader != leader {
            self.ack_wait = None;
        }
        self.leader = leader;
        self.role = self.follower_role();
        self.votes.clear();
        self.reset_election_timer();
        if was_leader {
            self.leave_leadership();
        }
    }

    /// Drops all leader-only state; pending reads are refused with a hint.
    fn leave_leadership(&mut self) {
        self.progress.clear();
        self.joiner_needs_snapshot = false;
        self.transfer = None;
        self.lease_until = 0;
        self.lease_disabled = false;
        self.seq_sent_tick.clear();
        self.bcast_wanted = false;
        let hint = self.leader;
        let reads: Vec<ReadId> = self
            .pending_reads
            .drain(..)
            .map(|r| r.id)
            .chain(self.reads_await_commit.drain(..))
            .collect();
        for id in reads {
            self.refused_out.push(ReadRefused {
                id,
                error: ProposeError::NotLeader { leader: hint },
            });
        }
    }

    /// Starts a (pre-)election. `transfer`: triggered by TimeoutNow.
    pub(crate) fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        if !self.membership.is_voter(self.id) {
            return;
        }
        if self.term >= MAX_TERM {
            // No term left to campaign in (peers refuse terms above
            // MAX_TERM, and `term + 1` must not overflow): stay a follower.
            // Only a peer that pushed the term this far gets here.
            self.reset_election_timer();
            return;
        }
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.leader = None;
        self.ack_wait = None;
        self.reset_election_timer();
        let req_term = if pre_vote {
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            self.term += 1;
            self.voted_for = Some(self.id);
            self.role = Role::Candidate;
            self.term
        };
        if self.tally() == Some(true) {
            return self.election_won(pre_vote);
        }
        let (lli, llt) = (self.log.last_index(), self.log.last_term());
        for v in self.voter_ids() {
            if v != self.id {
                self.send_with_term(
                    v,
                    req_term,
                    MessageBody::RequestVote {
                        pre_vote,
                        last_log_index: lli,
                        last_log_term: llt,
                        leader_transfer: transfer,
                    },
                );
            }
        }
    }

    /// `Some(true)`: a quorum granted; `Some(false)`: a quorum refused.
    fn tally(&self) -> Option<bool> {
        let voters = self.voter_ids();
        let q = quorum(voters.len());
        let granted = voters
            .iter()
            .filter(|v| self.votes.get(v) == Some(&true))
            .count();
        let refused = voters
            .iter()
            .filter(|v| self.votes.get(v) == Some(&false))
            .count();
        if granted >= q {
            Some(true)
        } else if refused > voters.len() - q {
            Some(false)
        } else {
            None
        }
    }

    fn election_won(&mut self, pre_vote: bool) {
        if pre_vote {
            self.campaign(false, false);
        } else {
            self.become_leader();
        }
    }

    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        msg_term: Term,
        pre_vote: bool,
        last_log_index: Index,
        last_log_term: Term,
    ) {
        let log_ok = self.log.is_up_to_date(last_log_index, last_log_term);
        let can_vote = self.voted_for == Some(from)
            || (self.voted_for.is_none() && self.leader.is_none())
            || (pre_vote && msg_term > self.term);
        let granted = can_vote && log_ok;
        if pre_vote {
            // A grant is answered in the pre-vote's term (so the pre-candidate
            // counts it); a refusal carries our own term, so a pre-candidate
            // that is behind on terms catches up. Our term and vote do not change.
            let reply_term = if granted { msg_term } else { self.term };
            self.send_with_term(
                from,
                reply_term,
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted,
                },
            );
        } else {
            if granted {
                self.voted_for = Some(from);
                self.election_elapsed = 0;
            }
            self.send(
                from,
                MessageBody::RequestVoteResponse {
                    pre_vote: false,
                    granted,
                },
            );
        }
    }

    pub(crate) fn handle_vote_response(
        &mut self,
        from: NodeId,
        msg_term: Term,
        pre_vote: bool,
        granted: bool,
    ) {
        let expected = match (pre_vote, self.role) {
            (true, Role::PreCandidate) if granted => self.term.saturating_add(1),
            // Refusals carry the voter's own term (ours, or lower and stale).
            (true, Role::PreCandidate) => self.term,
            (false, Role::Candidate) => self.term,
            _ => return,
        };
        if msg_term != expected {
            return;
        }
        self.votes.insert(from, granted);
        match self.tally() {
            Some(true) => self.election_won(pre_vote),
            Some(false) => self.become_follower(self.term, None),
            None => {}
        }
    }

    pub(crate) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.transfer = None;
        self.lease_until = 0;
        self.lease_disabled = false;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.ack_wait = None;
        self.hb_seq += 1;
        self.confirmed_seq = self.hb_seq - 1;
        self.seq_sent_tick.clear();
        self.seq_sent_tick.insert(self.hb_seq, self.now);
        let next = self.log.last_index() + 1;
        self.progress.clear();
        let ids: Vec<NodeId> = self.membership.members.keys().copied().collect();
        for id in ids {
            if id != self.id {
                self.progress.insert(id, Progress::new(next, self.now));
            }
        }
        self.append_local(vec![EntryPayload::Noop]);
    }

    /// Leader tick: check-quorum, transfer timeout, heartbeats, stalls.
    pub(crate) fn tick_leader(&mut self) {
        self.election_elapsed += 1;
        self.heartbeat_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_recently_active() {
                self.become_follower(self.term, None);
                return;
            }
            for pr in self.progress.values_mut() {
                pr.recent_active = false;
            }
        }
        if let Some(t) = &mut self.transfer {
            t.elapsed += 1;
            if t.elapsed >= self.cfg.election_ticks {
                self.transfer = None;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        self.tick_replication();
    }

    fn quorum_recently_active(&self) -> bool {
        let voters = self.voter_ids();
        let active = voters
            .iter()
            .filter(|v| **v == self.id || self.progress.get(v).is_some_and(|p| p.recent_active))
            .count();
        active >= quorum(voters.len())
    }

    pub(crate) fn start_transfer(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id {
            return Ok(());
        }
        if !self.membership.is_voter(to) {
            return Err(ProposeError::InvalidConfChange(format!(
                "leadership transfer target {to} is not a voter"
            )));
        }
        if let Some(t) = &self.transfer {
            return if t.to == to {
                Ok(())
            } else {
                Err(ProposeError::TransferInProgress)
            };
        }
        self.transfer = Some(Transfer { to, elapsed: 0 });
        // The target may win an election that bypasses leader stickiness: stop
        // serving lease reads from now on.
        self.lease_until = 0;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.maybe_send_timeout_now(to);
        } else {
            self.send_append(to);
        }
        Ok(())
    }

    /// Sends TimeoutNow once the transfer target has everything durable.
    pub(crate) fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        let Some(t) = &self.transfer else { return };
        if t.to != peer {
            return;
        }
        let caught_up = self
            .progress
            .get(&peer)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.lease_disabled = true;
            self.lease_until = 0;
            self.send(peer, MessageBody::TimeoutNow);
        }
    }

    pub(crate) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.leader != Some(from) || self.role == Role::Leader {
            return;
        }
        if self.membership.is_voter(self.id) && self.pending_install.is_none() {
            self.campaign(false, true);
        }
    }
}
