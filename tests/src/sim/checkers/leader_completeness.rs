//! Leader completeness and commit stability.
//!
//! * An entry, once committed, is never replaced: no two different entries are
//!   ever committed at one index, and no node overwrites a committed entry.
//! * Every leader of a term later than the one an entry was committed in holds
//!   that entry.
//!
//! The simulator cannot see the exact term an entry was committed in, so it
//! records an upper bound: the current term of the first node observed to
//! consider it committed (the committing leader, or a node that learned of the
//! commit from it, has a term at least the commit term). Only leaders with a
//! term strictly above that bound are held to the entry, which never flags a
//! correct history and still catches every leader that lost a committed entry
//! from a later term.

use std::collections::BTreeMap;

use d_engine_core::{Index, NodeId, Term};

use super::{Check, LogView, Violation};

#[derive(Clone, Debug)]
struct Committed {
    term: Term,
    digest: u64,
    /// Upper bound on the term the entry was committed in.
    bound: Term,
    observer: NodeId,
}

#[derive(Default, Debug)]
pub struct LeaderCompleteness {
    committed: BTreeMap<Index, Committed>,
}

impl LeaderCompleteness {
    /// `observer`, whose current term is `observer_term`, considers the entry
    /// `(index, term, digest)` committed. `leaders` are the nodes that currently
    /// believe they lead, with their terms. Returns `Ok(true)` the first time
    /// an index is seen committed.
    pub fn on_committed(
        &mut self,
        observer: NodeId,
        observer_term: Term,
        index: Index,
        term: Term,
        digest: u64,
        leaders: &[(Term, &dyn LogView)],
    ) -> Result<bool, Violation> {
        if let Some(c) = self.committed.get_mut(&index) {
            if c.term != term || c.digest != digest {
                return Err(Violation::new(
                    "commit-stability",
                    format!(
                        "two different entries committed at index {index}: (term {}, digest {:x}) \
                         on node {} and (term {term}, digest {digest:x}) on node {observer}",
                        c.term, c.digest, c.observer
                    ),
                ));
            }
            c.bound = c.bound.min(observer_term);
            return Ok(false);
        }
        let c = Committed {
            term,
            digest,
            bound: observer_term,
            observer,
        };
        for (leader_term, log) in leaders {
            if *leader_term > c.bound {
                check_holds(index, &c, *leader_term, *log)?;
            }
        }
        self.committed.insert(index, c);
        Ok(true)
    }

    /// `log` just became (or is observed as) leader of `term`: it must hold every
    /// entry committed in an earlier term that it has not compacted.
    pub fn on_leader(&self, term: Term, log: &dyn LogView) -> Check {
        for (&index, c) in self.committed.range(log.snapshot_index() + 1..) {
            if c.bound < term {
                check_holds(index, c, term, log)?;
            }
        }
        Ok(())
    }

    /// `node` is replacing or dropping its entry `(index, old_term)`.
    pub fn on_overwrite(&self, node: NodeId, index: Index, old_term: Term) -> Check {
        match self.committed.get(&index) {
            Some(c) if c.term == old_term => Err(Violation::new(
                "commit-stability",
                format!(
                    "node {node} overwrote its entry at index {index} (term {old_term}), which \
                     was already committed (first seen committed on node {})",
                    c.observer
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `(term, digest)` of the committed entry at `index`, if known.
    pub fn committed_at(&self, index: Index) -> Option<(Term, u64)> {
        self.committed.get(&index).map(|c| (c.term, c.digest))
    }

    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }
}

fn check_holds(index: Index, c: &Committed, leader_term: Term, log: &dyn LogView) -> Check {
    if index <= log.snapshot_index() {
        return Ok(());
    }
    match log.entry_at(index) {
        Some((t, d)) if t == c.term && d == c.digest => Ok(()),
        found => Err(Violation::new(
            "leader-completeness",
            format!(
                "node {} leads term {leader_term} but {} at index {index}, which was committed \
                 by term {} with (term {}, digest {:x}) (first seen on node {})",
                log.node(),
                match found {
                    None => format!("has no entry (its last index is {})", log.last_index()),
                    Some((t, d)) => format!("has (term {t}, digest {d:x})"),
                },
                c.bound,
                c.term,
                c.digest,
                c.observer
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::TestLog;
    use super::*;

    #[test]
    fn fires_when_a_later_leader_lacks_a_committed_entry() {
        let mut c = LeaderCompleteness::default();
        c.on_committed(1, 2, 1, 2, 0xa, &[]).unwrap();
        let leader = TestLog {
            node: 3,
            snapshot_index: 0,
            entries: vec![(3, 0xb)],
        };
        let v = c.on_leader(3, &leader).unwrap_err();
        assert_eq!(v.checker, "leader-completeness");
        let short = TestLog {
            node: 3,
            snapshot_index: 0,
            entries: vec![],
        };
        assert!(c.on_leader(4, &short).is_err());
    }

    #[test]
    fn fires_when_an_entry_commits_while_a_later_leader_lacks_it() {
        let mut c = LeaderCompleteness::default();
        let leader = TestLog {
            node: 2,
            snapshot_index: 0,
            entries: vec![(1, 1)],
        };
        let leaders: [(Term, &dyn LogView); 1] = [(5, &leader)];
        assert!(c.on_committed(1, 4, 2, 4, 0xc, &leaders).is_err());
    }

    #[test]
    fn fires_on_two_commits_at_one_index_and_on_overwrite() {
        let mut c = LeaderCompleteness::default();
        assert!(c.on_committed(1, 1, 1, 1, 0xa, &[]).unwrap());
        assert!(!c.on_committed(2, 2, 1, 1, 0xa, &[]).unwrap());
        assert_eq!(
            c.on_committed(2, 2, 1, 2, 0xb, &[]).unwrap_err().checker,
            "commit-stability"
        );
        assert!(c.on_overwrite(3, 1, 1).is_err());
        c.on_overwrite(3, 1, 7).unwrap(); // a different, uncommitted entry
        c.on_overwrite(3, 2, 1).unwrap();
    }

    #[test]
    fn accepts_stale_leaders_and_compacted_prefixes() {
        let mut c = LeaderCompleteness::default();
        c.on_committed(1, 3, 1, 3, 0xa, &[]).unwrap();
        // A deposed leader of term 2 may lack the entry committed in term 3.
        let stale = TestLog {
            node: 2,
            snapshot_index: 0,
            entries: vec![(2, 0xf)],
        };
        c.on_leader(2, &stale).unwrap();
        // A leader that compacted the entry into a snapshot is fine.
        let compacted = TestLog {
            node: 3,
            snapshot_index: 1,
            entries: vec![(4, 0xb)],
        };
        c.on_leader(4, &compacted).unwrap();
        let good = TestLog {
            node: 1,
            snapshot_index: 0,
            entries: vec![(3, 0xa), (5, 0x1)],
        };
        c.on_leader(5, &good).unwrap();
        let leaders: [(Term, &dyn LogView); 1] = [(5, &good)];
        c.on_committed(1, 5, 2, 5, 0x1, &leaders).unwrap();
    }
}
