//! Watch options and typed watch cancels against real `d-engine-server`
//! processes, through the Rust client (issue 17 item 2, issue 18):
//!
//! - a range watch with `prev_kv` and a no-delete filter sees exactly the
//!   puts of its range, each with the value it replaced;
//! - an idle watch with `progress_notify` learns the current revision;
//! - a graceful restart (SIGTERM) of the node serving a watch ends the raw
//!   stream with `cancel_code = SHUTTING_DOWN` and a `resume_revision` one
//!   past its last event, and the Rust client's watch resumes on the new
//!   leader with no gap and no duplicate (checked against a final listing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use d_engine_client::{Consistency, EventType, RangeEnd, WatchEvent, WatchOptions};
use d_engine_proto::v1 as pb;
use d_engine_tests::cluster::{Cluster, ClusterConfig};

async fn next(w: &mut d_engine_client::WatchStream, what: &str) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), w.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within 20 s"))
        .unwrap_or_else(|| panic!("{what}: the watch ended"))
        .unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_prev_kv_filters_progress_and_resume_across_a_graceful_restart() {
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("watch.toml");
    std::fs::write(&path, "[watch]\nprogress_interval_ms = 200\n").unwrap();
    let mut c = Cluster::start(ClusterConfig {
        nodes: 3,
        extra_args: vec!["--config".into(), path.display().to_string()],
        ..Default::default()
    });
    let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let client = c.client().await;
    let kv = client.kv();

    // 1. [svc/a, svc/m) with prev_kv, no deletes.
    let mut w = kv
        .watch_with(
            "svc/a",
            WatchOptions::key()
                .with_end(RangeEnd::Before(b"svc/m".to_vec()))
                .with_prev_kv()
                .with_no_delete(),
        )
        .await
        .unwrap();
    let r1 = kv.put("svc/b", "1").await.unwrap();
    let r2 = kv.put("svc/b", "2").await.unwrap();
    kv.delete("svc/b").await.unwrap();
    kv.put("svc/z", "out of range").await.unwrap();
    kv.put("svc/m", "end is exclusive").await.unwrap();
    let r3 = kv.put("svc/c", "3").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = next(&mut w, "range watch").await;
        got.push((
            e.kind,
            String::from_utf8(e.kv.key.to_vec()).unwrap(),
            e.kv.mod_revision,
            e.prev_kv
                .map(|p| String::from_utf8(p.value.to_vec()).unwrap()),
        ));
    }
    assert_eq!(
        got,
        vec![
            (EventType::Put, "svc/b".into(), r1, None),
            (EventType::Put, "svc/b".into(), r2, Some("1".into())),
            (EventType::Put, "svc/c".into(), r3, None),
        ]
    );
    drop(w);

    // 2. An idle watch with progress notifications learns the revision.
    let mut idle = kv
        .watch_with("idle", WatchOptions::key().with_progress_notify())
        .await
        .unwrap();
    let now = kv.put("elsewhere", "x").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "no progress notification at {now}"
        );
        let e = next(&mut idle, "progress").await;
        assert_eq!(e.kind, EventType::Progress, "{e:?}");
        if e.revision() >= now {
            break;
        }
    }
    drop(idle);

    // 3. A graceful restart of the watch's node (the leader) under writes.
    let mut raw = c
        .kv(leader)
        .await
        .unwrap()
        .watch(pb::WatchRequest {
            key: b"seq/".to_vec(),
            prefix: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut resumed = kv.watch_prefix("seq/", 0).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let kv = client.kv();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) && i < 5_000 {
                // A failed put may or may not be applied: a fresh key each
                // time, so each key has at most one event.
                let _ = kv.put(format!("seq/{i:05}"), "v").await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.terminate(leader, Duration::from_secs(20))
        .expect("the leader exits gracefully");
    // The raw stream of the stopped node: events, then a typed cancel.
    let mut raw_last = 0;
    let cancel = loop {
        let m = tokio::time::timeout(Duration::from_secs(20), raw.message())
            .await
            .expect("the raw watch answers")
            .expect("a cancel message, not a transport error")
            .expect("a cancel message before the stream ends");
        if m.canceled {
            break m;
        }
        if let Some(e) = m.events.last() {
            raw_last = e.kv.as_ref().unwrap().mod_revision;
        }
    };
    assert_eq!(
        cancel.cancel_code,
        pb::ErrorCode::ShuttingDown as i32,
        "{cancel:?}"
    );
    assert!(raw_last > 0, "the raw watch saw events before the restart");
    assert!(
        cancel.resume_revision > raw_last,
        "resume {} after the last event {raw_last}",
        cancel.resume_revision
    );
    let new_leader = c
        .wait_new_leader(leader, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.log_tails(30)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.restart(leader);
    c.wait_serving(leader, Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let fin = kv.put("seq/~end", "v").await.unwrap();
    // Every key of the final listing arrives exactly once, in revision order.
    let listed = kv
        .scan_prefix("seq/", 0, Consistency::Linearizable)
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let e = next(&mut resumed, "resumed watch").await;
        assert_eq!(e.kind, EventType::Put);
        if let Some(&(last, _)) = seen.last() {
            assert!(
                e.kv.mod_revision > last,
                "revision order, no duplicate: {e:?}"
            );
        }
        seen.push((e.kv.mod_revision, e.kv.key));
        if e.kv.mod_revision >= fin {
            break;
        }
    }
    let want: Vec<(u64, d_engine_client::Bytes)> = {
        let mut v: Vec<_> = listed
            .into_iter()
            .map(|kv| (kv.mod_revision, kv.key))
            .collect();
        v.sort();
        v
    };
    assert!(
        want.len() > 20,
        "the writer made progress ({} keys)",
        want.len()
    );
    assert_eq!(
        seen.len(),
        want.len(),
        "the resumed watch saw {} events for {} keys (leader {leader} -> {new_leader})",
        seen.len(),
        want.len()
    );
    assert_eq!(seen, want, "no gap, no duplicate across the restart");
}
