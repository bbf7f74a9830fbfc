//! Reads: ReadIndex (quorum-confirmed heartbeat rounds), leader leases and
//! eventual reads.
//!
//! Every AppendEntries a leader sends carries its current `heartbeat_seq`;
//! a follower echoes it in its response. Once a quorum of voters (the leader
//! included) echoed a sequence `s`, the leader knows it was still leader when
//! round `s` was sent: every ReadIndex request registered before round `s`
//! started may be answered, and the lease extends to
//! `sent_tick(s) + election_ticks - lease_drift_margin_ticks`.

use crate::membership::quorum;
use crate::node::{PendingRead, RaftNode};
use crate::ready::{ReadReady, ReadRefused};
use crate::types::*;

impl RaftNode {
    pub(crate) fn handle_read(&mut self, id: ReadId, consistency: ReadConsistency) {
        match consistency {
            ReadConsistency::Eventual => self.reads_out.push(ReadReady {
                id,
                read_index: self.log.commit,
            }),
            _ if self.role != Role::Leader => self.refused_out.push(ReadRefused {
                id,
                error: ProposeError::NotLeader {
                    leader: self.leader,
                },
            }),
            ReadConsistency::Lease if self.committed_in_term() && self.lease_valid() => {
                self.reads_out.push(ReadReady {
                    id,
                    read_index: self.log.commit,
                })
            }
            ReadConsistency::Lease | ReadConsistency::Linearizable => self.read_index(id),
        }
    }

    /// The lease holds at the current tick.
    pub(crate) fn lease_valid(&self) -> bool {
        self.role == Role::Leader
            && self.transfer.is_none()
            && !self.lease_disabled
            && self.now < self.lease_until
    }

    fn single_voter(&self) -> bool {
        let voters = self.voter_ids();
        voters.len() == 1 && voters[0] == self.id
    }

    fn read_index(&mut self, id: ReadId) {
        if !self.committed_in_term() {
            // The commit index may lag the real one until this leader commits
            // an entry of its term (its no-op).
            self.reads_await_commit.push(id);
            return;
        }
        if self.single_voter() {
            self.reads_out.push(ReadReady {
                id,
                read_index: self.log.commit,
            });
            return;
        }
        self.pending_reads.push_back(PendingRead {
            id,
            index: self.log.commit,
            seq: self.hb_seq + 1,
        });
    }

    /// A ReadIndex request waits for a heartbeat round not yet started, and
    /// the previous round started for reads is confirmed.
    ///
    /// One read round in flight at a time: every read registered while it
    /// is out waits for the next one, so a round serves all the reads that
    /// arrived during the previous round trip (one message per follower for
    /// all of them) instead of one round per batch the host happened to
    /// hand over. The next round starts at the first `ready()` after the
    /// confirmation, in the same host iteration that stepped the answer.
    /// A periodic heartbeat round is a round like any other: reads
    /// registered before it started are released when it is confirmed, and
    /// its confirmation also unblocks a read round whose messages were lost.
    pub(crate) fn read_round_wanted(&self) -> bool {
        self.role == Role::Leader
            && self.read_rounds_unconfirmed() < self.cfg.max_read_rounds_in_flight
            && self
                .pending_reads
                .back()
                .is_some_and(|r| r.seq > self.hb_seq)
    }

    /// Read rounds started and not confirmed yet.
    fn read_rounds_unconfirmed(&self) -> usize {
        self.read_rounds_out
            .iter()
            .filter(|s| **s > self.confirmed_seq)
            .count()
    }

    /// The leader just committed an entry: reads that waited for its first
    /// commit in this term proceed.
    pub(crate) fn release_reads_awaiting_commit(&mut self) {
        if self.reads_await_commit.is_empty() || !self.committed_in_term() {
            return;
        }
        for id in std::mem::take(&mut self.reads_await_commit) {
            self.read_index(id);
        }
    }

    /// A peer echoed heartbeat sequence `seq`.
    pub(crate) fn note_heartbeat_ack(&mut self, from: NodeId, seq: u64) {
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.acked_seq = pr.acked_seq.max(seq.min(self.hb_seq));
        }
        self.update_confirmed_seq();
    }

    /// Recomputes the highest sequence a quorum of voters acknowledged and
    /// releases reads and extends the lease accordingly.
    pub(crate) fn update_confirmed_seq(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let voters = self.voter_ids();
        if voters.is_empty() {
            return;
        }
        let mut acks: Vec<u64> = voters
            .iter()
            .map(|v| {
                if *v == self.id {
                    self.hb_seq
                } else {
                    self.progress.get(v).map(|p| p.acked_seq).unwrap_or(0)
                }
            })
            .collect();
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acks[quorum(voters.len()) - 1];
        if confirmed <= self.confirmed_seq {
            return;
        }
        self.confirmed_seq = confirmed;
        while self
            .read_rounds_out
            .front()
            .is_some_and(|s| *s <= confirmed)
        {
            self.read_rounds_out.pop_front();
        }
        if let Some(sent) = self.seq_sent_tick.get(&confirmed).copied() {
            if self.transfer.is_none() && !self.lease_disabled {
                let lease = sent + self.cfg.election_ticks - self.cfg.lease_drift_margin_ticks;
                self.lease_until = self.lease_until.max(lease);
            }
        }
        self.seq_sent_tick = self.seq_sent_tick.split_off(&confirmed);
        while self
            .pending_reads
            .front()
            .is_some_and(|r| r.seq <= confirmed)
        {
            let r = self.pending_reads.pop_front().expect("front exists");
            self.reads_out.push(ReadReady {
                id: r.id,
                read_index: r.index,
            });
        }
    }
}
