//! The client services over a real single-node engine and a real socket.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::admin_client::AdminClient;
use d_engine_proto::v1::cluster_client::ClusterClient;
use d_engine_proto::v1::kv_client::KvClient;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use super::serve_clients;
use crate::config::Config;
use crate::embedded::EmbeddedEngine;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "dengine-service-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A single-node engine with its client API on an ephemeral port.
pub(super) struct Fixture {
    pub(super) engine: EmbeddedEngine,
    addr: String,
    pub(super) channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    _dir: TempDir,
}

impl Fixture {
    pub(super) async fn start() -> Fixture {
        Fixture::start_with(|_| {}).await
    }

    /// Like [`Fixture::start`], with `tune` applied to the node's config.
    pub(super) async fn start_with(tune: impl FnOnce(&mut Config)) -> Fixture {
        let dir = TempDir::new();
        let mut config = Config::single_node(&dir.0);
        tune(&mut config);
        let engine = EmbeddedEngine::builder(config)
            .without_network()
            .start()
            .await
            .expect("engine starts");
        engine
            .wait_ready(Duration::from_secs(10))
            .await
            .expect("leader");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_clients(listener, engine.handle().clone(), async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Fixture {
            engine,
            addr,
            channel,
            stop: Some(stop),
            server,
            _dir: dir,
        }
    }

    pub(super) fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    pub(super) async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .expect("server drains within 10s")
            .unwrap()
            .unwrap();
        self.engine.stop().await.unwrap();
    }
}

pub(super) fn error_info(s: &tonic::Status) -> (String, HashMap<String, String>) {
    let i = s
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {s:?}"));
    assert_eq!(i.domain, "d-engine");
    (i.reason, i.metadata)
}

