//! Single-server membership changes: validation, applying a change to a
//! configuration, and keeping the node's view (role, peer progress) in sync.
//!
//! A change takes effect on a node as soon as its entry is APPENDED to that
//! node's log (not when committed), and is reverted if the entry is truncated.

use crate::node::RaftNode;
use crate::progress::Progress;
use crate::types::*;

/// Checks that `change` makes sense against `m`.
pub(crate) fn validate(m: &Membership, change: &ConfChange) -> Result<(), String> {
    match change {
        ConfChange::AddLearner { id, addr } => {
            if *id == 0 {
                return Err("AddLearner: node id must be >= 1 (0 is reserved)".into());
            }
            if m.contains(*id) {
                return Err(format!("AddLearner: node {id} is already a member"));
            }
            if addr.is_empty() {
                return Err(format!("AddLearner: node {id} needs a non-empty address"));
            }
            Ok(())
        }
        ConfChange::Promote { id } => match m.members.get(id) {
            Some(mm) if mm.role == MemberRole::Learner => Ok(()),
            Some(_) => Err(format!("Promote: node {id} is already a voter")),
            None => Err(format!(
                "Promote: node {id} is not a member; add it as a learner first"
            )),
        },
        ConfChange::Remove { id } => {
            if !m.contains(*id) {
                return Err(format!("Remove: node {id} is not a member"));
            }
            if m.is_voter(*id) && m.voters().count() == 1 {
                return Err(format!("Remove: node {id} is the last voter"));
            }
            Ok(())
        }
    }
}

/// The configuration after applying `change` (changes that do not apply are ignored).
pub(crate) fn apply(m: &Membership, change: &ConfChange) -> Membership {
    let mut out = m.clone();
    match change {
        ConfChange::AddLearner { id, addr } => {
            out.members.entry(*id).or_insert(Member {
                role: MemberRole::Learner,
                addr: addr.clone(),
            });
        }
        ConfChange::Promote { id } => {
            if let Some(mm) = out.members.get_mut(id) {
                mm.role = MemberRole::Voter;
            }
        }
        ConfChange::Remove { id } => {
            out.members.remove(id);
        }
    }
    out
}

/// The configuration after `change`, exactly as a node applies a config
/// entry appended to its log (for hosts that rewrite a log offline, e.g.
/// force-new-cluster; changes that do not apply are ignored).
pub fn membership_after(m: &Membership, change: &ConfChange) -> Membership {
    apply(m, change)
}

/// Number of votes needed among `n` voters.
pub(crate) fn quorum(n: usize) -> usize {
    n / 2 + 1
}

impl RaftNode {
    /// Applies the config entries among `entries` (just appended) to the membership.
    pub(crate) fn on_entries_appended(&mut self, entries: &[Entry]) {
        for e in entries {
            if let EntryPayload::Config(c) = &e.payload {
                let next = apply(&self.membership, c);
                self.set_membership(next, e.index);
            }
        }
    }

    /// Recomputes the membership from the base (snapshot or initial) and every
    /// config entry in the log (after a truncation).
    pub(crate) fn recompute_membership(&mut self) {
        let (m, idx) = self.membership_and_index_at(self.log.last_index());
        self.set_membership(m, idx);
    }

    /// The membership in force at `index` and the index of the entry that set it.
    pub(crate) fn membership_and_index_at(&self, index: Index) -> (Membership, Index) {
        let mut m = self.base_membership.clone();
        let mut idx = self.log.snap_index();
        for e in self.log.slice(self.log.snap_index() + 1, index + 1) {
            if let EntryPayload::Config(c) = &e.payload {
                m = apply(&m, c);
                idx = e.index;
            }
        }
        (m, idx)
    }

    pub(crate) fn set_membership(&mut self, m: Membership, conf_index: Index) {
        self.membership = m;
        self.conf_index = conf_index;
        match self.role {
            Role::Leader => {
                let last = self.log.last_index();
                let now = self.now;
                let ids: Vec<NodeId> = self.membership.members.keys().copied().collect();
                for id in &ids {
                    if *id != self.id && !self.progress.contains_key(id) {
                        let mut pr = Progress::new(last + 1, now);
                        pr.recent_active = true;
                        self.progress.insert(*id, pr);
                        self.bcast_wanted = true;
                    }
                }
                self.progress.retain(|id, _| ids.contains(id));
                if let Some(t) = &self.transfer {
                    if !self.membership.is_voter(t.to) {
                        self.transfer = None;
                    }
                }
            }
            Role::Follower | Role::Learner => self.role = self.follower_role(),
            Role::PreCandidate | Role::Candidate => {
                if !self.membership.is_voter(self.id) {
                    self.become_follower(self.term, None);
                }
            }
        }
    }

    /// Role of this node when it is not leading.
    pub(crate) fn follower_role(&self) -> Role {
        match self.membership.members.get(&self.id) {
            Some(m) if m.role == MemberRole::Learner => Role::Learner,
            _ => Role::Follower,
        }
    }

    pub(crate) fn voter_ids(&self) -> Vec<NodeId> {
        self.membership.voters().collect()
    }

    pub(crate) fn conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(Index, Term), ProposeError> {
        self.check_can_propose()?;
        if !self.committed_in_term() || self.conf_index > self.log.commit {
            return Err(ProposeError::ConfChangeInProgress);
        }
        validate(&self.membership, &change).map_err(ProposeError::InvalidConfChange)?;
        Ok(self.append_local(vec![EntryPayload::Config(change)]))
    }

    /// After the commit index advanced on the leader: a leader no longer in the
    /// (committed) membership steps down.
    pub(crate) fn check_self_removed(&mut self) {
        if self.role == Role::Leader
            && self.conf_index <= self.log.commit
            && !self.membership.is_voter(self.id)
        {
            self.become_follower(self.term, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        let mut out = Membership::default();
        for v in voters {
            out.members.insert(
                *v,
                Member {
                    role: MemberRole::Voter,
                    addr: format!("n{v}"),
                },
            );
        }
        for l in learners {
            out.members.insert(
                *l,
                Member {
                    role: MemberRole::Learner,
                    addr: format!("n{l}"),
                },
            );
        }
        out
    }

    #[test]
    fn validation_rules() {
        let base = m(&[1, 2], &[3]);
        assert!(validate(&base, &ConfChange::Promote { id: 3 }).is_ok());
        assert!(validate(&base, &ConfChange::Promote { id: 2 }).is_err());
        assert!(validate(&base, &ConfChange::Promote { id: 9 }).is_err());
        assert!(validate(
            &base,
            &ConfChange::AddLearner {
                id: 2,
                addr: "x".into()
            }
        )
        .is_err());
        assert!(validate(&base, &ConfChange::Remove { id: 9 }).is_err());
        assert!(validate(&m(&[1], &[]), &ConfChange::Remove { id: 1 }).is_err());
        let after = apply(&base, &ConfChange::Promote { id: 3 });
        assert!(after.is_voter(3));
        let after = apply(&after, &ConfChange::Remove { id: 1 });
        assert!(!after.contains(1));
    }

    #[test]
    fn quorum_sizes() {
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(2), 2);
        assert_eq!(quorum(3), 2);
        assert_eq!(quorum(4), 3);
        assert_eq!(quorum(5), 3);
    }
}
