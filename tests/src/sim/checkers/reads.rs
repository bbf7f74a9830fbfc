//! No stale reads from ReadIndex or lease reads.
//!
//! A `Linearizable` or `Lease` read invoked at time `t` must return state at
//! least as new as every write acknowledged before `t`:
//! * its read index is at least the log index of every such write (any key);
//! * the value it returned was written at a log index at least that of the
//!   latest such write to the same key.

use std::collections::BTreeMap;

use d_engine_core::{Index, NodeId, ReadConsistency};

use super::{Check, Violation};
use crate::sim::history::Time;
use crate::sim::kv::{Key, OpId};

/// Acknowledged writes as `(ack time, index)`, with a running maximum of the
/// index so "max index acked before t" is a binary search.
#[derive(Default, Debug)]
struct AckLog {
    acks: Vec<(Time, Index)>,
}

impl AckLog {
    fn push(&mut self, at: Time, index: Index) {
        let max = self.acks.last().map(|a| a.1).unwrap_or(0).max(index);
        debug_assert!(self.acks.last().map(|a| a.0 <= at).unwrap_or(true));
        self.acks.push((at, max));
    }

    /// Highest index of a write acknowledged strictly before `t`.
    fn max_before(&self, t: Time) -> Index {
        let n = self.acks.partition_point(|a| a.0 < t);
        if n == 0 {
            0
        } else {
            self.acks[n - 1].1
        }
    }
}

#[derive(Default, Debug)]
pub struct StaleReads {
    all: AckLog,
    per_key: BTreeMap<Key, AckLog>,
}

/// One completed read, as the checker needs it.
#[derive(Clone, Debug)]
pub struct ReadObs {
    pub op: OpId,
    pub node: NodeId,
    pub consistency: ReadConsistency,
    pub key: Key,
    pub invoke: Time,
    pub read_index: Index,
    /// Log index of the write whose value was returned (0: initial value).
    pub value_index: Index,
}

impl StaleReads {
    /// A write at `index` on `key` was acknowledged to its client at `at`
    /// (calls arrive in time order). `version_index` is the index of the write
    /// that produced the key's value right after it: `index` itself, or for a
    /// cas that failed, the write before it.
    pub fn on_write_ack(&mut self, at: Time, key: Key, index: Index, version_index: Index) {
        self.all.push(at, index);
        self.per_key.entry(key).or_default().push(at, version_index);
    }

    pub fn check_read(&self, r: &ReadObs) -> Check {
        if r.consistency == ReadConsistency::Eventual {
            return Ok(());
        }
        let must = self.all.max_before(r.invoke);
        if r.read_index < must {
            return Err(Violation::new(
                "stale-read",
                format!(
                    "{:?} read op {} on node {} got read index {} but a write at index {must} \
                     was acknowledged before the read was invoked (t={})",
                    r.consistency, r.op, r.node, r.read_index, r.invoke
                ),
            ));
        }
        let must_key = self
            .per_key
            .get(&r.key)
            .map(|l| l.max_before(r.invoke))
            .unwrap_or(0);
        if r.value_index < must_key {
            return Err(Violation::new(
                "stale-read",
                format!(
                    "{:?} read op {} of key {} on node {} returned the value written at index {} \
                     but the write at index {must_key} to that key was acknowledged before the \
                     read was invoked (t={})",
                    r.consistency, r.op, r.key, r.node, r.value_index, r.invoke
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(c: ReadConsistency, invoke: Time, read_index: Index, value_index: Index) -> ReadObs {
        ReadObs {
            op: 9,
            node: 1,
            consistency: c,
            key: 0,
            invoke,
            read_index,
            value_index,
        }
    }

    #[test]
    fn fires_on_read_index_below_an_acked_write() {
        let mut c = StaleReads::default();
        c.on_write_ack(10, 1, 5, 5); // other key
        let v = c
            .check_read(&read(ReadConsistency::Linearizable, 11, 4, 0))
            .unwrap_err();
        assert_eq!(v.checker, "stale-read");
    }

    #[test]
    fn fires_on_old_value_of_the_key() {
        let mut c = StaleReads::default();
        c.on_write_ack(10, 0, 3, 3);
        c.on_write_ack(20, 0, 7, 7);
        assert!(c
            .check_read(&read(ReadConsistency::Lease, 21, 9, 3))
            .is_err());
    }

    #[test]
    fn accepts_fresh_and_concurrent_reads_and_eventual() {
        let mut c = StaleReads::default();
        c.on_write_ack(10, 0, 3, 3);
        c.on_write_ack(20, 0, 7, 7);
        c.on_write_ack(30, 0, 8, 7); // a cas that failed leaves version 7
        c.check_read(&read(ReadConsistency::Linearizable, 31, 8, 7))
            .unwrap();
        // Invoked before the second ack completed: either value is fine.
        c.check_read(&read(ReadConsistency::Linearizable, 20, 3, 3))
            .unwrap();
        c.check_read(&read(ReadConsistency::Linearizable, 21, 7, 7))
            .unwrap();
        c.check_read(&read(ReadConsistency::Eventual, 99, 0, 0))
            .unwrap();
    }
}
