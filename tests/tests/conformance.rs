//! The Rust driver of the cross-language conformance suite (issue 18).
//!
//! Runs every scenario of `tests/conformance/scenarios.json` against real
//! `d-engine-server` processes (the [`d_engine_tests::cluster`] harness)
//! through the public `d-engine-client` API, and asserts the outcome the data
//! states. The Go driver (`clients/go/conformance_linux_test.go`) and the
//! Python driver (`clients/python/tests/test_conformance.py`) run the same
//! file; `docs/clients.md` ("Conformance suite") describes the steps.
//!
//! "shared" scenarios run on one 3-node cluster; "fresh" ones (faults,
//! server settings) each on a cluster of their own. Every scenario runs even
//! if an earlier one failed; the test fails listing every failure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use d_engine_client::{
    Client, ClientBuilder, Error, ErrorCode, EventType, KeyValue, RangeEnd, RangeOptions, Txn,
    TxnOp, WatchEvent, WatchOptions, WatchStream,
};
use d_engine_tests::cluster::{Cluster, ClusterConfig};
use serde_json::Value;

/// Rust's row of the error table in `docs/clients.md`: contract name ->
/// `Error::code()`.
fn error_code(name: &str) -> Option<ErrorCode> {
    Some(match name {
        "NOT_LEADER" => ErrorCode::NotLeader,
        "NO_LEADER" => ErrorCode::NoLeader,
        "INVALID_ARGUMENT" => ErrorCode::InvalidArgument,
        "OVERLOADED" => ErrorCode::Overloaded,
        "TIMEOUT" => ErrorCode::Timeout,
        "SHUTTING_DOWN" => ErrorCode::ShuttingDown,
        "STORAGE" => ErrorCode::Storage,
        "CHANGE_IN_PROGRESS" => ErrorCode::ChangeInProgress,
        "COMPACTED" => ErrorCode::Compacted,
        "UNAUTHENTICATED" => ErrorCode::Unauthenticated,
        "PERMISSION_DENIED" => ErrorCode::PermissionDenied,
        "UNKNOWN_NODE" => ErrorCode::UnknownNode,
        "NO_SPACE" => ErrorCode::NoSpace,
        "LEASE_NOT_FOUND" => ErrorCode::LeaseNotFound,
        "NOT_HELD" => ErrorCode::NotHeld,
        "UNAVAILABLE" => ErrorCode::Unavailable,
        "INTERNAL" => ErrorCode::Internal,
        "CLIENT_CLOSED" => ErrorCode::ClientClosed,
        _ => return None,
    })
}

type R<T = ()> = Result<T, String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

fn s<'a>(v: &'a Value, field: &str) -> R<&'a str> {
    v.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string field `{field}` in {v}"))
}

fn n(v: &Value, field: &str) -> R<u64> {
    v.get(field)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("missing number field `{field}` in {v}"))
}

/// An absent field or null -> None, a string -> its bytes.
fn opt_bytes(v: &Value, field: &str) -> Option<Vec<u8>> {
    v.get(field)
        .and_then(Value::as_str)
        .map(|s| s.as_bytes().to_vec())
}

fn batch_key(prefix: &str, i: u64) -> String {
    format!("{prefix}{i:04}")
}

fn batch_value(i: u64, size: u64) -> Vec<u8> {
    let mut v = format!("v{i:04}").into_bytes();
    v.resize(v.len().max(size as usize), b'x');
    v
}

fn prefix_end(p: &str) -> Vec<u8> {
    let mut b = p.as_bytes().to_vec();
    *b.last_mut().expect("non-empty prefix") += 1;
    b
}

fn timeout_of(st: &Value) -> Duration {
    Duration::from_secs_f64(st.get("timeout_s").and_then(Value::as_f64).unwrap_or(10.0))
}

struct Watch {
    stream: Option<WatchStream>,
    start: u64,
    last: u64,
    ended: Option<Error>,
}

enum Item {
    Event(WatchEvent),
    End(Error),
    Closed,
    Timeout,
}

