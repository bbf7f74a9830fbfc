//! Linearizability checker for one register (one key) with get, put and
//! compare-and-swap.
//!
//! Algorithm: Wing & Gong's search as improved by Lowe — walk the history's
//! call/return events in time order, linearize a pending call whenever the
//! register model allows it, backtrack when a return is reached whose call
//! was not linearized yet, and memoize (linearized set, register value)
//! states already explored. `Info` operations (unknown outcome) have no
//! return event: they may linearize anywhere after their invoke, or never.
//! `Fail` operations did not happen and are ignored.
//!
//! Writes must use unique values (the workloads do): an `Info` write whose
//! value no operation ever observed is removed before the search, which
//! keeps the search small and does not change the verdict (such a write,
//! if it happened, was overwritten by a blind put before anyone looked).

use std::collections::{BTreeSet, HashSet};

use super::history::{Outcome, Record};

/// Register value: `None` = the key does not exist.
pub type Value = Option<u64>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Read,
    Write(u64),
    /// Succeeds (and stores `new`) iff the value equals `expected`.
    Cas {
        expected: Value,
        new: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ret {
    Read(Value),
    Write,
    /// `current`: the value after the operation (what a failed CAS saw).
    Cas {
        ok: bool,
        current: Value,
    },
}

/// One register operation; `ret` is `None` unless the outcome is `Ok`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegOp {
    pub call: Call,
    pub ret: Option<Ret>,
}

/// The checker's verdict for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists; `culprit` is the index (into the checked
    /// records) of the operation whose return could not be explained.
    Violation {
        culprit: usize,
    },
    /// The search exceeded its step budget.
    Unknown,
}

/// Applies `call` to `state`; the new state if the recorded result is
/// consistent with it.
fn step(state: Value, op: &RegOp) -> Option<Value> {
    match (&op.call, &op.ret) {
        (Call::Read, Some(Ret::Read(v))) => (*v == state).then_some(state),
        (Call::Read, _) => Some(state),
        (Call::Write(v), _) => Some(Some(*v)),
        (Call::Cas { expected, new }, Some(Ret::Cas { ok: true, .. })) => {
            (state == *expected).then_some(Some(*new))
        }
        (Call::Cas { expected, .. }, Some(Ret::Cas { ok: false, current })) => {
            (state != *expected && state == *current).then_some(state)
        }
        // Unknown outcome: if it happened at all, it succeeded (a failed
        // CAS changes nothing, same as never happening).
        (Call::Cas { expected, new }, None) => (state == *expected).then_some(Some(*new)),
        (Call::Cas { .. }, Some(_)) => None,
    }
}

/// Drops `Fail` operations, `Info` reads, and `Info` writes whose value
/// nobody observed. Returns the kept records.
pub fn prune(history: &[Record<RegOp>]) -> Vec<Record<RegOp>> {
    let mut observed = BTreeSet::new();
    for r in history {
        match (&r.op.call, &r.op.ret) {
            (_, Some(Ret::Read(Some(v)))) => {
                observed.insert(*v);
            }
            (
                _,
                Some(Ret::Cas {
                    current: Some(v), ..
                }),
            ) => {
                observed.insert(*v);
            }
            _ => {}
        }
        if let Call::Cas {
            expected: Some(v), ..
        } = r.op.call
        {
            observed.insert(v);
        }
    }
    history
        .iter()
        .filter(|r| match r.outcome {
            Outcome::Fail => false,
            Outcome::Ok => true,
            Outcome::Info => match r.op.call {
                Call::Read => false,
                Call::Write(v) | Call::Cas { new: v, .. } => observed.contains(&v),
            },
        })
        .cloned()
        .collect()
}

const NONE: usize = usize::MAX;

