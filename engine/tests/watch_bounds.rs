//! Watch memory bounds (issue 16, findings 4 and 5): a watcher's queue is
//! bounded in bytes (`watch.max_buffer_bytes`), and the history kept for
//! `start_revision` is bounded in bytes (`watch.history_bytes`) as well as
//! in events.

use std::time::Duration;

use d_engine_node::{Config, EmbeddedEngine, Error, ErrorCode};

async fn engine(cfg: Config) -> EmbeddedEngine {
    let e = EmbeddedEngine::builder(cfg)
        .without_network()
        .start()
        .await
        .expect("start");
    e.wait_ready(Duration::from_secs(10)).await.expect("ready");
    e
}

/// Receives until the stream ends, errs, or `max` events arrived.
async fn drain(w: &mut d_engine_node::WatchStream, max: usize) -> (usize, Option<Error>) {
    let mut ok = 0;
    while ok < max {
        match tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .expect("the watch answers within 5 s")
        {
            Some(Ok(_)) => ok += 1,
            Some(Err(e)) => return (ok, Some(e)),
            None => break,
        }
    }
    (ok, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_is_cancelled_at_its_byte_budget() {
    // Default config: watch.buffer = 1024 events, watch.max_buffer_bytes = 4 MiB.
    let dir = tempfile::tempdir().unwrap();
    let e = engine(Config::single_node(dir.path())).await;
    let c = e.client();
    let mut slow = c.watch(b"big", 0).await.unwrap();
    // 24 events of 1 MiB (24 MiB) are far under 1024 events, six times 4 MiB.
    const N: usize = 24;
    for i in 0..N {
        c.put(b"big", vec![i as u8; 1 << 20]).await.unwrap();
    }
    let (ok, err) = drain(&mut slow, N).await;
    let err = err
        .unwrap_or_else(|| panic!("a watcher holding {ok} unread MiB was not cancelled at 4 MiB"));
    assert_eq!(err.code(), ErrorCode::Overloaded, "{err:?}");
    assert!(
        err.to_string().contains("watch.max_buffer_bytes"),
        "the reason names the limit: {err}"
    );
    assert!(ok < 8, "{ok} MiB were buffered for one watcher");
    // The node keeps serving, and a watcher that reads gets everything.
    let mut fast = c.watch(b"big", 0).await.unwrap();
    for i in 0..4u8 {
        c.put(b"big", vec![i; 1 << 20]).await.unwrap();
        let ev = fast.recv().await.unwrap().unwrap();
        assert_eq!(ev.kv.value[0], i);
    }
    e.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_history_is_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::single_node(dir.path());
    // Room for fewer than three 1 MiB events, though 10,000 events are allowed.
    cfg.watch.history_bytes = 5 << 19;
    let e = engine(cfg).await;
    let c = e.client();
    let mut revs = Vec::new();
    for i in 0..8u8 {
        revs.push(c.put(b"h", vec![i; 1 << 20]).await.unwrap());
    }
    // The oldest revisions left the history: Compacted, naming what to do.
    let err = c.watch(b"h", revs[0]).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Compacted, "{err:?}");
    let err = c.watch(b"h", revs[5]).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Compacted, "{err:?}");
    // The newest ones are still replayed.
    let mut w = c.watch(b"h", revs[6]).await.unwrap();
    for (i, r) in revs.iter().enumerate().skip(6) {
        let ev = w.recv().await.unwrap().unwrap();
        assert_eq!(ev.kv.mod_revision, *r);
        assert_eq!(ev.kv.value[0], i as u8);
    }
    e.stop().await.unwrap();
}
