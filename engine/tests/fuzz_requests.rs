//! Fuzzing request validation through the real client API: a single node
//! serving gRPC on 127.0.0.1 receives generated requests whose sizes cluster
//! around every limit (empty keys, keys and values one byte either side of
//! their maximum, unknown consistency values, oversized TTLs, bad write ids,
//! long key lists).
//!
//! Contract checked for every request: it succeeds exactly when every field
//! is within its documented limit; otherwise it fails with INVALID_ARGUMENT
//! whose `ErrorInfo` names the offending field. Never INTERNAL, UNKNOWN or a
//! dropped connection, and an accepted write is readable afterwards. After
//! the run the node still serves ordinary traffic.
//!
//! Set `PROPTEST_CASES` for a longer run.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use d_engine_node::service::validate::MAX_TTL_MS;
use d_engine_node::EmbeddedEngine;
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::kv_client::KvClient;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tokio::runtime::Runtime;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

const MAX_KEY: usize = 4096;
const MAX_VALUE: usize = 1 << 20;
const MAX_MULTI: usize = 1000;

struct Node {
    rt: Runtime,
    kv: KvClient<Channel>,
    _engine: EmbeddedEngine,
    _dir: tempfile::TempDir,
}

/// One node for the whole file, started on first use.
fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (engine, kv, dir) = rt.block_on(async {
            let (engine, url, dir) = common::single_node(|_| {}).await;
            let kv = KvClient::connect(url)
                .await
                .unwrap()
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            (engine, kv, dir)
        });
        Node {
            rt,
            kv,
            _engine: engine,
            _dir: dir,
        }
    })
}

fn sized(limit: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 1..16),
        1 => Just(Vec::new()),
        2 => (limit - 1..=limit + 1).prop_map(|n| vec![b'k'; n]),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => (MAX_VALUE - 1..=MAX_VALUE + 1).prop_map(|n| vec![b'v'; n]),
    ]
}

fn ttl() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        1u64..100_000,
        Just(MAX_TTL_MS),
        Just(MAX_TTL_MS + 1),
        Just(u64::MAX)
    ]
}

fn consistency() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0i32..=3, 1 => any::<i32>()]
}

/// `(client_id is fresh per case, seq)`; seq 0 with a client id is invalid.
fn write_id() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(0u64..3)
}

static CLIENT_IDS: AtomicU64 = AtomicU64::new(1_000_000);

fn wid(seq: Option<u64>) -> Option<pb::WriteId> {
    seq.map(|seq| pb::WriteId {
        client_id: CLIENT_IDS.fetch_add(1, Ordering::Relaxed),
        seq,
    })
}

#[derive(Debug, Clone)]
enum Req {
    Put(Vec<u8>, Vec<u8>, u64, Option<u64>),
    Get(Vec<u8>, i32),
    GetMulti(Vec<Vec<u8>>, i32),
    Delete(Vec<u8>, Option<u64>),
    Cas(Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>, u64),
    Scan(Vec<u8>, u32, i32),
    Watch(Vec<u8>, bool, u64),
}

fn request() -> impl Strategy<Value = Req> {
    let multi = prop_oneof![
        4 => proptest::collection::vec(sized(MAX_KEY), 0..6),
        1 => (MAX_MULTI..=MAX_MULTI + 1).prop_map(|n| (0..n).map(|i| format!("m{i}").into_bytes()).collect()),
    ];
    prop_oneof![
        (sized(MAX_KEY), value(), ttl(), write_id()).prop_map(|(k, v, t, w)| Req::Put(k, v, t, w)),
        (sized(MAX_KEY), consistency()).prop_map(|(k, c)| Req::Get(k, c)),
        (multi, consistency()).prop_map(|(ks, c)| Req::GetMulti(ks, c)),
        (sized(MAX_KEY), write_id()).prop_map(|(k, w)| Req::Delete(k, w)),
        (
            sized(MAX_KEY),
            proptest::option::of(value()),
            proptest::option::of(value()),
            ttl()
        )
            .prop_map(|(k, e, n, t)| Req::Cas(k, e, n, t)),
        (sized(MAX_KEY), any::<u32>(), consistency()).prop_map(|(p, l, c)| Req::Scan(p, l, c)),
        (sized(MAX_KEY), any::<bool>(), 0u64..1000).prop_map(|(k, p, r)| Req::Watch(k, p, r)),
    ]
}

fn key_ok(k: &[u8]) -> bool {
    (1..=MAX_KEY).contains(&k.len())
}

fn value_ok(v: &[u8]) -> bool {
    v.len() <= MAX_VALUE
}

fn ttl_ok(t: u64) -> bool {
    t <= MAX_TTL_MS
}

fn wid_ok(w: Option<u64>) -> bool {
    w != Some(0)
}

fn consistency_ok(c: i32) -> bool {
    (0..=3).contains(&c)
}

