//! Leader discovery, NotLeader redirects, retries, exactly-once write ids
//! and validation, against scripted in-process nodes on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::{dead_addr, MockNode, Scripted};
use d_engine_client::{
    status_codec, Client, ClientBuilder, Consistency, Error, ErrorCode, KvClient, RangeOptions,
};
use tonic::Status;

/// Small timeouts so failure paths finish quickly.
fn fast(endpoints: Vec<String>) -> ClientBuilder {
    ClientBuilder::new(endpoints)
        .request_timeout(Duration::from_secs(5))
        .attempt_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .backoff(Duration::from_millis(5), Duration::from_millis(40))
}

fn st(e: Error) -> Scripted {
    Scripted::Fail(status_codec::to_status(&e))
}

#[tokio::test]
async fn seed_snippet_works_with_and_without_scheme() {
    let a = MockNode::spawn(1).await;
    a.lead();
    let client = ClientBuilder::new(vec![a.url()]).build().await.unwrap();
    client
        .kv()
        .put(b"key".to_vec(), b"value".to_vec())
        .await
        .unwrap();
    let kv = client.kv().get(b"key").await.unwrap().unwrap();
    assert_eq!(kv.value, b"value"[..]);
    assert_eq!(kv.mod_revision, 1);

    let bare = ClientBuilder::new(vec![a.addr.clone()])
        .build()
        .await
        .unwrap();
    assert_eq!(bare.endpoints(), [a.url()]);
    let kv = bare.kv().get(b"key").await.unwrap().unwrap();
    assert_eq!(kv.value, b"value"[..]);
    assert_eq!(bare.cached_leader(), Some(a.url()));
}

#[tokio::test]
async fn not_leader_hint_redirects_to_the_leader() {
    let a = MockNode::spawn(1).await;
    let b = MockNode::spawn(2).await;
    b.lead();
    // A wrongly believes it leads (so discovery picks it) but its Kv
    // answers NotLeader pointing at B (scheme-less hint).
    a.st().leader = Some((1, a.addr.clone()));
    let client = fast(vec![a.url()]).build().await.unwrap();
    assert_eq!(client.cached_leader(), Some(a.url()));
    a.st().leader = Some((2, b.addr.clone()));

    let rev = client.kv().put(b"k", b"v").await.unwrap();
    assert_eq!(rev, 1);
    let at_a = a.calls("put");
    let at_b = b.calls("put");
    assert_eq!(at_a.len(), 1);
    assert_eq!(at_b.len(), 1);
    assert_eq!(
        at_a[0].write_id, at_b[0].write_id,
        "same WriteId after redirect"
    );
    assert_eq!(client.cached_leader(), Some(b.url()));

    // The next write goes straight to the leader.
    client.kv().put(b"k2", b"v").await.unwrap();
    assert_eq!(a.calls("put").len(), 1);
    assert_eq!(b.calls("put").len(), 2);
    assert!(b.st().store.contains_key(b"k2".as_slice()));
    assert!(a.st().store.is_empty());
}

#[tokio::test]
async fn retries_reuse_the_write_id_and_later_writes_increase_seq() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = fast(vec![b.url()]).build().await.unwrap();
    b.script([
        Scripted::Fail(Status::unavailable("connection reset")),
        st(Error::Overloaded("queue full".into())),
        st(Error::NoLeader("election".into())),
        st(Error::ChangeInProgress("joint".into())),
    ]);
    // NoLeader made the client forget B; discovery (B reports itself) finds it again.
    let rev = client.kv().put(b"k", b"v").await.unwrap();
    assert_eq!(rev, 1);
    let calls = b.calls("put");
    assert_eq!(calls.len(), 5);
    let id = calls[0].write_id.expect("writes carry a WriteId");
    assert!(calls.iter().all(|c| c.write_id == Some(id)), "{calls:?}");
    assert_ne!(id.client_id, 0);
    assert!(client.client_ids().contains(&id.client_id));

    // Every write of one session gets the next seq.
    let mut last: std::collections::HashMap<u64, u64> = [(id.client_id, id.seq)].into();
    for i in 0..12u32 {
        client.kv().delete(format!("d{i}")).await.unwrap();
        let w = b.calls("delete").last().unwrap().write_id.unwrap();
        if let Some(prev) = last.insert(w.client_id, w.seq) {
            assert_eq!(w.seq, prev + 1);
        }
    }
}

