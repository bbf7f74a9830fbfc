//! The Raft node: inputs in, [`Ready`] out.
//!
//! This file holds the node's state, the public API and the message
//! dispatcher. The protocol itself lives in sibling modules, each an
//! `impl RaftNode` block with one job: `election.rs`, `replication.rs`,
//! `read.rs`, `membership.rs`, `snapshot.rs`.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::{Config, ConfigError};
use crate::log::RaftLog;
use crate::progress::Progress;
use crate::ready::{ReadReady, ReadRefused, Ready};
use crate::rng::Rng;
use crate::types::*;

/// What a host loads from stable storage when a node (re)starts.
#[derive(Clone, Debug, Default)]
pub struct RestoreState {
    pub hard_state: HardState,
    /// The latest installed or created snapshot, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// Durable entries after the snapshot, contiguous and in order.
    pub entries: Vec<Entry>,
    /// Membership for a brand-new cluster (no snapshot, no config entries).
    pub initial_membership: Membership,
    /// Highest index the host's state machine has already applied (it will
    /// not be handed those entries again).
    pub applied: Index,
}

/// A leadership transfer in progress.
pub(crate) struct Transfer {
    pub(crate) to: NodeId,
    pub(crate) elapsed: u64,
}

/// A ReadIndex request waiting for its heartbeat round to be acknowledged.
pub(crate) struct PendingRead {
    pub(crate) id: ReadId,
    pub(crate) index: Index,
    pub(crate) seq: u64,
}

/// A follower's promise to acknowledge entries once they are durable.
pub(crate) struct AckWait {
    pub(crate) to: NodeId,
    pub(crate) index: Index,
    pub(crate) seq: u64,
    pub(crate) sent: Index,
}

/// A Raft node. Single-threaded and deterministic: the same inputs in the
/// same order produce the same outputs.
pub struct RaftNode {
    pub(crate) cfg: Config,
    pub(crate) id: NodeId,
    pub(crate) term: Term,
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog,

    // Membership.
    pub(crate) membership: Membership,
    /// Index of the entry that set `membership` (or the snapshot index).
    pub(crate) conf_index: Index,
    /// Membership of the snapshot, or the initial one.
    pub(crate) base_membership: Membership,
    /// `RestoreState::initial_membership` (stands in for a snapshot's empty one).
    pub(crate) initial_membership: Membership,
    pub(crate) snapshot_meta: SnapshotMeta,

    // Time.
    pub(crate) rng: Rng,
    pub(crate) now: u64,
    pub(crate) election_elapsed: u64,
    pub(crate) randomized_timeout: u64,
    pub(crate) heartbeat_elapsed: u64,

    // Candidate.
    pub(crate) votes: BTreeMap<NodeId, bool>,

    // Leader.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    pub(crate) hb_seq: u64,
    pub(crate) seq_sent_tick: BTreeMap<u64, u64>,
    pub(crate) confirmed_seq: u64,
    /// Heartbeat rounds started for waiting ReadIndex requests, oldest
    /// first; those at or below `confirmed_seq` are pruned. While
    /// `cfg.max_read_rounds_in_flight` of them are unconfirmed no other
    /// round is started for reads: reads that arrive meanwhile wait for the
    /// next round, which starts as soon as one is confirmed (or ride on a
    /// periodic heartbeat round).
    pub(crate) read_rounds_out: VecDeque<u64>,
    pub(crate) pending_reads: VecDeque<PendingRead>,
    pub(crate) reads_await_commit: Vec<ReadId>,
    pub(crate) lease_until: u64,
    /// Set once this leader sent TimeoutNow in its term: it takes no lease again.
    pub(crate) lease_disabled: bool,
    pub(crate) transfer: Option<Transfer>,
    /// Entries were appended (or a peer was added): send to every peer at the next `ready()`.
    pub(crate) bcast_wanted: bool,

    // Follower.
    pub(crate) ack_wait: Option<AckWait>,
    pub(crate) pending_install: Option<(NodeId, SnapshotMeta)>,

    // Snapshots.
    pub(crate) snapshot_requested: bool,
    /// After the host made no snapshot for a request, the core asks again
    /// no earlier than this tick.
    pub(crate) snapshot_retry_at: u64,
    /// A peer that joined after bootstrap needs a snapshot and none exists.
    pub(crate) joiner_needs_snapshot: bool,