#[tokio::test]
async fn put_get_delete_cas_scan_over_grpc() {
    let f = Fixture::start().await;
    let mut kv = f.kv();
    let put = kv
        .put(pb::PutRequest {
            key: b"a/1".to_vec(),
            value: b"one".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(put.revision > 0);
    assert_eq!(put.header.unwrap().node_id, 1);
    for c in [0, 1, 2, 3] {
        let got = kv
            .get(pb::GetRequest {
                key: b"a/1".to_vec(),
                consistency: c,
            })
            .await
            .unwrap()
            .into_inner();
        let got = got.kv.expect("present");
        assert_eq!(got.value, &b"one"[..]);
        assert_eq!(got.mod_revision, put.revision);
    }
    kv.put(pb::PutRequest {
        key: b"a/2".to_vec(),
        value: b"two".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let scan = kv
        .scan_prefix(pb::ScanPrefixRequest {
            prefix: b"a/".to_vec(),
            limit: 1,
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scan.kvs.len(), 1);
    assert!(scan.more);
    let multi = kv
        .get_multi(pb::GetMultiRequest {
            keys: vec![b"a/2".to_vec(), b"zz".to_vec(), b"a/1".to_vec()],
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let vals: Vec<Option<Vec<u8>>> = multi
        .results
        .into_iter()
        .map(|r| r.kv.map(|k| k.value.to_vec()))
        .collect();
    assert_eq!(
        vals,
        vec![Some(b"two".to_vec()), None, Some(b"one".to_vec())]
    );
    let cas = kv
        .compare_and_swap(pb::CompareAndSwapRequest {
            key: b"a/1".to_vec(),
            expected_value: Some(b"nope".to_vec()),
            new_value: Some(b"x".to_vec()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!cas.succeeded);
    assert_eq!(cas.current.unwrap().value, &b"one"[..]);
    let del = kv
        .delete(pb::DeleteRequest {
            key: b"a/1".to_vec(),
            write_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(del.deleted);
    let got = kv
        .get(pb::GetRequest {
            key: b"a/1".to_vec(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.kv.is_none());
    f.shutdown().await;
}

#[tokio::test]
async fn bad_requests_name_the_field_and_the_limit() {
    let f = Fixture::start().await;
    let mut kv = f.kv();
    let e = kv
        .put(pb::PutRequest {
            key: vec![],
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let (reason, meta) = error_info(&e);
    assert_eq!(reason, "INVALID_ARGUMENT");
    assert_eq!(meta["field"], "key");
    assert!(e.message().contains("key is empty"), "{}", e.message());

    let e = kv
        .put(pb::PutRequest {
            key: vec![b'k'; 4097],
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(error_info(&e).1["limit"], "4096");

    let e = kv
        .put(pb::PutRequest {
            key: b"k".to_vec(),
            value: vec![0; (1 << 20) + 1],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(error_info(&e).1["field"], "value");

    let e = kv
        .get(pb::GetRequest {
            key: b"k".to_vec(),
            consistency: 42,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("consistency 42"), "{}", e.message());

    // A request larger than limits.max_request_bytes fails in the codec.
    let e = kv
        .put(pb::PutRequest {
            key: b"k".to_vec(),
            value: vec![0; 5 << 20],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{e:?}"
    );

    // The node keeps serving.
    kv.put(pb::PutRequest {
        key: b"k".to_vec(),
        value: b"ok".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    f.shutdown().await;
}

#[tokio::test]
async fn watch_starts_with_created_delivers_in_order_and_is_cancelled_on_shutdown() {
    let f = Fixture::start().await;
    let mut kv = f.kv();
    let mut stream = kv
        .watch(pb::WatchRequest {
            key: b"w/".to_vec(),
            prefix: true,
            start_revision: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.created && first.events.is_empty() && !first.canceled);
    let mut revs = Vec::new();
    for i in 0..20u32 {
        let r = kv
            .put(pb::PutRequest {
                key: format!("w/{i}").into_bytes(),
                value: i.to_le_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        revs.push(r.revision);
    }
    let mut seen = Vec::new();
    while seen.len() < revs.len() {
        let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("events within 10s")
            .unwrap()
            .unwrap();
        assert!(!m.canceled, "{m:?}");
        for ev in m.events {
            assert_eq!(ev.r#type, pb::EventType::Put as i32);
            seen.push(ev.kv.unwrap().mod_revision);
        }
    }
    assert_eq!(seen, revs);
    // Server shutdown ends the watch with a reason.
    let _ = f.stop.as_ref().map(|_| ());
    let Fixture {
        engine,
        stop,
        server,
        _dir,
        ..
    } = f;
    stop.unwrap().send(()).unwrap();
    let last = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("cancel within 10s")
        .unwrap()
        .unwrap();
    assert!(last.canceled);
    assert!(
        last.cancel_reason.starts_with("SHUTTING_DOWN"),
        "{}",
        last.cancel_reason
    );
    assert_eq!(last.cancel_code, pb::ErrorCode::ShuttingDown as i32);
    assert_eq!(
        last.resume_revision,
        revs.last().unwrap() + 1,
        "resume one past the last delivered event"
    );
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server drains")
        .unwrap()
        .unwrap();
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn cluster_admin_health_and_reflection_answer() {
    let f = Fixture::start().await;
    let members = ClusterClient::new(f.channel.clone())
        .members(pb::MembersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.leader_id, 1);
    assert_eq!(members.members.len(), 1);
    let leader = ClusterClient::new(f.channel.clone())
        .leader(pb::LeaderRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leader.leader_id, 1);
    let status = AdminClient::new(f.channel.clone())
        .node_status(pb::NodeStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.role, "leader");
    let e = AdminClient::new(f.channel.clone())
        .add_learner(pb::AddLearnerRequest {
            id: 0,
            peer_addr: "127.0.0.1:1".into(),
            client_addr: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = AdminClient::new(f.channel.clone())
        .add_learner(pb::AddLearnerRequest {
            id: 4,
            peer_addr: "not an address".into(),
            client_addr: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(error_info(&e).1["field"], "peer_addr");

    // grpc.health.v1
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    for service in ["", "dengine.v1.Kv"] {
        let h = HealthClient::new(f.channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(h.status, 1, "SERVING for '{service}'");
    }

    // grpc.reflection.v1alpha list_services (what grpcurl uses)
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = ServerReflectionClient::new(f.channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer {msg:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "dengine.v1.Kv",
        "dengine.v1.Lease",
        "dengine.v1.Cluster",
        "dengine.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing in {names:?}"
        );
    }
    f.shutdown().await;
}

#[tokio::test]
async fn garbage_on_the_client_port_does_not_stop_the_server() {
    let f = Fixture::start().await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0u8; 1000][..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..],
    ] {
        let mut s = tokio::net::TcpStream::connect(&f.addr).await.unwrap();
        let _ = s.write_all(garbage).await;
        let _ = s.shutdown().await;
    }
    let mut kv = f.kv();
    kv.put(pb::PutRequest {
        key: b"still".to_vec(),
        value: b"here".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    f.shutdown().await;
}

/// Values are shared, not copied, from the state machine into responses and
/// into every watcher's events: two reads of one key and two watchers of it
/// hand out the same bytes (one allocation), seen through the service itself
/// (in process, before the transport encodes anything).
#[tokio::test]
async fn reads_and_watch_events_share_one_copy_of_a_value() {
    use d_engine_proto::v1::kv_server::Kv;
    use tokio_stream::StreamExt;
    use tonic::Request;

    let f = Fixture::start().await;
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let svc = super::kv::KvService::new(f.engine.handle().clone(), stopping);
    let watch = |prefix: bool| pb::WatchRequest {
        key: b"shared".to_vec(),
        prefix,
        ..Default::default()
    };
    let mut w1 = svc
        .watch(Request::new(watch(false)))
        .await
        .unwrap()
        .into_inner();
    let mut w2 = svc
        .watch(Request::new(watch(true)))
        .await
        .unwrap()
        .into_inner();
    for w in [&mut w1, &mut w2] {
        assert!(w.next().await.unwrap().unwrap().created);
    }
    svc.put(Request::new(pb::PutRequest {
        key: b"shared".to_vec(),
        value: vec![9; 256 << 10],
        ..Default::default()
    }))
    .await
    .unwrap();
    let mut event_value = Vec::new();
    for w in [&mut w1, &mut w2] {
        let msg = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("the event arrives")
            .unwrap()
            .unwrap();
        let kv = msg.events[0].kv.as_ref().unwrap();
        assert_eq!(kv.value.len(), 256 << 10);
        event_value.push(kv.value.as_ptr());
    }
    assert_eq!(
        event_value[0], event_value[1],
        "both watchers' events point at one copy of the value"
    );
    let get = || {
        svc.get(Request::new(pb::GetRequest {
            key: b"shared".to_vec(),
            consistency: pb::Consistency::Linearizable as i32,
        }))
    };
    let a = get().await.unwrap().into_inner().kv.unwrap();
    let b = get().await.unwrap().into_inner().kv.unwrap();
    assert_eq!(a.value.len(), 256 << 10);
    assert_eq!(
        a.value.as_ptr(),
        b.value.as_ptr(),
        "two reads of one key return the stored value, not copies"
    );
    let multi = svc
        .get_multi(Request::new(pb::GetMultiRequest {
            keys: vec![b"shared".to_vec()],
            consistency: pb::Consistency::Linearizable as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    let m = multi.results[0].kv.as_ref().unwrap();
    assert_eq!(m.value.as_ptr(), a.value.as_ptr());
    let scan = svc
        .scan_prefix(Request::new(pb::ScanPrefixRequest {
            prefix: b"shared".to_vec(),
            limit: 0,
            consistency: pb::Consistency::Linearizable as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scan.kvs[0].value.as_ptr(), a.value.as_ptr());
    drop((w1, w2));
    f.shutdown().await;
}
