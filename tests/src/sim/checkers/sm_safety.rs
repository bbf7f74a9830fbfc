//! State-machine safety: every node applies the same entry at each index, in
//! index order, exactly once per incarnation, and ends up in the same state.
//!
//! Besides the entry itself (term + payload digest) the checker compares the
//! digest of the state machine right after each index, so a snapshot whose
//! data does not match its metadata (or a host that applies wrongly) is caught
//! when it is installed or restored.

use std::collections::BTreeMap;

use d_engine_core::{Index, NodeId, Term};

use super::{Check, Violation};

#[derive(Clone, Copy, Debug)]
struct Applied {
    term: Term,
    digest: u64,
    state: u64,
    node: NodeId,
}

#[derive(Default, Debug)]
pub struct StateMachineSafety {
    applied: BTreeMap<Index, Applied>,
    /// Per node: last index applied in its current incarnation.
    last: BTreeMap<NodeId, Index>,
    /// State digest at snapshot points that were never applied entry by entry
    /// on any node the checker saw (only possible for index 0).
    snapshot_states: BTreeMap<Index, u64>,
}

impl StateMachineSafety {
    /// `node` (re)started with its state machine at `index` (snapshot point),
    /// whose state has digest `state`.
    pub fn on_restore(&mut self, node: NodeId, index: Index, state: u64) -> Check {
        self.check_state(node, index, state, "restored")?;
        self.last.insert(node, index);
        Ok(())
    }

    /// `node` installed a snapshot up to `(index, term)` with state digest `state`.
    pub fn on_install(&mut self, node: NodeId, index: Index, term: Term, state: u64) -> Check {
        let last = self.last.get(&node).copied().unwrap_or(0);
        if index < last {
            return Err(Violation::new(
                "state-machine-safety",
                format!(
                    "node {node} installed a snapshot at index {index} below its applied index \
                     {last}: its state machine would move backwards"
                ),
            ));
        }
        if let Some(a) = self.applied.get(&index) {
            if a.term != term {
                return Err(Violation::new(
                    "state-machine-safety",
                    format!(
                        "node {node} installed a snapshot claiming (index {index}, term {term}) but \
                         node {} applied an entry of term {} there",
                        a.node, a.term
                    ),
                ));
            }
        }
        self.check_state(node, index, state, "installed snapshot")?;
        self.last.insert(node, index);
        Ok(())
    }

    /// `node` applied `(index, term, digest)`; its state digest is now `state`.
    pub fn on_apply(
        &mut self,
        node: NodeId,
        index: Index,
        term: Term,
        digest: u64,
        state: u64,
    ) -> Check {
        let last = self.last.get(&node).copied().unwrap_or(0);
        if index != last + 1 {
            return Err(Violation::new(
                "state-machine-safety",
                format!(
                    "node {node} applied index {index} right after index {last}: committed \
                     entries must be handed out in order, exactly once"
                ),
            ));
        }
        self.last.insert(node, index);
        match self.applied.get(&index) {
            None => {
                self.applied.insert(
                    index,
                    Applied {
                        term,
                        digest,
                        state,
                        node,
                    },
                );
                Ok(())
            }
            Some(a) if a.term != term || a.digest != digest => Err(Violation::new(
                "state-machine-safety",
                format!(
                    "index {index}: node {} applied (term {}, digest {:x}) but node {node} \
                     applied (term {term}, digest {digest:x})",
                    a.node, a.term, a.digest
                ),
            )),
            Some(a) if a.state != state => Err(Violation::new(
                "state-machine-safety",
                format!(
                    "index {index}: node {node}'s state machine (digest {state:x}) differs from \
                     node {}'s (digest {:x}) after applying the same entry",
                    a.node, a.state
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    fn check_state(&mut self, node: NodeId, index: Index, state: u64, what: &str) -> Check {
        let known = self
            .applied
            .get(&index)
            .map(|a| (a.state, a.node))
            .or_else(|| self.snapshot_states.get(&index).map(|s| (*s, node)));
        match known {
            Some((s, other)) if s != state => Err(Violation::new(
                "state-machine-safety",
                format!(
                    "node {node}'s {what} state at index {index} (digest {state:x}) differs from \
                     node {other}'s state there (digest {s:x})"
                ),
            )),
            Some(_) => Ok(()),
            None => {
                self.snapshot_states.insert(index, state);
                Ok(())
            }
        }
    }

    /// The highest index applied anywhere.
    pub fn max_applied(&self) -> Index {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }

    pub fn applied_at(&self, index: Index) -> Option<(Term, u64)> {
        self.applied.get(&index).map(|a| (a.term, a.digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_on_different_entries_at_one_index() {
        let mut c = StateMachineSafety::default();
        c.on_apply(1, 1, 1, 0xa, 10).unwrap();
        let v = c.on_apply(2, 1, 2, 0xb, 11).unwrap_err();
        assert_eq!(v.checker, "state-machine-safety");
    }

    #[test]
    fn fires_on_gaps_repeats_and_diverging_state() {
        let mut c = StateMachineSafety::default();
        assert!(c.on_apply(1, 2, 1, 0xa, 1).is_err()); // skipped index 1
        let mut c = StateMachineSafety::default();
        c.on_apply(1, 1, 1, 0xa, 1).unwrap();
        assert!(c.on_apply(1, 1, 1, 0xa, 1).is_err()); // applied twice
        assert!(c.on_apply(2, 1, 1, 0xa, 2).is_err()); // same entry, other state
    }

    #[test]
    fn fires_on_bad_snapshot_install_or_restore() {
        let mut c = StateMachineSafety::default();
        c.on_apply(1, 1, 1, 0xa, 1).unwrap();
        c.on_apply(1, 2, 1, 0xb, 2).unwrap();
        assert!(c.on_install(2, 2, 1, 99).is_err()); // wrong data
        assert!(c.on_install(3, 2, 5, 2).is_err()); // wrong term
        assert!(c.on_install(1, 1, 1, 1).is_err()); // backwards
        assert!(c.on_restore(4, 2, 7).is_err());
    }

    #[test]
    fn accepts_consistent_history_with_snapshots_and_restarts() {
        let mut c = StateMachineSafety::default();
        c.on_apply(1, 1, 1, 0xa, 1).unwrap();
        c.on_apply(1, 2, 1, 0xb, 2).unwrap();
        c.on_apply(2, 1, 1, 0xa, 1).unwrap();
        c.on_install(3, 2, 1, 2).unwrap();
        c.on_apply(3, 3, 2, 0xc, 3).unwrap();
        c.on_restore(1, 0, 0).unwrap();
        c.on_apply(1, 1, 1, 0xa, 1).unwrap();
        c.on_restore(2, 2, 2).unwrap();
        c.on_apply(2, 3, 2, 0xc, 3).unwrap();
        assert_eq!(c.max_applied(), 3);
    }
}
