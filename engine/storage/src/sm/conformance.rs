//! A conformance suite any [`StateMachine`] implementation can run.
//!
//! Each check takes a factory that opens a fresh, empty state machine in the
//! given (empty) directory. Checks panic with a description on failure; call
//! them from `#[test]` functions (see `tests/sm_conformance.rs`), or use
//! [`run_all`].

use super::{ApplyResult, KeyValue, SnapshotRecord, StateMachine, WatchEventKind};
use crate::command::{Command, Op, MAX_KEY_BYTES};
use crate::snapshot::SnapshotStore;
use bytes::Bytes;
use d_engine_core::{ConfChange, Entry, EntryPayload, MemberRole};
use std::path::Path;

/// Opens a fresh state machine in an empty directory.
pub type Factory<'a> = &'a dyn Fn(&Path) -> Box<dyn StateMachine>;

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

/// Applies one entry and returns its result.
pub fn apply1(sm: &dyn StateMachine, e: Entry) -> super::Applied {
    let mut v = sm.apply(&[e]).expect("apply");
    assert_eq!(v.len(), 1, "one entry applied");
    v.pop().expect("one")
}

/// Every key (including expired ones not yet reaped).
pub fn dump(sm: &dyn StateMachine) -> Vec<KeyValue> {
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
    assert_eq!(e.kv.as_ref().unwrap().value.as_ref(), b"1");
    let r = apply1(&*sm, cmd(2, 1, put("w", "2", None)));
    assert_eq!(r.events[0].prev.unwrap().mod_revision, 1);
    assert_eq!(r.events[0].prev.unwrap().version, 1);
    assert_eq!(r.events[0].kv.as_ref().unwrap().mod_revision, 2);
    let r = apply1(&*sm, cmd(3, 1, del("w")));
    assert_eq!(r.events[0].kind, WatchEventKind::Delete);
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
    assert!(reason.contains("MAX_KEY_BYTES"), "{reason}");
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
pub fn varied_history(sm: &dyn StateMachine, from: u64, n: u64) {
    for i in from..from + n {
        let k = format!("key/{:03}", i % 37);
        let c = match i % 7 {
            0 => del(&k),
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
    let mut src = sm.begin_snapshot().unwrap();
    assert_eq!(src.meta().last_index, s_index);
    let mut got = Vec::new();
    loop {
        let mut batch = Vec::new();
        for _ in 0..3 {
            let k = format!("bulk/{:04}", (i * 7919) % KEYS);
            let c = match i % 5 {
                0 => del(&k),
                1 => put(&format!("bulk/{:04}x", (i * 13) % KEYS), "new", None),
                2 => cas(&k, None, Some("recreated")),
                _ => put(&k, "changed", Some(i)),
            };
            batch.push(cmd(i, 5, c));
            i += 1;
        }
        sm.apply(&batch).unwrap();
        match src.next_record().unwrap() {
            Some(SnapshotRecord::Kv(kv)) => got.push(kv),
            Some(SnapshotRecord::Client { .. }) | Some(SnapshotRecord::Lease(_)) => {}
            None => break,
        }
    }
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
    let sm: std::sync::Arc<dyn StateMachine> = std::sync::Arc::from(f(&dir.join("live")));
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
pub fn logical_size(sm: &dyn StateMachine) -> u64 {
    dump(sm)
        .iter()
        .map(|kv| super::logical_kv_bytes(kv.key.len(), kv.value.len()))
        .sum()
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

pub fn run_all(f: Factory<'_>, dir: &Path) {
    type Check = fn(Factory<'_>, &Path);
    let checks: &[(&str, Check)] = &[
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
    ];
    for (name, check) in checks {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        check(f, &d);
    }
}