impl Watch {
    async fn next(&mut self, t: Duration) -> Item {
        let Some(stream) = self.stream.as_mut() else {
            return Item::Closed;
        };
        match tokio::time::timeout(t, stream.recv()).await {
            Err(_) => Item::Timeout,
            Ok(None) => Item::Closed,
            Ok(Some(Ok(ev))) => Item::Event(ev),
            Ok(Some(Err(e))) => Item::End(e),
        }
    }
}

struct Run<'a> {
    suite: &'a Value,
    sc: &'a Value,
    cluster: &'a mut Cluster,
    client: Client,
    ns: String,
    revs: HashMap<String, u64>,
    watches: HashMap<String, Watch>,
    stopped: Option<u64>,
    paused: Option<u64>,
}

impl Run<'_> {
    fn check_error(&self, err: &Error, name: &str) -> R {
        let code = error_code(name)
            .ok_or_else(|| format!("the Rust driver has no row for error {name:?}"))?;
        ensure!(
            err.code() == code,
            "expected {name} ({code:?}), got {:?}: {err}",
            err.code()
        );
        if let Some(r) = self.suite["errors"][name]["retryable"].as_bool() {
            ensure!(
                err.is_retryable() == r,
                "{name}: is_retryable() = {}, the error table says {r}",
                err.is_retryable()
            );
        }
        Ok(())
    }

    fn check_elapsed(&self, st: &Value, t0: Instant) -> R {
        if let Some(ms) = st.get("max_elapsed_ms").and_then(Value::as_u64) {
            let el = t0.elapsed();
            ensure!(
                el <= Duration::from_millis(ms),
                "the error took {el:?} (retried?); the limit is {ms} ms"
            );
        }
        Ok(())
    }

    fn outcome<T>(&self, st: &Value, t0: Instant, res: Result<T, Error>) -> R<Option<T>> {
        match (st.get("expect_error").and_then(Value::as_str), res) {
            (None, Ok(v)) => Ok(Some(v)),
            (None, Err(e)) => Err(format!("unexpected error: {e}")),
            (Some(name), Ok(_)) => Err(format!("expected {name}, got success")),
            (Some(name), Err(e)) => {
                self.check_error(&e, name)?;
                self.check_elapsed(st, t0)?;
                Ok(None)
            }
        }
    }

    async fn step(&mut self, st: &Value) -> R {
        let kv = self.client.kv();
        match s(st, "op")? {
            "put" => {
                let key = format!("{}{}", self.ns, s(st, "key")?);
                let value = match opt_bytes(st, "value") {
                    Some(v) => v,
                    None => vec![b'x'; n(st, "size")? as usize],
                };
                let t0 = Instant::now();
                let res = kv.put(&key, value).await;
                if let Some(rev) = self.outcome(st, t0, res)? {
                    self.revs.insert(key, rev);
                }
            }
            "put_many" => {
                let size = st.get("size").and_then(Value::as_u64).unwrap_or(0);
                for i in 0..n(st, "count")? {
                    let key = format!("{}{}", self.ns, batch_key(s(st, "prefix")?, i));
                    let rev = kv
                        .put(&key, batch_value(i, size))
                        .await
                        .map_err(|e| format!("put {key:?}: {e}"))?;
                    self.revs.insert(key, rev);
                }
            }
            "txn_put_many" => {
                let size = st.get("size").and_then(Value::as_u64).unwrap_or(0);
                let ops = (0..n(st, "count")?)
                    .map(|i| {
                        Ok(TxnOp::put(
                            format!("{}{}", self.ns, batch_key(s(st, "prefix")?, i)),
                            batch_value(i, size),
                        ))
                    })
                    .collect::<R<Vec<_>>>()?;
                let t0 = Instant::now();
                let res = kv.txn(Txn::new().and_then(ops)).await;
                self.outcome(st, t0, res)?;
            }
            "get" => {
                let key = format!("{}{}", self.ns, s(st, "key")?);
                let got = kv
                    .get(&key)
                    .await
                    .map_err(|e| format!("get {key:?}: {e}"))?
                    .map(|kv| kv.value.to_vec());
                let want = opt_bytes(st, "expect");
                ensure!(got == want, "get {key:?} = {got:?}, want {want:?}");
            }
            "cas" => {
                let key = format!("{}{}", self.ns, s(st, "key")?);
                let res = kv
                    .compare_and_swap(&key, opt_bytes(st, "expected"), opt_bytes(st, "new_value"))
                    .await
                    .map_err(|e| format!("cas {key:?}: {e}"))?;
                if let Some(want) = st.get("expect_succeeded").and_then(Value::as_bool) {
                    ensure!(
                        res.succeeded == want,
                        "cas {key:?}: succeeded = {}, want {want}",
                        res.succeeded
                    );
                }
                if st.get("expect_current").is_some() {
                    let got = res.current.map(|kv| kv.value.to_vec());
                    let want = opt_bytes(st, "expect_current");
                    ensure!(got == want, "cas {key:?}: current = {got:?}, want {want:?}");
                }
            }
            "range_pages" => {
                let prefix = format!("{}{}", self.ns, s(st, "prefix")?);
                let page_size = n(st, "page_size")?;
                let expect_keys = n(st, "expect_keys")?;
                let mut next = prefix.as_bytes().to_vec();
                let mut keys = Vec::new();
                let mut pages = 0;
                loop {
                    let page = kv
                        .range(
                            &next,
                            RangeOptions {
                                end: RangeEnd::Before(prefix_end(&prefix)),
                                limit: page_size as u32,
                                ..Default::default()
                            },
                        )
                        .await
                        .map_err(|e| format!("range page {}: {e}", pages + 1))?;
                    pages += 1;
                    let want = expect_keys - keys.len() as u64;
                    ensure!(
                        page.count == want,
                        "page {pages}: count = {}, want {want} (the keys from the page's start to the range end)",
                        page.count
                    );
                    ensure!(
                        page.kvs.len() as u64 <= page_size,
                        "page {pages} has {} pairs, more than the limit {page_size}",
                        page.kvs.len()
                    );
                    keys.extend(page.kvs.into_iter().map(|kv| kv.key.to_vec()));
                    if !page.more {
                        break;
                    }
                    ensure!(pages <= expect_keys + 1, "more than {pages} pages");
                    next = page.next_key.ok_or("more without next_key")?;
                }
                ensure!(
                    pages == n(st, "expect_pages")?,
                    "{pages} pages, want {}",
                    n(st, "expect_pages")?
                );
                check_batch_keys(&keys, &prefix, expect_keys)?;
            }
            "range_all" => {
                let prefix = format!("{}{}", self.ns, s(st, "prefix")?);
                let kvs: Vec<KeyValue> = kv
                    .range_all(
                        &prefix,
                        RangeOptions::prefix().with_limit(n(st, "page_size")? as u32),
                    )
                    .collect_all()
                    .await
                    .map_err(|e| format!("range_all: {e}"))?;
                let keys: Vec<Vec<u8>> = kvs.into_iter().map(|kv| kv.key.to_vec()).collect();
                check_batch_keys(&keys, &prefix, n(st, "expect_keys")?)?;
            }
            "watch" => self.open_watch(st).await?,
            "expect_events" => {
                let name = s(st, "watch")?;
                let events = st["events"].as_array().ok_or("events must be a list")?;
                for (i, want) in events.iter().enumerate() {
                    let ev = self
                        .next_event(name, st, &format!("event {} of {}", i + 1, events.len()))
                        .await?;
                    let key = format!("{}{}", self.ns, s(want, "key")?);
                    self.check_event(&ev, s(want, "type")?, &key, s(want, "value")?.as_bytes())?;
                    self.w(name)?.last = ev.revision();
                }
            }
            "expect_batch" => {
                let name = s(st, "watch")?;
                let prefix = format!("{}{}", self.ns, s(st, "prefix")?);
                let size = st.get("size").and_then(Value::as_u64).unwrap_or(0);
                let start = self.w(name)?.start;
                for i in 0..n(st, "count")? {
                    let key = batch_key(&prefix, i);
                    if self.revs[&key] < start {
                        continue;
                    }
                    let ev = self
                        .next_event(name, st, &format!("event for {key}"))
                        .await?;
                    self.check_event(&ev, "put", &key, &batch_value(i, size))?;
                    self.w(name)?.last = ev.revision();
                }
            }
            "drain_batch_until_end" => self.drain(st).await?,
            "expect_end" => {
                let name = s(st, "watch")?;
                let want = s(st, "error")?;
                match self.w(name)?.next(timeout_of(st)).await {
                    Item::End(e) => {
                        self.check_error(&e, want)?;
                        let w = self.w(name)?;
                        let rr = e.resume_revision().unwrap_or(0);
                        ensure!(
                            rr > w.last && rr >= w.start,
                            "resume revision {rr}: want one past the last delivered event {} (start {})",
                            w.last,
                            w.start
                        );
                        w.ended = Some(e);
                    }
                    Item::Event(ev) => {
                        return Err(format!("an event {ev:?}, want the end with {want}"))
                    }
                    Item::Closed => return Err(format!("the watch closed without {want}")),
                    Item::Timeout => {
                        return Err(format!("the watch did not end within {:?}", timeout_of(st)))
                    }
                }
            }
            "close_client" => self.client.close(),
            "fault" => self.fault(s(st, "kind")?).await?,
            other => return Err(format!("unknown op {other:?}")),
        }
        Ok(())
    }

    fn w(&mut self, name: &str) -> R<&mut Watch> {
        self.watches
            .get_mut(name)
            .ok_or_else(|| format!("no watch {name:?}"))
    }

    fn resolve_start(&mut self, start: &str) -> R<u64> {
        if start == "now" {
            return Ok(0);
        }
        let (kind, arg) = start
            .split_once(':')
            .ok_or_else(|| format!("unknown start {start:?}"))?;
        let rev = match kind {
            "rev_of" => self.revs.get(&format!("{}{arg}", self.ns)).copied(),
            "resume_of" | "compact_of" => {
                let w = self.w(arg)?;
                let e = w
                    .ended
                    .as_ref()
                    .ok_or_else(|| format!("watch {arg:?} has not ended"))?;
                if kind == "resume_of" {
                    e.resume_revision()
                } else {
                    e.compact_revision()
                }
            }
            _ => return Err(format!("unknown start {start:?}")),
        };
        rev.filter(|r| *r > 0)
            .ok_or_else(|| format!("start {start:?} resolved to no revision"))
    }

    async fn open_watch(&mut self, st: &Value) -> R {
        let name = s(st, "name")?.to_string();
        let start = self.resolve_start(st.get("start").and_then(Value::as_str).unwrap_or("now"))?;
        let (key, opts) = match st.get("prefix").and_then(Value::as_str) {
            Some(p) => (format!("{}{p}", self.ns), WatchOptions::prefix()),
            None => (format!("{}{}", self.ns, s(st, "key")?), WatchOptions::key()),
        };
        let opened = self
            .client
            .kv()
            .watch_with(&key, opts.with_start_revision(start))
            .await;
        let mut w = Watch {
            stream: None,
            start,
            last: 0,
            ended: None,
        };
        let Some(want) = st.get("expect_error").and_then(Value::as_str) else {
            w.stream = Some(opened.map_err(|e| format!("watch {key:?}: {e}"))?);
            self.watches.insert(name, w);
            return Ok(());
        };
        // The error may come from the open call or as the first item.
        let err = match opened {
            Err(e) => e,
            Ok(stream) => {
                w.stream = Some(stream);
                match w.next(timeout_of(st)).await {
                    Item::End(e) => e,
                    Item::Event(ev) => {
                        return Err(format!("an event {ev:?}, want {want} before any"))
                    }
                    Item::Closed => return Err(format!("the watch closed without {want}")),
                    Item::Timeout => return Err(format!("no {want} within {:?}", timeout_of(st))),
                }
            }
        };
        self.check_error(&err, want)?;
        if want == "COMPACTED" {
            let cr = err.compact_revision().unwrap_or(0);
            ensure!(
                cr > start,
                "compact revision {cr}, want one after the start {start}"
            );
        }
        let rr = err.resume_revision().unwrap_or(0);
        ensure!(
            rr == start,
            "resume revision {rr}, want the start revision {start} (nothing delivered)"
        );
        w.ended = Some(err);
        self.watches.insert(name, w);
        Ok(())
    }

    async fn next_event(&mut self, name: &str, st: &Value, what: &str) -> R<WatchEvent> {
        match self.w(name)?.next(timeout_of(st)).await {
            Item::Event(ev) => Ok(ev),
            Item::End(e) => Err(format!("{what}: the watch ended with {e:?}")),
            Item::Closed => Err(format!("{what}: the watch closed")),
            Item::Timeout => Err(format!("{what}: nothing within {:?}", timeout_of(st))),
        }
    }

    fn check_event(&self, ev: &WatchEvent, typ: &str, key: &str, value: &[u8]) -> R {
        let got = match ev.kind {
            EventType::Put => "put",
            EventType::Delete => "delete",
            _ => "progress",
        };
        ensure!(
            got == typ && ev.kv.key == key.as_bytes() && ev.kv.value == value,
            "event {got} {:?} ({} bytes, revision {}), want {typ} {key:?} ({} bytes) - in order, each once",
            String::from_utf8_lossy(&ev.kv.key),
            ev.kv.value.len(),
            ev.revision(),
            value.len()
        );
        if let Some(rev) = self.revs.get(key) {
            ensure!(
                ev.revision() == *rev,
                "event for {key:?} has revision {}, the put returned {rev}",
                ev.revision()
            );
        }
        Ok(())
    }

    async fn drain(&mut self, st: &Value) -> R {
        let name = s(st, "watch")?;
        let want = s(st, "error")?;
        let prefix = format!("{}{}", self.ns, s(st, "prefix")?);
        let count = n(st, "count")?;
        let size = st.get("size").and_then(Value::as_u64).unwrap_or(0);
        let deadline = Instant::now() + timeout_of(st);
        let mut i = 0;
        loop {
            let wait = if i < count {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::from_secs(2)
            };
            match self.w(name)?.next(wait).await {
                Item::End(e) => {
                    self.check_error(&e, want)?;
                    ensure!(
                        i < count,
                        "ended after all {i} events: the cut came after the whole batch"
                    );
                    let first_undelivered = self.revs[&batch_key(&prefix, i)];
                    let w = self.w(name)?;
                    let rr = e.resume_revision().unwrap_or(0);
                    ensure!(
                        w.last < rr && rr <= first_undelivered,
                        "resume revision {rr}: want one in ({}, {first_undelivered}] (after the last delivered event, at or before the first undelivered one)",
                        w.last
                    );
                    eprintln!("[conformance] {i} of {count} events delivered, then {e}");
                    w.ended = Some(e);
                    return Ok(());
                }
                Item::Event(ev) => {
                    ensure!(i < count, "an event after the batch: {ev:?}");
                    self.check_event(&ev, "put", &batch_key(&prefix, i), &batch_value(i, size))?;
                    self.w(name)?.last = ev.revision();
                    i += 1;
                }
                Item::Closed => {
                    return Err(format!("after {i} events the watch closed without {want}"))
                }
                Item::Timeout if i >= count => {
                    return Err(format!(
                    "all {i} events were delivered without {want}: the watcher never fell behind"
                ))
                }
                Item::Timeout => return Err(format!("after {i} events: nothing more in time")),
            }
        }
    }

    async fn leader(&mut self) -> R<u64> {
        self.cluster.wait_leader(Duration::from_secs(20)).await
    }

    async fn fault(&mut self, kind: &str) -> R {
        match kind {
            "kill_leader" => {
                let l = self.leader().await?;
                self.cluster.kill(l);
                self.stopped = Some(l);
            }
            "pause_leader" => {
                let l = self.leader().await?;
                self.cluster.pause(l);
                self.paused = Some(l);
            }
            "resume_paused" => self.cluster.resume(self.paused.ok_or("nothing paused")?),
            "terminate_leader" => {
                let l = self.leader().await?;
                ensure!(
                    self.cluster.terminate(l, Duration::from_secs(15)).is_some(),
                    "node {l} did not exit within 15 s of SIGTERM"
                );
                self.stopped = Some(l);
            }
            "restart_stopped" => self.cluster.restart(self.stopped.ok_or("nothing stopped")?),
            other => return Err(format!("unknown fault {other:?}")),
        }
        Ok(())
    }
}

