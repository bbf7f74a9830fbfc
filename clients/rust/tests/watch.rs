//! Watch streams: the `created` handshake, event delivery, server
//! cancellation as a final error, resumption after a broken stream.

mod common;

use std::time::Duration;

use common::{put_event, MockNode, Scripted};
use d_engine_client::{status_codec, ClientBuilder, Error, ErrorCode, EventType, WatchStream};
use d_engine_proto::v1 as pb;
use tonic::Status;

async fn client_for(node: &MockNode) -> d_engine_client::Client {
    ClientBuilder::new(vec![node.url()])
        .request_timeout(Duration::from_secs(5))
        .attempt_timeout(Duration::from_millis(500))
        .backoff(Duration::from_millis(5), Duration::from_millis(40))
        .build()
        .await
        .unwrap()
}

async fn next(w: &mut WatchStream) -> Option<d_engine_client::Result<d_engine_client::WatchEvent>> {
    tokio::time::timeout(Duration::from_secs(5), w.recv())
        .await
        .expect("watch produced nothing within 5s")
}

#[tokio::test]
async fn events_then_server_cancel_is_a_final_error() {
    let b = MockNode::spawn(2).await;
    b.lead();
    b.st().revision = 4;
    let client = client_for(&b).await;
    let mut w = client.kv().watch_prefix(b"app/", 0).await.unwrap();
    {
        let s = b.st();
        assert_eq!(s.watch_requests.len(), 1);
        assert!(s.watch_requests[0].prefix);
        assert_eq!(s.watch_requests[0].key, b"app/"[..]);
    }
    b.feed(0, Ok(put_event(b"app/a", b"1", 5))).await;
    let mut two = put_event(b"app/b", b"2", 6);
    two.events.push(pb::WatchEvent {
        r#type: pb::EventType::Delete as i32,
        kv: Some(pb::KeyValue {
            key: b"app/a".to_vec().into(),
            mod_revision: 7,
            ..Default::default()
        }),
        prev_kv: None,
    });
    b.feed(0, Ok(two)).await;
    let e = next(&mut w).await.unwrap().unwrap();
    assert_eq!(
        (e.kind, &e.kv.key[..], e.kv.mod_revision),
        (EventType::Put, &b"app/a"[..], 5)
    );
    let e = next(&mut w).await.unwrap().unwrap();
    assert_eq!(e.kv.mod_revision, 6);
    let e = next(&mut w).await.unwrap().unwrap();
    assert_eq!((e.kind, e.kv.mod_revision), (EventType::Delete, 7));

    b.feed(
        0,
        Ok(pb::WatchResponse {
            canceled: true,
            cancel_reason: "OVERLOADED: watcher 1024 events behind".into(),
            ..Default::default()
        }),
    )
    .await;
    let err = next(&mut w).await.unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Overloaded);
    assert!(err.to_string().contains("1024 events behind"), "{err}");
    assert!(next(&mut w).await.is_none(), "stream ends after the error");
    assert_eq!(b.st().watch_requests.len(), 1, "a cancel is not resumed");
}

#[tokio::test]
async fn a_broken_stream_resumes_after_the_last_event() {
    let b = MockNode::spawn(2).await;
    b.lead();
    b.st().revision = 10;
    let client = client_for(&b).await;
    let mut w = client.kv().watch(b"k", 0).await.unwrap();
    b.feed(0, Ok(put_event(b"k", b"1", 11))).await;
    assert_eq!(next(&mut w).await.unwrap().unwrap().kv.mod_revision, 11);
    b.feed(0, Err(Status::unavailable("node restarting"))).await;
    // The client re-opens from revision 12.
    for _ in 0..100 {
        if b.st().watch_requests.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let req = b.st().watch_requests[1].clone();
    assert_eq!(
        (req.key.as_slice(), req.prefix, req.start_revision),
        (&b"k"[..], false, 12)
    );
    // A replayed old event is dropped; new ones flow.
    b.feed(1, Ok(put_event(b"k", b"1", 11))).await;
    b.feed(1, Ok(put_event(b"k", b"2", 12))).await;
    let e = next(&mut w).await.unwrap().unwrap();
    assert_eq!((e.kv.mod_revision, &e.kv.value[..]), (12, &b"2"[..]));
}

#[tokio::test]
async fn a_watch_without_events_resumes_after_the_created_revision() {
    let b = MockNode::spawn(2).await;
    b.lead();
    b.st().revision = 41;
    let client = client_for(&b).await;
    let _w = client.kv().watch(b"k", 0).await.unwrap();
    b.feed(0, Err(Status::unavailable("reset"))).await;
    for _ in 0..100 {
        if b.st().watch_requests.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.st().watch_requests[1].start_revision, 42);
}

#[tokio::test]
async fn open_errors_and_non_resumable_breaks_are_reported() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = client_for(&b).await;
    b.script([Scripted::Fail(status_codec::to_status(&Error::Compacted(
        "revision 3 compacted; oldest is 90".into(),
    )))]);
    let e = client.kv().watch(b"k", 3).await.unwrap_err();
    assert_eq!(
        e,
        Error::Compacted("revision 3 compacted; oldest is 90".into())
    );
    assert!(client
        .kv()
        .watch(b"", 0)
        .await
        .unwrap_err()
        .to_string()
        .contains("key is empty"));

    let mut w = client.kv().watch(b"k", 0).await.unwrap();
    b.feed(
        0,
        Err(status_codec::to_status(&Error::PermissionDenied(
            "revoked".into(),
        ))),
    )
    .await;
    assert_eq!(
        next(&mut w).await.unwrap().unwrap_err(),
        Error::PermissionDenied("revoked".into())
    );
    assert!(next(&mut w).await.is_none());
}