    // Output.
    pub(crate) msgs: Vec<Message>,
    pub(crate) reads_out: Vec<ReadReady>,
    pub(crate) refused_out: Vec<ReadRefused>,
    pub(crate) install_out: Option<SnapshotMeta>,
    pub(crate) send_snapshot_out: Vec<NodeId>,
    /// (term, vote) last handed out in a `Ready` (or restored).
    pub(crate) emitted_hs: (Term, Option<NodeId>),
    /// Peer messages refused by `step` (see [`Refusal`]).
    pub(crate) refused_messages: u64,
}

impl RaftNode {
    /// Creates a node from durable state. Entries in `restore.entries` count as durable.
    pub fn new(cfg: Config, restore: RestoreState) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let snap = restore.snapshot.clone().unwrap_or(SnapshotMeta {
            last_index: 0,
            last_term: 0,
            membership: restore.initial_membership.clone(),
        });
        // A real configuration always has a voter: an empty snapshot
        // membership means the host did not record one, i.e. the bootstrap one.
        let base_membership = match &restore.snapshot {
            Some(s) if !s.membership.members.is_empty() => s.membership.clone(),
            _ => restore.initial_membership.clone(),
        };
        let mut snap = snap;
        snap.membership = base_membership.clone();
        let log = RaftLog::restore(
            snap.last_index,
            snap.last_term,
            restore.entries,
            restore.hard_state.commit,
            restore.applied,
        );
        let hs = restore.hard_state;
        assert!(
            hs.term >= log.last_term(),
            "restored hard state term {} is lower than the last log term {}",
            hs.term,
            log.last_term()
        );
        let mut node = RaftNode {
            id: cfg.id,
            rng: Rng::new(cfg.seed),
            cfg,
            term: hs.term,
            voted_for: hs.voted_for,
            role: Role::Follower,
            leader: None,
            log,
            membership: base_membership.clone(),
            conf_index: snap.last_index,
            base_membership,
            initial_membership: restore.initial_membership.clone(),
            snapshot_meta: snap,
            now: 0,
            election_elapsed: 0,
            randomized_timeout: 0,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            hb_seq: 0,
            seq_sent_tick: BTreeMap::new(),
            confirmed_seq: 0,
            read_rounds_out: VecDeque::new(),
            pending_reads: VecDeque::new(),
            reads_await_commit: Vec::new(),
            lease_until: 0,
            lease_disabled: false,
            transfer: None,
            bcast_wanted: false,
            ack_wait: None,
            pending_install: None,
            snapshot_requested: false,
            snapshot_retry_at: 0,
            joiner_needs_snapshot: false,
            msgs: Vec::new(),
            reads_out: Vec::new(),
            refused_out: Vec::new(),
            install_out: None,
            send_snapshot_out: Vec::new(),
            emitted_hs: (hs.term, hs.voted_for),
            refused_messages: 0,
        };
        node.recompute_membership();
        node.role = node.follower_role();
        node.reset_election_timer();
        Ok(node)
    }

    /// One unit of time passed.
    pub fn tick(&mut self) {
        self.now += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    /// A message from a peer arrived.
    ///
    /// The message is input from outside: it is checked before it may change
    /// anything (see `guard.rs` and `docs/raft-core.md`). A message that fails
    /// is refused as a whole: `Err` says why, the node is left exactly as it
    /// was (as if the message had been lost) apart from the
    /// [`Status::refused_messages`] counter, and the host should log the
    /// refusal. No well-formed message makes the node panic.
    pub fn step(&mut self, msg: Message) -> Result<(), Refusal> {
        if let Err(r) = self.check_message(&msg) {
            self.refused_messages += 1;
            return Err(r);
        }
        self.step_checked(msg);
        Ok(())
    }

    fn step_checked(&mut self, msg: Message) {
        if msg.term > self.term {
            match &msg.body {
                MessageBody::RequestVote {
                    pre_vote,
                    leader_transfer,
                    ..
                } => {
                    if !*leader_transfer && self.in_leader_lease() {
                        // Leader stickiness: a live leader exists; ignore the disruption.
                        return;
                    }
                    if !*pre_vote {
                        self.become_follower(msg.term, None);
                    }
                }
                // A granted pre-vote comes in the term we asked for; a refusal
                // in a higher term means we are behind: catch up below.
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: true,
                } if self.term.checked_add(1) == Some(msg.term) => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow => self.become_follower(msg.term, Some(msg.from)),
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.term {
            self.step_stale(msg);
            return;
        }
        let Message {
            from, term, body, ..
        } = msg;
        match body {
            MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                ..
            } => self.handle_vote_request(from, term, pre_vote, last_log_index, last_log_term),
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                self.handle_vote_response(from, term, pre_vote, granted)
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                heartbeat_seq,
            } => self.handle_append(
                from,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                heartbeat_seq,
            ),
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                conflict_index,
                conflict_term,
                heartbeat_seq,
            } => self.handle_append_response(
                from,
                success,
                match_index,
                conflict_index,
                conflict_term,
                heartbeat_seq,
            ),
            MessageBody::InstallSnapshot { meta } => self.handle_install_snapshot(from, meta),
            MessageBody::InstallSnapshotResponse { last_index } => {
                self.handle_install_snapshot_response(from, last_index)
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(from),
        }
    }

    /// A message from an older term. A stale leader or candidate is told our
    /// term so it steps down; everything else is dropped.
    fn step_stale(&mut self, msg: Message) {
        match msg.body {
            MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. } => {
                self.send(
                    msg.from,
                    MessageBody::AppendEntriesResponse {
                        success: false,
                        match_index: 0,
                        conflict_index: 0,
                        conflict_term: None,
                        heartbeat_seq: 0,
                    },
                );
            }
            MessageBody::RequestVote { pre_vote, .. } => {
                self.send(
                    msg.from,
                    MessageBody::RequestVoteResponse {
                        pre_vote,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    /// Proposes a batch of commands; returns the index of the first and the
    /// term they were appended in. They are committed iff an entry with that
    /// (index, term) is later handed out in `Ready::committed`.
    ///
    /// All commands proposed between two `ready()` calls are replicated in as
    /// few AppendEntries as the batching limits allow. An empty batch appends
    /// nothing and returns `(last_index + 1, term)`.
    pub fn propose(&mut self, commands: Vec<Bytes>) -> Result<(Index, Term), ProposeError> {
        self.check_can_propose()?;
        if commands.is_empty() {
            return Ok((self.log.last_index() + 1, self.term));
        }
        Ok(self.append_local(commands.into_iter().map(EntryPayload::Command).collect()))
    }

    /// Proposes a membership change. Refused while another change is
    /// uncommitted or before the leader has committed an entry in its term.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(Index, Term), ProposeError> {
        self.conf_change(change)
    }

    /// Asks for a read barrier. The answer arrives in `Ready::reads` or
    /// `Ready::refused_reads` with the same id.
    pub fn read(&mut self, id: ReadId, consistency: ReadConsistency) {
        self.handle_read(id, consistency)
    }

    /// Asks the leader to hand leadership to `to`.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        self.start_transfer(to)
    }

    /// The host made the log durable up to `index`, whose entry has `term`.
    /// A report for an entry that has since been replaced is ignored.
    pub fn log_persisted(&mut self, index: Index, term: Term) {
        if !self.log.persisted(index, term) {
            return;
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        } else {
            self.maybe_send_ack();
        }
    }

    /// The host finished a snapshot up to `meta.last_index`; the core may
    /// compact its log up to there. The core records the membership in force
    /// at `meta.last_index` from its own log; it panics if a non-empty
    /// `meta.membership` differs from it (see [`RaftNode::membership_at`]).
    pub fn snapshot_created(&mut self, meta: SnapshotMeta) {
        self.on_snapshot_created(meta)
    }

    /// The host made no new snapshot for the core's last request
    /// (`Ready::create_snapshot`): it failed, or its image was no newer
    /// than the latest snapshot. The core asks again, no sooner than one
    /// election timeout from now. Without this call a request the host
    /// dropped would stop every later snapshot.
    pub fn snapshot_not_created(&mut self) {
        self.snapshot_requested = false;
        self.snapshot_retry_at = self.now + self.cfg.election_ticks;
    }

    /// The host installed the snapshot it was asked to install.
    pub fn snapshot_installed(&mut self, meta: SnapshotMeta) {
        self.on_snapshot_installed(meta)
    }

    /// Sending a snapshot to `to` failed (the host gives up for now); the
    /// core will retry later.
    pub fn snapshot_send_failed(&mut self, to: NodeId) {
        self.on_snapshot_send_failed(to)
    }

    /// Peer `to` appears unreachable (e.g. a stream broke): the leader drops
    /// back to probing it.
    pub fn report_unreachable(&mut self, to: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&to) {
            if pr.state == crate::progress::ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    /// True if there is output waiting.
    pub fn has_ready(&self) -> bool {
        self.bcast_wanted
            || self.read_round_wanted()
            || !self.msgs.is_empty()
            || (self.term, self.voted_for) != self.emitted_hs
            || self.log.has_unstable()
            || self.log.has_committed_to_hand_out()
            || !self.reads_out.is_empty()
            || !self.refused_out.is_empty()
            || self.install_out.is_some()
            || !self.send_snapshot_out.is_empty()
            || self.snapshot_due()
    }

    /// Takes all pending output.
    pub fn ready(&mut self) -> Ready {
        self.flush();
        let mut rd = Ready::default();
        if (self.term, self.voted_for) != self.emitted_hs {
            self.emitted_hs = (self.term, self.voted_for);
            rd.hard_state = Some(self.hard_state());
        }
        rd.snapshot_to_install = self.install_out.take();
        rd.entries = self.log.take_unstable();
        rd.messages = std::mem::take(&mut self.msgs);
        rd.committed = self.log.take_committed();
        rd.reads = std::mem::take(&mut self.reads_out);
        rd.refused_reads = std::mem::take(&mut self.refused_out);
        if self.snapshot_due() {
            self.snapshot_requested = true;
            rd.create_snapshot = true;
        }
        rd.send_snapshot_to = std::mem::take(&mut self.send_snapshot_out);
        rd
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit: self.log.commit,
            last_index: self.log.last_index(),
            durable_index: self.log.durable,
            applied_handed_out: self.log.applied,
            snapshot_index: self.log.snap_index(),
            // Only a lease that can serve reads: leader, no transfer, and an
            // entry of this term committed (else `commit` may lag).
            lease_until_tick: if self.lease_valid() && self.committed_in_term() {
                self.lease_until
            } else {
                0
            },
            now_tick: self.now,
            membership: self.membership.clone(),
            refused_messages: self.refused_messages,
        }
    }

    /// While leading: every other member's match index (the highest log
    /// index known to be replicated there). Empty otherwise. For the host's
    /// replication-lag metrics; allocation-free.
    pub fn follower_matches(&self) -> impl Iterator<Item = (NodeId, Index)> + '_ {
        let leading = self.role == Role::Leader;
        self.progress
            .iter()
            .filter(move |(id, _)| leading && **id != self.id)
            .map(|(id, p)| (*id, p.match_index))
    }

    /// Entries in `[lo, hi)` still held in memory (for hosts that re-read the log).
    pub fn entries(&self, lo: Index, hi: Index) -> Vec<Entry> {
        self.log.slice(lo, hi).to_vec()
    }

    /// The hard state as the core sees it now. `commit` is capped at the
    /// durable log index: a commit index above it could, after a crash, point
    /// at stale entries still on disk that the in-memory log had replaced.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
            commit: self.log.commit.min(self.log.durable),
        }
    }

    /// The membership in force at log index `index` (the snapshot's, plus
    /// every config entry up to `index`), or `None` if `index` is below the
    /// latest snapshot or beyond the last index. A host creating a snapshot at
    /// its applied index stores this membership in the snapshot's meta.
    pub fn membership_at(&self, index: Index) -> Option<Membership> {
        if index < self.log.snap_index() || index > self.log.last_index() {
            return None;
        }
        Some(self.membership_and_index_at(index).0)
    }

    /// Metadata of the latest snapshot the core knows of (created or installed;
    /// index 0 if none). A leader's host uses it to build the `InstallSnapshot`
    /// message it delivers after streaming the data.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot_meta.clone()
    }

    // ---- shared helpers -------------------------------------------------

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    /// The leader has committed an entry of its own term.
    pub(crate) fn committed_in_term(&self) -> bool {
        self.log.term_at(self.log.commit) == Some(self.term)
    }

    pub(crate) fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        Ok(())
    }

    /// Appends entries at the leader; they go out at the next `ready()`.
    pub(crate) fn append_local(&mut self, payloads: Vec<EntryPayload>) -> (Index, Term) {
        let first = self.log.last_index() + 1;
        let entries: Vec<Entry> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| Entry {
                term: self.term,
                index: first + i as u64,
                payload,
            })
            .collect();
        let configs: Vec<Entry> = entries
            .iter()
            .filter(|e| matches!(e.payload, EntryPayload::Config(_)))
            .cloned()
            .collect();
        self.log.append(entries);
        if !configs.is_empty() {
            self.on_entries_appended(&configs);
        }
        self.bcast_wanted = true;
        (first, self.term)
    }

    /// Work deferred to `ready()` so that everything proposed in between goes
    /// out together: replication to every peer and pending ReadIndex rounds.
    fn flush(&mut self) {
        if self.role != Role::Leader {
            self.bcast_wanted = false;
            return;
        }
        if self.bcast_wanted {
            self.bcast_wanted = false;
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for p in peers {
                self.send_append(p);
            }
        }
        if self.read_round_wanted() {
            self.broadcast_heartbeat();
            self.read_rounds_out.push_back(self.hb_seq);
        }
    }
}
