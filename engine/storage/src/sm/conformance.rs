//! A conformance suite any key-value [`KvStateMachine`] implementation can run.
//!
//! Each check takes a factory that opens a fresh, empty state machine in the
//! given (empty) directory. Checks panic with a description on failure; call
//! them from `#[test]` functions (see `tests/sm_conformance.rs`), or use
//! [`run_all`].

use super::{
    ApplyResult, KeyValue, KvStateMachine, LeaseRecord, RangeResult, SnapshotRecord, TxnOpResult,
    WatchEventKind,
};
use crate::command::{
    Command, Compare, CompareOp, CompareTarget, KeyRange, Op, RangeSpec, Txn, TxnOp, MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
};
use crate::snapshot::SnapshotStore;
use bytes::Bytes;
use d_engine_core::{ConfChange, Entry, EntryPayload, MemberRole};
use std::path::Path;

/// Opens a fresh state machine in an empty directory.
pub type Factory<'a> = &'a dyn Fn(&Path) -> Box<dyn KvStateMachine>;

/// A command entry.
pub fn cmd(index: u64, term: u64, c: Command) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Command(c.encode()),
    }
}

pub fn put(key: &str, value: &str, ttl_deadline: Option<u64>) -> Command {
    Command::new(Op::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        expires_at_ms: ttl_deadline,
        lease: 0,
    })
}

pub fn del(key: &str) -> Command {
    Command::new(Op::Delete {
        key: Bytes::copy_from_slice(key.as_bytes()),
    })
}

pub fn cas(key: &str, expected: Option<&str>, new: Option<&str>) -> Command {
    Command::new(Op::CompareAndSwap {
        key: Bytes::copy_from_slice(key.as_bytes()),
        expected: expected.map(|s| Bytes::copy_from_slice(s.as_bytes())),
        new_value: new.map(|s| Bytes::copy_from_slice(s.as_bytes())),
        expires_at_ms: None,
    })
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn put_leased(key: &str, value: &str, lease: u64) -> Command {
    Command::new(Op::Put {
        key: b(key),
        value: b(value),
        expires_at_ms: None,
        lease,
    })
}

pub fn grant(id: u64, ttl_ms: u64) -> Command {
    Command::new(Op::LeaseGrant { id, ttl_ms })
}

pub fn revoke(id: u64) -> Command {
    Command::new(Op::LeaseRevoke { id })
}

/// `[start, end)`; `end` "" = the single key `start`, "\0" = every key from `start` on.
pub fn range(start: &str, end: &str) -> KeyRange {
    KeyRange {
        start: b(start),
        end: b(end),
    }
}

pub fn delete_range(r: KeyRange, prev_kv: bool) -> Command {
    Command::new(Op::DeleteRange { range: r, prev_kv })
}

pub fn txn(compares: Vec<Compare>, success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Command {
    Command::new(Op::Txn(Box::new(Txn {
        compares,
        success,
        failure,
    })))
}

pub fn compare(key: &str, op: CompareOp, target: CompareTarget) -> Compare {
    Compare {
        key: b(key),
        op,
        target,
    }
}

pub fn txn_put(key: &str, value: &str, lease: u64) -> TxnOp {
    TxnOp::Put {
        key: b(key),
        value: b(value),
        expires_at_ms: None,
        lease,
    }
}

pub fn txn_range(r: KeyRange, limit: u32) -> TxnOp {
    TxnOp::Range(RangeSpec {
        range: r,
        limit,
        keys_only: false,
        count_only: false,
    })
}

/// The keys attached to lease `id`, as strings.
pub fn lease_keys(sm: &dyn KvStateMachine, id: u64) -> Vec<String> {
    let mut v = Vec::new();
    sm.lease_keys_each(id, &mut |k| {
        v.push(String::from_utf8_lossy(k).into_owned());
        true
    })
    .expect("lease keys");
    v
}

/// Every lease with its keys.
pub fn dump_leases(sm: &dyn KvStateMachine) -> Vec<(LeaseRecord, Vec<String>)> {
    sm.leases()
        .expect("leases")
        .into_iter()
        .map(|l| {
            let keys = lease_keys(sm, l.id);
            (l, keys)
        })
        .collect()
}

fn names(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn event_keys(r: &super::Applied) -> Vec<(WatchEventKind, String)> {
    r.events
        .iter()
        .map(|e| (e.kind.clone(), String::from_utf8_lossy(&e.key).into_owned()))
        .collect()
}

/// Applies one entry and returns its result.
pub fn apply1(sm: &dyn KvStateMachine, e: Entry) -> super::Applied {
    let mut v = sm.apply(&[e]).expect("apply");
    assert_eq!(v.len(), 1, "one entry applied");
    v.pop().expect("one")
}

/// Every key (including expired ones not yet reaped).
pub fn dump(sm: &dyn KvStateMachine) -> Vec<KeyValue> {
    sm.scan_prefix(b"", usize::MAX, 0).expect("scan")
}

pub fn put_get_revisions(f: Factory<'_>, dir: &Path) {
    let sm = f(dir);
    assert_eq!(sm.applied_index(), 0);
    let r = apply1(&*sm, cmd(1, 1, put("a", "1", None)));
    assert_eq!(
        r.result,
        ApplyResult::Put {
            prev_revision: None
        }
    );
    let kv = sm.get(b"a", 0).unwrap().expect("a exists");
    assert_eq!(
        (
            kv.value.as_ref(),
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
        (&b"1"[..], 1, 1, 1)
    );
    let r = apply1(&*sm, cmd(2, 1, put("a", "2", None)));
    assert_eq!(
        r.result,
        ApplyResult::Put {
            prev_revision: Some(1)
        }
    );
    let kv = sm.get(b"a", 0).unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 2, 2));
    sm.apply(&[Entry {
        term: 2,
        index: 3,
        payload: EntryPayload::Noop,
    }])
    .unwrap();
    assert_eq!((sm.applied_index(), sm.applied_term()), (3, 2));
    assert_eq!(
        apply1(&*sm, cmd(4, 2, del("a"))).result,
        ApplyResult::Delete { existed: true }
    );
    assert_eq!(
        apply1(&*sm, cmd(5, 2, del("a"))).result,
        ApplyResult::Delete { existed: false }
    );
    assert!(sm.get(b"a", 0).unwrap().is_none());
    apply1(&*sm, cmd(6, 2, put("a", "3", None)));
    let kv = sm.get(b"a", 0).unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (6, 6, 1),
        "a re-created key starts a new incarnation"
    );
    // Replaying already-applied entries is a no-op; a gap is an error.
    assert!(sm
        .apply(&[cmd(6, 2, put("a", "zzz", None))])
        .unwrap()
        .is_empty());
    assert_eq!(sm.get(b"a", 0).unwrap().unwrap().value.as_ref(), b"3");
    let err = sm.apply(&[cmd(8, 2, put("b", "x", None))]).unwrap_err();
    assert!(err.to_string().contains("expected 7"), "{err}");
    assert_eq!(sm.applied_index(), 6);
    // A batch is applied in order.
    let out = sm
        .apply(&[
            cmd(7, 3, put("b", "1", None)),
            cmd(8, 3, put("b", "2", None)),
        ])
        .unwrap();
    assert_eq!(
        out[1].result,
        ApplyResult::Put {
            prev_revision: Some(7)
        }
    );
    assert_eq!(sm.get(b"b", 0).unwrap().unwrap().version, 2);
}

pub fn compare_and_swap(f: Factory<'_>, dir: &Path) {
    let sm = f(dir);
    let r = apply1(&*sm, cmd(1, 1, cas("k", None, Some("v1"))));
    let ApplyResult::CompareAndSwap {
        succeeded: true,
        current: Some(cur),
    } = r.result
    else {
        panic!("create-if-absent must succeed: {:?}", r.result)
    };
    assert_eq!((cur.value.as_ref(), cur.mod_revision), (&b"v1"[..], 1));
    let r = apply1(&*sm, cmd(2, 1, cas("k", None, Some("v2"))));
    let ApplyResult::CompareAndSwap {
        succeeded: false,
        current: Some(cur),
    } = r.result
    else {
        panic!(
            "create-if-absent on an existing key must fail: {:?}",
            r.result
        )
    };
    assert_eq!(cur.value.as_ref(), b"v1");
    assert!(r.events.is_empty(), "a failed CAS changes nothing");
    let r = apply1(&*sm, cmd(3, 1, cas("k", Some("nope"), Some("v2"))));
    assert!(matches!(
        r.result,
        ApplyResult::CompareAndSwap {
            succeeded: false,
            ..
        }
    ));
    let r = apply1(&*sm, cmd(4, 1, cas("k", Some("v1"), Some("v2"))));
    let ApplyResult::CompareAndSwap {
        succeeded: true,
        current: Some(cur),
    } = r.result
    else {
        panic!("{:?}", r.result)
    };
    assert_eq!(
        (cur.version, cur.mod_revision, cur.create_revision),
        (2, 4, 1)
    );
    let r = apply1(&*sm, cmd(5, 1, cas("k", Some("v2"), None)));
    assert_eq!(
        r.result,
        ApplyResult::CompareAndSwap {
            succeeded: true,
            current: None
        }
    );
    assert!(sm.get(b"k", 0).unwrap().is_none());
    let r = apply1(&*sm, cmd(6, 1, cas("k", Some("v2"), Some("v3"))));
    assert_eq!(
        r.result,
        ApplyResult::CompareAndSwap {
            succeeded: false,
            current: None
        }
    );
    assert_eq!(sm.applied_index(), 6);
}

pub fn ttl_expiry(f: Factory<'_>, dir: &Path) {
    let sm = f(dir);
    apply1(&*sm, cmd(1, 1, put("t", "x", Some(1000))));
    apply1(&*sm, cmd(2, 1, put("keep", "x", Some(500))));
    apply1(&*sm, cmd(3, 1, put("keep", "y", None))); // clears the deadline
    apply1(&*sm, cmd(4, 1, put("moved", "x", Some(500))));
    apply1(&*sm, cmd(5, 1, put("moved", "y", Some(3000)))); // moves it
    assert_eq!(
        sm.earliest_deadline().unwrap(),
        Some(1000),
        "cleared and moved deadlines no longer count"
    );
    assert!(sm.get(b"t", 999).unwrap().is_some());
    assert!(
        sm.get(b"t", 1000).unwrap().is_none(),
        "deadline <= now hides the key"
    );
    assert!(
        sm.get_raw(b"t").unwrap().is_some(),
        "not reaped before Expire"
    );
    assert_eq!(sm.scan_prefix(b"", 10, 1000).unwrap().len(), 2);
    let r = apply1(&*sm, cmd(6, 1, Command::new(Op::Expire { now_ms: 999 })));
    assert_eq!(r.result, ApplyResult::Expire { expired: 0 });
    let r = apply1(&*sm, cmd(7, 1, Command::new(Op::Expire { now_ms: 2000 })));
    assert_eq!(r.result, ApplyResult::Expire { expired: 1 });
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].kind, WatchEventKind::Delete);
    assert_eq!(r.events[0].key.as_ref(), b"t");
    assert_eq!(r.events[0].revision, 7);
    assert!(sm.get_raw(b"t").unwrap().is_none());
    assert!(sm.get_raw(b"keep").unwrap().is_some());
    assert!(sm.get_raw(b"moved").unwrap().is_some());
    assert_eq!(sm.earliest_deadline().unwrap(), Some(3000));
    // Several keys in one batch, including one written in the same batch.
    let out = sm
        .apply(&[
            cmd(8, 1, put("a1", "x", Some(4000))),
            cmd(9, 1, put("a2", "x", Some(4001))),
            cmd(10, 1, Command::new(Op::Expire { now_ms: 5000 })),
        ])
        .unwrap();
    assert_eq!(out[2].result, ApplyResult::Expire { expired: 3 });
    assert_eq!(dump(&*sm).len(), 1);
    assert_eq!(dump(&*sm)[0].key.as_ref(), b"keep");
    assert_eq!(sm.earliest_deadline().unwrap(), None, "no TTL left");
}