/// Whether every field of `r` is within its limit.
fn valid(r: &Req) -> bool {
    match r {
        Req::Put(k, v, t, w) => key_ok(k) && value_ok(v) && ttl_ok(*t) && wid_ok(*w),
        Req::Get(k, c) => key_ok(k) && consistency_ok(*c),
        Req::GetMulti(ks, c) => {
            ks.len() <= MAX_MULTI
                && ks.iter().all(|k| key_ok(k))
                && consistency_ok(*c)
                // Each key at most once (a repeated key is refused).
                && ks.iter().collect::<std::collections::HashSet<_>>().len() == ks.len()
        }
        Req::Delete(k, w) => key_ok(k) && wid_ok(*w),
        Req::Cas(k, e, n, t) => {
            key_ok(k)
                && e.as_deref().is_none_or(value_ok)
                && n.as_deref().is_none_or(value_ok)
                && ttl_ok(*t)
        }
        Req::Scan(p, _, c) => p.len() <= MAX_KEY && consistency_ok(*c),
        Req::Watch(k, prefix, _) => {
            if *prefix {
                k.len() <= MAX_KEY
            } else {
                key_ok(k)
            }
        }
    }
}

/// Sends `r`; `Ok(())` on success, the status otherwise. A successful put
/// is read back.
async fn send(mut kv: KvClient<Channel>, r: Req) -> Result<(), tonic::Status> {
    match r {
        Req::Put(key, value, ttl_ms, w) => {
            kv.put(pb::PutRequest {
                key: key.clone(),
                value: value.clone(),
                ttl_ms,
                write_id: wid(w),
                lease: 0,
            })
            .await?;
            let got = kv
                .get(pb::GetRequest {
                    key: key.clone(),
                    consistency: 1,
                })
                .await?
                .into_inner();
            assert_eq!(
                got.kv.map(|kv| kv.value.to_vec()),
                Some(value),
                "an accepted put is readable"
            );
        }
        Req::Get(key, consistency) => {
            kv.get(pb::GetRequest { key, consistency }).await?;
        }
        Req::GetMulti(keys, consistency) => {
            let n = keys.len();
            let got = kv
                .get_multi(pb::GetMultiRequest { keys, consistency })
                .await?;
            assert_eq!(got.into_inner().results.len(), n, "one result per key");
        }
        Req::Delete(key, w) => {
            kv.delete(pb::DeleteRequest {
                key,
                write_id: wid(w),
            })
            .await?;
        }
        Req::Cas(key, expected_value, new_value, ttl_ms) => {
            kv.compare_and_swap(pb::CompareAndSwapRequest {
                key,
                expected_value,
                new_value,
                ttl_ms,
                write_id: None,
            })
            .await?;
        }
        Req::Scan(prefix, limit, consistency) => {
            kv.scan_prefix(pb::ScanPrefixRequest {
                prefix,
                limit,
                consistency,
            })
            .await?;
        }
        Req::Watch(key, prefix, start_revision) => {
            let mut s = kv
                .watch(pb::WatchRequest {
                    key,
                    prefix,
                    start_revision,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let first = s.message().await?.expect("a created message");
            assert!(first.created || first.canceled, "{first:?}");
            // Whatever history the watch replays must arrive intact.
            while let Ok(next) = tokio::time::timeout(Duration::from_millis(20), s.message()).await
            {
                if next?.is_none() {
                    break;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn requests_succeed_exactly_when_within_limits_and_the_node_keeps_serving() {
    let n = node();
    let mut runner = TestRunner::new(ProptestConfig::with_cases(common::cases(300)));
    let result = runner.run(&request(), |r| {
        let expect_ok = valid(&r);
        match n.rt.block_on(send(n.kv.clone(), r.clone())) {
            Ok(()) => prop_assert!(expect_ok, "accepted an invalid request: {}", short(&r)),
            Err(s) => {
                prop_assert!(
                    !expect_ok,
                    "refused a valid request {}: {:?} {}",
                    short(&r),
                    s.code(),
                    s.message()
                );
                prop_assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
                let info = s.get_details_error_info();
                prop_assert!(
                    info.as_ref()
                        .is_some_and(|i| i.metadata.contains_key("field")),
                    "INVALID_ARGUMENT without a field: {}",
                    s.message()
                );
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    n.rt.block_on(async {
        let mut kv = n.kv.clone();
        kv.put(pb::PutRequest {
            key: b"after-fuzz".to_vec(),
            value: b"ok".to_vec(),
            ..Default::default()
        })
        .await
        .expect("the node serves after the fuzz run");
        let got = kv
            .get(pb::GetRequest {
                key: b"after-fuzz".to_vec(),
                consistency: 1,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.kv.unwrap().value, &b"ok"[..]);
    });
}

/// A request with big fields replaced by their lengths, for failure output.
fn short(r: &Req) -> String {
    let l = |b: &[u8]| format!("<{} bytes>", b.len());
    match r {
        Req::Put(k, v, t, w) => format!("Put({}, {}, ttl {t}, seq {w:?})", l(k), l(v)),
        Req::Get(k, c) => format!("Get({}, {c})", l(k)),
        Req::GetMulti(ks, c) => format!("GetMulti({} keys, {c})", ks.len()),
        Req::Delete(k, w) => format!("Delete({}, {w:?})", l(k)),
        Req::Cas(k, e, n, t) => format!(
            "Cas({}, {:?}, {:?}, {t})",
            l(k),
            e.as_deref().map(l),
            n.as_deref().map(l)
        ),
        Req::Scan(p, lim, c) => format!("Scan({}, {lim}, {c})", l(p)),
        Req::Watch(k, p, r) => format!("Watch({}, prefix {p}, from {r})", l(k)),
    }
}
