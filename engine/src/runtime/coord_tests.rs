//! The coordination request paths (`ranges.rs`, `txn.rs`, `leases.rs`
//! and the leader's lease clock) on a real single-node engine.
//!
//! Over 500 lines only because each scenario spells out its requests and
//! checks; it holds no helpers beyond the node fixture.

use std::time::{Duration, Instant};

use bytes::Bytes;
use d_engine_api::{
    Compare, CompareOp, CompareTarget, Error, EventType, RangeEnd, RangeOptions, Txn, TxnOp,
    TxnOpResult,
};

use super::{NodeHandle, WriteId};
use crate::config::Config;
use crate::embedded::EmbeddedEngine;

struct Node {
    engine: EmbeddedEngine,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start() -> Node {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tune: impl FnOnce(&mut Config)) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::single_node(dir.path());
        tune(&mut cfg);
        let engine = EmbeddedEngine::builder(cfg)
            .without_network()
            .start()
            .await
            .expect("engine starts");
        engine
            .wait_ready(Duration::from_secs(10))
            .await
            .expect("leader");
        Node { engine, _dir: dir }
    }

    fn h(&self) -> &NodeHandle {
        self.engine.handle()
    }

    async fn stop(self) {
        self.engine.stop().await.unwrap();
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn invalid(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[tokio::test]
async fn range_pages_walk_every_key_once() {
    let n = Node::start().await;
    let h = n.h();
    let mut want = Vec::new();
    for i in 0..250u32 {
        let k = format!("p/{i:04}");
        h.put(b(&k), b("v"), None, None).await.unwrap();
        want.push(k.into_bytes());
    }
    // Keys around the prefix stay out of it.
    h.put(b("p."), b("x"), None, None).await.unwrap();
    let last = h.put(b("p0"), b("x"), None, None).await.unwrap();
    let mut got = Vec::new();
    let mut key = b("p/");
    let end = RangeEnd::Before(d_engine_api::prefix_end(b"p/"));
    let mut pages = 0;
    loop {
        let page = h
            .range(
                key.clone(),
                RangeOptions {
                    end: end.clone(),
                    limit: 37,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        pages += 1;
        if pages == 1 {
            assert_eq!(page.count, 250, "count covers the whole range");
            assert!(
                page.revision >= last,
                "the page is read after the last write"
            );
        }
        assert!(page.kvs.len() <= 37);
        got.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            assert!(page.next_key.is_none());
            break;
        }
        let next = page.next_key.expect("next_key with more");
        let mut expect = page.kvs.last().unwrap().key.to_vec();
        expect.push(0);
        assert_eq!(next, expect, "next_key is the last key + 0x00");
        key = Bytes::from(next);
    }
    assert_eq!(pages, 7);
    assert_eq!(got, want, "every key once, in order");

    // Prefix, keys only, count only, a single key, from a key on.
    let p = h
        .range(b("p/"), RangeOptions::prefix().with_limit(5))
        .await
        .unwrap();
    assert_eq!((p.kvs.len(), p.more, p.count), (5, true, 250));
    let k = h
        .range(
            b("p/"),
            RangeOptions {
                keys_only: true,
                ..RangeOptions::prefix()
            },
        )
        .await
        .unwrap();
    assert_eq!(k.kvs.len(), 250);
    assert!(k
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
    let c = h
        .range(
            b("p/"),
            RangeOptions {
                count_only: true,
                ..RangeOptions::prefix()
            },
        )
        .await
        .unwrap();
    assert_eq!((c.kvs.len(), c.more, c.count), (0, false, 250));
    let one = h.range(b("p/0007"), RangeOptions::default()).await.unwrap();
    assert_eq!(one.kvs.len(), 1);
    assert_eq!(one.count, 1);
    let from = h
        .range(
            b("p/0248"),
            RangeOptions {
                end: RangeEnd::FromKey,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<_> = from.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, [&b"p/0248"[..], b"p/0249", b"p0"]);
    // An empty first key with an end starts at the smallest key.
    let all = h
        .range(
            Bytes::new(),
            RangeOptions {
                end: RangeEnd::FromKey,
                count_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.count, 252);
    n.stop().await;
}

#[tokio::test]
async fn bad_ranges_are_refused_naming_the_field() {
    let n = Node::start().await;
    let h = n.h();
    let m = invalid(
        h.range(
            b("b"),
            RangeOptions {
                end: RangeEnd::Before(b"a".to_vec()),
                ..Default::default()
            },
        )
        .await,
    );
    assert!(m.contains("range_end is at or before key"), "{m}");
    let m = invalid(
        h.range(
            b("a"),
            RangeOptions {
                end: RangeEnd::Before(b"a".to_vec()),
                ..Default::default()
            },
        )
        .await,
    );
    assert!(m.contains("range is empty"), "{m}");
    let m = invalid(
        h.range(b("a"), RangeOptions::prefix().with_limit(10_001))
            .await,
    );
    assert!(m.contains("limits.max_scan_limit"), "{m}");
    let m = invalid(h.range(Bytes::new(), RangeOptions::default()).await);
    assert!(m.contains("key is empty"), "{m}");
    let m = invalid(
        h.delete_range(b("z"), RangeEnd::Before(b"a".to_vec()), false, None)
            .await,
    );
    assert!(m.contains("at or before"), "{m}");
    n.stop().await;
}

#[tokio::test]
async fn delete_range_removes_the_range_in_one_step_and_watchers_see_it() {
    let n = Node::start().await;
    let h = n.h();
    for k in ["d/a", "d/b", "d/c", "e"] {
        h.put(b(k), b(k), None, None).await.unwrap();
    }
    let mut w = h.watch(b("d/"), true, 0).unwrap();
    let out = h
        .delete_range(b("d/"), RangeEnd::Prefix, true, None)
        .await
        .unwrap();
    assert_eq!(out.deleted, 3);
    assert!(!out.prev_kvs_truncated);
    let prev: Vec<_> = out.prev_kvs.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(prev, [&b"d/a"[..], b"d/b", b"d/c"]);
    for want in ["d/a", "d/b", "d/c"] {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev.kind, EventType::Delete);
        assert_eq!(ev.kv.key, want.as_bytes());
        assert_eq!(ev.kv.mod_revision, out.revision, "one revision for all");
    }
    assert!(h.get(b("e"), Default::default()).await.unwrap().is_some());
    let again = h
        .delete_range(b("d/"), RangeEnd::Prefix, false, None)
        .await
        .unwrap();
    assert_eq!(again.deleted, 0);
    n.stop().await;
}

#[tokio::test]
async fn txn_runs_one_branch_atomically_and_retries_replay() {
    let n = Node::start().await;
    let h = n.h();
    let r1 = h.put(b("t/a"), b("1"), None, None).await.unwrap();
    let txn = Txn::new()
        .when([
            Compare::value_equals("t/a", "1"),
            Compare::missing("t/b"),
            Compare::new("t/a", CompareOp::Greater, CompareTarget::ModRevision(0)),
        ])
        .and_then([
            TxnOp::put("t/b", "2"),
            TxnOp::get("t/a"),
            TxnOp::Range {
                key: b"t/".to_vec(),
                options: RangeOptions::prefix(),
            },
        ])
        .or_else([TxnOp::delete("t/a")]);
    let wid = WriteId {
        client_id: 77,
        seq: 1,
        user: String::new(),
    };
    let out = h.txn(txn.clone(), Some(wid.clone())).await.unwrap();
    assert!(out.succeeded);
    assert!(!out.replayed);
    assert!(out.revision > r1);
    assert_eq!(out.results.len(), 3);
    assert_eq!(
        out.results[0],
        TxnOpResult::Put {
            revision: out.revision
        }
    );
    let TxnOpResult::Range(p) = &out.results[2] else {
        panic!("{:?}", out.results[2]);
    };
    let keys: Vec<_> = p.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        [&b"t/a"[..], b"t/b"],
        "a later op sees an earlier op's write"
    );
    // The retry with the same write id is answered, not applied again.
    let again = h.txn(txn.clone(), Some(wid)).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.revision, out.revision);
    assert!(again.succeeded);
    // Now t/b exists: the failure branch runs.
    let out2 = h.txn(txn, None).await.unwrap();
    assert!(!out2.succeeded);
    assert!(matches!(&out2.results[0], TxnOpResult::DeleteRange(d) if d.deleted == 1));
    assert!(h.get(b("t/a"), Default::default()).await.unwrap().is_none());

    // A put naming a missing lease applies nothing.
    let bad = Txn::new().and_then([
        TxnOp::put("t/c", "3"),
        TxnOp::Put {
            key: b"t/d".to_vec(),
            value: b"4".to_vec(),
            lease: 12345,
        },
    ]);
    match h.txn(bad, None).await {
        Err(Error::LeaseNotFound(m)) => assert!(m.contains("12345"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(h.get(b("t/c"), Default::default()).await.unwrap().is_none());

    // Over the op limit, an empty range, an empty key: refused before proposing.
    let many = Txn::new().and_then((0..129).map(|i| TxnOp::put(format!("k{i}"), "v")));
    assert!(invalid(h.txn(many, None).await).contains("success has 129 entries"));
    let m = invalid(
        h.txn(
            Txn::new().or_else([TxnOp::DeleteRange {
                key: b"b".to_vec(),
                end: RangeEnd::Before(b"a".to_vec()),
                prev_kv: false,
            }]),
            None,
        )
        .await,
    );
    assert!(m.contains("failure[0].delete_range.range_end"), "{m}");
    let m = invalid(h.txn(Txn::new().when([Compare::missing("")]), None).await);
    assert!(m.contains("compare[0].key"), "{m}");
    n.stop().await;
}

#[tokio::test]
async fn leases_grant_attach_list_and_revoke_deletes_their_keys() {
    let n = Node::start().await;
    let h = n.h();
    let g = h
        .lease_grant(Duration::from_secs(60), 0, None)
        .await
        .unwrap();
    assert!(g.id > 0 && g.id <= i64::MAX as u64);
    assert_eq!(g.ttl, Duration::from_secs(60));
    let mine = h
        .lease_grant(Duration::from_secs(30), 42, None)
        .await
        .unwrap();
    assert_eq!(mine.id, 42);
    let m = invalid(h.lease_grant(Duration::from_secs(30), 42, None).await);
    assert!(m.contains("42 is already in use"), "{m}");
    assert!(invalid(h.lease_grant(Duration::ZERO, 0, None).await).contains("ttl"));
    // A retried grant (same write id) answers the same lease.
    let wid = WriteId {
        client_id: 5,
        seq: 9,
        user: String::new(),
    };
    let w1 = h
        .lease_grant(Duration::from_secs(10), 0, Some(wid.clone()))
        .await
        .unwrap();
    let w2 = h
        .lease_grant(Duration::from_secs(10), 0, Some(wid))
        .await
        .unwrap();
    assert_eq!(w1, w2);

    for k in ["l/a", "l/b"] {
        h.put_with_lease(b(k), b("v"), g.id, None).await.unwrap();
    }
    let kv = h.get(b("l/a"), Default::default()).await.unwrap().unwrap();
    assert_eq!(kv.lease, g.id);
    match h.put_with_lease(b("l/x"), b("v"), 999, None).await {
        Err(Error::LeaseNotFound(_)) => {}
        other => panic!("{other:?}"),
    }
    let ttl = h.lease_time_to_live(g.id, true).await.unwrap();
    assert_eq!(ttl.key_count, 2);
    assert_eq!(ttl.keys, [b"l/a".to_vec(), b"l/b".to_vec()]);
    assert_eq!(ttl.granted_ttl, Duration::from_secs(60));
    assert!(ttl.remaining <= ttl.granted_ttl && ttl.remaining > Duration::from_secs(50));
    let ids: Vec<u64> = h.lease_list().await.unwrap().iter().map(|l| l.id).collect();
    for id in [g.id, 42, w1.id] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }

    let mut w = h.watch(b("l/"), true, 0).unwrap();
    assert_eq!(h.lease_revoke(g.id, None).await.unwrap(), 2);
    for _ in 0..2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev.kind, EventType::Delete);
    }
    assert!(h.get(b("l/b"), Default::default()).await.unwrap().is_none());
    for r in [
        h.lease_revoke(g.id, None).await.map(|_| ()),
        h.lease_renew(g.id).await.map(|_| ()),
        h.lease_time_to_live(g.id, false).await.map(|_| ()),
    ] {
        assert!(matches!(r, Err(Error::LeaseNotFound(_))), "{r:?}");
    }
    n.stop().await;
}

#[tokio::test]
async fn renewed_leases_outlive_their_ttl_and_expired_ones_take_their_keys() {
    let n = Node::start().await;
    let h = n.h();
    let ttl = Duration::from_millis(400);
    let kept = h.lease_grant(ttl, 0, None).await.unwrap();
    let dropped = h.lease_grant(ttl, 0, None).await.unwrap();
    h.put_with_lease(b("k/kept"), b("v"), kept.id, None)
        .await
        .unwrap();
    for k in ["x/1", "x/2", "x/3"] {
        h.put_with_lease(b(k), b("v"), dropped.id, None)
            .await
            .unwrap();
    }
    let mut w = h.watch(b("x/"), true, 0).unwrap();
    let start = Instant::now();
    // Renew `kept` every 100 ms for three TTLs.
    while start.elapsed() < 3 * ttl {
        assert_eq!(h.lease_renew(kept.id).await.unwrap(), ttl);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        h.get(b("k/kept"), Default::default())
            .await
            .unwrap()
            .is_some(),
        "a renewed lease keeps its key past its TTL"
    );
    // `dropped` expired: its keys went in one step, watchers saw it.
    let mut revs = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev.kind, EventType::Delete);
        revs.push(ev.kv.mod_revision);
    }
    assert!(revs.iter().all(|r| *r == revs[0]), "{revs:?}");
    assert!(matches!(
        h.lease_renew(dropped.id).await,
        Err(Error::LeaseNotFound(_))
    ));
    // Not early: the expiry came after the TTL.
    let gone_after = start.elapsed();
    assert!(gone_after >= ttl, "{gone_after:?}");
    // Stop renewing `kept`: it expires too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h
        .get(b("k/kept"), Default::default())
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(h.lease_list().await.unwrap().is_empty());
    n.stop().await;
}

/// A restart gives every lease its full TTL again (the clock is in memory;
/// the leases are in the state machine).
#[tokio::test]
async fn a_restarted_node_gives_leases_their_full_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let start = |dir: std::path::PathBuf| async move {
        let e = EmbeddedEngine::builder(Config::single_node(&dir))
            .without_network()
            .start()
            .await
            .unwrap();
        e.wait_ready(Duration::from_secs(10)).await.unwrap();
        e
    };
    let e = start(dir.path().to_path_buf()).await;
    let g = e
        .handle()
        .lease_grant(Duration::from_secs(2), 0, None)
        .await
        .unwrap();
    e.handle()
        .put_with_lease(b("r/k"), b("v"), g.id, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    e.stop().await.unwrap();
    let e = start(dir.path().to_path_buf()).await;
    let t = e.handle().lease_time_to_live(g.id, false).await.unwrap();
    assert!(
        t.remaining > Duration::from_millis(1500),
        "full TTL again after the restart: {:?}",
        t.remaining
    );
    assert_eq!(t.key_count, 1);
    e.stop().await.unwrap();
}

/// A node-picked id that names a live lease is replaced, never refused:
/// the id derived from a write id is taken first by a caller-chosen grant.
#[tokio::test]
async fn a_picked_lease_id_in_use_is_replaced() {
    let n = Node::start().await;
    let h = n.h();
    let w = WriteId {
        client_id: 3,
        seq: 1,
        user: String::new(),
    };
    let taken = super::leases::id_for_write(&w);
    h.lease_grant(Duration::from_secs(30), taken, None)
        .await
        .unwrap();
    let g = h
        .lease_grant(Duration::from_secs(30), 0, Some(w))
        .await
        .unwrap();
    assert_ne!(g.id, taken);
    let ids: Vec<u64> = h.lease_list().await.unwrap().iter().map(|l| l.id).collect();
    assert!(ids.contains(&g.id) && ids.contains(&taken), "{ids:?}");
    n.stop().await;
}

/// The quota admits a transaction by what its larger branch stores.
#[tokio::test]
async fn the_quota_admits_a_txn_by_its_larger_branch() {
    let n = Node::start_with(|c| c.storage.quota_bytes = 10_000).await;
    let h = n.h();
    let big = vec![0u8; 20_000];
    let small_then_big = Txn::new()
        .and_then([TxnOp::put("q/a", "1")])
        .or_else([TxnOp::put("q/b", big.clone())]);
    match h.txn(small_then_big, None).await {
        Err(Error::NoSpace(m)) => assert!(m.contains("storage.quota_bytes"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(h.get(b("q/a"), Default::default()).await.unwrap().is_none());
    let fits = Txn::new().and_then([TxnOp::put("q/a", "1"), TxnOp::delete("q/zz")]);
    assert!(h.txn(fits, None).await.unwrap().succeeded);
    n.stop().await;
}
