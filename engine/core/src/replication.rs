//! Log replication: sending AppendEntries (probe / pipelined replicate),
//! handling them on followers (conflicts, durable-only acks), fast
//! backtracking, and the commit rule.

use crate::membership::quorum;
use crate::node::{AckWait, RaftNode};
use crate::progress::ProgressState;
use crate::types::*;

/// A snapshot transfer with no answer for this many election timeouts is
/// presumed lost and retried.
pub(crate) const SNAPSHOT_TIMEOUT_ELECTIONS: u64 = 10;

impl RaftNode {
    /// Sends as much of the log to `to` as its progress state allows.
    pub(crate) fn send_append(&mut self, to: NodeId) {
        let max_inflight = self.cfg.max_inflight_msgs;
        let (max_entries, max_bytes) = (self.cfg.max_entries_per_msg, self.cfg.max_bytes_per_msg);
        loop {
            let Some(pr) = self.progress.get(&to) else {
                return;
            };
            if self.now < pr.retry_at {
                return;
            }
            match pr.state {
                ProgressState::Snapshot { .. } => return,
                ProgressState::Probe if pr.probe_sent => return,
                ProgressState::Replicate if pr.inflight_full(max_inflight) => return,
                _ => {}
            }
            let next = pr.next_index;
            let state = pr.state;
            let inflight_empty = pr.inflight.is_empty();
            let prev = next - 1;
            let Some(prev_term) = self.log.term_at(prev) else {
                self.start_snapshot_send(to);
                return;
            };
            if prev == 0 && (pr.needs_snapshot || !self.base_membership.contains(to)) {
                // A node that joined after bootstrap cannot know the bootstrap
                // membership the log starts from: it must start from a
                // snapshot (which carries the membership). Ask for one.
                self.joiner_needs_snapshot = true;
                return;
            }
            let entries = self.log.batch(next, max_entries, max_bytes);
            if entries.is_empty() && state == ProgressState::Replicate {
                return;
            }
            let last = prev + entries.len() as u64;
            self.send(
                to,
                MessageBody::AppendEntries {
                    prev_log_index: prev,
                    prev_log_term: prev_term,
                    entries,
                    leader_commit: self.log.commit,
                    heartbeat_seq: self.hb_seq,
                },
            );
            let now = self.now;
            let last_index = self.log.last_index();
            let pr = self.progress.get_mut(&to).expect("progress exists");
            match state {
                ProgressState::Probe => {
                    pr.probe_sent = true;
                    return;
                }
                ProgressState::Replicate => {
                    if inflight_empty {
                        pr.last_progress_tick = now;
                    }
                    pr.next_index = last + 1;
                    pr.inflight.push_back(last);
                    if pr.next_index > last_index {
                        return;
                    }
                }
                ProgressState::Snapshot { .. } => unreachable!(),
            }
        }
    }

