//! The `dengine` CLI against real `d-engine-server` processes: every
//! command, its output formats and exit codes (`docs/cli.md`), and the
//! error cases a user meets (no server at the endpoint, unknown lease or
//! member, malformed txn input, missing credentials, TLS).
//!
//! The binary is found (and built if stale) like the server:
//! `d_engine_tests::cluster::cli_binary` (`$DENGINE_CLI_BIN` overrides).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use d_engine_tests::cluster::{
    cli_binary, free_ports, server_binary, Cluster, ClusterConfig, TlsCluster, TlsClusterConfig,
};

const ELECTION_BOUND: Duration = Duration::from_secs(30);
/// Bound on one CLI run.
const RUN_BOUND: Duration = Duration::from_secs(60);

// Exit codes, as documented in docs/cli.md.
const OK: i32 = 0;
const USAGE: i32 = 2;
const NOT_FOUND: i32 = 3;
const COMPARE_FAILED: i32 = 4;
const UNAVAILABLE: i32 = 5;
const AUTH: i32 = 7;

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Self {
        assert_eq!(self.code, OK, "expected success: {self:#?}");
        self
    }

    fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "expected exit code {code}: {self:#?}");
        self
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// A `dengine` command with the endpoints in DENGINE_ENDPOINTS (so the
/// environment variable is exercised everywhere) and nothing else
/// inherited from the caller's DENGINE_* settings.
fn cli(endpoints: &str) -> Command {
    let mut c = Command::new(cli_binary());
    for v in [
        "DENGINE_CACERT",
        "DENGINE_CERT",
        "DENGINE_KEY",
        "DENGINE_SERVER_NAME",
        "DENGINE_USER",
        "DENGINE_PASSWORD",
        "DENGINE_TOKEN",
        "DENGINE_TIMEOUT",
        "DENGINE_OUTPUT",
    ] {
        c.env_remove(v);
    }
    c.env("DENGINE_ENDPOINTS", endpoints);
    c
}

