//! Commit index sanity per node: it never decreases within one incarnation of
//! a node, never falls below the node's own snapshot (also right after a
//! restart), and never points past the end of the node's log.

use std::collections::BTreeMap;

use d_engine_core::{Index, NodeId};

use super::{Check, Violation};

#[derive(Default, Debug)]
pub struct CommitMonotonic {
    last: BTreeMap<NodeId, (u64, Index)>,
}

impl CommitMonotonic {
    /// `node` in incarnation `incarnation` reports `commit`, with its log
    /// spanning `snapshot_index` (compacted) to `last_index`.
    pub fn observe(
        &mut self,
        node: NodeId,
        incarnation: u64,
        commit: Index,
        snapshot_index: Index,
        last_index: Index,
    ) -> Check {
        if commit < snapshot_index {
            return Err(Violation::new(
                "commit-monotonic",
                format!(
                    "node {node} (incarnation {incarnation}) has commit {commit} below its own \
                     snapshot index {snapshot_index}"
                ),
            ));
        }
        if commit > last_index.max(snapshot_index) {
            return Err(Violation::new(
                "commit-monotonic",
                format!(
                    "node {node} (incarnation {incarnation}) has commit {commit} past the end of \
                     its log ({last_index})"
                ),
            ));
        }
        if let Some(&(inc, prev)) = self.last.get(&node) {
            if inc == incarnation && commit < prev {
                return Err(Violation::new(
                    "commit-monotonic",
                    format!(
                        "node {node} (incarnation {incarnation}) moved its commit index back from \
                         {prev} to {commit}"
                    ),
                ));
            }
        }
        self.last.insert(node, (incarnation, commit));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_on_regression_within_an_incarnation() {
        let mut c = CommitMonotonic::default();
        c.observe(1, 0, 5, 0, 5).unwrap();
        let v = c.observe(1, 0, 4, 0, 5).unwrap_err();
        assert_eq!(v.checker, "commit-monotonic");
    }

    #[test]
    fn fires_below_snapshot_or_past_log_end() {
        let mut c = CommitMonotonic::default();
        assert!(c.observe(1, 1, 3, 4, 9).is_err());
        assert!(c.observe(1, 1, 10, 4, 9).is_err());
    }

    #[test]
    fn accepts_growth_and_a_lower_commit_after_restart() {
        let mut c = CommitMonotonic::default();
        c.observe(1, 0, 5, 0, 8).unwrap();
        c.observe(1, 0, 8, 0, 8).unwrap();
        // Restarted: commit may restart at the snapshot and be relearnt.
        c.observe(1, 1, 3, 3, 6).unwrap();
        c.observe(1, 1, 9, 3, 9).unwrap();
        c.observe(2, 0, 7, 7, 7).unwrap();
    }
}
