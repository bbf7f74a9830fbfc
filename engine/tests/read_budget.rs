//! Memory bounds of the read API (issue 16, finding 4) on a real node over
//! 127.0.0.1: GetMulti and ScanPrefix are built against the response byte
//! budget (`limits.max_request_bytes`) and stop copying at it, and GetMulti
//! refuses duplicate keys before reading anything.
//!
//! This binary installs a counting global allocator: every test measures
//! the bytes allocated (by the whole process: server and client) during the
//! one call it checks. The tests take a lock so that no other test of this
//! binary allocates during a measured window.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// Counts every byte handed out by `alloc` and every byte a `realloc`
/// grows by. Frees are not subtracted: the count is "bytes materialised".
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size.saturating_sub(layout.size()), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One measured window at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bytes allocated while `f` runs.
async fn allocated_during<T>(f: impl std::future::Future<Output = T>) -> (T, usize) {
    let before = ALLOCATED.load(Ordering::SeqCst);
    let out = f.await;
    (out, ALLOCATED.load(Ordering::SeqCst) - before)
}

const VALUE: usize = 64 << 10;
/// The response budget of these tests.
const MAX_REQUEST: usize = 1 << 20;
/// 400 values of 64 KiB: 25 MiB, 25 times the response budget.
const KEYS: usize = 400;
/// Allowed allocation for one refused or budget-cut call: a few times the
/// response budget (the response is encoded once and decoded once, plus
/// transport buffers), far below the 25 MiB the keys hold.
const BOUND: usize = 6 * MAX_REQUEST;

async fn connect(url: &str) -> KvClient<Channel> {
    let ch = Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    KvClient::new(ch).max_decoding_message_size(64 << 20)
}

fn key(i: usize) -> Vec<u8> {
    format!("big/{i:04}").into_bytes()
}

/// A node whose responses are bounded by 1 MiB, holding `n` keys of 64 KiB.
async fn node_with(n: usize) -> (d_engine_node::EmbeddedEngine, String, tempfile::TempDir) {
    let (engine, url, dir) = common::single_node(|c| {
        c.limits.max_value_bytes = VALUE;
        c.limits.max_request_bytes = MAX_REQUEST;
    })
    .await;
    let client = engine.client();
    let mut writes = Vec::new();
    for i in 0..n {
        let c = client.clone();
        writes.push(tokio::spawn(async move {
            c.put(key(i), vec![i as u8; VALUE]).await.unwrap();
        }));
    }
    for w in writes {
        w.await.unwrap();
    }
    (engine, url, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_multi_refuses_duplicate_keys_naming_the_key_before_reading_any() {
    let _serial = SERIAL.lock().await;
    let (engine, url, _dir) = node_with(1).await;
    let mut kv = connect(&url).await;
    // 1,000 copies of one 64 KiB key: 64 MiB if each were copied.
    let req = pb::GetMultiRequest {
        keys: vec![key(0); 1000],
        consistency: pb::Consistency::Linearizable as i32,
    };
    let (res, bytes) = allocated_during(kv.get_multi(req)).await;
    let err = res.expect_err("duplicate keys are refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("keys[1]")
            && err.message().contains("keys[0]")
            && err.message().contains("big/0000"),
        "the error names the duplicated key and where: {}",
        err.message()
    );
    assert!(
        bytes < BOUND,
        "refusing the duplicates allocated {bytes} bytes (bound {BOUND})"
    );
    // One copy of each key is still answered.
    let ok = kv
        .get_multi(pb::GetMultiRequest {
            keys: vec![key(0), b"absent".to_vec()],
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.results.len(), 2);
    assert_eq!(ok.results[0].kv.as_ref().unwrap().value.len(), VALUE);
    assert!(ok.results[1].kv.is_none());
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_multi_over_the_response_budget_stops_copying_at_the_budget() {
    let _serial = SERIAL.lock().await;
    let (engine, url, _dir) = node_with(KEYS).await;
    let mut kv = connect(&url).await;
    let req = pb::GetMultiRequest {
        keys: (0..KEYS).map(key).collect(),
        consistency: pb::Consistency::Linearizable as i32,
    };
    let (res, bytes) = allocated_during(kv.get_multi(req)).await;
    let err = res.expect_err("25 MiB cannot be one 1 MiB response");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("limits.max_request_bytes"),
        "{}",
        err.message()
    );
    assert!(
        bytes < BOUND,
        "a refused GetMulti allocated {bytes} bytes (bound {BOUND}); the keys hold {} bytes",
        KEYS * VALUE
    );
    // Within the budget it is answered.
    let ok = kv
        .get_multi(pb::GetMultiRequest {
            keys: (0..8).map(key).collect(),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.results.len(), 8);
    assert!(ok.results.iter().all(|r| r.kv.is_some()));
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_prefix_stops_copying_at_the_response_budget_and_sets_more() {
    let _serial = SERIAL.lock().await;
    let (engine, url, _dir) = node_with(KEYS).await;
    let mut kv = connect(&url).await;
    let req = pb::ScanPrefixRequest {
        prefix: b"big/".to_vec(),
        limit: 0,
        consistency: pb::Consistency::Linearizable as i32,
    };
    let (res, bytes) = allocated_during(kv.scan_prefix(req)).await;
    let page = res.unwrap().into_inner();
    assert!(page.more, "a page cut at the budget says there is more");
    assert!(!page.kvs.is_empty());
    let total: usize = page.kvs.iter().map(|kv| kv.value.len()).sum();
    assert!(total <= MAX_REQUEST, "{total} bytes in one page");
    assert!(
        bytes < BOUND,
        "one budget-cut scan page allocated {bytes} bytes (bound {BOUND}); the prefix holds \
         {} bytes",
        KEYS * VALUE
    );
    // The page is a key-ordered prefix of the matching keys.
    for (i, got) in page.kvs.iter().enumerate() {
        assert_eq!(&got.key[..], &key(i)[..]);
        assert_eq!(got.value.len(), VALUE);
    }
    // A limit within the budget is answered whole.
    let small = kv
        .scan_prefix(pb::ScanPrefixRequest {
            prefix: b"big/".to_vec(),
            limit: 4,
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(small.kvs.len(), 4);
    assert!(small.more);
    engine.stop().await.unwrap();
}
