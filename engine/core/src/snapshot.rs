//! Snapshots: asking the host for one, compacting after one was created,
//! installing one received from the leader, and the leader's retries.

use crate::node::RaftNode;
use crate::progress::ProgressState;
use crate::types::*;

impl RaftNode {
    /// Enough entries were applied since the last snapshot and none is being made.
    /// Also true when a peer that joined after bootstrap needs a first
    /// snapshot and none exists yet.
    pub(crate) fn snapshot_due(&self) -> bool {
        if self.snapshot_requested || self.now < self.snapshot_retry_at {
            return false;
        }
        let since = self.log.applied.saturating_sub(self.log.snap_index());
        let t = self.cfg.snapshot_threshold;
        (t > 0 && since >= t) || (self.joiner_needs_snapshot && since > 0)
    }

    pub(crate) fn on_snapshot_created(&mut self, meta: SnapshotMeta) {
        self.snapshot_requested = false;
        if meta.last_index > self.log.snap_index() {
            self.joiner_needs_snapshot = false;
        }
        let idx = meta.last_index;
        if idx <= self.log.snap_index() {
            return;
        }
        assert!(
            idx <= self.log.applied,
            "snapshot_created at index {idx} beyond what was handed out for applying ({})",
            self.log.applied
        );
        let term = self.log.term_at(idx).expect("applied entry is in memory");
        assert_eq!(
            meta.last_term, term,
            "snapshot_created: last_term {} does not match the log's term {} at index {}",
            meta.last_term, term, idx
        );
        let (membership, _) = self.membership_and_index_at(idx);
        assert!(
            meta.membership.members.is_empty() || meta.membership == membership,
            "snapshot_created: the snapshot's membership {:?} is not the membership at index {} \
             ({:?}); a node restored from it would start from the wrong configuration. Build \
             snapshot metas with RaftNode::membership_at(index)",
            meta.membership,
            idx,
            membership
        );
        self.log.compact(idx, term);
        self.base_membership = membership.clone();
        self.snapshot_meta = SnapshotMeta {
            last_index: idx,
            last_term: term,
            membership,
        };
        if self.conf_index < idx {
            self.conf_index = idx;
        }
    }

    /// Follower: the leader's snapshot arrived (the term was already checked).
    pub(crate) fn handle_install_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
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
            return;
        }
        let idx = meta.last_index;
        if idx <= self.log.commit {
            // Stale: we already have everything it covers.
            let last = self.log.last_index();
            self.send(
                from,
                MessageBody::InstallSnapshotResponse { last_index: last },
            );
            return;
        }
        if self.log.term_at(idx) == Some(meta.last_term) {
            // Our log already contains the snapshot's last entry: it is committed.
            self.log.commit_to(idx);
            let last = self.log.last_index();
            self.send(
                from,
                MessageBody::InstallSnapshotResponse { last_index: last },
            );
            return;
        }
        self.log.drop_unstable();
        self.ack_wait = None;
        self.install_out = Some(meta.clone());
        self.pending_install = Some((from, meta));
    }

    pub(crate) fn on_snapshot_installed(&mut self, meta: SnapshotMeta) {
        let pending = self.pending_install.take();
        if pending.is_none() && meta.last_index <= self.log.commit {
            // A repeated or stale report: the log already covers it.
            return;
        }
        if let Some((_, p)) = &pending {
            assert_eq!(
                p.last_index, meta.last_index,
                "snapshot_installed for index {} but the core asked to install {}",
                meta.last_index, p.last_index
            );
        }
        assert!(
            meta.last_index >= self.log.applied,
            "installing snapshot {} would roll back the applied index {}",
            meta.last_index,
            self.log.applied
        );
        let mut meta = meta;
        if meta.membership.members.is_empty() {
            // The sender did not record a membership: the bootstrap one.
            meta.membership = self.initial_membership.clone();
        }
        self.log.reset_to_snapshot(meta.last_index, meta.last_term);
        self.base_membership = meta.membership.clone();
        self.membership = meta.membership.clone();
        self.conf_index = meta.last_index;
        self.snapshot_requested = false;
        self.snapshot_meta = meta.clone();
        self.ack_wait = None;
        if self.role != Role::Leader {
            self.role = self.follower_role();
        }
        let to = self.leader.or(pending.map(|(from, _)| from));
        if let Some(to) = to {
            if to != self.id {
                self.send(
                    to,
                    MessageBody::InstallSnapshotResponse {
                        last_index: meta.last_index,
                    },
                );
            }
        }
    }

    /// Leader: the follower answered our snapshot.
    pub(crate) fn handle_install_snapshot_response(&mut self, from: NodeId, last_index: Index) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if !matches!(pr.state, ProgressState::Snapshot { .. }) {
            return;
        }
        pr.state = ProgressState::Probe;
        pr.probe_sent = false;
        pr.inflight.clear();
        pr.next_index = last_index
            .saturating_add(1)
            .min(last + 1)
            .max(pr.match_index + 1);
        self.send_append(from);
    }

    pub(crate) fn on_snapshot_send_failed(&mut self, to: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        let retry = self.now + self.cfg.election_ticks;
        if let Some(pr) = self.progress.get_mut(&to) {
            if matches!(pr.state, ProgressState::Snapshot { .. }) {
                pr.become_probe();
                pr.retry_at = retry;
            }
        }
    }
}
