//! Election safety: at most one leader per term, over the whole run
//! (including leaders that crashed or were deposed long ago).

use std::collections::BTreeMap;

use d_engine_core::{NodeId, Term};

use super::{Check, Violation};

#[derive(Default, Debug)]
pub struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
}

impl ElectionSafety {
    /// `node` reports itself leader of `term`.
    pub fn observe_leader(&mut self, term: Term, node: NodeId) -> Check {
        match self.leaders.get(&term) {
            Some(&other) if other != node => Err(Violation::new(
                "election-safety",
                format!("two leaders in term {term}: node {other} and node {node}"),
            )),
            Some(_) => Ok(()),
            None => {
                self.leaders.insert(term, node);
                Ok(())
            }
        }
    }

    /// The node recorded as the leader of `term`, if any.
    pub fn leader_of(&self, term: Term) -> Option<NodeId> {
        self.leaders.get(&term).copied()
    }

    pub fn terms_with_leader(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_on_two_leaders_in_one_term() {
        let mut c = ElectionSafety::default();
        c.observe_leader(1, 1).unwrap();
        c.observe_leader(2, 2).unwrap();
        let v = c.observe_leader(1, 3).unwrap_err();
        assert_eq!(v.checker, "election-safety");
        assert!(v.detail.contains("term 1"), "{v}");
    }

    #[test]
    fn accepts_one_leader_per_term_reported_repeatedly() {
        let mut c = ElectionSafety::default();
        for (t, n) in [(1, 1), (1, 1), (2, 3), (3, 1), (2, 3)] {
            c.observe_leader(t, n).unwrap();
        }
        assert_eq!(c.terms_with_leader(), 3);
    }
}