#[tokio::test]
async fn watch_follows_not_leader_and_dropping_ends_the_server_stream() {
    let a = MockNode::spawn(1).await;
    let b = MockNode::spawn(2).await;
    b.lead();
    a.st().leader = Some((1, a.addr.clone()));
    let client = client_for(&a).await;
    a.follow(Some(&b));
    let w = client.kv().watch(b"k", 0).await.unwrap();
    assert_eq!(a.calls("watch").len(), 1);
    assert_eq!(b.st().watch_requests.len(), 1);
    let feed = b.st().watch_feeds[0].clone();
    assert!(!feed.is_closed());
    drop(w);
    for _ in 0..100 {
        if feed.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        feed.is_closed(),
        "dropping the WatchStream cancels the server stream"
    );
}

#[tokio::test]
async fn resume_can_be_disabled() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = ClientBuilder::new(vec![b.url()])
        .watch_resume(false)
        .build()
        .await
        .unwrap();
    let mut w = client.kv().watch(b"k", 0).await.unwrap();
    b.feed(0, Err(Status::unavailable("gone"))).await;
    let e = next(&mut w).await.unwrap().unwrap_err();
    assert_eq!(e, Error::Unavailable("gone".into()));
    assert!(next(&mut w).await.is_none());
}

#[tokio::test]
async fn a_shutting_down_node_hands_the_watch_to_the_next_leader() {
    let a = MockNode::spawn(1).await;
    let b = MockNode::spawn(2).await;
    a.lead();
    b.follow(Some(&a));
    a.st().revision = 20;
    let client = ClientBuilder::new(vec![a.url(), b.url()])
        .backoff(Duration::from_millis(5), Duration::from_millis(40))
        .build()
        .await
        .unwrap();
    let mut w = client.kv().watch(b"k", 0).await.unwrap();
    a.feed(0, Ok(put_event(b"k", b"1", 21))).await;
    assert_eq!(next(&mut w).await.unwrap().unwrap().kv.mod_revision, 21);
    // A leaves gracefully; B takes over.
    b.lead();
    a.follow(Some(&b));
    a.feed(
        0,
        Ok(pb::WatchResponse {
            canceled: true,
            cancel_reason: "SHUTTING_DOWN: the server is shutting down; reconnect to another node"
                .into(),
            ..Default::default()
        }),
    )
    .await;
    for _ in 0..100 {
        if b.st().watch_requests.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.st().watch_requests[0].start_revision, 22);
    b.feed(0, Ok(put_event(b"k", b"2", 22))).await;
    let e = next(&mut w).await.unwrap().unwrap();
    assert_eq!((e.kv.mod_revision, &e.kv.value[..]), (22, &b"2"[..]));
}

/// Waits until `node` has received `n` watch requests.
async fn wait_requests(node: &MockNode, n: usize) {
    for _ in 0..250 {
        if node.st().watch_requests.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{n} watch requests never arrived");
}

#[tokio::test]
async fn the_cancel_code_decides_not_the_reason_text() {
    let b = MockNode::spawn(2).await;
    b.lead();
    b.st().revision = 10;
    let client = client_for(&b).await;
    let mut w = client.kv().watch(b"k", 0).await.unwrap();
    // Text that reads like a shutdown, code that says slow consumer.
    b.feed(
        0,
        Ok(pb::WatchResponse {
            canceled: true,
            cancel_code: pb::ErrorCode::Overloaded as i32,
            cancel_reason: "the server is shutting down".into(),
            resume_revision: 11,
            ..Default::default()
        }),
    )
    .await;
    let err = next(&mut w).await.unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Overloaded, "{err:?}");
    assert_eq!(err.resume_revision(), Some(11));
    assert!(next(&mut w).await.is_none());
    assert_eq!(
        b.st().watch_requests.len(),
        1,
        "a slow-consumer cancel is not resumed"
    );
}