pub fn dedup_retries(f: Factory<'_>, dir: &Path) {
    let sm = f(dir);
    let c = |seq, v: &str| {
        Command::with_client(
            Op::Put {
                key: Bytes::from_static(b"d"),
                value: Bytes::copy_from_slice(v.as_bytes()),
                expires_at_ms: None,
                lease: 0,
            },
            42,
            seq,
        )
    };
    let first = apply1(&*sm, cmd(1, 1, c(1, "a")));
    assert_eq!(
        first.result,
        ApplyResult::Put {
            prev_revision: None
        }
    );
    let retry = apply1(&*sm, cmd(2, 1, c(1, "a")));
    assert_eq!(
        retry.result, first.result,
        "a retry returns the original result"
    );
    assert_eq!(first.revision, 1);
    assert_eq!(
        retry.revision, 1,
        "a retry reports the revision its write took effect at, not its own index"
    );
    assert!(retry.events.is_empty(), "a retry changes nothing");
    assert_eq!(sm.get(b"d", 0).unwrap().unwrap().version, 1);
    assert_eq!(
        sm.applied_index(),
        2,
        "a retry still advances the applied index"
    );
    let second = apply1(&*sm, cmd(3, 1, c(2, "b")));
    assert_eq!(
        second.result,
        ApplyResult::Put {
            prev_revision: Some(1)
        }
    );
    // Another client with the same seq is independent.
    let other = apply1(
        &*sm,
        cmd(
            4,
            1,
            Command::with_client(
                Op::Delete {
                    key: Bytes::from_static(b"d"),
                },
                43,
                1,
            ),
        ),
    );
    assert_eq!(other.result, ApplyResult::Delete { existed: true });
    let retry2 = apply1(&*sm, cmd(5, 1, c(2, "b")));
    assert_eq!(retry2.result, second.result);
    assert_eq!((second.revision, retry2.revision), (3, 3));
    assert!(
        sm.get(b"d", 0).unwrap().is_none(),
        "the retry did not re-create the key"
    );
    // A successful compare-and-swap is remembered without its value; the
    // retry still gets the value it wrote.
    let swap = Command::with_user_client(
        Op::CompareAndSwap {
            key: Bytes::from_static(b"d"),
            expected: None,
            new_value: Some(Bytes::from_static(b"swapped")),
            expires_at_ms: None,
        },
        "alice",
        42,
        3,
    );
    let first = apply1(&*sm, cmd(6, 1, swap.clone()));
    let retry = apply1(&*sm, cmd(7, 1, swap));
    assert_eq!(retry.result, first.result);
    assert_eq!(retry.revision, 6);
    match &retry.result {
        ApplyResult::CompareAndSwap {
            succeeded: true,
            current: Some(kv),
        } => assert_eq!(kv.value.as_ref(), b"swapped"),
        other => panic!("{other:?}"),
    }
}

pub fn membership_changes(f: Factory<'_>, dir: &Path) {
    let sm = f(dir);
    assert!(sm.membership().members.is_empty());
    let conf = |i, cc| Entry {
        term: 1,
        index: i,
        payload: EntryPayload::Config(cc),
    };
    let r = apply1(
        &*sm,
        conf(
            1,
            ConfChange::AddLearner {
                id: 2,
                addr: "127.0.0.1:9002".into(),
            },
        ),
    );
    assert_eq!(r.result, ApplyResult::MembershipChanged);
    assert_eq!(sm.membership().members[&2].role, MemberRole::Learner);
    apply1(&*sm, conf(2, ConfChange::Promote { id: 2 }));
    assert!(sm.membership().is_voter(2));
    apply1(
        &*sm,
        conf(
            3,
            ConfChange::AddLearner {
                id: 3,
                addr: "127.0.0.1:9003".into(),
            },
        ),
    );
    apply1(&*sm, conf(4, ConfChange::Remove { id: 2 }));
    let m = sm.membership();
    assert!(!m.contains(2));
    assert_eq!(m.members[&3].addr, "127.0.0.1:9003");
    assert_eq!(sm.applied_index(), 4);
}

pub fn watch_events(f: Factory<'_>, dir: &Path) {
    let sm = f(dir);
    let r = apply1(&*sm, cmd(1, 1, put("w", "1", None)));
    assert_eq!(r.events.len(), 1);
    let e = &r.events[0];
    assert_eq!(
        (e.kind.clone(), e.revision, e.prev.is_none()),
        (WatchEventKind::Put, 1, true)
    );
    assert!(e.prev_value.is_none(), "a new key has no previous value");
    assert_eq!(e.kv.as_ref().unwrap().value.as_ref(), b"1");
    let r = apply1(&*sm, cmd(2, 1, put("w", "2", None)));
    assert_eq!(r.events[0].prev.unwrap().mod_revision, 1);
    assert_eq!(r.events[0].prev.unwrap().version, 1);
    assert_eq!(r.events[0].prev_value.as_deref(), Some(&b"1"[..]));
    assert_eq!(r.events[0].kv.as_ref().unwrap().mod_revision, 2);
    let r = apply1(&*sm, cmd(3, 1, del("w")));
    assert_eq!(r.events[0].kind, WatchEventKind::Delete);
    assert_eq!(r.events[0].prev_value.as_deref(), Some(&b"2"[..]));
    assert!(r.events[0].kv.is_none());
    assert_eq!(r.events[0].prev.as_ref().unwrap().mod_revision, 2);
    assert!(apply1(&*sm, cmd(4, 1, del("w"))).events.is_empty());
    let r = apply1(&*sm, cmd(5, 1, cas("w", None, Some("x"))));
    assert_eq!(r.events[0].kind, WatchEventKind::Put);
    assert_eq!(r.events[0].revision, 5);
}