/// Checks one key's history starting from `initial`; at most `budget`
/// search steps.
pub fn check(history: &[Record<RegOp>], initial: Value, budget: u64) -> Verdict {
    let ops = history;
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events: (time, kind (0 call, 1 return), op). Calls sort before
    // returns at equal times (treated as concurrent: never a false alarm).
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, r) in ops.iter().enumerate() {
        events.push((r.invoke, 0, i));
        if r.outcome != Outcome::Info {
            events.push((r.complete.max(r.invoke), 1, i));
        }
    }
    events.sort();
    let m = events.len();
    // Doubly linked list over events; index m is the head sentinel.
    let mut next: Vec<usize> = (1..=m).map(|i| if i == m { NONE } else { i }).collect();
    next.push(if m > 0 { 0 } else { NONE });
    let mut prev: Vec<usize> = (0..m).map(|i| if i == 0 { m } else { i - 1 }).collect();
    prev.push(NONE);
    let mut ret_of = vec![NONE; n];
    for (ei, e) in events.iter().enumerate() {
        if e.1 == 1 {
            ret_of[e.2] = ei;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != NONE {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        if nx != NONE {
            prev[nx] = e;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Value)> = HashSet::new();
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut state = initial;
    let mut entry = next[m];
    let mut steps = 0u64;
    while entry != NONE {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown;
        }
        let (_, kind, op) = events[entry];
        if kind == 0 {
            if let Some(new_state) = step(state, &ops[op].op) {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    // Lift the call (and its return) out of the list; the
                    // return is unlinked first so relinking in reverse
                    // order restores the list exactly.
                    if ret_of[op] != NONE {
                        unlink(&mut next, &mut prev, ret_of[op]);
                    }
                    unlink(&mut next, &mut prev, entry);
                    entry = next[m];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = next[entry];
        } else {
            // A return whose call is still pending: backtrack.
            let Some((call_entry, old_state)) = stack.pop() else {
                return Verdict::Violation { culprit: op };
            };
            let lop = events[call_entry].2;
            relink(&mut next, &mut prev, call_entry);
            if ret_of[lop] != NONE {
                relink(&mut next, &mut prev, ret_of[lop]);
            }
            linearized[lop / 64] &= !(1 << (lop % 64));
            state = old_state;
            entry = next[call_entry];
        }
    }
    Verdict::Linearizable
}

/// A readable excerpt around `culprit`: every operation whose interval
/// overlaps `[culprit.invoke - window, culprit.complete + window]`, by invoke time,
/// at most `max` lines.
pub fn excerpt(history: &[Record<RegOp>], culprit: usize, window_ns: u64, max: usize) -> String {
    let c = &history[culprit];
    let lo = c.invoke.saturating_sub(window_ns);
    let hi = c.complete.saturating_add(window_ns);
    let mut near: Vec<(usize, &Record<RegOp>)> = history
        .iter()
        .enumerate()
        .filter(|(_, r)| r.invoke <= hi && r.complete >= lo)
        .collect();
    near.sort_by_key(|(_, r)| r.invoke);
    if near.len() > max {
        // Keep the operations closest to the culprit's invoke.
        let pos = near.iter().position(|(i, _)| *i == culprit).unwrap_or(0);
        let start = pos.saturating_sub(max * 2 / 3).min(near.len() - max);
        near = near[start..start + max].to_vec();
    }
    let fmt_t = |t: u64| {
        if t == u64::MAX {
            "never".to_string()
        } else {
            format!("{:.3}ms", t as f64 / 1e6)
        }
    };
    near.iter()
        .map(|(i, r)| {
            format!(
                "{} client {:>2} [{} .. {}] {:<4} {:?} -> {:?}",
                if *i == culprit { ">>" } else { "  " },
                r.client,
                fmt_t(r.invoke),
                fmt_t(r.complete),
                r.outcome.name(),
                r.op.call,
                r.op.ret
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(client: usize, invoke: u64, complete: u64, call: Call, ret: Ret) -> Record<RegOp> {
        Record {
            client,
            invoke,
            complete,
            outcome: Outcome::Ok,
            op: RegOp {
                call,
                ret: Some(ret),
            },
        }
    }

    fn info(client: usize, invoke: u64, call: Call) -> Record<RegOp> {
        Record {
            client,
            invoke,
            complete: u64::MAX,
            outcome: Outcome::Info,
            op: RegOp { call, ret: None },
        }
    }

    fn verdict(h: &[Record<RegOp>]) -> Verdict {
        check(&prune(h), None, 1_000_000)
    }

    #[test]
    fn accepts_sequential_and_concurrent_histories() {
        let h = vec![
            ok(0, 0, 10, Call::Write(1), Ret::Write),
            ok(1, 20, 30, Call::Read, Ret::Read(Some(1))),
            ok(
                0,
                40,
                50,
                Call::Cas {
                    expected: Some(1),
                    new: 2,
                },
                Ret::Cas {
                    ok: true,
                    current: Some(2),
                },
            ),
            ok(
                1,
                60,
                70,
                Call::Cas {
                    expected: Some(1),
                    new: 3,
                },
                Ret::Cas {
                    ok: false,
                    current: Some(2),
                },
            ),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // A read concurrent with a write may see either value, and two
        // concurrent reads may disagree as long as an order exists.
        let h = vec![
            ok(0, 0, 10, Call::Write(1), Ret::Write),
            ok(0, 20, 100, Call::Write(2), Ret::Write),
            ok(1, 30, 40, Call::Read, Ret::Read(Some(2))),
            ok(2, 50, 60, Call::Read, Ret::Read(Some(2))),
            ok(3, 25, 35, Call::Read, Ret::Read(Some(1))),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn rejects_a_stale_read() {
        let h = vec![
            ok(0, 0, 10, Call::Write(1), Ret::Write),
            ok(0, 20, 30, Call::Write(2), Ret::Write),
            ok(1, 40, 50, Call::Read, Ret::Read(Some(1))),
        ];
        assert!(matches!(verdict(&h), Verdict::Violation { .. }));
        // Two reads in real-time order that go back in time.
        let h = vec![
            ok(0, 0, 100, Call::Write(2), Ret::Write),
            ok(1, 10, 20, Call::Read, Ret::Read(Some(2))),
            ok(2, 30, 40, Call::Read, Ret::Read(None)),
        ];
        assert!(matches!(verdict(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn rejects_a_lost_write() {
        let h = vec![
            ok(0, 0, 10, Call::Write(1), Ret::Write),
            ok(1, 20, 30, Call::Read, Ret::Read(None)),
        ];
        assert!(matches!(verdict(&h), Verdict::Violation { .. }));
        // A successful CAS whose effect vanished.
        let h = vec![
            ok(0, 0, 10, Call::Write(1), Ret::Write),
            ok(
                0,
                20,
                30,
                Call::Cas {
                    expected: Some(1),
                    new: 2,
                },
                Ret::Cas {
                    ok: true,
                    current: Some(2),
                },
            ),
            ok(1, 40, 50, Call::Read, Ret::Read(Some(1))),
        ];
        assert!(matches!(verdict(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn unknown_outcomes_may_apply_late_or_never() {
        // The timed-out write shows up long after it was invoked: fine.
        let h = vec![
            info(0, 0, Call::Write(7)),
            ok(1, 100, 110, Call::Read, Ret::Read(None)),
            ok(1, 200, 210, Call::Read, Ret::Read(Some(7))),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // ...but not before it was invoked.
        let h = vec![
            ok(1, 0, 10, Call::Read, Ret::Read(Some(7))),
            info(0, 20, Call::Write(7)),
        ];
        assert!(matches!(verdict(&h), Verdict::Violation { .. }));
        // An unobserved unknown write is pruned; failed ops are ignored.
        let mut h = vec![info(0, 0, Call::Write(9))];
        h.push(Record {
            outcome: Outcome::Fail,
            ..ok(1, 5, 6, Call::Write(3), Ret::Write)
        });
        assert!(prune(&h).is_empty());
    }

    #[test]
    fn excerpt_marks_the_culprit() {
        let h = vec![
            ok(0, 0, 10, Call::Write(1), Ret::Write),
            ok(1, 20, 30, Call::Read, Ret::Read(None)),
        ];
        let Verdict::Violation { culprit } = verdict(&h) else {
            panic!()
        };
        let text = excerpt(&h, culprit, 1_000, 10);
        assert!(text.contains(">>") && text.contains("Read(None)"), "{text}");
    }
}