#[tokio::test]
async fn a_compacted_cancel_carries_the_oldest_revision() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = client_for(&b).await;
    let mut w = client.kv().watch(b"k", 5).await.unwrap();
    b.feed(
        0,
        Ok(pb::WatchResponse {
            canceled: true,
            cancel_code: pb::ErrorCode::Compacted as i32,
            cancel_reason: "COMPACTED: snapshot installed".into(),
            compact_revision: 90,
            resume_revision: 5,
            ..Default::default()
        }),
    )
    .await;
    match next(&mut w).await.unwrap().unwrap_err() {
        Error::WatchCanceled(c) => {
            assert_eq!(
                (c.code, c.compact_revision, c.resume_revision),
                (ErrorCode::Compacted, 90, 5)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_shutdown_cancel_resumes_from_the_servers_resume_revision_and_progress_flows() {
    let b = MockNode::spawn(2).await;
    b.lead();
    b.st().revision = 10;
    let client = client_for(&b).await;
    let mut w = client.kv().watch(b"k", 0).await.unwrap();
    b.feed(0, Ok(put_event(b"k", b"1", 11))).await;
    assert_eq!(next(&mut w).await.unwrap().unwrap().kv.mod_revision, 11);
    // A progress notification reaches the caller.
    b.feed(
        0,
        Ok(pb::WatchResponse {
            header: Some(pb::ResponseHeader {
                revision: 15,
                ..Default::default()
            }),
            progress: true,
            ..Default::default()
        }),
    )
    .await;
    let p = next(&mut w).await.unwrap().unwrap();
    assert_eq!((p.kind, p.revision()), (EventType::Progress, 15));
    // The node leaves: its cancel says everything up to 19 was covered.
    b.feed(
        0,
        Ok(pb::WatchResponse {
            canceled: true,
            cancel_code: pb::ErrorCode::ShuttingDown as i32,
            cancel_reason: "bye".into(),
            resume_revision: 20,
            ..Default::default()
        }),
    )
    .await;
    wait_requests(&b, 2).await;
    assert_eq!(b.st().watch_requests[1].start_revision, 20);
    b.feed(1, Ok(put_event(b"k", b"2", 20))).await;
    assert_eq!(next(&mut w).await.unwrap().unwrap().kv.mod_revision, 20);
}

#[tokio::test]
async fn watch_options_travel_on_the_request() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = client_for(&b).await;
    let _w = client
        .kv()
        .watch_with(
            b"a",
            d_engine_client::WatchOptions::key()
                .with_end(d_engine_client::RangeEnd::Before(b"c".to_vec()))
                .with_prev_kv()
                .with_progress_notify()
                .with_no_delete()
                .with_start_revision(7),
        )
        .await
        .unwrap();
    let req = b.st().watch_requests[0].clone();
    assert_eq!(
        (
            req.range_end.as_slice(),
            req.prefix,
            req.prev_kv,
            req.progress_notify,
            req.filters.clone(),
            req.start_revision
        ),
        (
            &b"c"[..],
            false,
            true,
            true,
            vec![pb::WatchFilter::NoDelete as i32],
            7
        )
    );
    // A range that ends before it starts never leaves the client.
    let err = client
        .kv()
        .watch_with(
            b"c",
            d_engine_client::WatchOptions::key()
                .with_end(d_engine_client::RangeEnd::Before(b"a".to_vec())),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}

/// `Client::close` (on a clone): the open watch yields its event, then one
/// `ClientClosed` with its resume revision, then ends; every later call on any clone fails
/// at once with `ClientClosed` without reaching the server.
#[tokio::test]
async fn close_ends_watches_and_refuses_later_calls() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = client_for(&b).await;
    let other = client.clone();
    let mut w = client.kv().watch_prefix(b"c/", 0).await.unwrap();
    b.feed(0, Ok(put_event(b"c/1", b"1", 5))).await;
    let e = next(&mut w).await.unwrap().unwrap();
    assert_eq!(e.kv.mod_revision, 5);
    assert!(!client.is_closed());

    other.close();
    other.close(); // idempotent
    assert!(client.is_closed(), "clones share the closed state");
    let err = next(&mut w).await.unwrap().unwrap_err();
    assert_eq!(
        err,
        Error::ClientClosed { resume_revision: 6 },
        "carries one past the last delivered event"
    );
    assert_eq!(err.code(), ErrorCode::ClientClosed);
    assert_eq!(err.resume_revision(), Some(6));
    assert!(!err.is_retryable());
    assert!(
        next(&mut w).await.is_none(),
        "the watch ends after ClientClosed"
    );

    let puts_before = b.calls("put").len();
    let started = std::time::Instant::now();
    let err = client
        .kv()
        .put(b"c/2".to_vec(), b"2".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err, Error::CLIENT_CLOSED);
    let err = other.kv().get(b"c/1".to_vec()).await.unwrap_err();
    assert_eq!(err, Error::CLIENT_CLOSED);
    let err = client.kv().watch_prefix(b"c/", 0).await.unwrap_err();
    assert_eq!(err, Error::CLIENT_CLOSED);
    assert_eq!(
        client.cluster_changes().await.unwrap_err(),
        Error::CLIENT_CLOSED
    );
    assert_eq!(
        client.refresh_leader().await.unwrap_err(),
        Error::CLIENT_CLOSED
    );
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "refused at once, not retried: {:?}",
        started.elapsed()
    );
    assert_eq!(
        b.calls("put").len(),
        puts_before,
        "nothing reached the server"
    );
}