fn check_batch_keys(keys: &[Vec<u8>], prefix: &str, count: u64) -> R {
    let want: Vec<Vec<u8>> = (0..count)
        .map(|i| batch_key(prefix, i).into_bytes())
        .collect();
    ensure!(
        keys == want.as_slice(),
        "{} keys (first {:?}), want {count} in order, each once",
        keys.len(),
        keys.first()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    );
    Ok(())
}

async fn start_cluster(server_toml: &str, dir: &std::path::Path, name: &str) -> Cluster {
    let mut extra_args = Vec::new();
    if !server_toml.is_empty() {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, server_toml).expect("write the scenario's server config");
        extra_args = vec!["--config".into(), path.display().to_string()];
    }
    let mut c = Cluster::start(ClusterConfig {
        nodes: 3,
        extra_args,
        ..Default::default()
    });
    c.wait_leader(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", c.log_tails(20)));
    c
}

async fn run_scenario(suite: &Value, sc: &Value, cluster: &mut Cluster) -> R {
    let name = s(sc, "name")?;
    let mut b = ClientBuilder::new(cluster.endpoints());
    if let Some(nb) = sc["client"]["watch_buffer"].as_u64() {
        b = b.watch_buffer(nb as usize);
    }
    let client = b.build().await.map_err(|e| format!("client: {e}"))?;
    let mut run = Run {
        suite,
        sc,
        cluster,
        client,
        ns: format!("conf/rust/{name}/"),
        revs: HashMap::new(),
        watches: HashMap::new(),
        stopped: None,
        paused: None,
    };
    let steps = sc["steps"].as_array().ok_or("steps must be a list")?;
    for (i, st) in steps.iter().enumerate() {
        let op = st["op"].as_str().unwrap_or("?");
        run.step(st)
            .await
            .map_err(|e| format!("step {} ({op}): {e}", i + 1))?;
    }
    let _ = run.sc;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_scenarios() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/scenarios.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let suite: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        suite["format"],
        1,
        "{}: this driver reads format 1",
        path.display()
    );
    let only = std::env::var("CONFORMANCE_ONLY").ok();
    let conf_dir = tempfile::tempdir().unwrap();
    let mut shared: Option<Cluster> = None;
    let mut failures = Vec::new();
    let t_all = Instant::now();
    for sc in suite["scenarios"].as_array().expect("scenarios") {
        let name = sc["name"].as_str().expect("name");
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        if let Some(why) = sc["known_differences"]["rust"].as_str() {
            eprintln!("[conformance] {name}: SKIP, known difference: {why}");
            continue;
        }
        let t0 = Instant::now();
        let res = match sc["cluster"].as_str() {
            Some("shared") => {
                if shared.is_none() {
                    shared = Some(start_cluster("", conf_dir.path(), "shared").await);
                }
                run_scenario(&suite, sc, shared.as_mut().unwrap()).await
            }
            Some("fresh") => {
                let toml = sc["server_toml"].as_str().unwrap_or("");
                let mut c = start_cluster(toml, conf_dir.path(), name).await;
                let res = run_scenario(&suite, sc, &mut c).await;
                if res.is_err() {
                    eprintln!("[conformance] {name}: server logs\n{}", c.log_tails(30));
                }
                res
            }
            other => Err(format!("unknown cluster {other:?}")),
        };
        match res {
            Ok(()) => eprintln!("[conformance] {name}: ok in {:?}", t0.elapsed()),
            Err(e) => {
                eprintln!("[conformance] {name}: FAILED: {e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    eprintln!("[conformance] done in {:?}", t_all.elapsed());
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures.join("\n")
    );
}
