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
    assert_eq!(r.get("app/a").await.unwrap().unwrap().value, b"1");
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
        assert_eq!(ev.kv.key, b"app/a");
        assert_eq!(ev.kv.value, b"4");
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