pub fn rejects_bad_commands(f: Factory<'_>, dir: &Path) {
    let sm = f(dir);
    let r = apply1(
        &*sm,
        Entry {
            term: 1,
            index: 1,
            payload: EntryPayload::Command(Bytes::from_static(b"\x01\x00\x63garbage")),
        },
    );
    assert!(
        matches!(r.result, ApplyResult::Rejected { .. }),
        "{:?}",
        r.result
    );
    let big = Command::new(Op::Put {
        key: Bytes::from(vec![b'k'; MAX_KEY_BYTES + 1]),
        value: Bytes::new(),
        expires_at_ms: None,
        lease: 0,
    });
    let r = apply1(&*sm, cmd(2, 1, big));
    let ApplyResult::Rejected { reason } = r.result else {
        panic!()
    };
    assert!(reason.contains("limits.max_key_bytes"), "{reason}");
    assert_eq!(sm.applied_index(), 2);
    assert!(dump(&*sm).is_empty());
}

pub fn scan_prefix_order_and_limit(f: Factory<'_>, dir: &Path) {
    let sm = f(dir);
    let keys = ["p/3", "p/1", "q/1", "p/2", "o/9", "p/4"];
    for (i, k) in keys.iter().enumerate() {
        let deadline = if *k == "p/4" { Some(10) } else { None };
        apply1(&*sm, cmd(i as u64 + 1, 1, put(k, k, deadline)));
    }
    let got: Vec<_> = sm
        .scan_prefix(b"p/", 10, 100)
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(
        got,
        vec!["p/1", "p/2", "p/3"],
        "expired p/4 hidden, key order"
    );
    assert_eq!(sm.scan_prefix(b"p/", 2, 100).unwrap().len(), 2);
    assert_eq!(sm.scan_prefix(b"p/", 10, 0).unwrap().len(), 4);
    assert!(sm.scan_prefix(b"p/", 0, 0).unwrap().is_empty());
    // The visitor stops the scan: nothing past the pair it declined.
    let mut seen = Vec::new();
    sm.scan_prefix_each(b"p/", 0, &mut |kv| {
        seen.push(kv.key);
        seen.len() < 2
    })
    .unwrap();
    assert_eq!(seen, vec!["p/1", "p/2"], "stops after the visitor says so");
}

/// Applies a varied history (puts, TTLs, CAS, deletes, membership, client sessions).
pub fn varied_history(sm: &dyn KvStateMachine, from: u64, n: u64) {
    for i in from..from + n {
        let k = format!("key/{:03}", i % 37);
        let lease = 1 + i % 3;
        let c = match i % 7 {
            0 => del(&k),
            5 => match i % 4 {
                0 => grant(1 + (i / 4) % 3, 1_000 + i),
                1 => put_leased(&k, &format!("l{i}"), lease),
                2 if i % 3 == 0 => revoke(lease),
                2 => delete_range(range(&k, &format!("key/{:03}", i % 37 + 3)), true),
                _ => txn(
                    vec![compare(&k, CompareOp::Greater, CompareTarget::Version(0))],
                    vec![
                        txn_put(&k, &format!("t{i}"), lease),
                        txn_range(KeyRange::prefix("key/01"), 3),
                    ],
                    vec![
                        txn_put(&k, &format!("f{i}"), 0),
                        TxnOp::DeleteRange {
                            range: KeyRange::prefix(format!("key/{:02}", i % 4)),
                            prev_kv: false,
                        },
                    ],
                ),
            },
            1 => put(&k, &format!("v{i}"), Some(1_000 + i)),
            2 => cas(&k, None, Some("c")),
            3 => Command::with_user_client(
                Op::Put {
                    key: Bytes::from(k.clone()),
                    value: Bytes::from(format!("s{i}")),
                    expires_at_ms: None,
                    lease: 0,
                },
                ["", "alice", "bob"][(i % 3) as usize],
                i % 5,
                i,
            ),
            _ => put(&k, &format!("v{i}"), None),
        };
        let e = if i % 50 == 0 {
            Entry {
                term: 1 + i / 100,
                index: i,
                payload: EntryPayload::Config(ConfChange::AddLearner {
                    id: i,
                    addr: format!("127.0.0.1:{i}"),
                }),
            }
        } else {
            cmd(i, 1 + i / 100, c)
        };
        sm.apply(&[e]).expect("apply");
    }
}

/// Snapshot at some index, install into a fresh instance: identical state,
/// including dedup sessions.
pub fn snapshot_roundtrip(f: Factory<'_>, dir: &Path) {
    let sm = f(&dir.join("a"));
    varied_history(&*sm, 1, 300);
    let store = SnapshotStore::open(&dir.join("snaps")).unwrap();
    let info = store.create(&mut *sm.begin_snapshot().unwrap()).unwrap();
    assert_eq!(info.meta.last_index, 300);
    assert_eq!(info.meta.last_term, sm.applied_term());
    assert_eq!(info.meta.membership, sm.membership());
    let other = f(&dir.join("b"));
    apply1(&*other, cmd(1, 1, put("junk", "x", None)));
    let meta = other.install_snapshot(&info.path).unwrap();
    assert_eq!(meta, info.meta);
    assert_eq!(dump(&*other), dump(&*sm));
    assert!(
        !sm.leases().unwrap().is_empty(),
        "the history grants leases"
    );
    assert_eq!(dump_leases(&*other), dump_leases(&*sm));
    assert_eq!(other.applied_index(), 300);
    assert_eq!(other.applied_term(), sm.applied_term());
    assert_eq!(other.membership(), sm.membership());
    // Dedup sessions came along: a retry of alice's client 3's write at 283
    // is answered from the table on both.
    let op = Op::Put {
        key: Bytes::from_static(b"key/024"),
        value: Bytes::from_static(b"s283"),
        expires_at_ms: None,
        lease: 0,
    };
    let retry = Command::with_user_client(op.clone(), "alice", 3, 283);
    let a = apply1(&*sm, cmd(301, 9, retry.clone()));
    let b = apply1(&*other, cmd(301, 9, retry));
    assert_eq!(a.result, b.result);
    assert!(a.events.is_empty() && b.events.is_empty());
    assert_eq!(
        a.revision, 283,
        "the retry was answered from the table with its original revision"
    );
    assert_eq!(a.revision, b.revision, "the snapshot kept result revisions");
    // The same write id in another user's session is a new write.
    let anon = Command::with_client(op.clone(), 3, 283);
    let a = apply1(&*sm, cmd(302, 9, anon.clone()));
    let b = apply1(&*other, cmd(302, 9, anon));
    assert_eq!((a.revision, b.revision), (302, 302));
    assert_eq!(a.events.len(), 1);
    // A different operation under alice's used write id is refused on both
    // (the snapshot kept the fingerprints).
    let other_op = Command::with_user_client(del("key/024").op, "alice", 3, 283);
    let a = apply1(&*sm, cmd(303, 9, other_op.clone()));
    let b = apply1(&*other, cmd(303, 9, other_op));
    assert!(matches!(a.result, ApplyResult::Rejected { .. }), "{a:?}");
    assert_eq!(a.result, b.result);
    assert!(a.events.is_empty());
    // And they continue identically.
    varied_history(&*sm, 304, 50);
    varied_history(&*other, 304, 50);
    assert_eq!(dump(&*other), dump(&*sm));
    assert_eq!(dump_leases(&*other), dump_leases(&*sm));
}

/// A snapshot begun at S and drained while writes continue holds exactly the
/// state at S. The writes hit keys before and after the builder's position
/// (updates, deletes, re-creations, new keys), one batch per record drained.
pub fn snapshot_is_point_in_time(f: Factory<'_>, dir: &Path) {
    const KEYS: u64 = 700;
    let sm = f(&dir.join("live"));
    varied_history(&*sm, 1, 200);
    let mut i = 201;
    for k in 0..KEYS {
        let ttl = if k % 3 == 0 { Some(10_000 + k) } else { None };
        sm.apply(&[cmd(
            i,
            4,
            put(&format!("bulk/{k:04}"), &format!("b{k}"), ttl),
        )])
        .unwrap();
        i += 1;
    }
    let s_index = i - 1;
    let expected = dump(&*sm);
    let expected_leases = sm.leases().unwrap();
    assert!(!expected_leases.is_empty());
    let mut src = sm.begin_snapshot().unwrap();
    assert_eq!(src.meta().last_index, s_index);
    let mut got = Vec::new();
    let mut got_leases = Vec::new();
    loop {
        let mut batch = Vec::new();
        for _ in 0..3 {
            let k = format!("bulk/{:04}", (i * 7919) % KEYS);
            let c = match i % 6 {
                0 => del(&k),
                1 => put(&format!("bulk/{:04}x", (i * 13) % KEYS), "new", None),
                2 => cas(&k, None, Some("recreated")),
                3 if i % 4 == 0 => grant(100 + i, 50),
                3 => revoke(1 + i % 3),
                _ => put(&k, "changed", Some(i)),
            };
            batch.push(cmd(i, 5, c));
            i += 1;
        }
        sm.apply(&batch).unwrap();
        match src.next_record().unwrap() {
            Some(SnapshotRecord::Kv(kv)) => got.push(kv),
            Some(SnapshotRecord::Lease(l)) => {
                assert!(got.is_empty(), "leases come before the keys");
                got_leases.push(l);
            }
            Some(SnapshotRecord::Client { .. }) | Some(SnapshotRecord::Auth(_)) => {}
            Some(SnapshotRecord::App(_)) => panic!("a key-value machine wrote an App record"),
            None => break,
        }
    }
    assert_eq!(got_leases, expected_leases, "the leases as at S");
    assert!(
        i > s_index + 1000,
        "writes interleaved with the whole build"
    );
    got.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(got.len(), expected.len(), "same key count as at S");
    assert_eq!(got, expected, "snapshot holds exactly the state at S");
    drop(src);
    // A second snapshot can start once the first is finished.
    let mut src2 = sm.begin_snapshot().unwrap();
    let mut n = 0;
    while let Some(r) = src2.next_record().unwrap() {
        if matches!(r, SnapshotRecord::Kv(_)) {
            n += 1;
        }
    }
    assert_eq!(n, dump(&*sm).len());
}

