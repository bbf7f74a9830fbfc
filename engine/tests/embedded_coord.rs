//! Single-node embedded engine: ranges, transactions, leases, locks and
//! elections through the embedded client, on real files.

use std::sync::Arc;
use std::time::Duration;

use d_engine_node::{
    Compare, CoordClient, EmbeddedEngine, Error, EventType, RangeEnd, RangeOptions, Txn, TxnOp,
    TxnOpResult,
};

async fn engine(dir: &std::path::Path) -> EmbeddedEngine {
    let e = EmbeddedEngine::start(dir).await.expect("start");
    e.wait_ready(Duration::from_secs(5)).await.expect("ready");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_pages_walk_every_key_once_and_scan_prefix_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let c = e.client();
    for i in 0..250u32 {
        c.put(format!("r/{i:04}"), b"v").await.unwrap();
    }
    c.put(b"r0", b"outside the prefix").await.unwrap();
    let page = c
        .range(b"r/", RangeOptions::prefix().with_limit(100))
        .await
        .unwrap();
    assert_eq!((page.kvs.len(), page.more, page.count), (100, true, 250));
    let mut walk =
        d_engine_node::RangeWalk::new(&c, b"r/".to_vec(), RangeOptions::prefix().with_limit(64));
    let mut keys = Vec::new();
    while let Some(p) = walk.next_page().await.unwrap() {
        keys.extend(p.kvs.into_iter().map(|kv| kv.key.to_vec()));
    }
    let want: Vec<Vec<u8>> = (0..250u32)
        .map(|i| format!("r/{i:04}").into_bytes())
        .collect();
    assert_eq!(keys, want);
    let all = c
        .scan_prefix(b"r/", 0, d_engine_node::Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(all.len(), 250, "scan_prefix reads every page");
    let counted = c
        .range(
            b"r/",
            RangeOptions {
                count_only: true,
                ..RangeOptions::prefix()
            },
        )
        .await
        .unwrap();
    assert_eq!((counted.count, counted.kvs.len()), (250, 0));
    let bad = c
        .range(
            b"r/9",
            RangeOptions {
                end: RangeEnd::Before(b"r/1".to_vec()),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
    let gone = c
        .delete_range(b"r/", RangeEnd::Prefix, false)
        .await
        .unwrap();
    assert_eq!(gone.deleted, 250);
    assert!(c.get(b"r0").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_and_runs_one_branch_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let c = e.client();
    c.put(b"acct/a", b"100").await.unwrap();
    c.put(b"acct/b", b"0").await.unwrap();
    let a = c.get(b"acct/a").await.unwrap().unwrap();
    let transfer = Txn::new()
        .when([Compare::mod_revision_is(b"acct/a".to_vec(), a.mod_revision)])
        .and_then([
            TxnOp::put(b"acct/a".to_vec(), b"60".to_vec()),
            TxnOp::put(b"acct/b".to_vec(), b"40".to_vec()),
            TxnOp::get(b"acct/b".to_vec()),
        ])
        .or_else([TxnOp::get(b"acct/a".to_vec())]);
    let out = c.txn(transfer.clone()).await.unwrap();
    assert!(out.succeeded);
    assert_eq!(out.results.len(), 3);
    match &out.results[2] {
        TxnOpResult::Range(p) => assert_eq!(
            p.kvs[0].value,
            b"40"[..],
            "a later op sees an earlier op's write"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.get(b"acct/a").await.unwrap().unwrap().mod_revision,
        out.revision
    );
    // The same compare now fails: the failure branch runs, nothing is written.
    let again = c.txn(transfer).await.unwrap();
    assert!(!again.succeeded);
    match &again.results[0] {
        TxnOpResult::Range(p) => assert_eq!(p.kvs[0].value, b"60"[..]),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.get(b"acct/b").await.unwrap().unwrap().value, b"40"[..]);
    let too_many =
        Txn::new().and_then((0..129).map(|i| TxnOp::put(format!("k{i}"), b"v".to_vec())));
    assert!(matches!(c.txn(too_many).await, Err(Error::InvalidArgument(m)) if m.contains("128")));
    let missing_lease = Txn::new().and_then([TxnOp::Put {
        key: b"x".to_vec(),
        value: b"y".to_vec(),
        lease: 0xdead,
    }]);
    assert!(matches!(
        c.txn(missing_lease).await,
        Err(Error::LeaseNotFound(_))
    ));
    assert!(c.get(b"x").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_delete_their_keys_when_revoked_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let c = e.client();
    let l = c.lease_grant(Duration::from_secs(30)).await.unwrap();
    c.put_with_lease(b"svc/a", b"1", l.id).await.unwrap();
    c.put_with_lease(b"svc/b", b"2", l.id).await.unwrap();
    assert_eq!(c.get(b"svc/a").await.unwrap().unwrap().lease, l.id);
    let ttl = c.lease_time_to_live(l.id, true).await.unwrap();
    assert_eq!(ttl.key_count, 2);
    assert!(ttl.remaining <= Duration::from_secs(30));
    assert!(c.lease_list().await.unwrap().iter().any(|s| s.id == l.id));
    let mut w = c.watch_prefix(b"svc/", 0).await.unwrap();
    assert_eq!(c.lease_revoke(l.id).await.unwrap(), 2);
    for _ in 0..2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev.kind, EventType::Delete);
    }
    assert!(c.get(b"svc/a").await.unwrap().is_none());
    assert!(matches!(
        c.lease_renew(l.id).await,
        Err(Error::LeaseNotFound(_))
    ));
    assert!(matches!(
        c.put_with_lease(b"svc/c", b"3", l.id).await,
        Err(Error::LeaseNotFound(_))
    ));

    // A short lease that nobody renews expires; one kept alive does not.
    let short = c.lease_grant(Duration::from_millis(600)).await.unwrap();
    c.put_with_lease(b"tmp/short", b"x", short.id)
        .await
        .unwrap();
    let kept = c
        .lease_keep_alive(Duration::from_millis(600))
        .await
        .unwrap();
    c.put_with_lease(b"tmp/kept", b"y", kept.id())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        c.get(b"tmp/short").await.unwrap().is_none(),
        "expired lease's key is gone"
    );
    assert!(
        c.get(b"tmp/kept").await.unwrap().is_some(),
        "kept-alive lease's key stays"
    );
    assert!(kept.lost_reason().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_passes_to_the_next_waiter_when_the_holder_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let c = e.client();
    let first = c.lease_grant(Duration::from_millis(800)).await.unwrap();
    let second = c.lease_grant(Duration::from_secs(30)).await.unwrap();
    let held = c.lock(b"jobs", first.id).await.unwrap();
    // Re-locking with the same lease keeps the place (same key, same token).
    assert_eq!(c.lock(b"jobs", first.id).await.unwrap(), held);
    let c2 = c.clone();
    let waiter = tokio::spawn(async move { c2.lock(b"jobs", second.id).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "the second holder waits");
    // The first holder "dies": its lease is not renewed and expires.
    let next = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the lock passes on after the TTL")
        .unwrap()
        .unwrap();
    assert!(next.revision > held.revision, "fencing tokens grow");
    assert!(matches!(
        c.lock(b"", second.id).await,
        Err(Error::InvalidArgument(_))
    ));
    c.unlock(&next.key).await.unwrap();
    c.unlock(&next.key).await.unwrap();

    // HeldLock: its own lease, released explicitly.
    let g = c
        .lock_with_ttl(b"jobs", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(g.fencing_token() > next.revision);
    let lease = g.lease();
    g.release().await.unwrap();
    assert!(matches!(
        c.lease_renew(lease).await,
        Err(Error::LeaseNotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_observes_leaders_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let c = Arc::new(e.client());
    let a = c.lease_grant(Duration::from_secs(30)).await.unwrap();
    let b = c.lease_grant(Duration::from_secs(30)).await.unwrap();
    assert_eq!(c.election_leader(b"svc").await.unwrap(), None);
    let la = c.campaign(b"svc", a.id, b"node-a").await.unwrap();
    let mut obs = c.observe(b"svc").await.unwrap();
    let first = obs.recv().await.unwrap().unwrap();
    assert_eq!(first.value, b"node-a"[..]);
    let cb = c.clone();
    let b_campaign = tokio::spawn(async move { cb.campaign(b"svc", b.id, b"node-b").await });
    c.proclaim(&la, b"node-a v2").await.unwrap();
    let v2 = obs.recv().await.unwrap().unwrap();
    assert_eq!(v2.value, b"node-a v2"[..]);
    c.resign(&la).await.unwrap();
    let lb = tokio::time::timeout(Duration::from_secs(5), b_campaign)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let next = obs.recv().await.unwrap().unwrap();
    assert_eq!(next.value, b"node-b"[..]);
    assert_eq!(next.key, lb.key);
    assert!(matches!(
        c.proclaim(&la, b"stale").await,
        Err(Error::NotHeld(_))
    ));
    assert_eq!(
        c.election_leader(b"svc").await.unwrap().unwrap().value,
        b"node-b"[..]
    );
}
