//! Issue 16, findings 6–8 (`docs/auth.md`): exactly-once sessions belong to
//! the authenticated caller, a retry must be the same operation, one user's
//! fresh client ids cannot evict another user's sessions, failed logins are
//! rate-limited, auth on a plaintext non-loopback port is refused, and
//! Argon2 parameters in the config are bounded. Real node, real socket.

mod common;

use std::time::Duration;

use d_engine_node::auth::{sha256_hex, Access, AuthConfig, GrantConfig, RoleConfig, UserConfig};
use d_engine_node::Config;
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

const ALICE: &str = "alice-token";
const MALLORY: &str = "mallory-token";

fn role(name: &str, prefixes: &[&str]) -> RoleConfig {
    RoleConfig {
        name: name.into(),
        grants: prefixes
            .iter()
            .map(|p| GrantConfig {
                prefix: p.to_string(),
                access: Access::Readwrite,
            })
            .collect(),
    }
}

fn user(name: &str, token: &str, role: &str) -> UserConfig {
    UserConfig {
        name: name.into(),
        password_hash: None,
        tokens: vec![sha256_hex(token.as_bytes())],
        roles: vec![role.into()],
    }
}

/// alice may use `alice/` and `shared/`; mallory only `shared/`.
fn auth() -> AuthConfig {
    AuthConfig {
        enabled: true,
        roles: vec![
            role("alice-rw", &["alice/", "shared/"]),
            role("shared-rw", &["shared/"]),
        ],
        users: vec![
            user("alice", ALICE, "alice-rw"),
            user("mallory", MALLORY, "shared-rw"),
        ],
        ..AuthConfig::default()
    }
}

async fn connect(url: &str) -> KvClient<Channel> {
    let ch = Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    KvClient::new(ch)
}

fn with_token<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn wid(client_id: u64, seq: u64) -> Option<pb::WriteId> {
    Some(pb::WriteId { client_id, seq })
}

fn put(key: &str, value: &str, w: Option<pb::WriteId>) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        write_id: w,
        ..Default::default()
    }
}

