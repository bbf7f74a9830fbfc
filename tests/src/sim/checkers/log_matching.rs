//! Log matching: two logs holding an entry with the same index and term hold
//! the same entry there and are identical before it.
//!
//! Checked inductively and incrementally: every entry any node appends is
//! recorded as `(index, term) -> (payload digest, term at index - 1)`. If every
//! `(index, term)` ever seen always has the same payload and the same previous
//! term, then by induction equal `(index, term)` implies equal prefixes (each
//! log being contiguous, which the host asserts separately).

use std::collections::BTreeMap;

use d_engine_core::{Index, NodeId, Term};

use super::{Check, Violation};

#[derive(Default, Debug)]
pub struct LogMatching {
    seen: BTreeMap<(Index, Term), (u64, Term, NodeId)>,
}

impl LogMatching {
    /// `node`'s log holds, at `index`, an entry of `term` with payload
    /// `digest`, preceded by an entry of `prev_term` (0 for index 1).
    pub fn observe(
        &mut self,
        node: NodeId,
        index: Index,
        term: Term,
        prev_term: Term,
        digest: u64,
    ) -> Check {
        if prev_term > term {
            return Err(Violation::new(
                "log-matching",
                format!(
                    "node {node}: entry {index} has term {term} but the entry before it has the \
                     higher term {prev_term} (terms must not decrease along a log)"
                ),
            ));
        }
        match self.seen.get(&(index, term)) {
            None => {
                self.seen.insert((index, term), (digest, prev_term, node));
                Ok(())
            }
            Some(&(d, p, first)) => {
                if d != digest {
                    Err(Violation::new(
                        "log-matching",
                        format!(
                            "entry (index {index}, term {term}) differs between node {first} \
                             (digest {d:x}) and node {node} (digest {digest:x})"
                        ),
                    ))
                } else if p != prev_term {
                    Err(Violation::new(
                        "log-matching",
                        format!(
                            "entry (index {index}, term {term}) is preceded by term {p} on node \
                             {first} but by term {prev_term} on node {node}: the logs differ \
                             before a matching entry"
                        ),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_on_same_index_term_different_payload() {
        let mut c = LogMatching::default();
        c.observe(1, 1, 1, 0, 0xaa).unwrap();
        let v = c.observe(2, 1, 1, 0, 0xbb).unwrap_err();
        assert_eq!(v.checker, "log-matching");
    }

    #[test]
    fn fires_on_matching_entry_with_different_prefix() {
        let mut c = LogMatching::default();
        // node 1: [t1, t2]; node 2: [t2', t2] — entry 2 matches, entry 1 does not.
        c.observe(1, 1, 1, 0, 1).unwrap();
        c.observe(1, 2, 2, 1, 2).unwrap();
        c.observe(2, 1, 2, 0, 3).unwrap();
        let v = c.observe(2, 2, 2, 2, 2).unwrap_err();
        assert!(v.detail.contains("preceded by"), "{v}");
    }

    #[test]
    fn fires_on_decreasing_terms() {
        let mut c = LogMatching::default();
        assert!(c.observe(1, 5, 2, 3, 1).is_err());
    }

    #[test]
    fn accepts_divergent_suffixes_and_repeats() {
        let mut c = LogMatching::default();
        c.observe(1, 1, 1, 0, 1).unwrap();
        c.observe(2, 1, 1, 0, 1).unwrap();
        c.observe(1, 2, 1, 1, 2).unwrap(); // uncommitted on node 1
        c.observe(2, 2, 2, 1, 9).unwrap(); // different term at index 2 is fine
        c.observe(3, 2, 2, 1, 9).unwrap();
    }
}
