//! Client oracle: each key's history is linearizable.
//!
//! Raft gives the writes a total order, their log order, and a correct system
//! is linearizable *in that order* (a write takes effect when its index
//! commits; a read returns the state after some committed prefix that is at
//! least the commit index at its invocation). So instead of searching all
//! orders (Wing & Gong), the checker fixes the write order to the committed
//! log and asks whether linearization points exist:
//!
//! * every committed write (put, cas) at a time within `[invoke, complete]`
//!   (`complete = ∞` if the client never got an answer), non-decreasing in log
//!   order;
//! * every completed read inside `[invoke, complete]`, after the write that
//!   produced the value it returned and before the next value-changing write.
//!
//! All constraints are lower bounds that only push points later, so placing
//! each point as early as possible (greedy) decides feasibility exactly, in
//! linear time. Around it the checker verifies what the log order implies:
//! acknowledged writes are in the log exactly once, failed ones never, and
//! every cas result the client saw is the one the log order produces.

use std::collections::{BTreeMap, BTreeSet};

use d_engine_core::ReadConsistency;

use super::{Check, Violation};
use crate::sim::history::{History, OpKind, OpRecord, Outcome, Time};
use crate::sim::kv::{Key, Value};

fn v(detail: String) -> Violation {
    Violation::new("linearizability", detail)
}

/// Checks the history of `key`.
pub fn check_key(history: &History, key: Key) -> Check {
    let committed = history.committed(key);
    // 1. The log's write commands match the client history.
    let mut in_log = BTreeSet::new();
    let mut events: Vec<(&OpRecord, bool)> = Vec::with_capacity(committed.len());
    let mut value: Option<Value> = None;
    // Version 0 is the initial (absent) value; version k was written by the
    // k-th value-changing event.
    let mut version_of: BTreeMap<Value, usize> = BTreeMap::new();
    for &(index, id) in committed {
        let op = history
            .get(id)
            .ok_or_else(|| v(format!("log index {index} holds unknown op {id}")))?;
        if op.key != key || !op.kind.is_write() {
            return Err(v(format!(
                "log index {index} holds op {id} which is not a write of key {key}: {op:?}"
            )));
        }
        if !in_log.insert(id) {
            return Err(v(format!(
                "write op {id} was applied twice (again at log index {index})"
            )));
        }
        if let Outcome::Failed(why) = &op.outcome {
            return Err(v(format!(
                "write op {id} was reported failed ({why}) but was committed at index {index}"
            )));
        }
        let changes = match op.kind {
            OpKind::Put { value: new } => {
                value = Some(new);
                true
            }
            OpKind::Cas { expect, new } => {
                let ok = value == expect;
                if let Outcome::Cas { ok: seen } = op.outcome {
                    if seen != ok {
                        return Err(v(format!(
                            "cas op {id} (expect {expect:?}, new {new}) at index {index} saw \
                             ok={seen}, but the value there was {value:?} in log order"
                        )));
                    }
                }
                if ok {
                    value = Some(new);
                }
                ok
            }
            OpKind::Read(_) => unreachable!(),
        };
        if changes {
            let n = version_of.len() + 1;
            version_of.insert(value.unwrap(), n);
        }
        events.push((op, changes));
    }
    let versions = version_of.len() + 1;

    // 2. Acknowledged writes are in the log; reads map to versions.
    let mut reads: Vec<Vec<&OpRecord>> = vec![Vec::new(); versions];
    for op in history.ops_on(key) {
        match (&op.kind, &op.outcome) {
            (OpKind::Put { .. } | OpKind::Cas { .. }, Outcome::Put | Outcome::Cas { .. })
                if !in_log.contains(&op.id) =>
            {
                return Err(v(format!(
                    "write op {} was acknowledged ({:?}) but is not in the committed log",
                    op.id, op.outcome
                )));
            }
            (OpKind::Read(c), Outcome::Read { value, .. }) => {
                let version = match value {
                    None => 0,
                    Some(x) => *version_of.get(x).ok_or_else(|| {
                        v(format!(
                            "read op {} of key {key} returned {x}, a value no committed write \
                             produced",
                            op.id
                        ))
                    })?,
                };
                if *c != ReadConsistency::Eventual {
                    reads[version].push(op);
                }
            }
            _ => {}
        }
    }

    // 3. Greedy earliest linearization points.
    let read_earliest = |r: &OpRecord, start: Option<Time>| -> Result<Time, Violation> {
        let e = start.map_or(r.invoke, |s| s.max(r.invoke));
        let done = r.complete.expect("acked read has a completion time");
        if e > done {
            return Err(v(format!(
                "read op {} (node {}, {:?}, invoked t={}, completed t={}) returned {:?}, but that \
                 value can only exist from t={e} on (its write or an earlier one was invoked or \
                 ordered later)",
                r.id, r.node, r.kind, r.invoke, done, r.outcome
            )));
        }
        Ok(e)
    };
    let mut t_prev: Option<Time> = None;
    let mut version = 0usize;
    let mut version_start: Option<Time> = None;
    for (op, changes) in events {
        let mut t = t_prev.map_or(op.invoke, |p| p.max(op.invoke));
        let mut cause = format!("its invocation or the write before it (t={t})");
        if changes {
            for r in &reads[version] {
                let e = read_earliest(r, version_start)?;
                if e > t {
                    t = e;
                    cause = format!("read op {} which returned the previous value (t={e})", r.id);
                }
            }
        }
        if let Some(done) = op.complete {
            if t > done {
                return Err(v(format!(
                    "write op {} ({:?}, node {}, invoked t={}, completed t={done}) cannot take \
                     effect before t={t}, forced by {cause}: the log order contradicts real time",
                    op.id, op.kind, op.node, op.invoke
                )));
            }
        }
        t_prev = Some(t);
        if changes {
            version += 1;
            version_start = Some(t);
        }
    }
    for r in &reads[version] {
        read_earliest(r, version_start)?;
    }
    Ok(())
}