#[tokio::test]
async fn a_lost_reply_is_retried_and_applied_once() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = fast(vec![b.url()])
        .attempt_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    // The first attempt is applied but its reply comes after the attempt
    // timeout; the retry carries the same WriteId and gets the same revision.
    b.script([Scripted::ApplyThenDelay(Duration::from_millis(600))]);
    let rev = client.kv().put(b"k", b"v").await.unwrap();
    assert_eq!(rev, 1, "the retry returns the original result");
    let calls = b.calls("put");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].write_id, calls[1].write_id);
    assert_eq!(b.st().revision, 1, "applied exactly once");
}

#[tokio::test]
async fn non_retryable_errors_return_at_once() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = fast(vec![b.url()]).build().await.unwrap();
    for e in [
        Error::InvalidArgument("value too large".into()),
        Error::PermissionDenied("read only".into()),
        Error::Storage("disk full".into()),
        Error::Compacted("gone".into()),
    ] {
        b.st().calls.clear();
        b.script([st(e.clone())]);
        let got = client.kv().put(b"k", b"v").await.unwrap_err();
        assert_eq!(got, e);
        assert_eq!(b.calls("put").len(), 1, "{e:?} not retried");
    }
    // A bare gRPC failure without d-engine details is classified by code.
    b.st().calls.clear();
    b.script([Scripted::Fail(Status::unimplemented("no such method"))]);
    let got = client.kv().get(b"k").await.unwrap_err();
    assert_eq!(got.code(), ErrorCode::Internal);
    assert_eq!(b.calls("get").len(), 1);
}

#[tokio::test]
async fn attempts_are_bounded_by_max_attempts() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = fast(vec![b.url()]).max_attempts(3).build().await.unwrap();
    b.script((0..10).map(|_| st(Error::Overloaded("busy".into()))));
    let got = client.kv().put(b"k", b"v").await.unwrap_err();
    assert_eq!(got, Error::Overloaded("busy".into()));
    assert_eq!(b.calls("put").len(), 3);
}

#[tokio::test]
async fn no_leader_anywhere_ends_at_the_request_timeout() {
    let a = MockNode::spawn(1).await;
    a.follow(None);
    let client = fast(vec![a.url()])
        .request_timeout(Duration::from_millis(400))
        .max_attempts(1000)
        .build()
        .await
        .unwrap();
    let t0 = Instant::now();
    let got = client.kv().put(b"k", b"v").await.unwrap_err();
    let took = t0.elapsed();
    assert_eq!(got.code(), ErrorCode::NoLeader, "{got}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(
        a.st().leader_queries >= 3,
        "kept asking during the deadline"
    );
    assert!(
        a.calls("put").is_empty(),
        "never sent a write without a leader"
    );
}

#[tokio::test]
async fn a_slow_node_times_out_per_attempt_and_the_next_is_tried() {
    let a = MockNode::spawn(1).await;
    let b = MockNode::spawn(2).await;
    // Eventual reads go to the sticky endpoint (A first); A hangs once.
    a.follow(Some(&b));
    b.lead();
    a.st().store.insert(b"k".to_vec(), Default::default());
    b.st().store.insert(b"k".to_vec(), Default::default());
    let client = fast(vec![a.url(), b.url()])
        .attempt_timeout(Duration::from_millis(150))
        .build()
        .await
        .unwrap();
    a.script([Scripted::Delay(Duration::from_secs(3))]);
    let t0 = Instant::now();
    let got = client
        .kv()
        .get_with(b"k", Consistency::Eventual)
        .await
        .unwrap();
    assert!(got.is_some());
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(a.calls("get").len(), 1);
    assert_eq!(b.calls("get").len(), 1, "rotated to the next endpoint");
}