    /// Moves `to` to snapshot mode and asks the host to stream the snapshot.
    pub(crate) fn start_snapshot_send(&mut self, to: NodeId) {
        let index = self.log.snap_index();
        let now = self.now;
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.state = ProgressState::Snapshot { index, since: now };
            pr.inflight.clear();
            pr.probe_sent = false;
            self.send_snapshot_out.push(to);
        }
    }

    /// A heartbeat: an empty AppendEntries. In replicate mode it is anchored
    /// at the last index sent, so a follower that lost some pipelined
    /// AppendEntries rejects it and the leader re-probes at once (on an
    /// ordered transport it arrives after them). Otherwise it is anchored at
    /// the match index, which the peer is known to hold, so it never causes
    /// backtracking. Index 0 (term 0) is the fallback anchor when the term of
    /// the anchor was compacted away.
    pub(crate) fn send_heartbeat(&mut self, to: NodeId) {
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        let anchor = match pr.state {
            ProgressState::Replicate => pr.next_index - 1,
            _ => pr.match_index,
        };
        let (prev, prev_term) = match self.log.term_at(anchor) {
            Some(t) => (anchor, t),
            None => (0, 0),
        };
        self.send(
            to,
            MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries: Vec::new(),
                leader_commit: self.log.commit,
                heartbeat_seq: self.hb_seq,
            },
        );
    }

    /// Starts a new heartbeat round (new `heartbeat_seq`) to every peer.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        self.hb_seq += 1;
        self.seq_sent_tick.insert(self.hb_seq, self.now);
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for p in peers {
            self.send_heartbeat(p);
        }
        // A single voter confirms its own rounds.
        self.update_confirmed_seq();
    }

    /// Per-tick replication housekeeping on the leader: stalled pipelines drop
    /// back to probing, failed/lost snapshot transfers are retried.
    pub(crate) fn tick_replication(&mut self) {
        let now = self.now;
        let last = self.log.last_index();
        let stall = self.cfg.election_ticks;
        let snap_timeout = SNAPSHOT_TIMEOUT_ELECTIONS * self.cfg.election_ticks;
        let mut resend = Vec::new();
        for (id, pr) in self.progress.iter_mut() {
            match pr.state {
                ProgressState::Replicate
                    if !pr.inflight.is_empty()
                        && pr.match_index < last
                        && now.saturating_sub(pr.last_progress_tick) >= stall =>
                {
                    pr.become_probe();
                    resend.push(*id);
                }
                ProgressState::Snapshot { since, .. }
                    if now.saturating_sub(since) >= snap_timeout =>
                {
                    pr.become_probe();
                    resend.push(*id);
                }
                ProgressState::Probe if pr.retry_at != 0 && now >= pr.retry_at => {
                    pr.retry_at = 0;
                    pr.probe_sent = false;
                    resend.push(*id);
                }
                _ => {}
            }
        }
        for id in resend {
            self.send_append(id);
        }
    }

    /// Follower side of AppendEntries (the term was already checked).
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
        seq: u64,
    ) {
        // `step` refuses leader traffic in a term we lead (Refusal::SecondLeader).
        debug_assert!(
            self.role != Role::Leader,
            "checked by RaftNode::check_message"
        );
        if self.role != Role::Follower && self.role != Role::Learner || self.leader != Some(from) {
            self.become_follower(self.term, Some(from));
        }
        self.election_elapsed = 0;
        if self.pending_install.is_some() {
            // The log is about to be replaced by a snapshot; accept nothing until then.
            return;
        }
        if prev == 0 && !entries.is_empty() && !self.base_membership.contains(self.id) {
            // We joined after bootstrap (no snapshot, not in the initial
            // membership): the log's base membership is unknown here, so we
            // only start from a snapshot. `conflict_index = 0` asks for one.
            return self.reject_append(from, 0, 0, None, seq);
        }
        let snap = self.log.snap_index();
        if prev > snap {
            match self.log.term_at(prev) {
                None => {
                    let conflict_index = self.log.last_index() + 1;
                    return self.reject_append(from, prev, conflict_index, None, seq);
                }
                Some(t) if t != prev_term => {
                    let ci = self
                        .log
                        .first_index_of_term_run(prev)
                        .max(self.log.commit + 1);
                    return self.reject_append(from, prev, ci, Some(t), seq);
                }
                Some(_) => {}
            }
        }
        let last_new = prev + entries.len() as u64;
        let has_entries = !entries.is_empty();
        // Skip what we already have, truncate at the first conflict, append the rest.
        let mut to_append = Vec::new();
        let mut truncated = false;
        for e in entries {
            if e.index <= snap {
                continue;
            }
            if !to_append.is_empty() {
                to_append.push(e);
                continue;
            }
            match self.log.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    self.log.truncate_from(e.index);
                    truncated = true;
                    to_append.push(e);
                }
                None => to_append.push(e),
            }
        }
        let configs: Vec<Entry> = if truncated {
            Vec::new()
        } else {
            to_append
                .iter()
                .filter(|e| matches!(e.payload, EntryPayload::Config(_)))
                .cloned()
                .collect()
        };
        self.log.append(to_append);
        if truncated {
            self.recompute_membership();
        } else if !configs.is_empty() {
            self.on_entries_appended(&configs);
        }
        let new_commit = leader_commit.min(last_new);
        if new_commit > self.log.commit {
            self.log.commit_to(new_commit);
        }
        let durable = self.log.durable;
        if has_entries && last_new > durable {
            // Acknowledge once durable (see `maybe_send_ack`).
            match &mut self.ack_wait {
                Some(a) if a.to == from => {
                    a.index = a.index.max(last_new);
                    a.seq = a.seq.max(seq);
                }
                _ => {
                    self.ack_wait = Some(AckWait {
                        to: from,
                        index: last_new,
                        seq,
                        sent: 0,
                    })
                }
            }
        } else {
            self.send(
                from,
                MessageBody::AppendEntriesResponse {
                    success: true,
                    match_index: last_new.min(durable),
                    conflict_index: 0,
                    conflict_term: None,
                    heartbeat_seq: seq,
                },
            );
        }
    }

    fn reject_append(
        &mut self,
        to: NodeId,
        rejected_prev: Index,
        conflict_index: Index,
        conflict_term: Option<Term>,
        seq: u64,
    ) {
        self.send(
            to,
            MessageBody::AppendEntriesResponse {
                success: false,
                match_index: rejected_prev,
                conflict_index,
                conflict_term,
                heartbeat_seq: seq,
            },
        );
    }

    /// Follower: acknowledge entries that became durable.
    pub(crate) fn maybe_send_ack(&mut self) {
        let durable = self.log.durable;
        let Some(a) = &mut self.ack_wait else { return };
        let m = a.index.min(durable);
        let mut out = None;
        if m > a.sent {
            a.sent = m;
            out = Some((a.to, m, a.seq));
        }
        if m >= a.index {
            self.ack_wait = None;
        }
        if let Some((to, m, seq)) = out {
            self.send(
                to,
                MessageBody::AppendEntriesResponse {
                    success: true,
                    match_index: m,
                    conflict_index: 0,
                    conflict_term: None,
                    heartbeat_seq: seq,
                },
            );
        }
    }

    /// Leader side of AppendEntriesResponse (the term was already checked).
    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: Index,
        conflict_index: Index,
        conflict_term: Option<Term>,
        seq: u64,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let now = self.now;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if success {
            pr.probe_sent = false;
            let mut advanced = false;
            if match_index > pr.match_index {
                // `step` refuses acks beyond our log (Refusal::AckBeyondLog).
                debug_assert!(match_index <= self.log.last_index());
                pr.match_index = match_index;
                pr.last_progress_tick = now;
                advanced = true;
            }
            match pr.state {
                ProgressState::Probe if advanced || pr.match_index + 1 == pr.next_index => {
                    pr.become_replicate(now)
                }
                ProgressState::Replicate => pr.free_inflight_upto(pr.match_index),
                ProgressState::Snapshot { index, .. } if pr.match_index >= index => {
                    pr.become_replicate(now)
                }
                _ => {}
            }
            pr.next_index = pr.next_index.max(pr.match_index + 1);
            self.note_heartbeat_ack(from, seq);
            if self.role != Role::Leader {
                return;
            }
            if advanced {
                self.maybe_commit();
                if self.role != Role::Leader {
                    return;
                }
            }
            // (Re)sent on every answer of a caught-up target: a lost
            // TimeoutNow is retried, and extra ones are stale once it campaigned.
            self.maybe_send_timeout_now(from);
            self.send_append(from);
        } else {
            self.note_heartbeat_ack(from, seq);
            if self.role != Role::Leader {
                return;
            }
            let Some(pr) = self.progress.get_mut(&from) else {
                return;
            };
            let rejected = match_index;
            if rejected == 0 && conflict_index == 0 {
                // The peer cannot start from index 1: it needs a snapshot.
                pr.needs_snapshot = true;
                pr.probe_sent = false;
                self.joiner_needs_snapshot = true;
                return;
            }
            let stale = match pr.state {
                ProgressState::Snapshot { .. } => true,
                ProgressState::Replicate => rejected <= pr.match_index,
                ProgressState::Probe => {
                    rejected <= pr.match_index || rejected.saturating_add(1) != pr.next_index
                }
            };
            if stale {
                return;
            }
            let mut next = match conflict_term {
                Some(ct) => match self.log.last_index_of_term(ct, rejected) {
                    Some(i) => i + 1,
                    None => conflict_index,
                },
                None => conflict_index,
            };
            next = next.min(rejected).max(pr.match_index + 1).max(1);
            pr.state = ProgressState::Probe;
            pr.inflight.clear();
            pr.probe_sent = false;
            pr.next_index = next;
            self.send_append(from);
        }
    }

    /// Advances the commit index to the highest index replicated (durably) on
    /// a quorum of voters, if that entry is from the current term (Figure 8).
    /// The leader counts itself only up to its own durable index.
    pub(crate) fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let voters = self.voter_ids();
        if voters.is_empty() {
            return;
        }
        let mut matches: Vec<Index> = voters
            .iter()
            .map(|v| {
                if *v == self.id {
                    self.log.durable
                } else {
                    self.progress.get(v).map(|p| p.match_index).unwrap_or(0)
                }
            })
            .collect();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let n = matches[quorum(voters.len()) - 1];
        if n > self.log.commit && self.log.term_at(n) == Some(self.term) {
            self.log.commit_to(n);
            self.on_leader_commit_advanced();
        }
    }

    fn on_leader_commit_advanced(&mut self) {
        self.check_self_removed();
        if self.role != Role::Leader {
            return;
        }
        self.release_reads_awaiting_commit();
    }
}
