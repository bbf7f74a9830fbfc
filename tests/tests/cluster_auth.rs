//! Authentication and authorization on a 3-node cluster of real
//! `d-engine-server` processes (`docs/auth.md`): password and token
//! logins, per-prefix grants on reads, writes, scans and watches, and the
//! admin role on the Admin service.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use d_engine_client::{Client, ClientBuilder, Consistency, Error, ErrorCode};
use d_engine_tests::cluster::{server_binary, Cluster, ClusterConfig};

/// Runs `d-engine-server <args>` with `stdin`; returns stdout.
fn server_tool(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(server_binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run d-engine-server");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
}

/// Config with readers/writers of `app/` and a token-holding admin;
/// returns (config text, admin token).
fn auth_config() -> (String, String) {
    let reader = server_tool(&["hash-password"], "rpw\n");
    let writer = server_tool(&["hash-password"], "wpw\n");
    let tok = server_tool(&["gen-token"], "");
    let (token, digest) = (field(&tok, "token"), field(&tok, "sha256"));
    let text = format!(
        r#"
[auth]
enabled = true

[[auth.roles]]
name = "app-reader"
grants = [{{ prefix = "app/", access = "read" }}]

[[auth.roles]]
name = "app-writer"
grants = [{{ prefix = "app/", access = "readwrite" }}]

[[auth.users]]
name = "reader"
password_hash = "{}"
roles = ["app-reader"]

[[auth.users]]
name = "writer"
password_hash = "{}"
roles = ["app-writer"]

[[auth.users]]
name = "root"
tokens = ["{digest}"]
roles = ["admin"]
"#,
        reader.trim(),
        writer.trim()
    );
    (text, token.to_string())
}

fn builder(c: &Cluster) -> ClientBuilder {
    ClientBuilder::new(c.endpoints()).request_timeout(Duration::from_secs(10))
}

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorCode {
    r.expect_err("expected an error").code()
}

async fn denied<T: std::fmt::Debug>(r: Result<T, Error>, needle: &str) {
    match r {
        Err(Error::PermissionDenied(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected PermissionDenied ({needle}), got {other:?}"),
    }
}

/// Waits until the admin can write (a leader is elected and serving).
async fn wait_ready(admin: &Client, c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match admin.kv().put("app/a", "1").await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the cluster: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cluster not ready: {e}\n{}", c.log_tails(30)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_enforces_users_roles_and_prefixes() {
    let (config, token) = auth_config();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, config).unwrap();
    let c = Cluster::start(ClusterConfig {
        extra_args: vec!["--config".into(), path.display().to_string()],
        ..ClusterConfig::default()
    });

    // Token login with the admin role.
    let admin = builder(&c).token(&token).lazy(true).build().await.unwrap();
    wait_ready(&admin, &c).await;

    // Missing or wrong credentials: Unauthenticated, already at build().
    assert_eq!(code(builder(&c).build().await), ErrorCode::Unauthenticated);
    assert_eq!(
        code(builder(&c).credentials("reader", "wrong").build().await),
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        code(builder(&c).credentials("nobody", "rpw").build().await),
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        code(builder(&c).token("not-a-token").build().await),
        ErrorCode::Unauthenticated
    );
    let lazy = builder(&c)
        .credentials("reader", "wrong")
        .lazy(true)
        .build()
        .await
        .unwrap();
    assert_eq!(
        code(lazy.kv().get("app/a").await),
        ErrorCode::Unauthenticated
    );

    let reader = builder(&c)
        .credentials("reader", "rpw")
        .build()
        .await
        .unwrap();
    let writer = builder(&c)
        .credentials("writer", "wpw")
        .build()
        .await
        .unwrap();
    let (r, w) = (reader.kv(), writer.kv());

    // The writer writes under app/, nowhere else.
    w.put("app/b", "2").await.unwrap();
    assert!(w.delete("app/b").await.unwrap());
    w.compare_and_swap("app/c", None, Some(b"3".to_vec()))
        .await
        .unwrap();
    denied(
        w.put("other/x", "1").await,
        "user \"writer\" lacks readwrite access to key \"other/x\"",
    )
    .await;

    // The reader reads, scans and watches app/ ...
    assert_eq!(r.get("app/a").await.unwrap().unwrap().value, b"1"[..]);
    let got = r
        .get_multi(
            vec![b"app/a".to_vec(), b"app/c".to_vec()],
            Consistency::Linearizable,
        )
        .await
        .unwrap();
    assert!(got.iter().all(|kv| kv.is_some()));
    let scanned = r
        .scan_prefix("app/", 0, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(scanned.len(), 2);
    r.get_with("app/a", Consistency::Eventual).await.unwrap();
    let mut events = r.watch_prefix("app/", 0).await.unwrap();
    let mut one = r.watch("app/a", 0).await.unwrap();
    w.put("app/a", "4").await.unwrap();
    for stream in [&mut events, &mut one] {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.recv())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event");
        assert_eq!(ev.kv.key, b"app/a"[..]);
        assert_eq!(ev.kv.value, b"4"[..]);
    }

    // ... but writes nothing, and reads nothing outside app/.
    denied(
        r.put("app/a", "5").await,
        "lacks readwrite access to key \"app/a\"",
    )
    .await;
    denied(r.delete("app/a").await, "readwrite").await;
    denied(
        r.compare_and_swap("app/a", None, Some(b"x".to_vec())).await,
        "readwrite",
    )
    .await;
    denied(
        r.get("other/x").await,
        "user \"reader\" lacks read access to key \"other/x\"",
    )
    .await;
    denied(
        r.get_multi(
            vec![b"app/a".to_vec(), b"other/x".to_vec()],
            Consistency::Linearizable,
        )
        .await,
        "other/x",
    )
    .await;
    // Wider scans and watches are refused, not filtered.
    denied(
        r.scan_prefix("app", 0, Consistency::Linearizable).await,
        "prefix \"app\"",
    )
    .await;
    denied(
        r.scan_prefix("", 0, Consistency::Linearizable).await,
        "prefix \"\"",
    )
    .await;
    denied(r.watch_prefix("ap", 0).await, "prefix \"ap\"").await;
    denied(r.watch("other/x", 0).await, "key \"other/x\"").await;

    // Cluster info: any authenticated user. Admin: the admin role only.
    assert_eq!(reader.cluster().members().await.unwrap().len(), 3);
    denied(reader.admin().node_status().await, "admin role").await;
    denied(writer.admin().trigger_snapshot().await, "admin role").await;
    let st = admin.admin().node_status().await.unwrap();
    assert_eq!(st.members.len(), 3);
    admin.admin().trigger_snapshot().await.unwrap();
    // The admin role covers every key too.
    admin.kv().put("other/x", "1").await.unwrap();
    assert_eq!(
        admin
            .kv()
            .scan_prefix("", 0, Consistency::Linearizable)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// Raw gRPC calls of the runtime auth test, with credentials attached.
mod raw {
    use d_engine_proto::v1 as pb;
    use tonic::transport::Channel;

    pub async fn channel(addr: &str) -> Channel {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15))
            .connect_lazy()
    }

    pub fn req<T>(msg: T, auth: &str) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("authorization", auth.parse().unwrap());
        r
    }

    /// `Basic base64(user:pw)` (RFC 7617; base64 by hand, the tests have
    /// no base64 crate).
    pub fn basic(user: &str, pw: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let raw = format!("{user}:{pw}").into_bytes();
        let mut out = String::new();
        for c in raw.chunks(3) {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | (b[2] as u32);
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        format!("Basic {out}")
    }

    /// An eventual read of `key` on exactly this node (authenticated there).
    pub async fn get(ch: &Channel, auth: &str, key: &str) -> Result<(), tonic::Status> {
        pb::kv_client::KvClient::new(ch.clone())
            .get(req(
                pb::GetRequest {
                    key: key.as_bytes().to_vec(),
                    consistency: pb::Consistency::Eventual as i32,
                },
                auth,
            ))
            .await
            .map(|_| ())
    }
}

/// Runtime users, roles and tokens (issue 19, item 6): added through the
/// Auth service on the leader, usable on every node at once, kept across a
/// restart (with a snapshot), and a revoked or expired token refused on
/// every node at once; an open watch of a revoked token ends with a typed
/// UNAUTHENTICATED cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_auth_replicates_and_revokes_on_every_node() {
    use d_engine_proto::v1 as pb;
    use pb::auth_client::AuthClient;
    use raw::{basic, channel, get, req};
    use tonic::Code;

    let (config, token) = auth_config();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, config).unwrap();
    let mut c = Cluster::start(ClusterConfig {
        extra_args: vec!["--config".into(), path.display().to_string()],
        ..ClusterConfig::default()
    });
    let admin = builder(&c).token(&token).lazy(true).build().await.unwrap();
    wait_ready(&admin, &c).await;
    let root = format!("Bearer {token}");
    let mut chans = Vec::new();
    for id in c.ids() {
        chans.push((id, channel(&c.client_addr(id)).await));
    }
    // The leader: the node whose status says so.
    let leader =
        async |chans: &[(u64, tonic::transport::Channel)]| -> (u64, tonic::transport::Channel) {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                for (id, ch) in chans {
                    let st = pb::admin_client::AdminClient::new(ch.clone())
                        .node_status(req(pb::NodeStatusRequest {}, &root))
                        .await;
                    if matches!(&st, Ok(s) if s.get_ref().role == "leader") {
                        return (*id, ch.clone());
                    }
                }
                assert!(Instant::now() < deadline, "no leader");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
    let (leader_id, lch) = leader(&chans).await;
    let mut auth = AuthClient::new(lch.clone());

    // A role with a grant, a user holding it: through the log.
    let r = auth
        .role_add(req(pb::AuthRoleAddRequest { name: "rt".into() }, &root))
        .await
        .unwrap();
    assert!(r.get_ref().every_voter_acknowledged);
    auth.role_grant_permission(req(
        pb::AuthRoleGrantPermissionRequest {
            role: "rt".into(),
            permission: Some(pb::AuthPermission {
                prefix: b"rt/".to_vec(),
                access: "readwrite".into(),
            }),
        },
        &root,
    ))
    .await
    .unwrap();
    auth.user_add(req(
        pb::AuthUserAddRequest {
            name: "carol".into(),
            password: "cpw".into(),
        },
        &root,
    ))
    .await
    .unwrap();
    let r = auth
        .user_grant_role(req(
            pb::AuthUserRoleRequest {
                name: "carol".into(),
                role: "rt".into(),
            },
            &root,
        ))
        .await
        .unwrap();
    assert!(r.get_ref().every_voter_acknowledged);

    // Usable on every node at once, with the role's grant and no more.
    let carol = basic("carol", "cpw");
    for (id, ch) in &chans {
        get(ch, &carol, "rt/x")
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e:?}"));
        let e = get(ch, &carol, "app/a").await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "node {id}: {e:?}");
        let e = get(ch, &basic("carol", "bad"), "rt/x").await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "node {id}: {e:?}");
    }

    // Bad requests: a configured name, a non-admin caller, a bad access.
    let e = auth
        .user_add(req(
            pb::AuthUserAddRequest {
                name: "reader".into(),
                password: "x".into(),
            },
            &root,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("configured user"), "{}", e.message());
    let e = auth
        .user_list(req(pb::AuthUserListRequest {}, &basic("writer", "wpw")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = auth
        .role_grant_permission(req(
            pb::AuthRoleGrantPermissionRequest {
                role: "rt".into(),
                permission: Some(pb::AuthPermission {
                    prefix: b"z/".to_vec(),
                    access: "write".into(),
                }),
            },
            &root,
        ))
        .await
        .unwrap_err();
    assert!(e.message().contains("not an access"), "{}", e.message());
    let users = auth
        .user_list(req(pb::AuthUserListRequest {}, &root))
        .await
        .unwrap()
        .into_inner()
        .users;
    let names: Vec<_> = users
        .iter()
        .map(|u| (u.name.as_str(), u.source.as_str()))
        .collect();
    assert!(names.contains(&("carol", "runtime")), "{names:?}");
    assert!(names.contains(&("root", "config")), "{names:?}");

    // A token for carol, and a watch with it on a follower.
    let tok = auth
        .token_create(req(
            pb::AuthTokenCreateRequest {
                user: "carol".into(),
                ttl_seconds: 3600,
            },
            &root,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(tok.expires_at_ms > 0);
    let bearer = format!("Bearer {}", tok.token);
    for (id, ch) in &chans {
        get(ch, &bearer, "rt/x")
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e:?}"));
    }
    let (follower, fch) = chans
        .iter()
        .find(|(id, _)| *id != leader_id)
        .cloned()
        .unwrap();
    let mut watch = pb::kv_client::KvClient::new(fch.clone())
        .watch(req(
            pb::WatchRequest {
                key: b"rt/".to_vec(),
                prefix: true,
                ..Default::default()
            },
            &bearer,
        ))
        .await
        .unwrap()
        .into_inner();
    let created = watch.message().await.unwrap().unwrap();
    assert!(created.created);

    // A snapshot on the leader, then another node restarts: the runtime
    // user is still there (snapshot or log replay).
    pb::admin_client::AdminClient::new(lch.clone())
        .trigger_snapshot(req(pb::TriggerSnapshotRequest {}, &root))
        .await
        .unwrap();
    let other = c
        .ids()
        .into_iter()
        .find(|id| *id != leader_id && *id != follower)
        .unwrap();
    c.terminate(other, Duration::from_secs(10));
    c.restart(other);
    let och = channel(&c.client_addr(other)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match get(&och, &carol, "rt/x").await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for node {other}: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("node {other} after restart: {e:?}\n{}", c.log_tails(30)),
        }
    }
    let chans: Vec<_> = chans
        .into_iter()
        .map(|(id, ch)| {
            if id == other {
                (id, och.clone())
            } else {
                (id, ch)
            }
        })
        .collect();

    // Revoke the token: the next call is refused on every node, and the
    // open watch ends with a typed cancel.
    let (_, lch) = leader(&chans).await;
    let mut auth = AuthClient::new(lch);
    let r = auth
        .token_revoke(req(
            pb::AuthTokenRevokeRequest {
                token: tok.token.clone(),
                token_sha256: String::new(),
            },
            &root,
        ))
        .await
        .unwrap();
    assert!(r.get_ref().every_voter_acknowledged);
    for (id, ch) in &chans {
        let e = get(ch, &bearer, "rt/x").await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "node {id}: {e:?}");
        assert!(
            e.message().contains("revoked") || e.message().contains("invalid token"),
            "{}",
            e.message()
        );
    }
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = watch
                .message()
                .await
                .unwrap()
                .expect("a cancel, not the end");
            if m.canceled {
                return m;
            }
        }
    })
    .await
    .expect("the watch ends in time");
    assert_eq!(
        end.cancel_code,
        pb::ErrorCode::Unauthenticated as i32,
        "{end:?}"
    );

    // A token that expires is refused everywhere once it has.
    let short = auth
        .token_create(req(
            pb::AuthTokenCreateRequest {
                user: "carol".into(),
                ttl_seconds: 1,
            },
            &root,
        ))
        .await
        .unwrap()
        .into_inner();
    let short = format!("Bearer {}", short.token);
    get(&chans[0].1, &short, "rt/x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for (id, ch) in &chans {
        let e = get(ch, &short, "rt/x").await.unwrap_err();
        assert!(e.message().contains("expired"), "node {id}: {e:?}");
    }

    // Deleting the user ends its password logins on every node.
    auth.user_delete(req(
        pb::AuthUserDeleteRequest {
            name: "carol".into(),
        },
        &root,
    ))
    .await
    .unwrap();
    for (id, ch) in &chans {
        let e = get(ch, &carol, "rt/x").await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "node {id}: {e:?}");
    }
}