#[tokio::test]
async fn redirect_ping_pong_is_bounded() {
    let a = MockNode::spawn(1).await;
    let b = MockNode::spawn(2).await;
    a.follow(Some(&b));
    b.follow(Some(&a));
    let client = fast(vec![a.url()]).max_attempts(6).build().await.unwrap();
    let got = client.kv().put(b"k", b"v").await.unwrap_err();
    assert_eq!(got.code(), ErrorCode::NotLeader);
    let total = a.calls("put").len() + b.calls("put").len();
    assert_eq!(total, 6, "one call per attempt");
}

#[tokio::test]
async fn eventual_reads_go_to_any_node_others_to_the_leader() {
    let a = MockNode::spawn(1).await;
    let b = MockNode::spawn(2).await;
    a.follow(Some(&b));
    b.lead();
    a.st().store.insert(
        b"k".to_vec(),
        d_engine_proto::v1::KeyValue {
            key: b"k".to_vec().into(),
            value: b"stale".to_vec().into(),
            ..Default::default()
        },
    );
    let client = fast(vec![a.url()]).build().await.unwrap();
    let got = client
        .kv()
        .get_with(b"k", Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(got.unwrap().value, b"stale"[..]);
    assert_eq!(a.calls("get").len(), 1);
    assert!(b.calls("get").is_empty());

    let got = client.kv().get(b"k").await.unwrap();
    assert_eq!(got, None, "linearizable read served by the leader");
    assert_eq!(b.calls("get").len(), 1);
    assert_eq!(b.calls("get")[0].consistency, 1);
    let got = client
        .kv()
        .get_with(b"k", Consistency::Lease)
        .await
        .unwrap();
    assert_eq!(got, None);
    assert_eq!(b.calls("get")[1].consistency, 2);
}

#[tokio::test]
async fn dead_endpoints_are_skipped() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let dead = dead_addr().await;
    let client = fast(vec![dead.clone(), b.addr.clone()])
        .build()
        .await
        .unwrap();
    client.kv().put(b"k", b"v").await.unwrap();
    // An eventual read starting at the dead endpoint rotates to B.
    let v = client
        .kv()
        .get_with(b"k", Consistency::Eventual)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.value, b"v"[..]);
}

#[tokio::test]
async fn build_reports_unreachable_and_bad_endpoints() {
    let dead = dead_addr().await;
    let e = fast(vec![dead.clone()]).build().await.unwrap_err();
    match &e {
        Error::Unavailable(m) => assert!(m.contains(&dead), "{m}"),
        other => panic!("{other:?}"),
    }
    // Lazy: build succeeds; requests fail after retrying, within the deadline.
    let client = fast(vec![dead.clone()])
        .lazy(true)
        .request_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let t0 = Instant::now();
    let e = client.kv().put(b"k", b"v").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(3));

    for bad in ["ftp://x:1", "", "h:99999", "http://h:1/path"] {
        let e = ClientBuilder::new(vec![bad.to_string()])
            .build()
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{bad}: {e}");
    }
    let e = ClientBuilder::new(Vec::<String>::new())
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no endpoints"), "{e}");
    let e = ClientBuilder::new(["h:1"])
        .max_attempts(0)
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("max_attempts"), "{e}");
}

#[tokio::test]
async fn sizes_are_checked_before_sending() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = fast(vec![b.url()]).build().await.unwrap();
    let kv = client.kv();
    let msg = |e: Error| match e {
        Error::InvalidArgument(m) => m,
        other => panic!("{other:?}"),
    };
    assert!(msg(kv.put(b"", b"v").await.unwrap_err()).contains("key is empty"));
    assert!(msg(kv.put(vec![1u8; 4097], b"v").await.unwrap_err()).contains("limit is 4096"));
    assert!(
        msg(kv.put(b"k", vec![0u8; (1 << 20) + 1]).await.unwrap_err())
            .contains("value is 1048577 bytes; the limit is 1048576")
    );
    assert!(msg(kv.get(b"").await.unwrap_err()).contains("key is empty"));
    assert!(msg(kv
        .compare_and_swap(b"k", Some(vec![0; (1 << 20) + 1]), None)
        .await
        .unwrap_err())
    .contains("expected_value"));
    assert!(msg(kv
        .get_multi(vec![b"a".to_vec(), vec![]], Consistency::Linearizable)
        .await
        .unwrap_err())
    .contains("keys[1]"));
    assert!(msg(kv
        .put_with_ttl(b"k", b"v", Duration::ZERO)
        .await
        .unwrap_err())
    .contains("ttl"));
    assert!(b.st().calls.is_empty(), "nothing reached the server");
    // The largest legal sizes go through.
    kv.put(vec![1u8; 4096], vec![0u8; 1 << 20]).await.unwrap();
}

