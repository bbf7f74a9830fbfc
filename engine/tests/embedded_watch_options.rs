//! Watch options through the embedded client (issue 17 item 2): ranges,
//! `prev_kv`, filters, progress notifications, and the typed cancel a
//! stopping node ends its watches with.

use std::time::Duration;

use d_engine_node::{
    Config, EmbeddedEngine, Error, ErrorCode, EventType, RangeEnd, WatchEvent, WatchOptions,
    WatchStream,
};

async fn engine(cfg: Config) -> EmbeddedEngine {
    let e = EmbeddedEngine::builder(cfg)
        .without_network()
        .start()
        .await
        .expect("start");
    e.wait_ready(Duration::from_secs(10)).await.expect("ready");
    e
}

async fn next(w: &mut WatchStream) -> Result<WatchEvent, Error> {
    tokio::time::timeout(Duration::from_secs(10), w.recv())
        .await
        .expect("the watch answers within 10 s")
        .expect("the watch is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_prev_kv_filters_progress_and_a_typed_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::single_node(dir.path());
    cfg.watch.progress_interval_ms = 50;
    let e = engine(cfg).await;
    let c = e.client();
    c.put(b"r/a", b"1").await.unwrap();
    // Deletes only, in [r/a, r/c), each with the value it removed.
    let mut deletes = c
        .watch_with(
            b"r/a",
            WatchOptions::key()
                .with_end(RangeEnd::Before(b"r/c".to_vec()))
                .with_prev_kv()
                .with_no_put(),
        )
        .await
        .unwrap();
    // Every key from r/b on, with progress notifications.
    let mut from_b = c
        .watch_with(
            b"r/b",
            WatchOptions::key()
                .with_end(RangeEnd::FromKey)
                .with_progress_notify(),
        )
        .await
        .unwrap();
    c.put(b"r/a", b"2").await.unwrap();
    let d1 = c.delete(b"r/a").await.unwrap();
    assert!(d1);
    c.put(b"r/c", b"x").await.unwrap();
    let rev_c = c.get(b"r/c").await.unwrap().unwrap().mod_revision;
    c.delete(b"r/c").await.unwrap(); // outside [r/a, r/c)
    let ev = next(&mut deletes).await.unwrap();
    assert_eq!(ev.kind, EventType::Delete);
    assert_eq!(ev.kv.key, b"r/a"[..]);
    assert_eq!(ev.prev_kv.as_ref().unwrap().value, b"2"[..]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), deletes.recv())
            .await
            .is_err(),
        "nothing else matches"
    );
    // from_b: the put and delete of r/c (progress may come in between).
    let mut changes = Vec::new();
    let mut progress = 0;
    while changes.len() < 2 {
        let ev = next(&mut from_b).await.unwrap();
        match ev.kind {
            EventType::Progress => progress += 1,
            k => changes.push((k, ev.kv.key.to_vec(), ev.prev_kv.is_some())),
        }
    }
    assert_eq!(
        changes,
        vec![
            (EventType::Put, b"r/c".to_vec(), false),
            (EventType::Delete, b"r/c".to_vec(), false),
        ],
        "prev_kv only when asked"
    );
    // Idle: progress notifications at the current revision.
    let now = c.put(b"elsewhere", b"x").await.unwrap();
    let ev = loop {
        let ev = next(&mut from_b).await.unwrap();
        assert_eq!(ev.kind, EventType::Progress);
        progress += 1;
        if ev.revision() >= now {
            break ev;
        }
    };
    assert!(ev.revision() > rev_c && progress > 0);
    // A bad range is refused, naming the field.
    let err = c
        .watch_with(
            b"r/b",
            WatchOptions::key().with_end(RangeEnd::Before(b"r/a".to_vec())),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("range_end"), "{err}");
    // Stopping the node ends the watch with a typed cancel saying where to
    // resume: past everything applied.
    e.stop().await.unwrap();
    let err = next(&mut deletes)
        .await
        .expect_err("the watch ends with an error");
    assert_eq!(err.code(), ErrorCode::ShuttingDown, "{err:?}");
    assert!(err.resume_revision().unwrap() > now, "{err:?}");
}
