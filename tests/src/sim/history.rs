//! The client-visible history: every operation with its invoke and complete
//! times (simulated microseconds) and its outcome, plus the order in which
//! write commands were committed (by log index).

use std::collections::BTreeMap;

use d_engine_core::{Index, NodeId, ReadConsistency};

use super::kv::{Key, OpId, Value};

/// Simulated time in microseconds.
pub type Time = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Put { value: Value },
    Cas { expect: Option<Value>, new: Value },
    Read(ReadConsistency),
}

impl OpKind {
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Read(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still waiting for an answer.
    Pending,
    /// The client gave up (timeout, node crashed): a write may or may not
    /// have taken effect, at any time after its invocation.
    Unknown,
    /// Definitely had no effect (refused, or its log slot went to another entry).
    Failed(String),
    Put,
    Cas {
        ok: bool,
    },
    Read {
        value: Option<Value>,
        read_index: Index,
    },
}

#[derive(Clone, Debug)]
pub struct OpRecord {
    pub id: OpId,
    pub client: usize,
    pub node: NodeId,
    pub key: Key,
    pub kind: OpKind,
    pub invoke: Time,
    pub complete: Option<Time>,
    pub outcome: Outcome,
}

impl OpRecord {
    /// The op finished with a definite answer from the system.
    pub fn acked(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Put | Outcome::Cas { .. } | Outcome::Read { .. }
        )
    }
}

#[derive(Default, Debug)]
pub struct History {
    ops: Vec<OpRecord>,
    /// Per key: every op on it, in invocation order.
    by_key: BTreeMap<Key, Vec<OpId>>,
    /// Per key: committed write commands in log order `(index, op)`.
    committed: BTreeMap<Key, Vec<(Index, OpId)>>,
}

impl History {
    /// Records a new operation; ids are dense from 1.
    pub fn invoke(
        &mut self,
        client: usize,
        node: NodeId,
        key: Key,
        kind: OpKind,
        at: Time,
    ) -> OpId {
        let id = self.ops.len() as OpId + 1;
        self.by_key.entry(key).or_default().push(id);
        self.ops.push(OpRecord {
            id,
            client,
            node,
            key,
            kind,
            invoke: at,
            complete: None,
            outcome: Outcome::Pending,
        });
        id
    }

    pub fn get(&self, id: OpId) -> Option<&OpRecord> {
        id.checked_sub(1).and_then(|i| self.ops.get(i as usize))
    }

    /// Completes a pending op; returns false if it was no longer pending.
    pub fn complete(&mut self, id: OpId, at: Time, outcome: Outcome) -> bool {
        let op = &mut self.ops[(id - 1) as usize];
        if op.outcome != Outcome::Pending {
            return false;
        }
        op.complete = match outcome {
            Outcome::Unknown => None,
            _ => Some(at),
        };
        op.outcome = outcome;
        true
    }

    /// The write of `op` on `key` was committed at `index` (called once per
    /// index, the first time any node applies it).
    pub fn committed_write(&mut self, key: Key, index: Index, op: OpId) {
        let v = self.committed.entry(key).or_default();
        debug_assert!(v.last().map(|l| l.0 < index).unwrap_or(true));
        v.push((index, op));
    }

    pub fn ops(&self) -> &[OpRecord] {
        &self.ops
    }

    pub fn committed(&self, key: Key) -> &[(Index, OpId)] {
        self.committed.get(&key).map(|v| &v[..]).unwrap_or(&[])
    }

    pub fn keys(&self) -> Vec<Key> {
        self.by_key.keys().copied().collect()
    }

    /// Every op on `key`, in invocation order.
    pub fn ops_on(&self, key: Key) -> impl Iterator<Item = &OpRecord> + '_ {
        self.by_key
            .get(&key)
            .into_iter()
            .flatten()
            .map(|id| &self.ops[(*id - 1) as usize])
    }
}