/// Business logic written once against the shared trait.
async fn business<C: KvClient>(c: &C) -> d_engine_client::Result<()> {
    c.put(b"user:1", b"ada").await?;
    c.put_with_ttl(b"session:1", b"x", Duration::from_secs(30))
        .await?;
    assert_eq!(c.get(b"user:1").await?.unwrap().value, b"ada"[..]);
    let cas = c
        .compare_and_swap(b"user:1", Some(b"ada".to_vec()), Some(b"grace".to_vec()))
        .await?;
    assert!(cas.succeeded);
    assert_eq!(cas.current.unwrap().value, b"grace"[..]);
    let cas = c
        .compare_and_swap(b"user:1", None, Some(b"x".to_vec()))
        .await?;
    assert!(!cas.succeeded);
    let multi = c
        .get_multi(
            vec![b"user:1".to_vec(), b"nope".to_vec()],
            Consistency::Linearizable,
        )
        .await?;
    assert_eq!(multi.len(), 2);
    assert!(multi[0].is_some() && multi[1].is_none());
    let scan = c
        .scan_prefix(b"user:", 0, Consistency::Linearizable)
        .await?;
    assert_eq!(scan.len(), 1);
    assert!(c.delete(b"user:1").await?);
    assert!(!c.delete(b"user:1").await?);
    Ok(())
}