/// Runs to completion (bounded by [`RUN_BOUND`]) with `stdin`.
fn run_with(mut cmd: Command, stdin: &str) -> Out {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn dengine");
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(RUN_BOUND) {
        Ok(o) => o.expect("wait for dengine"),
        Err(_) => {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("dengine {cmd:?} did not finish within {RUN_BOUND:?}");
        }
    };
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(endpoints: &str, args: &[&str]) -> Out {
    let mut c = cli(endpoints);
    c.args(args);
    run_with(c, "")
}

/// A long-running `dengine` (watch, lock, elect, keepalive) whose stdout
/// lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(endpoints: &str, args: &[&str]) -> Running {
        let mut c = cli(endpoints);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().expect("spawn dengine");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    fn line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(RUN_BOUND)
            .unwrap_or_else(|e| panic!("no output line ({what}) within {RUN_BOUND:?}: {e}"))
    }

    fn interrupt(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    /// Waits for the exit (bounded); returns the code.
    fn wait(mut self) -> i32 {
        let deadline = Instant::now() + RUN_BOUND;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or_else(|| panic!("dengine killed: {s:?}"));
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("dengine did not exit within {RUN_BOUND:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `f` returns true.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn endpoints_of(c: &Cluster) -> String {
    c.ids()
        .iter()
        .map(|id| c.client_addr(*id))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_keys_ranges_txn_watch_and_leases() {
    let mut c = Cluster::start(ClusterConfig {
        nodes: 1,
        ..Default::default()
    });
    c.wait_leader(ELECTION_BOUND).await.unwrap();
    let ep = endpoints_of(&c);
    tokio::task::block_in_place(|| keys_ranges_txn_watch_and_leases(&ep));
}

fn keys_ranges_txn_watch_and_leases(ep: &str) {
    // put / get, every output format.
    let out = run(ep, &["put", "app/a", "1"]).ok();
    assert!(out.stdout.starts_with("OK (revision "), "{out:?}");
    let r1: u64 = run(ep, &["-o", "json", "put", "app/b", "2"]).ok().json()["revision"]
        .as_u64()
        .unwrap();
    run(ep, &["put", "app/c", "3"]).ok();
    run(ep, &["put", "other", "x"]).ok();
    let out = run(ep, &["get", "app/a"]).ok();
    assert_eq!(
        out.stdout
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["KEY", "VALUE", "MOD_REV", "VERSION", "LEASE"]
    );
    assert!(
        out.stdout.lines().nth(1).unwrap().starts_with("app/a  1  "),
        "{out:?}"
    );
    assert_eq!(
        run(ep, &["get", "app/b", "-o", "simple"]).ok().stdout,
        "app/b\n2\n"
    );
    let j = run(ep, &["get", "app/", "--prefix", "-o", "json"])
        .ok()
        .json();
    assert_eq!(j["count"], 3);
    let keys: Vec<_> = j["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].clone())
        .collect();
    assert_eq!(keys, ["app/a", "app/b", "app/c"]);
    assert_eq!(j["kvs"][1]["mod_revision"], r1);
    // Ranges, limits, keys-only, count-only, consistency.
    assert_eq!(
        run(
            ep,
            &[
                "get",
                "app/a",
                "--range-end",
                "app/c",
                "-o",
                "simple",
                "--keys-only"
            ]
        )
        .ok()
        .stdout,
        "app/a\napp/b\n"
    );
    assert_eq!(
        run(
            ep,
            &["get", "app/b", "--from-key", "-o", "simple", "--keys-only"]
        )
        .ok()
        .stdout,
        "app/b\napp/c\nother\n"
    );
    let j = run(
        ep,
        &["get", "app/", "--prefix", "--limit", "2", "-o", "json"],
    )
    .ok()
    .json();
    assert_eq!(j["kvs"].as_array().unwrap().len(), 2);
    assert_eq!(j["more"], true);
    assert_eq!(
        run(ep, &["get", "app/", "--prefix", "--count-only"])
            .ok()
            .stdout,
        "3\n"
    );
    assert_eq!(
        run(
            ep,
            &["get", "app/c", "--consistency", "eventual", "-o", "simple"]
        )
        .ok()
        .stdout,
        "app/c\n3\n"
    );
    // A missing key: nothing on stdout, NOT_FOUND.
    let out = run(ep, &["get", "nope"]).code(NOT_FOUND);
    assert!(
        out.stdout.is_empty() && out.stderr.contains("not found"),
        "{out:?}"
    );
    // Conflicting range flags: usage.
    let out = run(ep, &["get", "a", "--prefix", "--from-key"]).code(USAGE);
    assert!(out.stderr.contains("cannot be used with"), "{out:?}");
    // A range end before the key: the server's message, USAGE.
    let out = run(ep, &["get", "b", "--range-end", "a"]).code(USAGE);
    assert!(
        out.stderr.contains("error:") && out.stderr.contains("hint:"),
        "{out:?}"
    );

    // del: single, prefix with prev-kv, range.
    run(ep, &["put", "tmp/1", "a"]).ok();
    run(ep, &["put", "tmp/2", "b"]).ok();
    run(ep, &["put", "tmp/3", "c"]).ok();
    assert_eq!(
        run(ep, &["del", "tmp/1", "-o", "simple"]).ok().stdout,
        "1\n"
    );
    assert_eq!(
        run(ep, &["del", "tmp/1", "-o", "simple"]).ok().stdout,
        "0\n"
    );
    let j = run(ep, &["del", "tmp/", "--prefix", "--prev-kv", "-o", "json"])
        .ok()
        .json();
    assert_eq!(j["deleted"], 2);
    assert_eq!(j["prev_kvs"][1]["value"], "c");
    assert_eq!(
        run(ep, &["get", "tmp/", "--prefix", "--count-only"])
            .ok()
            .stdout,
        "0\n"
    );

    // txn, text form from stdin: compares hold.
    let mut cmd = cli(ep);
    cmd.args(["txn", "-o", "simple"]);
    let out = run_with(
        cmd,
        "compare:\n  value(\"app/a\") = \"1\"\n  version(app/b) > 0\nsuccess:\n  \
         put app/a \"one\"\n  get app/b\nfailure:\n  put app/a never\n",
    )
    .ok();
    assert_eq!(out.stdout, "SUCCESS\nOK\napp/b\n2\n");
    assert_eq!(
        run(ep, &["get", "app/a", "-o", "simple"]).ok().stdout,
        "app/a\none\n"
    );
    // Compares fail: the failure branch runs, COMPARE_FAILED.
    let mut cmd = cli(ep);
    cmd.args(["txn", "-o", "json"]);
    let out = run_with(
        cmd,
        "compare:\n value(app/a) = \"1\"\nsuccess:\n del app/a\nfailure:\n get app/a\n",
    )
    .code(COMPARE_FAILED);
    let j = out.json();
    assert_eq!(j["succeeded"], false);
    assert_eq!(j["results"][0]["get"]["kvs"][0]["value"], "one");
    // JSON form from a file.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("txn.json");
    std::fs::write(
        &f,
        r#"{"compare":[{"key":"app/new","target":"create","op":"=","value":0}],
            "success":[{"put":{"key":"app/new","value":"made"}}]}"#,
    )
    .unwrap();
    let out = run(ep, &["txn", "--file", f.to_str().unwrap()]).ok();
    assert!(out.stdout.starts_with("SUCCESS"), "{out:?}");
    assert_eq!(
        run(ep, &["get", "app/new", "-o", "simple"]).ok().stdout,
        "app/new\nmade\n"
    );
    // Malformed text: USAGE, the line and what was expected.
    let mut cmd = cli(ep);
    cmd.arg("txn");
    let out = run_with(cmd, "compare:\n  value(app/a) ~ \"1\"\n").code(USAGE);
    assert!(
        out.stderr.contains("txn line 2") && out.stderr.contains("unknown operator"),
        "{out:?}"
    );
    assert!(out.stderr.contains("docs/cli.md"), "{out:?}");
    let mut cmd = cli(ep);
    cmd.arg("txn");
    let out = run_with(cmd, "put a b\n").code(USAGE);
    assert!(out.stderr.contains("before a section"), "{out:?}");

    // watch: replay from a revision, --count, range filtering, JSON lines.
    let w1 = run(ep, &["-o", "json", "put", "w/a", "1"]).ok().json()["revision"]
        .as_u64()
        .unwrap();
    run(ep, &["put", "w/b", "2"]).ok();
    run(ep, &["put", "w/c", "3"]).ok();
    run(ep, &["del", "w/a"]).ok();
    let out = run(
        ep,
        &[
            "watch",
            "w/",
            "--prefix",
            "--rev",
            &w1.to_string(),
            "--count",
            "4",
            "-o",
            "json",
        ],
    )
    .ok();
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("PUT", "w/a"),
            ("PUT", "w/b"),
            ("PUT", "w/c"),
            ("DELETE", "w/a")
        ]
    );
    let out = run(
        ep,
        &[
            "watch",
            "w/b",
            "--range-end",
            "w/c",
            "--rev",
            &w1.to_string(),
            "--count",
            "1",
            "-o",
            "simple",
        ],
    )
    .ok();
    assert_eq!(out.stdout, "PUT\nw/b\n2\n");
    // A live watch prints new events, and Ctrl-C ends it with 0.
    let live = Running::start(ep, &["watch", "live"]);
    eventually("the live watch sees a put", || {
        run(ep, &["put", "live", "v"]).ok();
        live.lines
            .recv_timeout(Duration::from_millis(500))
            .is_ok_and(|l| l.contains("live"))
    });
    live.interrupt();
    assert_eq!(live.wait(), OK);

    // leases: grant, put --lease, timetolive --keys, list, keepalive, revoke.
    let id = run(ep, &["lease", "grant", "60", "-o", "simple"])
        .ok()
        .stdout
        .trim()
        .to_string();
    run(ep, &["put", "leased", "x", "--lease", &id]).ok();
    let j = run(ep, &["lease", "timetolive", &id, "--keys", "-o", "json"])
        .ok()
        .json();
    assert_eq!(j["granted_ttl_ms"], 60_000);
    assert_eq!(j["keys"][0], "leased");
    let out = run(ep, &["lease", "list"]).ok();
    assert!(out.stdout.lines().any(|l| l.starts_with(&id)), "{out:?}");
    let out = run(ep, &["lease", "keepalive", &id, "--once"]).ok();
    assert!(out.stdout.contains("kept alive, TTL 60s"), "{out:?}");
    let ka = Running::start(ep, &["lease", "keepalive", &id]);
    assert!(ka.line("first renewal").contains(&id));
    ka.interrupt();
    assert_eq!(ka.wait(), OK);
    let out = run(ep, &["lease", "revoke", &id]).ok();
    assert!(out.stdout.contains("1 keys deleted"), "{out:?}");
    run(ep, &["get", "leased"]).code(NOT_FOUND);
    // Unknown lease: NOT_FOUND with the server's message and a hint.
    let out = run(ep, &["lease", "revoke", &id]).code(NOT_FOUND);
    assert!(
        out.stderr.contains("lease not found") && out.stderr.contains("lease grant"),
        "{out:?}"
    );
    run(ep, &["put", "k", "v", "--lease", "12345"]).code(NOT_FOUND);
    run(ep, &["lease", "timetolive", "12345"]).code(NOT_FOUND);
    // put --ttl: the key expires.
    run(ep, &["put", "short", "x", "--ttl", "1s"]).ok();
    eventually("the key with a TTL expires", || {
        run(ep, &["get", "short"]).code == NOT_FOUND
    });

    // check perf: a short load test prints throughput and percentiles and
    // removes its keys.
    let j = run(
        ep,
        &[
            "check",
            "perf",
            "--clients",
            "2",
            "--duration",
            "1s",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert!(j["ops"].as_u64().unwrap() > 0, "{j}");
    assert!(
        j["p99_us"].as_u64().unwrap() >= j["p50_us"].as_u64().unwrap(),
        "{j}"
    );
    assert_eq!(
        run(
            ep,
            &["get", "/dengine-check-perf/", "--prefix", "--count-only"]
        )
        .ok()
        .stdout,
        "0\n"
    );
    let out = run(
        ep,
        &["check", "perf", "--clients", "1", "--duration", "500ms"],
    )
    .ok();
    assert!(
        out.stdout.contains("OPS/S") && out.stdout.contains("P99"),
        "{out:?}"
    );

    // snapshot trigger.
    let out = run(ep, &["snapshot", "trigger"]).ok();
    assert!(
        out.stdout.starts_with("snapshot taken at index "),
        "{out:?}"
    );
    // snapshot save: a verified file; an existing file needs --overwrite.
    let file = dir.path().join("backup.snap");
    let file_s = file.to_str().unwrap();
    let j = run(ep, &["snapshot", "save", file_s, "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        j["bytes"].as_u64().unwrap(),
        std::fs::metadata(&file).unwrap().len()
    );
    assert!(j["revision"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["sha256"].as_str().unwrap().len(), 64, "{j}");
    let out = run(ep, &["snapshot", "save", file_s]).code(USAGE);
    assert!(out.stderr.contains("--overwrite"), "{out:?}");
    let out = run(ep, &["snapshot", "save", file_s, "--overwrite"]).ok();
    assert!(out.stdout.starts_with("saved "), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lock_elect_membership_and_status() {
    let mut c = Cluster::start(ClusterConfig::default());
    let leader = c.wait_leader(ELECTION_BOUND).await.unwrap();
    let ep = endpoints_of(&c);

    // endpoint status: one row per member, exactly one leader, no lag once
    // applied; JSON has every field.
    let j = run(&ep, &["endpoint", "status", "-o", "json"]).ok().json();
    let members = j["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{j}");
    assert_eq!(
        members.iter().filter(|m| m["leader"] == true).count(),
        1,
        "{j}"
    );
    assert_eq!(j["leader_id"], leader);
    for m in members {
        for f in ["term", "commit_index", "applied_index", "lag", "data_bytes"] {
            assert!(m.get(f).is_some(), "{f} missing in {m}");
        }
    }
    let out = run(&ep, &["endpoint", "status"]).ok();
    assert_eq!(out.stdout.lines().count(), 4, "{out:?}");
    assert!(out.stdout.starts_with("ENDPOINT"), "{out:?}");
    let out = run(&ep, &["endpoint", "health"]).ok();
    assert_eq!(out.stdout.matches(" true ").count(), 3, "{out:?}");

    // member list, and DENGINE_ENDPOINTS naming one member is enough.
    let one = c.client_addr(leader);
    let j = run(&one, &["member", "list", "-o", "json"]).ok().json();
    assert_eq!(j["members"].as_array().unwrap().len(), 3);
    assert_eq!(j["leader_id"], leader);

    // lock with a command: the command gets the fencing token, the CLI
    // exits with the command's code, and the lock is released afterwards.
    let out = run(
        &ep,
        &[
            "lock",
            "jobs",
            "--",
            "sh",
            "-c",
            "echo token=$DENGINE_LOCK_FENCING_TOKEN; exit 7",
        ],
    );
    assert_eq!(out.code, 7, "{out:?}");
    assert!(
        out.stdout.starts_with("token=") && out.stdout.trim().len() > "token=".len(),
        "{out:?}"
    );
    // Held until Ctrl-C: a second locker waits meanwhile.
    let holder = Running::start(&ep, &["lock", "jobs"]);
    let first = holder.line("lock acquired");
    assert!(first.starts_with("locked jobs/"), "{first}");
    let waiter = Running::start(&ep, &["lock", "jobs", "-o", "simple"]);
    assert!(
        waiter.lines.recv_timeout(Duration::from_secs(2)).is_err(),
        "the second locker got the lock while it was held"
    );
    holder.interrupt();
    assert_eq!(holder.wait(), OK);
    assert!(waiter.line("lock after release").starts_with("jobs/"));
    waiter.interrupt();
    assert_eq!(waiter.wait(), OK);
    // Released: no lock keys remain.
    assert_eq!(
        run(&ep, &["get", "jobs/", "--prefix", "--count-only"])
            .ok()
            .stdout,
        "0\n"
    );

    // elect: a candidate leads until Ctrl-C; --listen sees it.
    let cand = Running::start(&ep, &["elect", "primary", "node-a"]);
    assert!(cand.line("elected").starts_with("elected primary/"));
    let out = run(
        &ep,
        &[
            "elect", "primary", "--listen", "--count", "1", "-o", "simple",
        ],
    )
    .ok();
    assert_eq!(out.stdout, "node-a\n");
    let listener = Running::start(&ep, &["elect", "primary", "--listen", "-o", "simple"]);
    assert_eq!(listener.line("current leader"), "node-a");
    let cand_b = Running::start(&ep, &["elect", "primary", "node-b"]);
    cand.interrupt();
    assert_eq!(cand.wait(), OK);
    assert!(cand_b.line("b elected").starts_with("elected primary/"));
    assert_eq!(listener.line("next leader"), "node-b");
    listener.interrupt();
    assert_eq!(listener.wait(), OK);
    cand_b.interrupt();
    assert_eq!(cand_b.wait(), OK);
    run(&ep, &["elect", "primary"]).code(USAGE);

    // member add-learner / promote / remove, leader transfer.
    let (peer, client) = c.spawn_joiner(4);
    let j = run(
        &ep,
        &["member", "add-learner", "4", &peer, &client, "-o", "json"],
    )
    .ok()
    .json();
    let m4 = j["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 4)
        .cloned()
        .unwrap();
    assert_eq!(m4["role"], "learner");
    eventually("learner 4 is promoted once caught up", || {
        run(&ep, &["member", "promote", "4"]).code == OK
    });
    let out = run(&ep, &["member", "list", "-o", "simple"]).ok();
    assert!(
        out.stdout.lines().any(|l| l.starts_with("4 voter ")),
        "{out:?}"
    );
    let out = run(&ep, &["member", "promote", "99"]);
    assert_ne!(out.code, OK, "{out:?}");
    let target = *c
        .ids()
        .iter()
        .find(|id| **id != leader && **id != 4)
        .unwrap();
    run(&ep, &["leader", "transfer", &target.to_string()]).ok();
    eventually("the leadership moves", || {
        run(&ep, &["member", "list", "-o", "json"]).json()["leader_id"] == target
    });
    let out = run(&ep, &["member", "remove", "4", "-o", "simple"]).ok();
    assert!(!out.stdout.lines().any(|l| l.starts_with("4 ")), "{out:?}");
    let out = run(&ep, &["member", "remove", "4"]).code(NOT_FOUND);
    assert!(out.stderr.contains("member list"), "{out:?}");
}

/// No server at the endpoint, bad flags: clear messages and exit codes,
/// without a cluster.
#[test]
fn cli_errors_without_a_cluster() {
    let port = free_ports(1)[0];
    let nobody = format!("127.0.0.1:{port}");
    let out = run(&nobody, &["--timeout", "2s", "get", "k"]).code(UNAVAILABLE);
    assert!(
        out.stderr.contains(&nobody) && out.stderr.contains("--endpoints"),
        "{out:?}"
    );
    // The flag wins over the environment variable.
    let out = run(
        "127.0.0.1:1",
        &["--endpoints", &nobody, "--timeout", "2s", "member", "list"],
    )
    .code(UNAVAILABLE);
    assert!(out.stderr.contains(&nobody), "{out:?}");
    // Usage errors: exit 2 before any connection.
    run(&nobody, &["get"]).code(USAGE);
    run(&nobody, &["frobnicate"]).code(USAGE);
    let out = run(&nobody, &["--timeout", "soon", "get", "k"]).code(USAGE);
    assert!(out.stderr.contains("duration"), "{out:?}");
    let out = run(&nobody, &["--user", "u", "get", "k"]).code(USAGE);
    assert!(out.stderr.contains("--password"), "{out:?}");
    let out = run(&nobody, &["--cert", "c.pem", "get", "k"]).code(USAGE);
    assert!(out.stderr.contains("--cacert"), "{out:?}");
    let out = run(&nobody, &["lease", "revoke", "abc"]).code(USAGE);
    assert!(out.stderr.contains("not an id"), "{out:?}");
    let mut cmd = cli(&nobody);
    cmd.arg("txn");
    let out = run_with(cmd, "{\"compare\": 3}").code(USAGE);
    assert!(out.stderr.contains("txn JSON"), "{out:?}");
    // --help documents the exit codes.
    let out = run(&nobody, &["--help"]).ok();
    assert!(out.stdout.contains("Exit codes:"), "{out:?}");
}

/// `--cacert/--cert/--key` against a cluster requiring client certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tls_flags() {
    let mut c = TlsCluster::start(TlsClusterConfig {
        nodes: 1,
        client_auth: "require".into(),
        ..Default::default()
    });
    c.wait_leader(ELECTION_BOUND).await.unwrap();
    let ep = c.client_addr(1);
    let certs = c.certs();
    let p = |f: &str| certs.join(f).display().to_string();
    tokio::task::block_in_place(|| {
        let tls = [
            "--cacert".to_string(),
            p("ca.pem"),
            "--cert".into(),
            p("client-app.pem"),
            "--key".into(),
            p("client-app-key.pem"),
        ];
        let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
        args.extend(["put", "secure", "yes"]);
        run(&ep, &args).ok();
        // The same settings from the environment.
        let mut cmd = cli(&ep);
        cmd.env("DENGINE_CACERT", p("ca.pem"))
            .env("DENGINE_CERT", p("client-app.pem"))
            .env("DENGINE_KEY", p("client-app-key.pem"))
            .args(["get", "secure", "-o", "simple"]);
        assert_eq!(run_with(cmd, "").ok().stdout, "secure\nyes\n");
        // Without the CA the server cannot be reached over plain text.
        let out = run(&ep, &["--timeout", "2s", "get", "secure"]);
        assert_eq!(out.code, UNAVAILABLE, "{out:?}");
        // A CA file that does not exist: named in the message.
        let out = run(&ep, &["--cacert", "/nonexistent/ca.pem", "get", "secure"]).code(USAGE);
        assert!(out.stderr.contains("/nonexistent/ca.pem"), "{out:?}");
    });
}

/// `--user/--password`, DENGINE_USER/DENGINE_PASSWORD and refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_auth_flags() {
    let hash = {
        let mut child = Command::new(server_binary())
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run d-engine-server hash-password");
        child.stdin.take().unwrap().write_all(b"wpw\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("auth.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nenabled = true\n\n[[auth.roles]]\nname = \"app-writer\"\n\
             grants = [{{ prefix = \"app/\", access = \"readwrite\" }}]\n\n\
             [[auth.users]]\nname = \"writer\"\npassword_hash = \"{hash}\"\nroles = [\"app-writer\"]\n"
        ),
    )
    .unwrap();
    let mut c = Cluster::start(ClusterConfig {
        nodes: 1,
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    });
    // The harness's leader probe has no credentials (auth refuses it);
    // health is open, so wait for the node to answer it instead.
    c.wait_serving(1, ELECTION_BOUND).await.unwrap();
    let ep = endpoints_of(&c);
    tokio::task::block_in_place(|| {
        let out = run(&ep, &["put", "app/x", "1"]).code(AUTH);
        assert!(out.stderr.contains("--user"), "{out:?}");
        eventually("the writer can write", || {
            run(
                &ep,
                &["--user", "writer", "--password", "wpw", "put", "app/x", "1"],
            )
            .code
                == OK
        });
        let mut cmd = cli(&ep);
        cmd.env("DENGINE_USER", "writer")
            .env("DENGINE_PASSWORD", "wpw")
            .args(["get", "app/x", "-o", "simple"]);
        assert_eq!(run_with(cmd, "").ok().stdout, "app/x\n1\n");
        run(
            &ep,
            &["--user", "writer", "--password", "nope", "get", "app/x"],
        )
        .code(AUTH);
        let out = run(
            &ep,
            &["--user", "writer", "--password", "wpw", "put", "other", "1"],
        )
        .code(AUTH);
        assert!(out.stderr.contains("permission denied"), "{out:?}");
    });
}

/// `dengine user/role/token` against a real one-node cluster with auth:
/// a runtime role, grant and user, used with its password and a token,
/// then the token revoked and the user deleted; bad input exits USAGE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_user_role_token() {
    let hash = {
        let mut child = Command::new(server_binary())
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run d-engine-server hash-password");
        child.stdin.take().unwrap().write_all(b"apw\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("auth.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nenabled = true\n\n[[auth.users]]\nname = \"root\"\n\
             password_hash = \"{hash}\"\nroles = [\"admin\"]\n"
        ),
    )
    .unwrap();
    let mut c = Cluster::start(ClusterConfig {
        nodes: 1,
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    });
    c.wait_serving(1, ELECTION_BOUND).await.unwrap();
    let ep = endpoints_of(&c);
    tokio::task::block_in_place(|| {
        let admin = |args: &[&str]| {
            let mut a = vec!["--user", "root", "--password", "apw"];
            a.extend_from_slice(args);
            run(&ep, &a)
        };
        eventually("the admin is served", || {
            admin(&["role", "add", "app"]).code == OK
        });
        admin(&["role", "grant", "app", "app/", "readwrite"]).ok();
        let out = admin(&["role", "grant", "app", "x/", "write"]).code(USAGE);
        assert!(out.stderr.contains("read"), "{out:?}");
        // The password from stdin.
        let mut add = cli(&ep);
        add.args([
            "--user",
            "root",
            "--password",
            "apw",
            "user",
            "add",
            "carol",
        ]);
        run_with(add, "cpw\n").ok();
        admin(&["user", "grant-role", "carol", "app"]).ok();
        let out = admin(&["user", "list", "-o", "json"]).ok();
        let users = out.json();
        let carol = users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "carol")
            .expect("carol listed");
        assert_eq!(carol["source"], "runtime");
        assert_eq!(carol["roles"][0], "app");
        let out = admin(&["role", "get", "app", "-o", "simple"]).ok();
        assert_eq!(out.stdout, "app runtime app/ readwrite\n");
        run(
            &ep,
            &["--user", "carol", "--password", "cpw", "put", "app/k", "v"],
        )
        .ok();
        run(
            &ep,
            &["--user", "carol", "--password", "cpw", "put", "x", "v"],
        )
        .code(AUTH);
        // A name clash with a configured user is refused.
        admin(&["user", "add", "root", "--new-password", "p"]).code(USAGE);

        // A token: works, then revoked, then refused.
        let token = admin(&["token", "create", "carol", "--ttl", "1h"])
            .ok()
            .stdout;
        let token = token.trim().to_string();
        run(&ep, &["--token", &token, "get", "app/k"]).ok();
        admin(&["token", "revoke", &token]).ok();
        run(&ep, &["--token", &token, "get", "app/k"]).code(AUTH);

        // A changed password, a revoked role, a deleted user.
        let mut pw = cli(&ep);
        pw.args([
            "--user",
            "root",
            "--password",
            "apw",
            "user",
            "passwd",
            "carol",
        ]);
        run_with(pw, "new\n").ok();
        run(
            &ep,
            &["--user", "carol", "--password", "cpw", "get", "app/k"],
        )
        .code(AUTH);
        run(
            &ep,
            &["--user", "carol", "--password", "new", "get", "app/k"],
        )
        .ok();
        admin(&["user", "revoke-role", "carol", "app"]).ok();
        run(
            &ep,
            &["--user", "carol", "--password", "new", "get", "app/k"],
        )
        .code(AUTH);
        admin(&["role", "revoke", "app", "app/"]).ok();
        admin(&["role", "delete", "app"]).ok();
        admin(&["user", "delete", "carol"]).ok();
        admin(&["user", "get", "carol"]).code(USAGE);
        // Not an admin: refused.
        run(
            &ep,
            &["--user", "nobody", "--password", "x", "user", "list"],
        )
        .code(AUTH);
    });
}
