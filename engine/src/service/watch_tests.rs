//! Watch options and typed cancels over a real single-node engine and a
//! real socket: ranges, `prev_kv`, filters, progress notifications,
//! validation, and the `cancel_code` / `compact_revision` /
//! `resume_revision` of a refused or ended watch.

use std::time::Duration;

use d_engine_proto::v1 as pb;
use tonic::Code;

use super::tests::{error_info, Fixture};

async fn put(f: &Fixture, key: &str, value: &str) -> u64 {
    f.kv()
        .put(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revision
}

async fn delete(f: &Fixture, key: &str) -> u64 {
    f.kv()
        .delete(pb::DeleteRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision
}

async fn next(s: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a watch message within 10s")
        .expect("no stream error")
        .expect("the stream is open")
}

#[tokio::test]
async fn a_range_watch_with_prev_kv_and_no_delete_sees_exactly_its_puts() {
    let f = Fixture::start().await;
    put(&f, "b1", "old").await;
    let mut s = f
        .kv()
        .watch(pb::WatchRequest {
            key: "b".into(),
            range_end: "c".into(),
            prev_kv: true,
            filters: vec![pb::WatchFilter::NoDelete as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut s).await.created);
    let r1 = put(&f, "b1", "new").await; // overwrite: prev_kv = "old"
    put(&f, "a", "out of range").await;
    delete(&f, "b1").await; // filtered out
    put(&f, "c", "end is exclusive").await;
    let r2 = put(&f, "b2", "fresh").await; // new key: no prev_kv
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = next(&mut s).await;
        assert!(!m.canceled && !m.progress, "{m:?}");
        got.extend(m.events);
    }
    let summary: Vec<_> = got
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (
                e.r#type,
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
                e.prev_kv
                    .as_ref()
                    .map(|p| String::from_utf8_lossy(&p.value).into_owned()),
            )
        })
        .collect();
    let put_t = pb::EventType::Put as i32;
    assert_eq!(
        summary,
        vec![
            (put_t, "b1".into(), r1, Some("old".into())),
            (put_t, "b2".into(), r2, None),
        ]
    );
    f.shutdown().await;
}

#[tokio::test]
async fn bad_watch_requests_name_the_field() {
    let f = Fixture::start().await;
    let refuse = |req: pb::WatchRequest| {
        let mut kv = f.kv();
        async move { kv.watch(req).await.map(|_| ()).unwrap_err() }
    };
    let both = refuse(pb::WatchRequest {
        key: "a".into(),
        prefix: true,
        range_end: "b".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(both.code(), Code::InvalidArgument);
    assert_eq!(error_info(&both).1["field"], "range_end", "{both:?}");
    let empty = refuse(pb::WatchRequest {
        key: "b".into(),
        range_end: "a".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(error_info(&empty).1["field"], "range_end", "{empty:?}");
    let filter = refuse(pb::WatchRequest {
        key: "a".into(),
        filters: vec![9],
        ..Default::default()
    })
    .await;
    assert_eq!(filter.code(), Code::InvalidArgument);
    assert!(filter.message().contains("filters"), "{filter:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn an_idle_watch_with_progress_notify_learns_the_current_revision() {
    let f = Fixture::start_with(|c| c.watch.progress_interval_ms = 100).await;
    let rev = put(&f, "other", "x").await;
    let mut s = f
        .kv()
        .watch(pb::WatchRequest {
            key: "idle".into(),
            progress_notify: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut s).await.created);
    let m = next(&mut s).await;
    assert!(m.progress && m.events.is_empty() && !m.canceled, "{m:?}");
    assert!(m.header.unwrap().revision >= rev, "{m:?}");
    // A write elsewhere moves the next progress past it.
    let later = put(&f, "other", "y").await;
    let m = loop {
        let m = next(&mut s).await;
        if m.header.as_ref().unwrap().revision >= later {
            break m;
        }
    };
    assert!(m.progress, "{m:?}");
    // A watch that did not ask gets no progress messages.
    let mut quiet = f
        .kv()
        .watch(pb::WatchRequest {
            key: "idle".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut quiet).await.created);
    assert!(
        tokio::time::timeout(Duration::from_millis(400), quiet.message())
            .await
            .is_err(),
        "no progress without progress_notify"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn a_start_older_than_the_history_is_compacted_with_the_oldest_revision() {
    let f = Fixture::start_with(|c| c.watch.history = 2).await;
    let first = put(&f, "k", "1").await;
    for i in 2..=5 {
        put(&f, "k", &i.to_string()).await;
    }
    let e = f
        .kv()
        .watch(pb::WatchRequest {
            key: "k".into(),
            start_revision: first,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .unwrap_err();
    let (reason, meta) = error_info(&e);
    assert_eq!(reason, "COMPACTED");
    let oldest: u64 = meta["compact_revision"].parse().unwrap();
    assert!(oldest > first, "{meta:?}");
    assert_eq!(meta["resume_revision"], first.to_string());
    // The client side turns it into a typed cancel.
    match d_engine_api::Error::from(e) {
        d_engine_api::Error::WatchCanceled(c) => {
            assert_eq!(c.code, d_engine_api::ErrorCode::Compacted);
            assert_eq!(c.compact_revision, oldest);
        }
        other => panic!("{other:?}"),
    }
    // Watching from the oldest revision works.
    let mut s = f
        .kv()
        .watch(pb::WatchRequest {
            key: "k".into(),
            start_revision: oldest,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut s).await.created);
    let m = next(&mut s).await;
    assert_eq!(m.events[0].kv.as_ref().unwrap().mod_revision, oldest);
    f.shutdown().await;
}
