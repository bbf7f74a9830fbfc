//! Single-node embedded engine: every KV operation end to end on real files.

use std::time::{Duration, Instant};

use d_engine_node::{Consistency, EmbeddedEngine, Error, EventType};

async fn engine(dir: &std::path::Path) -> EmbeddedEngine {
    let e = EmbeddedEngine::start(dir).await.expect("start");
    e.wait_ready(Duration::from_secs(5)).await.expect("ready");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let c = e.client();
    let r1 = c.put(b"a".to_vec(), b"1".to_vec()).await.unwrap();
    let r2 = c.put(b"a", b"2").await.unwrap();
    assert!(r2 > r1, "revisions increase: {r1} {r2}");
    let kv = c.get(b"a").await.unwrap().expect("present");
    assert_eq!(kv.value, b"2"[..]);
    assert_eq!(kv.mod_revision, r2);
    assert_eq!(kv.create_revision, r1);
    assert_eq!(kv.version, 2);
    for cons in [
        Consistency::Linearizable,
        Consistency::Lease,
        Consistency::Eventual,
    ] {
        assert_eq!(
            c.get_with(b"a", cons).await.unwrap().unwrap().value,
            b"2"[..]
        );
    }
    assert!(c.delete(b"a").await.unwrap());
    assert!(!c.delete(b"a").await.unwrap());
    assert_eq!(c.get(b"a").await.unwrap(), None);
    let got = c
        .get_multi(
            vec![b"a".to_vec(), b"b".to_vec()],
            Consistency::Linearizable,
        )
        .await
        .unwrap();
    assert_eq!(got, vec![None, None]);
    c.put(b"b", b"x").await.unwrap();
    let got = c
        .get_multi(vec![b"a".to_vec(), b"b".to_vec()], Consistency::Lease)
        .await
        .unwrap();
    assert_eq!(got[0], None);
    assert_eq!(got[1].as_ref().unwrap().value, b"x"[..]);
    e.stop().await.unwrap();
    // Stopped: a clear error, no hang.
    let err = c.put(b"a", b"1").await.unwrap_err();
    assert!(matches!(err, Error::ShuttingDown(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_and_scan() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let c = e.client();
    // Create only if absent.
    let o = c
        .compare_and_swap(b"lock", None, Some(b"me".to_vec()))
        .await
        .unwrap();
    assert!(o.succeeded);
    assert_eq!(o.current.unwrap().value, b"me"[..]);
    let o = c
        .compare_and_swap(b"lock", None, Some(b"you".to_vec()))
        .await
        .unwrap();
    assert!(!o.succeeded);
    assert_eq!(o.current.unwrap().value, b"me"[..]);
    // Swap on match, delete on match.
    let o = c
        .compare_and_swap(b"lock", Some(b"me".to_vec()), Some(b"you".to_vec()))
        .await
        .unwrap();
    assert!(o.succeeded);
    let o = c
        .compare_and_swap(b"lock", Some(b"you".to_vec()), None)
        .await
        .unwrap();
    assert!(o.succeeded);
    assert_eq!(c.get(b"lock").await.unwrap(), None);

    for i in 0..20u32 {
        c.put(format!("user/{i:02}"), i.to_string()).await.unwrap();
    }
    c.put(b"users", b"not in prefix user/").await.unwrap();
    let all = c
        .scan_prefix(b"user/", 0, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(all.len(), 20);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key), "key order");
    let some = c
        .scan_prefix(b"user/", 5, Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(some.len(), 5);
    assert_eq!(some[0].key, b"user/00"[..]);
    let page = e
        .handle()
        .range(
            bytes::Bytes::from_static(b"user/"),
            d_engine_node::RangeOptions {
                end: d_engine_node::RangeEnd::Prefix,
                limit: 5,
                consistency: Consistency::Lease,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.kvs.len(), 5);
    assert!(page.more);
    e.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expires_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = d_engine_node::Config::single_node(dir.path());
    cfg.ttl.expire_interval_ms = 50;
    let e = EmbeddedEngine::start_in_process(cfg).await.unwrap();
    e.wait_ready(Duration::from_secs(5)).await.unwrap();
    let c = e.client();
    c.put_with_ttl(b"t", b"v", Duration::from_millis(300))
        .await
        .unwrap();
    c.put(b"keep", b"v").await.unwrap();
    let kv = c.get(b"t").await.unwrap().unwrap();
    assert!(kv.expires_at_ms > 0);
    let mut w = c.watch(b"t", 0).await.unwrap();
    // Hidden from reads once expired, and removed by the leader's Expire
    // command (seen as a Delete event).
    let deadline = Instant::now() + Duration::from_secs(5);
    let ev = tokio::time::timeout_at(deadline.into(), w.recv())
        .await
        .expect("expiry delete event within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(ev.kind, EventType::Delete);
    assert_eq!(c.get(b"t").await.unwrap(), None);
    assert!(c.get(b"keep").await.unwrap().is_some());
    assert!(matches!(
        c.put_with_ttl(b"z", b"v", Duration::ZERO).await,
        Err(Error::InvalidArgument(_))
    ));
    // With no TTL left, the leader proposes nothing: the log stays put
    // over many expiry intervals.
    let before = e.status().commit_index;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        e.status().commit_index,
        before,
        "idle expiry ticks must not append entries"
    );
    e.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_in_log_order_with_history() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let c = e.client();
    let first = c.put(b"w/a", b"0").await.unwrap();
    let mut key = c.watch(b"w/a", 0).await.unwrap();
    let mut prefix = c.watch_prefix(b"w/", 0).await.unwrap();
    let mut revs = vec![];
    for i in 1..=5 {
        revs.push(c.put(b"w/a", i.to_string()).await.unwrap());
        c.put(b"w/b", i.to_string()).await.unwrap();
        c.put(b"other", i.to_string()).await.unwrap();
    }
    c.delete(b"w/a").await.unwrap();
    for (i, r) in revs.iter().enumerate() {
        let ev = key.recv().await.unwrap().unwrap();
        assert_eq!(ev.kind, EventType::Put);
        assert_eq!(ev.kv.mod_revision, *r);
        assert_eq!(ev.kv.value, (i + 1).to_string().as_bytes());
    }
    assert_eq!(key.recv().await.unwrap().unwrap().kind, EventType::Delete);
    let mut last = 0;
    for _ in 0..11 {
        let ev = prefix.recv().await.unwrap().unwrap();
        assert!(ev.kv.key.starts_with(b"w/"));
        assert!(ev.kv.mod_revision > last, "log order");
        last = ev.kv.mod_revision;
    }
    // From an earlier revision still in the history: replayed in order.
    let mut again = c.watch(b"w/a", first).await.unwrap();
    let ev = again.recv().await.unwrap().unwrap();
    assert_eq!(ev.kv.mod_revision, first);
    // Dropping a watch is fine; the engine keeps going.
    drop(key);
    c.put(b"w/a", b"x").await.unwrap();
    e.stop().await.unwrap();
    // Stop ends open watches with a final error.
    let mut saw_err = false;
    while let Some(item) = prefix.recv().await {
        if item.is_err() {
            saw_err = true;
        }
    }
    assert!(saw_err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_is_cancelled_with_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = d_engine_node::Config::single_node(dir.path());
    cfg.watch.buffer = 4;
    let e = EmbeddedEngine::builder(cfg)
        .without_network()
        .start()
        .await
        .unwrap();
    e.wait_ready(Duration::from_secs(5)).await.unwrap();
    let c = e.client();
    let mut w = c.watch(b"k", 0).await.unwrap();
    for i in 0..10 {
        c.put(b"k", i.to_string()).await.unwrap();
    }
    let mut ok = 0;
    let mut reason = None;
    while let Some(item) = w.recv().await {
        match item {
            Ok(_) => ok += 1,
            Err(e) => reason = Some(e.to_string()),
        }
    }
    assert_eq!(ok, 4);
    assert!(reason.unwrap().contains("watch.buffer"));
    e.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let c = e.client();
    let big_key = vec![b'k'; 4097];
    let err = c.put(&big_key, b"v").await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("the limit is 4096 bytes (limits.max_key_bytes)"),
        "{err}"
    );
    let err = c.put(b"", b"v").await.unwrap_err();
    assert!(err.to_string().contains("key is empty"), "{err}");
    let err = c.get(b"").await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    let big_val = vec![0u8; (1 << 20) + 1];
    let err = c.put(b"k", &big_val).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the limit is 1048576 bytes (limits.max_value_bytes)"),
        "{err}"
    );
    // The limits themselves are accepted.
    c.put(vec![b'k'; 4096], vec![1u8; 1 << 20]).await.unwrap();
    let err = c
        .compare_and_swap(b"k", None, Some(big_val.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    // The node keeps serving.
    c.put(b"ok", b"1").await.unwrap();
    assert_eq!(c.get(b"ok").await.unwrap().unwrap().value, b"1"[..]);
    e.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_gets_overloaded_or_success_never_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = d_engine_node::Config::single_node(dir.path());
    cfg.queues.input_capacity = 64;
    cfg.queues.max_pending_proposals = 128;
    let e = EmbeddedEngine::builder(cfg)
        .without_network()
        .start()
        .await
        .unwrap();
    e.wait_ready(Duration::from_secs(5)).await.unwrap();
    let c = e.client();
    let mut tasks = Vec::new();
    for i in 0..2000u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.put(format!("f/{i}"), b"v").await.map(|r| (i, r))
        }));
    }
    let mut ok = Vec::new();
    let mut overloaded = 0;
    let all = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(tasks),
    )
    .await
    .expect("no hang");
    for r in all {
        match r.unwrap() {
            Ok((i, _)) => ok.push(i),
            Err(Error::Overloaded(m)) => {
                assert!(m.contains("queues."), "{m}");
                overloaded += 1
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok.len() + overloaded, 2000);
    assert!(overloaded > 0, "the flood should hit the small limits");
    assert!(!ok.is_empty());
    // Every acknowledged write is there: nothing silently dropped.
    let got = c
        .scan_prefix(b"f/", 0, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(got.len(), ok.len());
    e.stop().await.unwrap();
}