#[tokio::test]
async fn the_kv_trait_works_over_grpc() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = fast(vec![b.url()]).build().await.unwrap();
    business(&client.kv()).await.unwrap();
    let page = client
        .kv()
        .scan_prefix_page(b"session:", 1, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(page.kvs.len(), 1);
    assert!(!page.more);
    // Futures are Send: usable from spawned tasks.
    let kv = client.kv();
    tokio::spawn(async move { kv.put(b"from-task", b"1").await })
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn range_walks_every_page_and_scan_prefix_never_truncates() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = fast(vec![b.url()]).build().await.unwrap();
    let kv = client.kv();
    for i in 0..7 {
        kv.put(format!("p/{i}"), b"v").await.unwrap();
    }
    kv.put(b"q", b"outside").await.unwrap();
    let opts = RangeOptions::prefix().with_limit(3);
    let first = kv.range(b"p/", opts.clone()).await.unwrap();
    assert_eq!((first.kvs.len(), first.more, first.count), (3, true, 7));
    assert_eq!(first.next_key.as_deref(), Some(&b"p/2\0"[..]));
    let mut walk = kv.range_all(b"p/", opts);
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(page) = walk.next_page().await.unwrap() {
        pages += 1;
        seen.extend(page.kvs.into_iter().map(|kv| kv.key.to_vec()));
    }
    let want: Vec<Vec<u8>> = (0..7).map(|i| format!("p/{i}").into_bytes()).collect();
    assert_eq!((pages, seen), (3, want));
    // scan_prefix walks pages through Range: limit 0 = every key.
    let all = kv
        .scan_prefix(b"p/", 0, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    let two = kv
        .scan_prefix(b"p/", 2, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(two.len(), 2);
}

#[tokio::test]
async fn cluster_and_admin_requests_route_to_the_leader() {
    let a = MockNode::spawn(1).await;
    let b = MockNode::spawn(2).await;
    a.follow(Some(&b));
    b.lead();
    b.st().members = vec![d_engine_proto::v1::Member {
        id: 2,
        peer_addr: "127.0.0.1:1".into(),
        client_addr: b.addr.clone(),
        role: 1,
    }];
    let client: Client = fast(vec![a.url()]).build().await.unwrap();

    let leader = client.cluster().leader().await.unwrap();
    assert_eq!(leader.id, 2);
    assert_eq!(leader.client_addr, b.addr);
    assert_eq!(leader.term, 7);
    let members = client.cluster().members().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].id, 2);

    let after = client
        .admin()
        .add_learner(3, "127.0.0.1:2", "127.0.0.1:3")
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after[1].role, d_engine_client::MemberRole::Learner);
    let after = client.admin().promote(3).await.unwrap();
    assert_eq!(after[1].role, d_engine_client::MemberRole::Voter);
    let e = client.admin().promote(9).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnknownNode);
    assert_eq!(client.admin().remove_member(3).await.unwrap().len(), 1);
    assert!(a.calls("add_learner").is_empty(), "sent to the leader only");

    let status = client.admin().node_status_at(&a.addr).await.unwrap();
    assert_eq!(
        (status.id, status.role.as_str(), status.leader_id),
        (1, "follower", 2)
    );
    let status = client.admin().node_status().await.unwrap();
    assert_eq!(status.id, 2);
    // A pinned request to a follower is not redirected.
    let e = client
        .admin()
        .trigger_snapshot_at(&a.addr)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotLeader);
    assert_eq!(a.calls("trigger_snapshot").len(), 1);
    assert_eq!(client.admin().trigger_snapshot().await.unwrap(), 0);

    client.admin().transfer_leader(1).await.unwrap();
    assert_eq!(client.cached_leader(), None, "leader cache cleared");

    // Admin changes are not retried after an unknown outcome.
    let slow = fast(vec![b.url()])
        .attempt_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    b.st().calls.clear();
    b.script([Scripted::Delay(Duration::from_millis(400))]);
    let e = slow.admin().remove_member(5).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout);
    assert_eq!(b.calls("remove_member").len(), 1);
}

#[tokio::test]
async fn the_client_carries_on_when_the_leader_goes_away() {
    let a = MockNode::spawn(1).await;
    let b = MockNode::spawn(2).await;
    let c = MockNode::spawn(3).await;
    b.lead();
    a.follow(Some(&b));
    c.follow(Some(&b));
    let client = fast(vec![a.url(), b.url(), c.url()]).build().await.unwrap();
    client.kv().put(b"k", b"1").await.unwrap();
    assert_eq!(client.cached_leader(), Some(b.url()));

    // B stops; C is elected and A learns it.
    b.stop().await;
    c.lead();
    a.follow(Some(&c));
    let rev = client.kv().put(b"k", b"2").await.unwrap();
    assert_eq!(rev, 1, "first write on C fresh store");
    assert_eq!(client.cached_leader(), Some(c.url()));
    assert_eq!(c.calls("put").len(), 1);
}

