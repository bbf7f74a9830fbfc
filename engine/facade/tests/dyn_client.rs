//! `KvClient` behind one type chosen at run time: `DynKvClient` and
//! `Arc<dyn ErasedKvClient>` / `Box<dyn ErasedKvClient>` over both the
//! embedded client and the gRPC client of a real node (an embedded engine
//! serving its gRPC API on 127.0.0.1).

use std::sync::Arc;
use std::time::Duration;

// `ErasedKvClient` is named by its path, not imported: with both it and
// `KvClient` in scope, `client.put(..)` on a concrete client is ambiguous.
// Calls on `dyn ErasedKvClient` need no import.
type Erased = dyn d_engine::dyn_kv::ErasedKvClient;

use d_engine::{
    ClientBuilder, Config, Consistency, DynKvClient, EmbeddedEngine, KvClient, RangeOptions,
};

/// Business logic generic over `KvClient`; run below through `DynKvClient`.
async fn counter<C: KvClient>(kv: &C, key: &str) -> d_engine::Result<u64> {
    loop {
        let cur = kv.get(key).await?;
        let n: u64 = cur
            .as_ref()
            .map(|kv| String::from_utf8_lossy(&kv.value).parse().unwrap_or(0))
            .unwrap_or(0);
        let out = kv
            .compare_and_swap(
                key,
                cur.map(|kv| kv.value.to_vec()),
                Some((n + 1).to_string().into_bytes()),
            )
            .await?;
        if out.succeeded {
            return Ok(n + 1);
        }
    }
}

/// The same calls through the object-safe trait.
async fn through_dyn(kv: &Erased, prefix: &str) {
    let k = format!("{prefix}/a");
    let rev = kv.put(k.as_bytes(), b"1").await.expect("put");
    assert!(rev > 0);
    let got = kv.get(k.as_bytes()).await.expect("get").expect("present");
    assert_eq!(got.value, b"1"[..]);
    kv.put(format!("{prefix}/b").as_bytes(), b"2")
        .await
        .expect("put b");
    let all = kv
        .scan_prefix(
            format!("{prefix}/").as_bytes(),
            0,
            Consistency::Linearizable,
        )
        .await
        .expect("scan");
    assert_eq!(all.len(), 2);
    let page = kv
        .range(
            format!("{prefix}/").as_bytes(),
            RangeOptions::prefix().with_limit(1),
        )
        .await
        .expect("range");
    assert_eq!(page.kvs.len(), 1);
    assert!(page.more);
    let lease = kv
        .lease_grant(Duration::from_secs(30))
        .await
        .expect("lease");
    kv.put_with_lease(format!("{prefix}/leased").as_bytes(), b"x", lease.id)
        .await
        .expect("put_with_lease");
    assert_eq!(kv.lease_revoke(lease.id).await.expect("revoke"), 1);
    assert!(kv.delete(k.as_bytes()).await.expect("delete"));
    assert!(kv.get(k.as_bytes()).await.expect("get").is_none());
}

#[tokio::test]
async fn one_type_holds_the_embedded_and_the_grpc_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::single_node(dir.path());
    config.peer_addr = "127.0.0.1:0".into();
    config.client_addr = "127.0.0.1:0".into();
    let engine = EmbeddedEngine::start_with_config(config)
        .await
        .expect("start");
    engine
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("ready");
    let addr = engine.client_addr().expect("gRPC API served");
    let grpc = ClientBuilder::new(vec![format!("http://{addr}")])
        .build()
        .await
        .expect("connect");

    // A list of clients of different concrete types, as one type.
    let clients: Vec<(&str, DynKvClient)> = vec![
        ("embedded", DynKvClient::new(engine.client())),
        ("grpc", DynKvClient::new(grpc.kv())),
    ];
    for (i, (mode, kv)) in clients.iter().enumerate() {
        // Both write the same counter: the second sees the first's value.
        assert_eq!(counter(kv, "dyn/counter").await.expect(mode), i as u64 + 1);
        let mut w = kv.watch("dyn/watched", 0).await.expect("watch");
        kv.put("dyn/watched", mode).await.expect("put watched");
        let ev = tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event");
        assert_eq!(ev.kv.value, mode.as_bytes());
    }

    // The object-safe trait itself, boxed and shared.
    let boxed: Vec<Box<Erased>> = vec![Box::new(engine.client()), Box::new(grpc.kv())];
    for (i, kv) in boxed.iter().enumerate() {
        through_dyn(kv.as_ref(), &format!("boxed{i}")).await;
    }
    let shared: Arc<Erased> = Arc::new(grpc.kv());
    through_dyn(shared.as_ref(), "arc").await;
    let wrapped = DynKvClient::from_arc(shared);
    assert_eq!(
        wrapped
            .get("dyn/counter")
            .await
            .expect("get")
            .expect("present")
            .value,
        b"2"[..]
    );

    engine.stop().await.expect("stop");
}