/// Checks every key; returns the first violation.
pub fn check_all(history: &History) -> Check {
    for key in history.keys() {
        check_key(history, key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kv::OpId;
    use d_engine_core::ReadConsistency::*;

    /// Builds histories: `w` = put, `r` = read; times are (invoke, complete).
    struct H(History);

    impl H {
        fn new() -> Self {
            H(History::default())
        }
        fn put(&mut self, value: Value, inv: Time, done: Option<Time>) -> OpId {
            let id = self.0.invoke(0, 1, 0, OpKind::Put { value }, inv);
            match done {
                Some(t) => self.0.complete(id, t, Outcome::Put),
                None => self.0.complete(id, inv, Outcome::Unknown),
            };
            id
        }
        fn cas(
            &mut self,
            expect: Option<Value>,
            new: Value,
            inv: Time,
            done: Time,
            ok: bool,
        ) -> OpId {
            let id = self.0.invoke(0, 1, 0, OpKind::Cas { expect, new }, inv);
            self.0.complete(id, done, Outcome::Cas { ok });
            id
        }
        fn read(&mut self, value: Option<Value>, inv: Time, done: Time) -> OpId {
            let id = self.0.invoke(1, 1, 0, OpKind::Read(Linearizable), inv);
            self.0.complete(
                id,
                done,
                Outcome::Read {
                    value,
                    read_index: 0,
                },
            );
            id
        }
        fn log(&mut self, ops: &[OpId]) {
            for (i, op) in ops.iter().enumerate() {
                self.0.committed_write(0, i as u64 + 1, *op);
            }
        }
        fn check(&self) -> Check {
            check_key(&self.0, 0)
        }
    }

    #[test]
    fn accepts_sequential_and_concurrent_histories() {
        let mut h = H::new();
        h.read(None, 0, 5);
        let a = h.put(1, 10, Some(20));
        h.read(Some(1), 25, 30);
        let b = h.put(2, 40, Some(60));
        h.read(Some(1), 45, 50); // concurrent with b: old value fine
        h.read(Some(2), 50, 55); // concurrent with b: new value fine
        let c = h.cas(Some(2), 3, 70, 80, true);
        let d = h.cas(Some(2), 4, 75, 85, false);
        let e = h.put(5, 90, None); // unknown outcome but committed
        h.read(Some(5), 200, 210);
        h.log(&[a, b, c, d, e]);
        h.check().unwrap();
    }

    #[test]
    fn fires_on_stale_read_after_ack() {
        let mut h = H::new();
        let a = h.put(1, 10, Some(20));
        h.read(None, 30, 40);
        h.log(&[a]);
        let err = h.check().unwrap_err();
        assert_eq!(err.checker, "linearizability");
    }

    #[test]
    fn fires_on_read_from_the_future() {
        let mut h = H::new();
        h.read(Some(1), 0, 5);
        let a = h.put(1, 10, Some(20));
        h.log(&[a]);
        assert!(h.check().is_err());
    }

    #[test]
    fn fires_on_non_monotonic_reads() {
        let mut h = H::new();
        let a = h.put(1, 0, None);
        let b = h.put(2, 0, None);
        h.read(Some(2), 10, 20);
        h.read(Some(1), 30, 40);
        h.log(&[a, b]);
        assert!(h.check().is_err());
    }

    #[test]
    fn fires_when_log_order_contradicts_real_time() {
        let mut h = H::new();
        let a = h.put(1, 0, Some(10));
        let b = h.put(2, 20, Some(30));
        h.log(&[b, a]); // b committed before a although a finished first
        assert!(h.check().is_err());
    }

    #[test]
    fn fires_on_wrong_cas_result_or_bad_log_contents() {
        let mut h = H::new();
        let a = h.put(1, 0, Some(10));
        let c = h.cas(Some(7), 3, 20, 30, true); // cannot succeed: value is 1
        h.log(&[a, c]);
        assert!(h.check().is_err());

        let mut h = H::new();
        let a = h.put(1, 0, Some(10));
        h.log(&[a, a]);
        assert!(h.check().unwrap_err().detail.contains("twice"));

        let mut h = H::new();
        let a = h.0.invoke(0, 1, 0, OpKind::Put { value: 1 }, 0);
        h.0.complete(a, 5, Outcome::Failed("not leader".into()));
        h.log(&[a]);
        assert!(h.check().unwrap_err().detail.contains("failed"));

        let mut h = H::new();
        h.put(1, 0, Some(10)); // acked, never committed
        assert!(h
            .check()
            .unwrap_err()
            .detail
            .contains("not in the committed log"));

        let mut h = H::new();
        h.read(Some(42), 0, 10); // nobody wrote 42
        assert!(h.check().unwrap_err().detail.contains("no committed write"));
    }
}