async fn get(kv: &mut KvClient<Channel>, token: &str, key: &str) -> Option<Vec<u8>> {
    kv.get(with_token(
        token,
        pb::GetRequest {
            key: key.as_bytes().to_vec(),
            consistency: 1,
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .kv
    .map(|kv| kv.value.to_vec())
}

/// Before: mallory, reusing alice's client id, got alice's remembered CAS
/// result (with a value only alice may read) and made alice's next write
/// be acknowledged without being applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_client_id_reaches_only_its_own_session() {
    let (_engine, url, _dir) = common::single_node(|c| c.auth = auth()).await;
    let mut kv = connect(&url).await;
    kv.put(with_token(ALICE, put("alice/secret", "s3cret", None)))
        .await
        .unwrap();
    // alice: a failing CAS, remembered under write id (7, 1).
    let cas = kv
        .compare_and_swap(with_token(
            ALICE,
            pb::CompareAndSwapRequest {
                key: b"alice/secret".to_vec(),
                expected_value: Some(b"guess".to_vec()),
                new_value: Some(b"x".to_vec()),
                write_id: wid(7, 1),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!cas.succeeded);
    assert_eq!(cas.current.unwrap().value, &b"s3cret"[..]);

    // mallory sends her own CAS with alice's write id: it is applied as
    // hers and says nothing about alice's key.
    let m = kv
        .compare_and_swap(with_token(
            MALLORY,
            pb::CompareAndSwapRequest {
                key: b"shared/m".to_vec(),
                expected_value: None,
                new_value: Some(b"m".to_vec()),
                write_id: wid(7, 1),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let leaked = m
        .current
        .as_ref()
        .is_some_and(|kv| kv.value == b"s3cret"[..] || kv.key == b"alice/secret"[..]);
    assert!(!leaked, "mallory read alice's remembered result: {m:?}");
    assert!(m.succeeded, "mallory's own CAS was not applied: {m:?}");
    assert_eq!(get(&mut kv, MALLORY, "shared/m").await, Some(b"m".to_vec()));

    // mallory pre-empts alice's next seq; alice's write is still applied.
    kv.put(with_token(MALLORY, put("shared/y", "mallory", wid(7, 2))))
        .await
        .unwrap();
    kv.put(with_token(ALICE, put("alice/z", "a", wid(7, 2))))
        .await
        .unwrap();
    assert_eq!(
        get(&mut kv, ALICE, "alice/z").await,
        Some(b"a".to_vec()),
        "alice's write was acknowledged but not applied"
    );
}

/// Before: a different operation under an already used write id was
/// acknowledged with the first operation's result and not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_a_different_operation_is_refused() {
    let (_engine, url, _dir) = common::single_node(|c| c.auth = auth()).await;
    let mut kv = connect(&url).await;
    let first = kv
        .put(with_token(ALICE, put("shared/a", "1", wid(9, 1))))
        .await
        .unwrap()
        .into_inner();
    // A true retry is answered with the original revision.
    let again = kv
        .put(with_token(ALICE, put("shared/a", "1", wid(9, 1))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.revision, first.revision);
    let err = kv
        .put(with_token(ALICE, put("shared/b", "2", wid(9, 1))))
        .await
        .expect_err("another operation under a used write id");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("different operation"),
        "{}",
        err.message()
    );
    assert_eq!(get(&mut kv, ALICE, "shared/b").await, None);
}

/// Before: 4,097 fresh client ids from anyone evicted every session, so
/// alice's retry was applied a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_ids_from_one_user_evict_only_that_users_sessions() {
    let (_engine, url, _dir) = common::single_node(|c| c.auth = auth()).await;
    let mut kv = connect(&url).await;
    let first = kv
        .put(with_token(ALICE, put("shared/a", "1", wid(1, 1))))
        .await
        .unwrap()
        .into_inner();
    let mut tasks = tokio::task::JoinSet::new();
    const WORKERS: u64 = 32;
    const IDS: u64 = 4097;
    for w in 0..WORKERS {
        let mut kv = kv.clone();
        tasks.spawn(async move {
            let mut id = 1000 + w;
            while id < 1000 + IDS {
                kv.put(with_token(MALLORY, put("shared/flood", "x", wid(id, 1))))
                    .await
                    .unwrap();
                id += WORKERS;
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("the flood finishes");
    let retry = kv
        .put(with_token(ALICE, put("shared/a", "1", wid(1, 1))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        retry.revision, first.revision,
        "alice's session was evicted by mallory's ids: the retry was applied again"
    );
}

/// Before: wrong credentials were refused as UNAUTHENTICATED forever, at
/// full speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_source() {
    let (_engine, url, _dir) = common::single_node(|c| c.auth = auth()).await;
    let mut kv = connect(&url).await;
    let mut limited = None;
    for i in 0..50 {
        let err = kv
            .get(with_token(
                &format!("guess-{i}"),
                pb::GetRequest {
                    key: b"shared/a".to_vec(),
                    consistency: 1,
                },
            ))
            .await
            .expect_err("a wrong token");
        if err.code() == Code::ResourceExhausted {
            limited = Some((i, err));
            break;
        }
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    let (i, err) = limited.expect("50 wrong tokens were never rate-limited");
    assert!(i >= 5, "limited after only {i} failures");
    assert!(
        err.message().contains("too many failed logins") && err.message().contains("retry after"),
        "{}",
        err.message()
    );
    // A valid token still works (known-good credentials are not guesses).
    assert_eq!(get(&mut kv, ALICE, "shared/none").await, None);
}

fn config_with_auth(client_addr: &str) -> Config {
    let mut c = Config::single_node(std::env::temp_dir().join("unused"));
    c.client_addr = client_addr.into();
    c.auth = auth();
    c
}

/// Before: auth on a plaintext port on every interface started silently.
#[test]
fn auth_on_a_plaintext_non_loopback_port_is_refused() {
    let e = config_with_auth("0.0.0.0:9083")
        .validate()
        .expect_err("auth over plaintext on 0.0.0.0");
    assert_eq!(e.key, "auth.allow_plaintext", "{e}");
    assert!(e.to_string().contains("tls.client_api"), "{e}");
    config_with_auth("127.0.0.1:9083").validate().unwrap();
}

/// Before: any Argon2 cost in a password hash was accepted (a hash with
/// m = 4 GiB made every login allocate 4 GiB).
#[test]
fn argon2_parameters_in_password_hashes_are_bounded() {
    let salt = "c29tZXNhbHRzb21lc2FsdA";
    let out = "dUzWt5xJzfFVNhPkJX4gcqiq1dh9Mzs3ZVGNaOgXvS8";
    let mut c = config_with_auth("127.0.0.1:9083");
    for (params, needle) in [
        ("m=4194304,t=2,p=1", "m="),
        ("m=19456,t=1000,p=1", "t="),
        ("m=19456,t=2,p=64", "p="),
        ("m=8,t=1,p=1", "m="),
    ] {
        c.auth.users[0].password_hash = Some(format!("$argon2id$v=19${params}${salt}${out}"));
        let e = c.validate().expect_err(params);
        assert_eq!(e.key, "auth.users[0].password_hash", "{e}");
        assert!(e.to_string().contains(needle), "{params}: {e}");
    }
    c.auth.users[0].password_hash = Some(format!("$argon2id$v=19$m=19456,t=2,p=1${salt}${out}"));
    c.validate().unwrap();
}

async fn open_watch(
    kv: &mut KvClient<Channel>,
    token: Option<&str>,
    key: &str,
) -> Result<tonic::Streaming<pb::WatchResponse>, tonic::Status> {
    let msg = pb::WatchRequest {
        key: key.as_bytes().to_vec(),
        prefix: true,
        ..Default::default()
    };
    let req = match token {
        Some(t) => with_token(t, msg),
        None => Request::new(msg),
    };
    let mut s = kv.watch(req).await?.into_inner();
    // The first message says the watch exists.
    let first = tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("created in time")?;
    assert!(first.expect("created").created);
    Ok(s)
}

/// Before: only the node-wide `watch.max_watchers` existed, so one user
/// could take every watch slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_take_every_watch_slot() {
    let (_engine, url, _dir) = common::single_node(|c| {
        c.auth = auth();
        c.watch.max_watchers_per_user = 3;
    })
    .await;
    // alice's watches over two connections count together.
    let (mut c1, mut c2) = (connect(&url).await, connect(&url).await);
    let mut held = Vec::new();
    for second in [false, true, false] {
        let kv = if second { &mut c2 } else { &mut c1 };
        held.push(open_watch(kv, Some(ALICE), "shared/").await.unwrap());
    }
    let err = open_watch(&mut c2, Some(ALICE), "shared/")
        .await
        .expect_err("alice's fourth watch");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("watch.max_watchers_per_user = 3"),
        "{}",
        err.message()
    );
    // mallory is not affected.
    let _m = open_watch(&mut c2, Some(MALLORY), "shared/").await.unwrap();
    // A closed watch gives its place back.
    drop(held.pop());
    let t = std::time::Instant::now();
    loop {
        match open_watch(&mut c1, Some(ALICE), "shared/").await {
            Ok(_) => break,
            Err(e) if t.elapsed() < Duration::from_secs(5) => {
                assert_eq!(e.code(), Code::ResourceExhausted);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the place was never given back: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_take_every_watch_slot() {
    let (_engine, url, _dir) = common::single_node(|c| {
        c.watch.max_watchers_per_connection = 2;
    })
    .await;
    let mut c1 = connect(&url).await;
    let _a = open_watch(&mut c1, None, "a").await.unwrap();
    let _b = open_watch(&mut c1, None, "b").await.unwrap();
    let err = open_watch(&mut c1, None, "c")
        .await
        .expect_err("a third watch on one connection");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains("watch.max_watchers_per_connection = 2"),
        "{}",
        err.message()
    );
    let mut c2 = connect(&url).await;
    let _c = open_watch(&mut c2, None, "c").await.unwrap();
}

/// Connections beyond `limits.max_client_connections` are closed; the
/// node keeps serving the ones it holds, and takes new ones when some close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed() {
    let (_engine, url, _dir) = common::single_node(|c| {
        c.limits.max_client_connections = 2;
    })
    .await;
    let ping = |mut kv: KvClient<Channel>| async move {
        kv.get(pb::GetRequest {
            key: b"k".to_vec(),
            consistency: 1,
        })
        .await
        .map(|_| ())
    };
    let (c1, c2) = (connect(&url).await, connect(&url).await);
    ping(c1.clone()).await.unwrap();
    ping(c2.clone()).await.unwrap();
    let third = async {
        let ch = Endpoint::from_shared(url.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(2))
            .connect()
            .await?;
        ping(KvClient::new(ch))
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    };
    let r: Result<(), Box<dyn std::error::Error + Send + Sync>> = async {
        third.await?;
        Ok(())
    }
    .await;
    assert!(r.is_err(), "a third connection was served");
    ping(c1.clone()).await.unwrap();
    drop(c2);
    let t = std::time::Instant::now();
    loop {
        let r: Result<(), Box<dyn std::error::Error + Send + Sync>> = async {
            let ch = Endpoint::from_shared(url.clone())
                .unwrap()
                .timeout(Duration::from_secs(2))
                .connect()
                .await?;
            ping(KvClient::new(ch)).await?;
            Ok(())
        }
        .await;
        match r {
            Ok(()) => break,
            Err(_) if t.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("a closed connection's place was never given back: {e}"),
        }
    }
}
