//! The checks run on a node after every event, and the periodic
//! cross-check of the host's log against the core's.

use super::*;

impl World {
    /// Checks run after every event on the node it concerned.
    pub(super) fn observe(&mut self, id: NodeId) -> Check {
        let Some(h) = self.slots.get_mut(&id).and_then(|s| s.host.as_mut()) else {
            return Ok(());
        };
        let st = h.node.status();
        h.role = st.role;
        h.term = st.term;
        h.leader = st.leader;
        h.now_tick = st.now_tick;
        h.lease_until_tick = st.lease_until_tick;
        self.sync_lease_clock(id, &st);
        let h = self
            .slots
            .get_mut(&id)
            .and_then(|s| s.host.as_mut())
            .expect("running");
        // Entries this node compacted before we looked are known from the
        // global applied record (a snapshot only covers applied entries).
        let from = h.seen_commit + 1;
        h.seen_commit = st.commit;
        let inc = h.incarnation;
        let newly_leader = st.role == Role::Leader && h.checked_leader_term != st.term;
        if newly_leader {
            h.checked_leader_term = st.term;
        }
        self.ck
            .commit
            .observe(id, inc, st.commit, st.snapshot_index, st.last_index)?;
        let applied = self.slots[&id].host.as_ref().expect("running").applied;
        if st.commit < applied {
            return Err(Violation::new(
                "commit-monotonic",
                format!(
                    "node {id} has commit {} below the index its state machine applied ({applied})",
                    st.commit
                ),
            ));
        }
        if st.role == Role::Leader {
            self.ck.election.observe_leader(st.term, id)?;
            let leaders: Vec<LeaderState> = self
                .slots
                .iter()
                .filter_map(|(n, s)| s.host.as_ref().map(|h| (*n, h)))
                .filter(|(_, h)| h.role == Role::Leader)
                .map(|(node, h)| LeaderState {
                    node,
                    term: h.term,
                    lease_valid: h.now_tick < h.lease_until_tick,
                    now_tick: h.now_tick,
                    lease_until_tick: h.lease_until_tick,
                })
                .collect();
            if leaders.len() > 1 {
                check_leases(&leaders)?;
            }
        }
        if newly_leader {
            self.maybe_crash_soon(id, inc);
        }
        let h = self.slots[&id].host.as_ref().expect("running");
        if newly_leader {
            self.ck.completeness.on_leader(st.term, &h.mirror)?;
        }
        if from > st.commit {
            return Ok(());
        }
        let leaders: Vec<(u64, &dyn LogView)> = self
            .slots
            .values()
            .filter_map(|s| s.host.as_ref())
            .filter(|x| x.role == Role::Leader)
            .map(|x| (x.term, &x.mirror as &dyn LogView))
            .collect();
        let voters: Vec<NodeId> = st.membership.voters().collect();
        for i in from..=st.commit {
            let (term, digest) = match h.mirror.get(i) {
                Some((e, d)) => (e.term, *d),
                None if i <= h.mirror.snap_index => match self.ck.sm.applied_at(i) {
                    Some(x) => x,
                    None => continue, // from a snapshot installed here: seen before
                },
                None => {
                    return Err(Violation::new(
                        "commit-monotonic",
                        format!(
                            "node {id} has commit {} but its log ends at {}",
                            st.commit,
                            h.mirror.last()
                        ),
                    ));
                }
            };
            if self
                .ck
                .completeness
                .on_committed(id, st.term, i, term, digest, &leaders)?
            {
                let holders: Vec<NodeId> = self
                    .slots
                    .iter()
                    .filter(|(_, s)| s.durable.holds(i, term))
                    .map(|(n, _)| *n)
                    .collect();
                contract::check_commit_quorum(id, i, term, &voters, &holders)?;
            }
        }
        Ok(())
    }

    /// The host's mirror must equal the log the core holds.
    pub(super) fn cross_check_logs(&mut self) -> Check {
        for (id, s) in &self.slots {
            let Some(h) = s.host.as_ref() else { continue };
            let st = h.node.status();
            if st.last_index != h.mirror.last() {
                return Err(Violation::new(
                    "host-contract",
                    format!(
                        "node {id}: core's last index {} differs from the log it asked the host \
                         to write (last {})",
                        st.last_index,
                        h.mirror.last()
                    ),
                ));
            }
            if st.last_index > h.mirror.snap_index {
                for e in h.node.entries(h.mirror.snap_index + 1, st.last_index + 1) {
                    if h.mirror.get(e.index).map(|m| &m.0) != Some(&e) {
                        return Err(Violation::new(
                            "host-contract",
                            format!(
                                "node {id}: core's entry at {} differs from what it asked the \
                                 host to write",
                                e.index
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
