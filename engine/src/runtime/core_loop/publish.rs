//! What the consensus loop publishes after each iteration, for the paths
//! that run off the loop: role, term, leader, commit, log and snapshot
//! indexes, the lease deadline, the membership (also pushed to the
//! transport's peer list) and leader changes (also logged, once each).
//! Readers see each value with `Acquire`; values are published one by one,
//! not as one consistent snapshot.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use d_engine_api::LeaderInfo;
use d_engine_core::Role;

use super::super::shared::{role_code, MembersView};
use super::CoreLoop;

impl CoreLoop {
    /// Health and lag inputs for `crate::metrics`: when the leader was
    /// last heard from (now, on the leader itself) and, once per tick on
    /// the leader, the followers' match indexes.
    fn publish_metrics(&mut self, leader: u64, is_leader: bool) {
        let m = &self.shared.metrics;
        if is_leader {
            m.leader_contact(self.shared.epoch, Instant::now());
            if self.ticks_done != self.metrics_tick {
                self.metrics_tick = self.ticks_done;
                m.set_follower_match(self.core.follower_matches());
            }
        } else if let Some((_, stepped)) = self.heard.get(&leader) {
            m.leader_contact(self.shared.epoch, *stepped);
        }
    }

    /// Logs a change of leader or term as this node sees it: an election
    /// under load shows up here (and in latency), nowhere else.
    fn log_leader_change(&mut self, now: (u64, u64), role: Role) {
        let (was_leader, was_term) = std::mem::replace(&mut self.logged_leader, now);
        let (leader, term) = now;
        if term >= d_engine_core::MAX_TERM && was_term < d_engine_core::MAX_TERM {
            tracing::error!(
                term,
                max_term = d_engine_core::MAX_TERM,
                "the term reached its maximum: this node will never campaign again (terms \
                 above it are refused so that term + 1 cannot overflow). Only a buggy or \
                 hostile member pushes terms this far; find it in the refused-message log"
            );
        }
        if was_term == 0 && was_leader == 0 {
            tracing::info!(term, leader, ?role, "initial leader view");
        } else if leader == 0 && was_leader == self.shared.id {
            tracing::warn!(
                term,
                "stepped down: no quorum of followers heard from within an election timeout \
                 (check_quorum)"
            );
        } else if leader == 0
            && was_leader != 0
            && matches!(role, Role::PreCandidate | Role::Candidate)
        {
            // This node's election timer fired: say where the leader's
            // messages stopped, in the transport or in this loop.
            let at = Instant::now();
            let ago = |t: Instant| at.saturating_duration_since(t).as_millis() as u64;
            let heard = self.heard.get(&was_leader);
            tracing::warn!(
                term,
                previous_leader = was_leader,
                ?role,
                delivered_ms_ago = heard.map(|h| ago(h.0)),
                stepped_ms_ago = heard.map(|h| ago(h.1)),
                "lost the leader: nothing from it within an election timeout (the transport \
                 last delivered a message from it delivered_ms_ago, this loop stepped it \
                 stepped_ms_ago)"
            );
        } else if leader == 0 {
            tracing::info!(
                term,
                previous_leader = was_leader,
                ?role,
                "no leader (an election is under way)"
            );
        } else {
            tracing::info!(
                term,
                leader,
                previous_leader = was_leader,
                previous_term = was_term,
                ?role,
                "leader changed"
            );
        }
    }

    /// Publishes the loop's view for the off-loop paths and notifications.
    pub(crate) fn publish(&mut self) {
        let st = self.core.status();
        let p = &self.shared.published;
        let is_leader = st.role == Role::Leader;
        let ready = is_leader && self.last_committed_term == st.term && st.term > 0;
        p.role.store(role_code(st.role), Ordering::Release);
        p.term.store(st.term, Ordering::Release);
        p.leader.store(st.leader.unwrap_or(0), Ordering::Release);
        p.commit.store(st.commit, Ordering::Release);
        p.last_index.store(st.last_index, Ordering::Release);
        p.snapshot_index.store(st.snapshot_index, Ordering::Release);
        p.log_bytes.store(self.log_bytes.total(), Ordering::Release);
        p.leader_ready.store(ready, Ordering::Release);
        let deadline = if ready && st.lease_until_tick > st.now_tick {
            // Nominal real time of the current tick plus the remaining lease.
            let nominal_now = self.ticks_done - self.tick_offset;
            let ticks = nominal_now + (st.lease_until_tick - st.now_tick);
            (self.tick.as_nanos() as u64).saturating_mul(ticks)
        } else {
            0
        };
        p.lease_deadline_ns.store(deadline, Ordering::Release);

        if self.last_membership.as_ref() != Some(&st.membership) {
            let mut voters = st.membership.voters();
            let sole = voters.next() == Some(self.shared.id) && voters.next().is_none();
            p.sole_voter.store(sole, Ordering::Release);
            let view = Arc::new(MembersView::from_membership(&st.membership));
            let mut peers = view.peer_map(self.shared.id);
            if st.membership.members.is_empty() {
                // A joining node: reach the existing cluster through the
                // configured members until the leader tells us the membership.
                for m in &self.shared.config.members {
                    if m.id != self.shared.id {
                        peers.insert(m.id, m.peer_addr.clone());
                    }
                }
            }
            // Only a node with no membership yet accepts unknown senders.
            self.transport.set_joining(st.membership.members.is_empty());
            self.transport.set_peers(peers);
            *p.members.write().expect("poisoned") = view.clone();
            self.shared.members_tx.send_replace(view.list.clone());
            self.last_membership = Some(st.membership.clone());
            // The leader's client address may have become known.
            self.last_leader = (u64::MAX, u64::MAX);
        }
        let leader = (st.leader.unwrap_or(0), st.term);
        if leader != self.logged_leader {
            if leader.0 != 0 {
                self.shared.metrics.leader_changes.inc();
            }
            self.log_leader_change(leader, st.role);
        }
        self.publish_metrics(leader.0, is_leader);
        if leader != self.last_leader {
            self.last_leader = leader;
            let view = self.shared.members_view();
            self.shared.leader_tx.send_replace(LeaderInfo {
                id: leader.0,
                client_addr: if leader.0 == 0 {
                    String::new()
                } else {
                    view.client_addr(leader.0).unwrap_or_default()
                },
                term: leader.1,
            });
        }
        self.sync_lease_clock(is_leader, ready, st.term);
    }
}