/// A snapshot drained on another thread while this one applies: the file
/// installs into exactly the state at S.
pub fn snapshot_concurrent_with_applies(f: Factory<'_>, dir: &Path) {
    const KEYS: u64 = 10_000;
    let sm: std::sync::Arc<dyn KvStateMachine> = std::sync::Arc::from(f(&dir.join("live")));
    for b in 0..KEYS / 100 {
        let batch: Vec<Entry> = (0..100)
            .map(|j| {
                let k = b * 100 + j;
                cmd(
                    k + 1,
                    1,
                    put(&format!("c/{:05}", (k * 7) % KEYS), "v0", None),
                )
            })
            .collect();
        sm.apply(&batch).unwrap();
    }
    let expected = dump(&*sm);
    let store = SnapshotStore::open(&dir.join("snaps")).unwrap();
    let mut src = sm.begin_snapshot().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let builder = std::thread::spawn(move || {
        // Wait until the writer has started, then build.
        rx.recv().unwrap();
        store.create(&mut *src).unwrap()
    });
    let mut i = KEYS + 1;
    let mut started = false;
    while !builder.is_finished() || i < KEYS + 400 {
        let k = (i * 31) % (KEYS + 100);
        let c = if i.is_multiple_of(4) {
            del(&format!("c/{k:05}"))
        } else {
            put(&format!("c/{k:05}"), &format!("v{i}"), None)
        };
        sm.apply(&[cmd(i, 2, c)]).unwrap();
        i += 1;
        if !started {
            tx.send(()).unwrap();
            started = true;
        }
        assert!(i < 5_000_000, "builder never finished");
    }
    let info = builder.join().unwrap();
    assert_eq!(info.meta.last_index, KEYS);
    assert_eq!(info.records as usize, expected.len());
    let restored = f(&dir.join("restored"));
    restored.install_snapshot(&info.path).unwrap();
    assert_eq!(dump(&*restored), expected);
}

/// Runs every check, each in its own subdirectory of `dir`.
/// The logical size recomputed from scratch: what `data_bytes` must equal.
pub fn logical_size(sm: &dyn KvStateMachine) -> u64 {
    let keys: u64 = dump(sm)
        .iter()
        .map(|kv| super::logical_kv_bytes(kv.key.len(), kv.value.len()))
        .sum();
    keys + sm.leases().expect("leases").len() as u64 * super::LEASE_OVERHEAD_BYTES
}

/// `data_bytes` follows every kind of change exactly (put, overwrite with a
/// larger and a smaller value, delete, CAS store and delete, expiry, a
/// varied history) and survives a snapshot round trip.
pub fn data_bytes_accounting(f: Factory<'_>, dir: &Path) {
    use super::logical_kv_bytes as sz;
    let sm = f(&dir.join("a"));
    assert_eq!(sm.data_bytes(), 0, "an empty state machine holds nothing");
    apply1(&*sm, cmd(1, 1, put("a", "12345", None)));
    assert_eq!(sm.data_bytes(), sz(1, 5));
    apply1(&*sm, cmd(2, 1, put("a", "1234567890", None)));
    assert_eq!(
        sm.data_bytes(),
        sz(1, 10),
        "an overwrite replaces the old size"
    );
    apply1(&*sm, cmd(3, 1, put("bb", "x", Some(1000))));
    assert_eq!(sm.data_bytes(), sz(1, 10) + sz(2, 1));
    apply1(&*sm, cmd(4, 1, put("a", "", None)));
    assert_eq!(
        sm.data_bytes(),
        sz(1, 0) + sz(2, 1),
        "an overwrite may shrink it"
    );
    apply1(&*sm, cmd(5, 1, cas("c", None, Some("yyy"))));
    assert_eq!(sm.data_bytes(), sz(1, 0) + sz(2, 1) + sz(1, 3));
    apply1(&*sm, cmd(6, 1, cas("c", Some("yyy"), None)));
    assert_eq!(sm.data_bytes(), sz(1, 0) + sz(2, 1), "a CAS delete frees");
    apply1(&*sm, cmd(7, 1, del("a")));
    assert_eq!(sm.data_bytes(), sz(2, 1));
    apply1(&*sm, cmd(8, 1, del("a")));
    assert_eq!(
        sm.data_bytes(),
        sz(2, 1),
        "deleting an absent key changes nothing"
    );
    apply1(&*sm, cmd(9, 1, Command::new(Op::Expire { now_ms: 5000 })));
    assert_eq!(sm.data_bytes(), 0, "expiry frees");
    varied_history(&*sm, 10, 300);
    assert_eq!(sm.data_bytes(), logical_size(&*sm));
    let store = SnapshotStore::open(&dir.join("snaps")).unwrap();
    let info = store.create(&mut *sm.begin_snapshot().unwrap()).unwrap();
    let other = f(&dir.join("b"));
    apply1(&*other, cmd(1, 1, put("junk", "xxxxxxxx", None)));
    other.install_snapshot(&info.path).unwrap();
    assert_eq!(
        other.data_bytes(),
        sm.data_bytes(),
        "an installed snapshot counts exactly what its source held"
    );
}

/// Delete-range: a single key, a prefix, an open end ("\0"), `prev_kv`,
/// expired-but-unreaped keys, the `prev_kvs` byte budget, events.
pub fn delete_range_semantics(f: Factory<'_>, dir: &Path) {
    let sm = f(dir);
    let mut i = 0;
    let mut next = || {
        i += 1;
        i
    };
    for k in ["a", "p/1", "p/2", "p/3", "q", "r"] {
        apply1(&*sm, cmd(next(), 1, put(k, &format!("v-{k}"), None)));
    }
    apply1(&*sm, cmd(next(), 1, put("p/0", "expiring", Some(5))));
    // A single key.
    let r = apply1(&*sm, cmd(next(), 1, delete_range(range("a", ""), true)));
    let ApplyResult::DeleteRange {
        deleted: 1,
        prev_kvs,
        truncated: false,
    } = &r.result
    else {
        panic!("{:?}", r.result)
    };
    assert_eq!(names(prev_kvs), ["a"]);
    assert_eq!(prev_kvs[0].value.as_ref(), b"v-a");
    assert_eq!(event_keys(&r), [(WatchEventKind::Delete, "a".into())]);
    assert!(sm.get_raw(b"a").unwrap().is_none());
    let r = apply1(&*sm, cmd(next(), 1, delete_range(range("a", ""), true)));
    assert_eq!(
        r.result,
        ApplyResult::DeleteRange {
            deleted: 0,
            prev_kvs: vec![],
            truncated: false
        }
    );
    assert!(r.events.is_empty());
    // A prefix, with an expired key not yet reaped: deleted like any other.
    let at = next();
    let r = apply1(
        &*sm,
        cmd(at, 1, delete_range(KeyRange::prefix("p/"), false)),
    );
    assert_eq!(
        r.result,
        ApplyResult::DeleteRange {
            deleted: 4,
            prev_kvs: vec![],
            truncated: false
        },
        "without prev_kv no pairs are returned"
    );
    assert_eq!(
        event_keys(&r),
        ["p/0", "p/1", "p/2", "p/3"]
            .map(|k| (WatchEventKind::Delete, k.to_string()))
            .to_vec(),
        "one delete event per key, in key order"
    );
    assert!(r
        .events
        .iter()
        .all(|e| e.revision == at && e.prev.is_some()));
    assert_eq!(
        sm.earliest_deadline().unwrap(),
        None,
        "its deadline went too"
    );
    assert_eq!(names(&dump(&*sm)), ["q", "r"]);
    // An open end.
    let r = apply1(&*sm, cmd(next(), 1, delete_range(range("q", "\0"), true)));
    let ApplyResult::DeleteRange {
        deleted: 2,
        prev_kvs,
        ..
    } = &r.result
    else {
        panic!("{:?}", r.result)
    };
    assert_eq!(names(prev_kvs), ["q", "r"]);
    assert!(dump(&*sm).is_empty());
    assert_eq!(sm.data_bytes(), 0);
    // The prev_kvs budget: four 1 MiB values, only two fit in 3 MiB; all
    // four keys are deleted anyway.
    let big = "x".repeat(MAX_VALUE_BYTES);
    for k in ["big/1", "big/2", "big/3", "big/4"] {
        apply1(&*sm, cmd(next(), 1, put(k, &big, None)));
    }
    let r = apply1(
        &*sm,
        cmd(next(), 1, delete_range(KeyRange::prefix("big/"), true)),
    );
    let ApplyResult::DeleteRange {
        deleted,
        prev_kvs,
        truncated,
    } = &r.result
    else {
        panic!()
    };
    assert_eq!((*deleted, prev_kvs.len(), *truncated), (4, 2, true));
    assert_eq!(names(prev_kvs), ["big/1", "big/2"]);
    assert_eq!(r.events.len(), 4);
    assert!(dump(&*sm).is_empty());
    // The ranges and prev_kvs of one transaction share the budget.
    for k in ["big/1", "big/2", "big/3", "big/4"] {
        apply1(&*sm, cmd(next(), 1, put(k, &big, None)));
    }
    let r = apply1(
        &*sm,
        cmd(
            next(),
            1,
            txn(
                vec![],
                vec![
                    txn_range(range("big/1", "big/3"), 0),
                    txn_range(range("big/3", "\0"), 0),
                    TxnOp::DeleteRange {
                        range: KeyRange::prefix("big/"),
                        prev_kv: true,
                    },
                ],
                vec![],
            ),
        ),
    );
    let ApplyResult::Txn { results, .. } = &r.result else {
        panic!("{:?}", r.result)
    };
    let TxnOpResult::Range(first) = &results[0] else {
        panic!()
    };
    assert_eq!((first.kvs.len(), first.more, first.count), (2, false, 2));
    let TxnOpResult::Range(second) = &results[1] else {
        panic!()
    };
    assert_eq!(
        (second.kvs.len(), second.more, second.count),
        (0, true, 2),
        "the budget is spent: no pairs, more, an exact count"
    );
    assert_eq!(
        results[2],
        TxnOpResult::DeleteRange {
            deleted: 4,
            prev_kvs: vec![],
            truncated: true
        }
    );
    assert!(dump(&*sm).is_empty());
    // Within one batch, a delete-range sees the batch's earlier writes.
    let i0 = next();
    let out = sm
        .apply(&[
            cmd(i0, 1, put("s/1", "x", None)),
            cmd(i0 + 1, 1, put("s/2", "x", None)),
            cmd(i0 + 2, 1, del("s/1")),
            cmd(i0 + 3, 1, delete_range(KeyRange::prefix("s/"), true)),
        ])
        .unwrap();
    let ApplyResult::DeleteRange { prev_kvs, .. } = &out[3].result else {
        panic!("{:?}", out[3].result)
    };
    assert_eq!(names(prev_kvs), ["s/2"]);
    assert!(dump(&*sm).is_empty());
}

