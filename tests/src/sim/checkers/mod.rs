//! Invariant checkers. Each one is a small state machine fed with
//! observations by the simulator after every step; each returns a
//! [`Violation`] the moment its invariant breaks. Each has unit tests that feed
//! it a violating history (it must fire) and a valid one (it must not).

use d_engine_core::{Index, NodeId, Term};

pub mod commit;
pub mod contract;
pub mod election;
pub mod leader_completeness;
pub mod lease;
pub mod lease_expiry;
pub mod linearizability;
pub mod log_matching;
pub mod reads;
pub mod sm_safety;

/// A broken invariant: which checker fired and the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub checker: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(checker: &'static str, detail: impl Into<String>) -> Self {
        Violation {
            checker,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.checker, self.detail)
    }
}

pub type Check = Result<(), Violation>;

/// Read access to one node's log as the checkers see it.
pub trait LogView {
    fn node(&self) -> NodeId;
    /// Entries at or below this index were compacted into a snapshot.
    fn snapshot_index(&self) -> Index;
    fn last_index(&self) -> Index;
    /// `(term, payload digest)` of the entry at `index`, if held.
    fn entry_at(&self, index: Index) -> Option<(Term, u64)>;
}

/// A plain in-memory log for checker unit tests.
#[cfg(test)]
pub(crate) struct TestLog {
    pub node: NodeId,
    pub snapshot_index: Index,
    /// `(term, digest)` for indexes `snapshot_index + 1 ..`.
    pub entries: Vec<(Term, u64)>,
}

#[cfg(test)]
impl LogView for TestLog {
    fn node(&self) -> NodeId {
        self.node
    }
    fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }
    fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as Index
    }
    fn entry_at(&self, index: Index) -> Option<(Term, u64)> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries
            .get((index - self.snapshot_index - 1) as usize)
            .copied()
    }
}