#[tokio::test]
async fn many_concurrent_writes_get_distinct_ids() {
    let b = MockNode::spawn(2).await;
    b.lead();
    let client = fast(vec![b.url()]).write_sessions(2).build().await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let kv = client.kv();
        tasks.spawn(async move { kv.put(format!("k{i}"), b"v").await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let calls = b.calls("put");
    assert_eq!(calls.len(), 200);
    let ids: std::collections::HashSet<_> = calls
        .iter()
        .map(|c| {
            let w = c.write_id.unwrap();
            (w.client_id, w.seq)
        })
        .collect();
    assert_eq!(ids.len(), 200, "every logical write has its own WriteId");
    let clients: std::collections::HashSet<_> = ids.iter().map(|(c, _)| *c).collect();
    assert!(clients.len() <= 2);
    assert_eq!(b.st().store.len(), 200);
}

/// Nodes that advertise addresses the client cannot reach (NAT, port
/// forwarding): with `restrict_to_endpoints` the client never dials them;
/// it finds the leader among its endpoints by the node id each reports.
#[tokio::test]
async fn restrict_to_endpoints_ignores_unreachable_leader_addresses() {
    let a = MockNode::spawn(1).await;
    let b = MockNode::spawn(2).await;
    let unreachable = dead_addr().await;
    // A wrongly believes it leads, so discovery picks it first.
    a.st().leader = Some((1, a.addr.clone()));
    b.lead();
    b.st().leader = Some((2, unreachable.clone()));
    let client = fast(vec![a.url(), b.url()])
        .restrict_to_endpoints(true)
        .build()
        .await
        .unwrap();
    assert_eq!(client.cached_leader(), Some(a.url()));

    // A now answers NotLeader with a hint at B's advertised (unreachable)
    // address: the hint is dropped and discovery maps leader 2 to B.
    a.st().leader = Some((2, unreachable.clone()));
    let rev = client.kv().put(b"k", b"v").await.unwrap();
    assert_eq!(rev, 1);
    let (at_a, at_b) = (a.calls("put"), b.calls("put"));
    assert_eq!((at_a.len(), at_b.len()), (1, 1));
    assert_eq!(at_a[0].write_id, at_b[0].write_id, "same write id");
    assert_eq!(client.cached_leader(), Some(b.url()));

    // Leader discovery from scratch also lands on B.
    assert_eq!(client.refresh_leader().await.unwrap(), b.url());
    let l = client.cluster().leader().await.unwrap();
    assert_eq!(l.id, 2);
    assert_eq!(client.cached_leader(), Some(b.url()));
}

/// The default follows a hint outside the endpoint list: one endpoint is
/// enough to reach the whole cluster.
#[tokio::test]
async fn hints_outside_the_endpoints_are_followed_by_default() {
    let a = MockNode::spawn(1).await;
    let b = MockNode::spawn(2).await;
    a.follow(Some(&b));
    b.lead();
    let client = fast(vec![a.url()]).build().await.unwrap();
    client.kv().put(b"k", b"v").await.unwrap();
    assert_eq!(client.cached_leader(), Some(b.url()));
    assert_eq!(b.calls("put").len(), 1);

    // Restricted to A alone, B cannot be used: the write fails with the
    // cause rather than going to an address the user did not list.
    let only_a = fast(vec![a.url()])
        .request_timeout(Duration::from_millis(800))
        .restrict_to_endpoints(true)
        .build()
        .await
        .unwrap();
    let err = only_a.kv().put(b"k2", b"v").await.unwrap_err();
    assert!(
        matches!(err.code(), ErrorCode::NoLeader | ErrorCode::NotLeader),
        "{err:?}"
    );
    assert_eq!(b.calls("put").len(), 1, "B was never dialed");
}

/// `https://` always means TLS: without TLS options the client uses the
/// system roots, and a plaintext server is never talked to in plaintext.
#[tokio::test]
async fn https_endpoints_mean_tls_even_without_tls_options() {
    let a = MockNode::spawn(1).await;
    a.lead();
    let client = fast(vec![format!("https://{}", a.addr)])
        .request_timeout(Duration::from_millis(1500))
        .lazy(true)
        .build()
        .await
        .expect("https:// without .tls(..) builds (system roots)");
    assert_eq!(client.endpoints(), [format!("https://{}", a.addr)]);
    let err = client.kv().put(b"k", b"v").await.unwrap_err();
    assert!(
        matches!(err.code(), ErrorCode::Unavailable | ErrorCode::Timeout),
        "{err:?}"
    );
    assert!(
        a.calls("put").is_empty(),
        "no plaintext request reached the node"
    );

    // Mixing http:// into a TLS endpoint list is refused, naming the endpoint.
    let mixed = ClientBuilder::new(vec![
        format!("https://{}", a.addr),
        format!("http://{}", a.addr),
    ])
    .lazy(true)
    .build()
    .await
    .unwrap_err();
    assert!(
        matches!(&mixed, Error::InvalidArgument(m) if m.contains("http://")),
        "{mixed:?}"
    );
}