/// Transactions: every compare target and operator, missing keys, both
/// branches, ops seeing earlier ops, lease checks, events.
pub fn txn_semantics(f: Factory<'_>, dir: &Path) {
    use CompareOp::*;
    use CompareTarget as T;
    let sm = f(dir);
    apply1(&*sm, cmd(1, 1, put("k", "m", None)));
    apply1(&*sm, cmd(2, 1, put("k", "m", None))); // version 2, create 1, mod 2
    apply1(&*sm, cmd(3, 1, grant(9, 1000)));
    apply1(&*sm, cmd(4, 1, put_leased("l", "x", 9)));
    let mut idx = 4;
    let mut holds = |c: Compare| -> bool {
        idx += 1;
        let r = apply1(&*sm, cmd(idx, 1, txn(vec![c], vec![], vec![])));
        match r.result {
            ApplyResult::Txn { succeeded, results } => {
                assert!(results.is_empty());
                succeeded
            }
            other => panic!("{other:?}"),
        }
    };
    let v = |s: &str| T::Value(b(s));
    let table: Vec<(&str, CompareOp, CompareTarget, bool)> = vec![
        ("k", Equal, v("m"), true),
        ("k", NotEqual, v("m"), false),
        ("k", Less, v("n"), true),
        ("k", Less, v("m"), false),
        ("k", Greater, v("l"), true),
        ("k", Greater, v("mm"), false),
        ("k", Less, v("mm"), true),
        // A value compare on a missing key is false for every operator.
        ("nope", Equal, v(""), false),
        ("nope", NotEqual, v("x"), false),
        ("nope", Less, v("z"), false),
        ("nope", Greater, v(""), false),
        ("k", Equal, T::Version(2), true),
        ("k", Greater, T::Version(1), true),
        ("k", Less, T::Version(2), false),
        ("k", Equal, T::CreateRevision(1), true),
        ("k", NotEqual, T::CreateRevision(1), false),
        ("k", Equal, T::ModRevision(2), true),
        ("k", Greater, T::ModRevision(2), false),
        ("k", Equal, T::Lease(0), true),
        ("l", Equal, T::Lease(9), true),
        ("l", Less, T::Lease(10), true),
        // A missing key has version, revisions and lease 0.
        ("nope", Equal, T::Version(0), true),
        ("nope", Equal, T::CreateRevision(0), true),
        ("nope", Equal, T::ModRevision(0), true),
        ("nope", Equal, T::Lease(0), true),
        ("nope", Greater, T::Version(0), false),
    ];
    for (key, op, target, want) in table {
        let c = compare(key, op, target.clone());
        assert_eq!(holds(c), want, "{key} {op:?} {target:?}");
    }
    // All compares must hold; the failure branch runs otherwise.
    let two = |c2: Compare| {
        txn(
            vec![compare("k", Equal, T::Version(2)), c2],
            vec![txn_put("ok", "yes", 0)],
            vec![txn_put("failed", "yes", 0)],
        )
    };
    idx += 1;
    let r = apply1(&*sm, cmd(idx, 1, two(compare("k", Equal, T::Version(3)))));
    assert_eq!(
        r.result,
        ApplyResult::Txn {
            succeeded: false,
            results: vec![TxnOpResult::Put {
                prev_revision: None
            }]
        }
    );
    assert!(sm.get(b"failed", 0).unwrap().is_some());
    assert!(sm.get(b"ok", 0).unwrap().is_none());
    idx += 1;
    let r = apply1(&*sm, cmd(idx, 1, two(compare("k", Equal, v("m")))));
    assert!(matches!(
        r.result,
        ApplyResult::Txn {
            succeeded: true,
            ..
        }
    ));
    assert!(sm.get(b"ok", 0).unwrap().is_some());

    // Ops run in order and see each other's writes; events in op order,
    // all at the entry's index.
    apply1(&*sm, cmd(idx + 1, 1, put("t/2", "old", Some(1))));
    idx += 2;
    let r = apply1(
        &*sm,
        cmd(
            idx,
            1,
            txn(
                vec![],
                vec![
                    txn_put("t/1", "a", 0),
                    txn_put("t/3", "c", 9),
                    txn_range(KeyRange::prefix("t/"), 0),
                    TxnOp::DeleteRange {
                        range: range("t/1", "t/3"),
                        prev_kv: true,
                    },
                    txn_range(KeyRange::prefix("t/"), 0),
                    TxnOp::Range(RangeSpec {
                        range: KeyRange::prefix("t/"),
                        limit: 0,
                        keys_only: false,
                        count_only: true,
                    }),
                    txn_put("t/3", "c2", 0),
                ],
                vec![],
            ),
        ),
    );
    let ApplyResult::Txn {
        succeeded: true,
        results,
    } = &r.result
    else {
        panic!("{:?}", r.result)
    };
    assert_eq!(results.len(), 7);
    assert_eq!(
        results[0],
        TxnOpResult::Put {
            prev_revision: None
        }
    );
    let TxnOpResult::Range(first) = &results[2] else {
        panic!()
    };
    assert_eq!(
        names(&first.kvs),
        ["t/1", "t/2", "t/3"],
        "the range sees the puts before it, and the expired (unreaped) t/2"
    );
    assert_eq!((first.count, first.more), (3, false));
    assert_eq!(first.kvs[2].lease, 9);
    assert_eq!(first.kvs[1].expires_at_ms, Some(1));
    let TxnOpResult::DeleteRange {
        deleted: 2,
        prev_kvs,
        truncated: false,
    } = &results[3]
    else {
        panic!("{:?}", results[3])
    };
    assert_eq!(names(prev_kvs), ["t/1", "t/2"]);
    let TxnOpResult::Range(after) = &results[4] else {
        panic!()
    };
    assert_eq!(names(&after.kvs), ["t/3"]);
    assert_eq!(
        results[5],
        TxnOpResult::Range(RangeResult {
            kvs: vec![],
            more: false,
            count: 1
        })
    );
    assert_eq!(
        results[6],
        TxnOpResult::Put {
            prev_revision: Some(idx)
        }
    );
    assert_eq!(
        event_keys(&r),
        vec![
            (WatchEventKind::Put, "t/1".to_string()),
            (WatchEventKind::Put, "t/3".into()),
            (WatchEventKind::Delete, "t/1".into()),
            (WatchEventKind::Delete, "t/2".into()),
            (WatchEventKind::Put, "t/3".into()),
        ]
    );
    assert!(r.events.iter().all(|e| e.revision == idx));
    let t3 = sm.get(b"t/3", 0).unwrap().unwrap();
    assert_eq!((t3.version, t3.lease), (2, 0), "the re-put detached it");
    assert!(lease_keys(&*sm, 9) == ["l"]);

    // Range limit, more, keys_only.
    for n in 0..5 {
        idx += 1;
        apply1(&*sm, cmd(idx, 1, put(&format!("r/{n}"), "value", None)));
    }
    idx += 1;
    let r = apply1(
        &*sm,
        cmd(
            idx,
            1,
            txn(
                vec![],
                vec![
                    txn_range(KeyRange::prefix("r/"), 2),
                    TxnOp::Range(RangeSpec {
                        range: range("r/3", "s"),
                        limit: 10,
                        keys_only: true,
                        count_only: false,
                    }),
                    txn_range(range("r/1", ""), 0),
                ],
                vec![],
            ),
        ),
    );
    let ApplyResult::Txn { results, .. } = &r.result else {
        panic!()
    };
    let TxnOpResult::Range(p) = &results[0] else {
        panic!()
    };
    assert_eq!(
        (names(&p.kvs), p.more, p.count),
        (vec!["r/0".to_string(), "r/1".into()], true, 5)
    );
    assert_eq!(p.next_key().unwrap().as_ref(), b"r/1\0");
    let TxnOpResult::Range(p) = &results[1] else {
        panic!()
    };
    assert_eq!(names(&p.kvs), ["r/3", "r/4"]);
    assert!(p
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
    assert!(!p.more);
    let TxnOpResult::Range(p) = &results[2] else {
        panic!()
    };
    assert_eq!((names(&p.kvs), p.count), (vec!["r/1".to_string()], 1));
    assert!(r.events.is_empty(), "a read-only txn changes nothing");

    // A put naming a missing lease refuses the whole transaction, even
    // after ops that would have run first.
    let before = dump(&*sm);
    let bytes_before = sm.data_bytes();
    idx += 1;
    let r = apply1(
        &*sm,
        cmd(
            idx,
            1,
            txn(
                vec![],
                vec![
                    TxnOp::DeleteRange {
                        range: KeyRange::prefix("r/"),
                        prev_kv: false,
                    },
                    txn_put("z", "1", 9),
                    txn_put("z2", "1", 77),
                ],
                vec![],
            ),
        ),
    );
    assert_eq!(r.result, ApplyResult::LeaseNotFound { id: 77 });
    assert!(r.events.is_empty());
    assert_eq!(dump(&*sm), before, "nothing changed");
    assert_eq!(sm.data_bytes(), bytes_before);
    assert_eq!(sm.applied_index(), idx);
    // Only the branch that runs is checked.
    idx += 1;
    let r = apply1(
        &*sm,
        cmd(
            idx,
            1,
            txn(
                vec![compare("k", Equal, T::Version(2))],
                vec![txn_put("z", "1", 9)],
                vec![txn_put("z", "1", 77)],
            ),
        ),
    );
    assert!(matches!(
        r.result,
        ApplyResult::Txn {
            succeeded: true,
            ..
        }
    ));
    assert_eq!(lease_keys(&*sm, 9), ["l", "z"]);
}

/// Leases: grant, duplicate grant, put attaches, re-puts move or detach,
/// CAS and delete detach, revoke deletes the keys with events, revoke of a
/// missing lease, data_bytes, several lease ops in one batch.
pub fn lease_semantics(f: Factory<'_>, dir: &Path) {
    use super::LEASE_OVERHEAD_BYTES as L;
    let sm = f(dir);
    assert!(sm.leases().unwrap().is_empty());
    assert_eq!(sm.lease(1).unwrap(), None);
    let r = apply1(&*sm, cmd(1, 1, grant(1, 5000)));
    assert_eq!(
        r.result,
        ApplyResult::LeaseGranted {
            id: 1,
            ttl_ms: 5000
        }
    );
    assert!(r.events.is_empty());
    let r = apply1(&*sm, cmd(2, 1, grant(1, 9)));
    assert_eq!(r.result, ApplyResult::LeaseExists { id: 1 });
    assert_eq!(
        sm.lease(1).unwrap(),
        Some(LeaseRecord {
            id: 1,
            ttl_ms: 5000
        }),
        "a duplicate grant changes nothing"
    );
    apply1(&*sm, cmd(3, 1, grant(2, 7000)));
    assert_eq!(
        sm.leases().unwrap(),
        vec![
            LeaseRecord {
                id: 1,
                ttl_ms: 5000
            },
            LeaseRecord {
                id: 2,
                ttl_ms: 7000
            }
        ]
    );
    assert_eq!(sm.data_bytes(), 2 * L, "a lease counts a fixed overhead");
    // A put naming a missing lease changes nothing.
    let r = apply1(&*sm, cmd(4, 1, put_leased("a", "x", 3)));
    assert_eq!(r.result, ApplyResult::LeaseNotFound { id: 3 });
    assert!(r.events.is_empty());
    assert!(sm.get_raw(b"a").unwrap().is_none());
    // Puts attach.
    for (i, k) in ["b", "a", "c", "d", "e"].iter().enumerate() {
        let r = apply1(&*sm, cmd(5 + i as u64, 1, put_leased(k, "v", 1)));
        assert!(
            matches!(r.result, ApplyResult::Put { .. }),
            "{:?}",
            r.result
        );
        assert_eq!(r.events[0].kv.as_ref().unwrap().lease, 1);
    }
    assert_eq!(lease_keys(&*sm, 1), ["a", "b", "c", "d", "e"]);
    assert_eq!(sm.get(b"a", 0).unwrap().unwrap().lease, 1);
    // Re-put with another lease moves the key; without a lease detaches it.
    let r = apply1(&*sm, cmd(10, 1, put_leased("a", "w", 2)));
    assert_eq!(r.events[0].prev.unwrap().lease, 1);
    apply1(&*sm, cmd(11, 1, put("b", "plain", None)));
    assert_eq!(sm.get(b"b", 0).unwrap().unwrap().lease, 0);
    // A CAS write leaves the key without a lease; a delete detaches.
    let r = apply1(&*sm, cmd(12, 1, cas("c", Some("v"), Some("swapped"))));
    assert!(matches!(
        r.result,
        ApplyResult::CompareAndSwap {
            succeeded: true,
            current: Some(KeyValue { lease: 0, .. })
        }
    ));
    apply1(&*sm, cmd(13, 1, del("d")));
    assert_eq!(lease_keys(&*sm, 1), ["e"]);
    assert_eq!(lease_keys(&*sm, 2), ["a"]);
    // Stopping the visitor stops the walk.
    apply1(&*sm, cmd(14, 1, put_leased("f", "v", 1)));
    let mut seen = 0;
    sm.lease_keys_each(1, &mut |_| {
        seen += 1;
        false
    })
    .unwrap();
    assert_eq!(seen, 1);
    // Revoke deletes the keys attached (events in key order), then the lease.
    let r = apply1(&*sm, cmd(15, 1, revoke(1)));
    assert_eq!(r.result, ApplyResult::LeaseRevoked { id: 1, deleted: 2 });
    assert_eq!(
        event_keys(&r),
        vec![
            (WatchEventKind::Delete, "e".to_string()),
            (WatchEventKind::Delete, "f".into())
        ]
    );
    assert!(r
        .events
        .iter()
        .all(|e| e.revision == 15 && e.prev.unwrap().lease == 1));
    assert_eq!(sm.lease(1).unwrap(), None);
    assert!(lease_keys(&*sm, 1).is_empty());
    assert_eq!(names(&dump(&*sm)), ["a", "b", "c"]);
    let r = apply1(&*sm, cmd(16, 1, revoke(1)));
    assert_eq!(r.result, ApplyResult::LeaseNotFound { id: 1 });
    assert!(r.events.is_empty());
    assert_eq!(sm.data_bytes(), logical_size(&*sm));
    // A put on a revoked lease is refused.
    let r = apply1(&*sm, cmd(17, 1, put_leased("g", "v", 1)));
    assert_eq!(r.result, ApplyResult::LeaseNotFound { id: 1 });
    // Grant, attach, move, revoke and re-grant inside one batch.
    let out = sm
        .apply(&[
            cmd(18, 1, grant(5, 100)),
            cmd(19, 1, put_leased("x/1", "v", 5)),
            cmd(20, 1, put_leased("x/2", "v", 5)),
            cmd(21, 1, put_leased("a", "moved", 5)),
            cmd(22, 1, put_leased("x/2", "v", 2)),
            cmd(23, 1, revoke(5)),
            cmd(24, 1, grant(5, 200)),
            cmd(25, 1, put_leased("y", "v", 5)),
            cmd(26, 1, revoke(2)),
        ])
        .unwrap();
    assert_eq!(
        out[5].result,
        ApplyResult::LeaseRevoked { id: 5, deleted: 2 }
    );
    assert_eq!(event_keys(&out[5]).len(), 2);
    assert_eq!(
        out[6].result,
        ApplyResult::LeaseGranted { id: 5, ttl_ms: 200 }
    );
    assert_eq!(
        out[8].result,
        ApplyResult::LeaseRevoked { id: 2, deleted: 1 }
    );
    assert_eq!(names(&dump(&*sm)), ["b", "c", "y"]);
    assert_eq!(
        dump_leases(&*sm),
        vec![(LeaseRecord { id: 5, ttl_ms: 200 }, vec!["y".to_string()])]
    );
    assert_eq!(sm.data_bytes(), logical_size(&*sm));
    // Expiry of a TTL key never touches leased keys; a leased key is gone
    // only with its lease.
    apply1(&*sm, cmd(27, 1, put("ttl", "v", Some(10))));
    let r = apply1(
        &*sm,
        cmd(28, 1, Command::new(Op::Expire { now_ms: u64::MAX })),
    );
    assert_eq!(r.result, ApplyResult::Expire { expired: 1 });
    assert_eq!(lease_keys(&*sm, 5), ["y"]);
}

/// Leases and their keys survive a snapshot round trip (and, for an
/// on-disk backend, the factory reopening the same directory: a restart).
pub fn lease_snapshot_roundtrip(f: Factory<'_>, dir: &Path) {
    let sm = f(&dir.join("a"));
    apply1(&*sm, cmd(1, 1, grant(1, 1000)));
    apply1(&*sm, cmd(2, 1, grant(2, 2000)));
    apply1(&*sm, cmd(3, 1, grant(3, 3000)));
    apply1(&*sm, cmd(4, 1, put_leased("k/1", "a", 1)));
    apply1(&*sm, cmd(5, 1, put_leased("k/2", "b", 1)));
    apply1(&*sm, cmd(6, 1, put_leased("k/3", "c", 2)));
    apply1(&*sm, cmd(7, 1, put("plain", "p", Some(99))));
    let expected = dump_leases(&*sm);
    let store = SnapshotStore::open(&dir.join("snaps")).unwrap();
    let info = store.create(&mut *sm.begin_snapshot().unwrap()).unwrap();
    let other = f(&dir.join("b"));
    apply1(&*other, cmd(1, 1, grant(7, 1)));
    apply1(&*other, cmd(2, 1, put_leased("junk", "x", 7)));
    other.install_snapshot(&info.path).unwrap();
    assert_eq!(dump_leases(&*other), expected);
    assert_eq!(dump(&*other), dump(&*sm));
    assert_eq!(other.get(b"k/3", 0).unwrap().unwrap().lease, 2);
    assert_eq!(
        other.lease(7).unwrap(),
        None,
        "the old state's leases are gone"
    );
    assert_eq!(other.data_bytes(), sm.data_bytes());
    // The installed leases work: revoke deletes their keys.
    let r = apply1(&*other, cmd(8, 1, revoke(1)));
    assert_eq!(r.result, ApplyResult::LeaseRevoked { id: 1, deleted: 2 });
    assert_eq!(names(&dump(&*other)), ["k/3", "plain"]);
    let expected = dump_leases(&*other);
    let keys = dump(&*other);
    drop(other);
    // Reopen the same directory (a restart for an on-disk backend; the
    // memory backend starts empty and is skipped).
    let reopened = f(&dir.join("b"));
    if reopened.applied_index() > 0 {
        assert_eq!(dump_leases(&*reopened), expected);
        assert_eq!(dump(&*reopened), keys);
        let r = apply1(&*reopened, cmd(9, 1, revoke(2)));
        assert_eq!(r.result, ApplyResult::LeaseRevoked { id: 2, deleted: 1 });
        assert_eq!(names(&dump(&*reopened)), ["plain"]);
    }
}

fn auth(op: crate::auth::AuthOp) -> Command {
    Command::new(Op::Auth(Box::new(op)))
}

/// Auth changes: applied in their own state (no key, range or scan sees
/// them), refused deterministically, carried by snapshots, kept across a
/// reopen of an on-disk backend.
pub fn auth_state_roundtrip(f: Factory<'_>, dir: &Path) {
    use crate::auth::{AuthOp, Grant, GrantAccess};
    let sm = f(&dir.join("a"));
    let h = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    apply1(&*sm, cmd(1, 1, put("k", "v", None)));
    let r = apply1(&*sm, cmd(2, 1, auth(AuthOp::RoleAdd { name: "r".into() })));
    assert_eq!(r.result, ApplyResult::AuthChanged { revision: 2 });
    assert!(r.events.is_empty(), "auth changes are not key events");
    apply1(
        &*sm,
        cmd(
            3,
            1,
            auth(AuthOp::RoleGrantPermission {
                role: "r".into(),
                grant: Grant {
                    prefix: b"app/".to_vec(),
                    access: GrantAccess::Read,
                },
            }),
        ),
    );
    apply1(
        &*sm,
        cmd(
            4,
            1,
            auth(AuthOp::UserAdd {
                name: "alice".into(),
                password_hash: Some(h.into()),
            }),
        ),
    );
    let r = apply1(
        &*sm,
        cmd(
            5,
            1,
            auth(AuthOp::UserAdd {
                name: "alice".into(),
                password_hash: None,
            }),
        ),
    );
    assert!(
        matches!(&r.result, ApplyResult::AuthRefused { reason } if reason.contains("already exists")),
        "{:?}",
        r.result
    );
    apply1(
        &*sm,
        cmd(
            6,
            1,
            auth(AuthOp::TokenAdd {
                digest: "a".repeat(64),
                user: "alice".into(),
                expires_at_ms: Some(10),
                configured_user: false,
            }),
        ),
    );
    let state = sm.auth_state();
    assert_eq!(state.revision, 6);
    assert!(state.users.contains_key("alice"));
    assert_eq!(state.tokens.len(), 1);
    // Nothing of it among the keys.
    assert_eq!(names(&dump(&*sm)), ["k"]);
    assert_eq!(
        crate::sm::range_page(
            &*sm,
            &RangeSpec {
                range: range("", "\0"),
                limit: 0,
                keys_only: false,
                count_only: false
            },
            0
        )
        .unwrap()
        .count,
        1
    );
    let store = SnapshotStore::open(&dir.join("snaps")).unwrap();
    let info = store.create(&mut *sm.begin_snapshot().unwrap()).unwrap();
    let other = f(&dir.join("b"));
    apply1(
        &*other,
        cmd(
            1,
            1,
            auth(AuthOp::RoleAdd {
                name: "junk".into(),
            }),
        ),
    );
    other.install_snapshot(&info.path).unwrap();
    assert_eq!(*other.auth_state(), *state, "installed with the snapshot");
    drop(other);
    let reopened = f(&dir.join("b"));
    if reopened.applied_index() > 0 {
        assert_eq!(*reopened.auth_state(), *state, "kept across a reopen");
        apply1(
            &*reopened,
            cmd(
                7,
                1,
                auth(AuthOp::UserDelete {
                    name: "alice".into(),
                }),
            ),
        );
        drop(reopened);
        let again = f(&dir.join("b"));
        let s = again.auth_state();
        assert!(s.users.is_empty() && s.tokens.is_empty(), "{s:?}");
        assert_eq!(s.revision, 7);
    }
}

/// `range_each`, `range_count` and the `range_page` helper: bounds, TTL
/// hiding, visitor stop, limits, byte budget, next keys.
pub fn range_reads(f: Factory<'_>, dir: &Path) {
    let sm = f(dir);
    let keys = ["a", "b/1", "b/2", "b/3", "b\u{7f}", "c", "d"];
    for (i, k) in keys.iter().enumerate() {
        let ttl = (*k == "b/2").then_some(100);
        apply1(&*sm, cmd(i as u64 + 1, 1, put(k, k, ttl)));
    }
    let read = |r: &KeyRange, now: u64| {
        let mut v = Vec::new();
        sm.range_each(r, now, &mut |kv| {
            v.push(String::from_utf8_lossy(&kv.key).into_owned());
            true
        })
        .unwrap();
        v
    };
    assert_eq!(read(&KeyRange::prefix("b/"), 0), ["b/1", "b/2", "b/3"]);
    assert_eq!(
        read(&KeyRange::prefix("b/"), 100),
        ["b/1", "b/3"],
        "deadline <= now hidden"
    );
    assert_eq!(sm.range_count(&KeyRange::prefix("b/"), 0).unwrap(), 3);
    assert_eq!(sm.range_count(&KeyRange::prefix("b/"), 100).unwrap(), 2);
    assert_eq!(read(&range("b/3", ""), 0), ["b/3"]);
    assert!(read(&range("b/2", ""), 100).is_empty());
    assert!(read(&range("zz", ""), 0).is_empty());
    assert_eq!(read(&range("c", "\0"), 0), ["c", "d"]);
    assert_eq!(read(&range("b/3", "c"), 0), ["b/3", "b\u{7f}"]);
    assert_eq!(read(&KeyRange::prefix(""), 0).len(), keys.len());
    assert_eq!(sm.range_count(&KeyRange::prefix(""), 0).unwrap(), 7);
    let inverted = range("d", "a");
    assert!(
        read(&inverted, 0).is_empty(),
        "an inverted range reads nothing"
    );
    assert_eq!(sm.range_count(&inverted, 0).unwrap(), 0);
    let mut n = 0;
    sm.range_each(&KeyRange::prefix(""), 0, &mut |_| {
        n += 1;
        n < 3
    })
    .unwrap();
    assert_eq!(n, 3, "the visitor stops the walk");
    // Pages.
    let spec = |r: KeyRange, limit, keys_only, count_only| RangeSpec {
        range: r,
        limit,
        keys_only,
        count_only,
    };
    let p = super::range_page(&*sm, &spec(KeyRange::prefix(""), 3, false, false), 100).unwrap();
    assert_eq!(
        (names(&p.kvs), p.more, p.count),
        (vec!["a".into(), "b/1".into(), "b/3".into()], true, 6)
    );
    let next = p.next_key().unwrap();
    let p = super::range_page(
        &*sm,
        &spec(
            range(std::str::from_utf8(&next).unwrap(), "\0"),
            3,
            true,
            false,
        ),
        100,
    )
    .unwrap();
    assert_eq!(names(&p.kvs), ["b\u{7f}", "c", "d"]);
    assert!(p.kvs.iter().all(|kv| kv.value.is_empty()));
    assert!(!p.more && p.next_key().is_none());
    let p = super::range_page(&*sm, &spec(KeyRange::prefix("b"), 0, false, true), 0).unwrap();
    assert_eq!((p.kvs.len(), p.more, p.count), (0, false, 4));
    // The byte budget cuts a page (the first pair always fits).
    let big = "x".repeat(MAX_VALUE_BYTES);
    for (i, k) in ["v/1", "v/2", "v/3", "v/4"].iter().enumerate() {
        apply1(&*sm, cmd(8 + i as u64, 1, put(k, &big, None)));
    }
    let p = super::range_page(&*sm, &spec(KeyRange::prefix("v/"), 0, false, false), 0).unwrap();
    assert_eq!((p.kvs.len(), p.more, p.count), (2, true, 4));
    let p = super::range_page(&*sm, &spec(KeyRange::prefix("v/"), 0, true, false), 0).unwrap();
    assert_eq!(
        (p.kvs.len(), p.more),
        (4, false),
        "keys only: no value bytes"
    );
    // Counts over many keys (an on-disk backend counts in steps).
    let mut i = sm.applied_index();
    for chunk in 0..18u64 {
        let batch: Vec<_> = (0..500u64)
            .map(|j| {
                let n = chunk * 500 + j;
                i += 1;
                let ttl = (n % 7 == 0).then_some(50);
                cmd(i, 1, put(&format!("many/{n:05}"), "v", ttl))
            })
            .collect();
        sm.apply(&batch).unwrap();
    }
    let many = KeyRange::prefix("many/");
    assert_eq!(sm.range_count(&many, 0).unwrap(), 9_000);
    assert_eq!(
        sm.range_count(&many, 100).unwrap(),
        9_000 - 9_000_u64.div_ceil(7)
    );
    assert_eq!(
        sm.range_count(&range("many/04096", "many/08193"), 0)
            .unwrap(),
        4_097
    );
}

/// A retried transaction or delete-range is answered from the dedup table
/// without the pairs it read (and without applying it again).
pub fn dedup_multi_key_results(f: Factory<'_>, dir: &Path) {
    let sm = f(&dir.join("a"));
    apply1(&*sm, cmd(1, 1, put("k/1", "a", None)));
    apply1(&*sm, cmd(2, 1, put("k/2", "b", None)));
    let t = Command::with_client(
        Op::Txn(Box::new(Txn {
            compares: vec![compare(
                "k/1",
                CompareOp::Equal,
                CompareTarget::Value(b("a")),
            )],
            success: vec![txn_range(KeyRange::prefix("k/"), 0), txn_put("k/3", "c", 0)],
            failure: vec![],
        })),
        5,
        1,
    );
    let first = apply1(&*sm, cmd(3, 1, t.clone()));
    let ApplyResult::Txn { results, .. } = &first.result else {
        panic!()
    };
    let TxnOpResult::Range(p) = &results[0] else {
        panic!()
    };
    assert_eq!(p.kvs.len(), 2);
    let retry = apply1(&*sm, cmd(4, 1, t.clone()));
    assert_eq!((retry.revision, retry.events.len()), (3, 0));
    assert_eq!(
        retry.result,
        ApplyResult::Txn {
            succeeded: true,
            results: vec![
                TxnOpResult::Range(RangeResult::default()),
                TxnOpResult::Put {
                    prev_revision: None
                }
            ]
        }
    );
    assert_eq!(
        sm.get(b"k/3", 0).unwrap().unwrap().version,
        1,
        "applied once"
    );
    let d = Command::with_client(
        Op::DeleteRange {
            range: KeyRange::prefix("k/"),
            prev_kv: true,
        },
        5,
        2,
    );
    let first = apply1(&*sm, cmd(5, 1, d.clone()));
    assert!(
        matches!(&first.result, ApplyResult::DeleteRange { deleted: 3, prev_kvs, truncated: false } if prev_kvs.len() == 3)
    );
    let g = Command::with_client(Op::LeaseGrant { id: 4, ttl_ms: 10 }, 5, 3);
    let granted = apply1(&*sm, cmd(6, 1, g.clone()));
    // The sessions travel in snapshots: the retries are answered the same
    // after an install.
    let store = SnapshotStore::open(&dir.join("snaps")).unwrap();
    let info = store.create(&mut *sm.begin_snapshot().unwrap()).unwrap();
    let other = f(&dir.join("b"));
    other.install_snapshot(&info.path).unwrap();
    for s in [&*sm, &*other] {
        let retry = apply1(s, cmd(7, 1, d.clone()));
        assert_eq!(
            retry.result,
            ApplyResult::DeleteRange {
                deleted: 3,
                prev_kvs: vec![],
                truncated: true
            },
            "remembered without the pairs (marked truncated)"
        );
        assert_eq!(retry.revision, 5);
        let retry = apply1(s, cmd(8, 1, g.clone()));
        assert_eq!(retry.result, granted.result);
        assert_eq!(retry.revision, 6);
    }
}

/// A snapshot file whose key names a lease no earlier record defines is
/// refused by every backend, and the current state stays.
pub fn snapshot_with_unknown_lease_is_refused(f: Factory<'_>, dir: &Path) {
    use crate::snapshot::format::SnapshotWriter;
    use d_engine_core::SnapshotMeta;
    let path = dir.join("bad.snap");
    let file = std::fs::File::create(&path).unwrap();
    let meta = SnapshotMeta {
        last_index: 50,
        last_term: 2,
        ..Default::default()
    };
    let mut w = SnapshotWriter::new(file, &path, &meta).unwrap();
    w.record(&SnapshotRecord::Kv(KeyValue {
        key: b("k"),
        value: b("v"),
        create_revision: 1,
        mod_revision: 1,
        version: 1,
        expires_at_ms: None,
        lease: 5,
    }))
    .unwrap();
    w.record(&SnapshotRecord::Lease(LeaseRecord { id: 5, ttl_ms: 10 }))
        .unwrap();
    w.finish().unwrap();
    let sm = f(&dir.join("sm"));
    apply1(&*sm, cmd(1, 1, put("keep", "me", None)));
    let e = sm.install_snapshot(&path).unwrap_err();
    assert!(e.to_string().contains("lease 5"), "{e}");
    assert_eq!(sm.applied_index(), 1);
    assert_eq!(names(&dump(&*sm)), ["keep"]);
    assert!(sm.leases().unwrap().is_empty());
    apply1(&*sm, cmd(2, 1, put("still", "works", None)));
}

/// One check of the suite: opens machines with the factory in the
/// (empty) directory it is given.
pub type Check = fn(Factory<'_>, &Path);

/// Runs every check of [`CHECKS`], each in its own subdirectory of `dir`
/// (named after the check); panics on the first broken contract.
pub fn run_all(f: Factory<'_>, dir: &Path) {
    for (name, check) in CHECKS {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        check(f, &d);
    }
}

/// Every check of the suite, by name (what [`run_all`] runs).
pub const CHECKS: &[(&str, Check)] = &[
    ("put_get_revisions", put_get_revisions),
    ("compare_and_swap", compare_and_swap),
    ("ttl_expiry", ttl_expiry),
    ("dedup_retries", dedup_retries),
    ("membership_changes", membership_changes),
    ("watch_events", watch_events),
    ("rejects_bad_commands", rejects_bad_commands),
    ("scan_prefix_order_and_limit", scan_prefix_order_and_limit),
    ("snapshot_roundtrip", snapshot_roundtrip),
    ("data_bytes_accounting", data_bytes_accounting),
    ("snapshot_is_point_in_time", snapshot_is_point_in_time),
    (
        "snapshot_concurrent_with_applies",
        snapshot_concurrent_with_applies,
    ),
    ("delete_range_semantics", delete_range_semantics),
    ("txn_semantics", txn_semantics),
    ("lease_semantics", lease_semantics),
    ("lease_snapshot_roundtrip", lease_snapshot_roundtrip),
    ("auth_state_roundtrip", auth_state_roundtrip),
    ("range_reads", range_reads),
    ("dedup_multi_key_results", dedup_multi_key_results),
    (
        "snapshot_with_unknown_lease_is_refused",
        snapshot_with_unknown_lease_is_refused,
    ),
];
