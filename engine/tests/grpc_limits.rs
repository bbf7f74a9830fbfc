//! Transport limits of the client API on a real node over 127.0.0.1:
//! `limits.max_request_bytes` bounds every message, and
//! `limits.max_concurrent_streams` bounds the calls and watches one
//! connection may have open; in both cases the node keeps serving.

mod common;

use std::time::Duration;

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// One HTTP/2 connection.
async fn connection(url: &str) -> KvClient<Channel> {
    let ch = Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    KvClient::new(ch).max_encoding_message_size(64 << 20)
}

async fn get(kv: &mut KvClient<Channel>, key: &[u8]) -> Result<Option<Vec<u8>>, tonic::Status> {
    Ok(kv
        .get(pb::GetRequest {
            key: key.to_vec(),
            consistency: 1,
        })
        .await?
        .into_inner()
        .kv
        .map(|kv| kv.value.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_request_bytes_is_refused_and_the_node_keeps_serving() {
    let (engine, url, _dir) = common::single_node(|c| {
        c.limits.max_value_bytes = 1024;
        c.limits.max_request_bytes = 16 * 1024;
    })
    .await;
    let mut kv = connection(&url).await;
    let err = kv
        .put(pb::PutRequest {
            key: b"big".to_vec(),
            value: vec![7; 64 * 1024],
            ..Default::default()
        })
        .await
        .expect_err("a 64 KiB message over a 16 KiB limit");
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{err:?}"
    );
    // Under the message limit but over the value limit: the field is named.
    let err = kv
        .put(pb::PutRequest {
            key: b"big".to_vec(),
            value: vec![7; 2048],
            ..Default::default()
        })
        .await
        .expect_err("a 2 KiB value over a 1 KiB limit");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("limits.max_value_bytes"),
        "{}",
        err.message()
    );
    let mut kv = connection(&url).await;
    kv.put(pb::PutRequest {
        key: b"small".to_vec(),
        value: b"ok".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(get(&mut kv, b"small").await.unwrap(), Some(b"ok".to_vec()));
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_max_concurrent_streams_wait_for_a_slot() {
    let (engine, url, _dir) = common::single_node(|c| c.limits.max_concurrent_streams = 2).await;
    let mut kv = connection(&url).await;
    // Two open watches take both streams of this connection.
    let mut watches = Vec::new();
    for key in [&b"w1"[..], b"w2"] {
        let mut s = kv
            .watch(pb::WatchRequest {
                key: key.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(s.message().await.unwrap().unwrap().created);
        watches.push(s);
    }
    // A third call on the same connection has to wait ...
    let mut blocked = kv.clone();
    let pending = tokio::spawn(async move { get(&mut blocked, b"w1").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !pending.is_finished(),
        "a third stream was admitted on a connection limited to 2"
    );
    // ... while another connection is served at once ...
    let mut other = connection(&url).await;
    tokio::time::timeout(Duration::from_secs(5), get(&mut other, b"w1"))
        .await
        .expect("a second connection has its own streams")
        .unwrap();
    // ... and the waiting call proceeds once a watch is closed.
    drop(watches.pop());
    let got = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the waiting call gets the freed slot")
        .unwrap();
    assert_eq!(got.unwrap(), None);
    engine.stop().await.unwrap();
}

/// Regression (found by `fuzz_requests`): replaying watch history whose
/// values add up to more than one message must split it across messages,
/// not fail the stream with "encoded message length too large".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_history_larger_than_one_message_arrives_in_several() {
    let (engine, url, _dir) = common::single_node(|_| {}).await;
    let mut kv = connection(&url).await;
    for i in 0..6u8 {
        kv.put(pb::PutRequest {
            key: vec![b'h', i],
            value: vec![i; 1 << 20],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut kv = kv.max_decoding_message_size(64 << 20);
    let mut s = kv
        .watch(pb::WatchRequest {
            key: b"h".to_vec(),
            prefix: true,
            start_revision: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut messages = 0;
    while seen.len() < 6 {
        let m = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("history within 10 s")
            .expect("the stream stays healthy")
            .expect("the stream stays open");
        assert!(!m.canceled, "{}", m.cancel_reason);
        messages += 1;
        for ev in m.events {
            let kv = ev.kv.unwrap();
            assert_eq!(kv.value.len(), 1 << 20);
            seen.push(kv.key.to_vec());
        }
    }
    let expect: Vec<Vec<u8>> = (0..6u8).map(|i| vec![b'h', i]).collect();
    assert_eq!(seen, expect, "every event once, in revision order");
    assert!(messages >= 3, "6 MiB of history in {messages} messages");
    engine.stop().await.unwrap();
}
