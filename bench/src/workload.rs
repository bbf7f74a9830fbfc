//! Scenarios, key generation and the closed-loop load generator.
//!
//! A *client* is a task that issues one request, waits for its reply and
//! issues the next (closed loop), so `clients` is the number of requests in
//! flight. Clients share `connections` gRPC connections round-robin.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cpu::{CpuProbe, CpuSample, CpuUse};
use crate::stats::{new_histogram, Background, Latency, Round};

/// Read consistency, as the benchmark names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    Linearizable,
    Lease,
    Eventual,
}

impl Consistency {
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Eventual => "eventual",
        }
    }
}

/// The standard Raft-KV scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Writes from exactly one client.
    WriteSingle,
    /// Writes from `--clients` clients (default 1,000 in flight).
    Write,
    /// Reads with `--consistency` (default linearizable).
    Read,
    ReadLinearizable,
    ReadLease,
    ReadEventual,
    /// Linearizable reads (or `--consistency`) on only 10 keys.
    HotKey,
    /// Loads `--memory-keys` distinct keys on a fresh node, then reports its
    /// resident memory (VmRSS / VmHWM); not a timed round.
    Memory,
    /// A transfer-style transaction on two distinct keys: if the first
    /// key's mod revision is the one this tool last saw, put both keys,
    /// else read the first key (to learn its revision). Reports the share
    /// that succeeded.
    Txn,
    /// Linearizable range reads of `--page-size` keys (default 100), each
    /// client walking the preloaded key space page by page from a random
    /// start (continuing after the last key returned, wrapping at the end).
    /// Reports pages/s and keys/s.
    RangePage,
    /// Each client keeps one lease alive: grants it (`--lease-ttl`), then
    /// renews it in a closed loop over a keep-alive stream (etcd's
    /// LeaseKeepAlive, d-engine's LeaseKeepAlive; embedded: the in-process
    /// renew call, there is no stream). Reports renewals/s.
    LeaseKeepalive,
    /// Like `lease-keepalive`, one unary renew call per renewal (d-engine's
    /// LeaseRenew; etcd has no unary renew, so skipped there).
    LeaseRenew,
    /// Writes from `--clients` clients while `--range-readers` more tasks
    /// read range pages back to back (compare with `write`, same session):
    /// what a range reader costs the writers.
    WriteRangeReader,
}

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Put,
    Get(Consistency),
    /// See [`Scenario::Txn`].
    Txn,
    /// See [`Scenario::RangePage`].
    RangePage,
    /// One lease renewal, over a stream (`true`) or a unary call.
    LeaseRenew {
        stream: bool,
    },
}

impl OpKind {
    /// Whether the key space must be written before this op is measured.
    pub fn needs_preload(self) -> bool {
        matches!(self, OpKind::Get(_) | OpKind::Txn | OpKind::RangePage)
    }
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::WriteSingle => "write-single",
            Scenario::Write => "write",
            Scenario::Read => "read",
            Scenario::ReadLinearizable => "read-linearizable",
            Scenario::ReadLease => "read-lease",
            Scenario::ReadEventual => "read-eventual",
            Scenario::HotKey => "hot-key",
            Scenario::Memory => "memory",
            Scenario::Txn => "txn",
            Scenario::RangePage => "range-page",
            Scenario::LeaseKeepalive => "lease-keepalive",
            Scenario::LeaseRenew => "lease-renew",
            Scenario::WriteRangeReader => "write-range-reader",
        }
    }

    /// Background range readers this scenario runs beside its clients.
    pub fn range_readers(self, requested: usize) -> usize {
        match self {
            Scenario::WriteRangeReader => requested,
            _ => 0,
        }
    }

    /// The request this scenario issues; `read` and `hot-key` use `c`
    /// (`memory` loads with puts).
    pub fn op(self, c: Consistency) -> OpKind {
        match self {
            Scenario::WriteSingle
            | Scenario::Write
            | Scenario::Memory
            | Scenario::WriteRangeReader => OpKind::Put,
            Scenario::Txn => OpKind::Txn,
            Scenario::RangePage => OpKind::RangePage,
            Scenario::LeaseKeepalive => OpKind::LeaseRenew { stream: true },
            Scenario::LeaseRenew => OpKind::LeaseRenew { stream: false },
            Scenario::Read | Scenario::HotKey => OpKind::Get(c),
            Scenario::ReadLinearizable => OpKind::Get(Consistency::Linearizable),
            Scenario::ReadLease => OpKind::Get(Consistency::Lease),
            Scenario::ReadEventual => OpKind::Get(Consistency::Eventual),
        }
    }

    /// Number of clients this scenario runs with given the requested number.
    pub fn clients(self, requested: usize) -> usize {
        match self {
            Scenario::WriteSingle => 1,
            _ => requested.max(1),
        }
    }

    /// Keys drawn from: the key space, or the 10 hot keys.
    pub fn keys(self, key_space: usize) -> usize {
        match self {
            Scenario::HotKey => 10.min(key_space),
            _ => key_space,
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone)]
pub enum OpError {
    /// Timed out (the tool's deadline or the system's timeout error).
    Timeout(String),
    Other(String),
}

/// The reply to a transfer transaction ([`Driver::txn_transfer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnReply {
    /// Whether the compare held (both keys were written).
    pub succeeded: bool,
    /// Succeeded: the transaction's revision (the new mod revision of both
    /// keys). Failed: the first key's current mod revision (0 if missing).
    pub revision: u64,
}

/// One page of a range read ([`Driver::range_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageReply {
    /// Keys returned.
    pub keys: u64,
    /// Where the next page starts; `None` when the range is exhausted.
    pub next: Option<Vec<u8>>,
}

/// A boxed request future (lease renewers are trait objects).
pub type OpFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, OpError>> + Send + 'a>>;

/// One lease, granted by [`Driver::lease_open`], that one client renews.
pub trait LeaseRenewer: Send {
    /// Renews the lease once and waits for the acknowledgement.
    fn renew(&mut self) -> OpFuture<'_, ()>;
}

fn unsupported<T>(what: &str) -> Result<T, OpError> {
    Err(OpError::Other(format!(
        "{what} is not supported by this system"
    )))
}

/// One system under test, reachable over `connections()` connections.
pub trait Driver: Send + Sync + 'static {
    fn connections(&self) -> usize;
    /// Called before each case: a driver that talks to one node picks the
    /// current leader again (leadership can move under overload, and a
    /// former leader would forward every request). Returns a note for the
    /// log when something changed.
    fn before_case(&self) -> impl Future<Output = Option<String>> + Send {
        std::future::ready(None)
    }
    /// Whether the system offers this read consistency at all.
    fn supports(&self, c: Consistency) -> bool;
    fn put<'a>(
        &'a self,
        conn: usize,
        key: &'a [u8],
        value: &'a [u8],
    ) -> impl Future<Output = Result<(), OpError>> + Send + 'a;
    /// Returns whether the key was found.
    fn get<'a>(
        &'a self,
        conn: usize,
        key: &'a [u8],
        c: Consistency,
    ) -> impl Future<Output = Result<bool, OpError>> + Send + 'a;
    /// Whether the system offers this request at all (reads: [`Driver::supports`]).
    /// Puts and reads are universal; the coordination requests are opt-in.
    fn supports_op(&self, op: OpKind) -> bool {
        match op {
            OpKind::Put => true,
            OpKind::Get(c) => self.supports(c),
            OpKind::Txn | OpKind::RangePage | OpKind::LeaseRenew { .. } => false,
        }
    }
    /// One transaction: if `from`'s mod revision is `from_mod_revision`,
    /// put `value` under `from` and `to`; else read `from`.
    fn txn_transfer<'a>(
        &'a self,
        _conn: usize,
        _from: &'a [u8],
        _to: &'a [u8],
        _from_mod_revision: u64,
        _value: &'a [u8],
    ) -> impl Future<Output = Result<TxnReply, OpError>> + Send + 'a {
        std::future::ready(unsupported("txn"))
    }
    /// One linearizable page of at most `limit` keys of `[start, end)`
    /// (`end` = `[0]`: every key from `start` on).
    fn range_page<'a>(
        &'a self,
        _conn: usize,
        _start: &'a [u8],
        _end: &'a [u8],
        _limit: u32,
    ) -> impl Future<Output = Result<PageReply, OpError>> + Send + 'a {
        std::future::ready(unsupported("range"))
    }
    /// Grants a lease of `ttl` and returns its renewer: over a keep-alive
    /// stream when `stream`, else one unary call per renewal.
    fn lease_open(
        &self,
        _conn: usize,
        _ttl: Duration,
        _stream: bool,
    ) -> impl Future<Output = Result<Box<dyn LeaseRenewer>, OpError>> + Send + '_ {
        std::future::ready(unsupported("lease"))
    }
}

/// The exclusive end of the key space `0..count` (see [`key`]): key
/// `count` when it still has `key_size` digits, else `[0]` (every key from
/// the start on).
pub fn key_space_end(count: usize, key_size: usize) -> Vec<u8> {
    let k = key(count, key_size);
    if k.len() == key_size {
        k
    } else {
        vec![0]
    }
}

/// Key number `i`: `i` in decimal, zero-padded to `key_size` bytes (longer
/// if `i` has more digits; [`check_key_size`] rules that out).
pub fn key(i: usize, key_size: usize) -> Vec<u8> {
    format!("{i:0key_size$}").into_bytes()
}

/// Fails unless keys `0..count` all fit in `key_size` bytes.
pub fn check_key_size(count: usize, key_size: usize) -> Result<()> {
    let digits = count.saturating_sub(1).to_string().len();
    if key_size < digits {
        bail!("--key-size {key_size} is too small for {count} keys: need at least {digits} bytes");
    }
    Ok(())
}

/// Keys `0..count` (see [`key`]).
pub fn make_keys(count: usize, key_size: usize) -> Result<Vec<Vec<u8>>> {
    if count == 0 {
        bail!("--key-space must be at least 1");
    }
    check_key_size(count, key_size)?;
    Ok((0..count).map(|i| key(i, key_size)).collect())
}

/// A value of `size` bytes (printable, not all equal).
pub fn make_value(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// How long / how much to run one round.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub op: OpKind,
    pub clients: usize,
    pub warmup: Duration,
    /// Measured duration (ignored when `requests` is set).
    pub duration: Duration,
    /// Measured request count instead of a duration.
    pub requests: Option<u64>,
    /// Keys are drawn uniformly from `keys[..key_count]`.
    pub key_count: usize,
    pub request_timeout: Duration,
    pub label: String,
    pub progress: bool,
    /// Keys per page of a range read (`range-page`, range readers).
    pub page_size: u32,
    /// Range readers beside the clients (`write-range-reader`).
    pub range_readers: usize,
    /// TTL of each client's lease (lease scenarios).
    pub lease_ttl: Duration,
    /// Whose CPU to measure over the measured window (`None`: no CPU figures).
    pub cpu: Option<CpuProbe>,
}

/// xorshift64*: a per-client key picker (no shared state, no syscalls).
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

struct Shared {
    done: AtomicU64,
    remaining: AtomicI64,
    stop: AtomicBool,
    /// Whose CPU the round measures, and the sample taken by the first
    /// client to enter the measured window (a timer task could run late:
    /// in-process requests that complete without waiting never yield).
    cpu: Option<CpuProbe>,
    cpu_start: OnceLock<Result<CpuSample, String>>,
}

struct ClientOutcome {
    hist: hdrhistogram::Histogram<u64>,
    ok: u64,
    /// Txn: transactions that succeeded; range pages: keys returned.
    items: u64,
    errors: u64,
    timeouts: u64,
    kinds: BTreeMap<String, u64>,
    last_done: Option<Instant>,
}

fn kind_of(msg: &str) -> String {
    msg.chars().take(120).collect()
}

/// `fut` with a deadline. The future is polled once first: a request that
/// completes without waiting (an in-process read) costs no timer
/// registration, so the tool's own overhead stays small next to a 1 µs read.
async fn with_deadline<T>(
    timeout: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(v) => Ok(v),
        std::task::Poll::Pending => tokio::time::timeout(timeout, fut).await,
    }
}

/// What one client's request produced: items (see [`ClientOutcome::items`]).
type Outcome = Result<Result<u64, OpError>, tokio::time::error::Elapsed>;

/// Per-client state of the request loop.
struct ClientState {
    rng: Rng,
    conn: usize,
    /// Where this client's next range page starts.
    cursor: Vec<u8>,
    /// This client's lease (lease scenarios).
    lease: Option<Box<dyn LeaseRenewer>>,
}

/// Shared by the clients of one round: the key space and what the clients
/// last learned of each key's mod revision (txn).
struct KeySpace {
    keys: Arc<Vec<Vec<u8>>>,
    count: usize,
    end: Vec<u8>,
    value: Arc<Vec<u8>>,
    revisions: Vec<AtomicU64>,
}

/// Issues one request of `op` for a client.
async fn one_request<D: Driver>(
    driver: &D,
    op: OpKind,
    ks: &KeySpace,
    st: &mut ClientState,
    spec_page: u32,
    timeout: Duration,
) -> Outcome {
    let conn = st.conn;
    match op {
        OpKind::Put => {
            let key = &ks.keys[st.rng.next(ks.count)];
            with_deadline(timeout, async {
                driver.put(conn, key, &ks.value).await.map(|_| 1)
            })
            .await
        }
        OpKind::Get(c) => {
            let key = &ks.keys[st.rng.next(ks.count)];
            with_deadline(timeout, async { driver.get(conn, key, c).await.map(|_| 1) }).await
        }
        OpKind::Txn => {
            let a = st.rng.next(ks.count);
            let b = (a + 1 + st.rng.next(ks.count - 1)) % ks.count;
            let seen = ks.revisions[a].load(Ordering::Relaxed);
            let r = with_deadline(
                timeout,
                driver.txn_transfer(conn, &ks.keys[a], &ks.keys[b], seen, &ks.value),
            )
            .await;
            r.map(|r| {
                r.map(|reply| {
                    if reply.succeeded {
                        ks.revisions[a].store(reply.revision, Ordering::Relaxed);
                        ks.revisions[b].store(reply.revision, Ordering::Relaxed);
                        1
                    } else {
                        ks.revisions[a].store(reply.revision, Ordering::Relaxed);
                        0
                    }
                })
            })
        }
        OpKind::RangePage => {
            let r = with_deadline(
                timeout,
                driver.range_page(conn, &st.cursor, &ks.end, spec_page),
            )
            .await;
            r.map(|r| {
                r.map(|page| {
                    st.cursor = page.next.unwrap_or_else(|| ks.keys[0].clone());
                    page.keys
                })
            })
        }
        OpKind::LeaseRenew { .. } => match st.lease.as_mut() {
            Some(l) => with_deadline(timeout, async { l.renew().await.map(|_| 1) }).await,
            None => Ok(Err(OpError::Other("no lease granted".into()))),
        },
    }
}

/// Runs one round: warm-up (not recorded), then the measured window.
pub async fn run_round<D: Driver>(
    driver: Arc<D>,
    keys: Arc<Vec<Vec<u8>>>,
    value: Arc<Vec<u8>>,
    spec: &RunSpec,
) -> Result<Round> {
    if spec.key_count == 0 || spec.key_count > keys.len() {
        bail!("key count {} outside 1..={}", spec.key_count, keys.len());
    }
    if spec.op == OpKind::Txn && spec.key_count < 2 {
        bail!("a transfer transaction needs at least 2 keys (--key-space)");
    }
    if (spec.op == OpKind::RangePage || spec.range_readers > 0) && spec.page_size == 0 {
        bail!("--page-size must be at least 1");
    }
    let ks = Arc::new(KeySpace {
        end: key_space_end(spec.key_count, keys[0].len()),
        count: spec.key_count,
        revisions: if spec.op == OpKind::Txn {
            (0..spec.key_count).map(|_| AtomicU64::new(0)).collect()
        } else {
            Vec::new()
        },
        keys,
        value,
    });
    let shared = Arc::new(Shared {
        done: AtomicU64::new(0),
        remaining: AtomicI64::new(spec.requests.map(|r| r as i64).unwrap_or(i64::MAX)),
        stop: AtomicBool::new(false),
        cpu: spec.cpu.clone(),
        cpu_start: OnceLock::new(),
    });
    let start = Instant::now();
    let warm_end = start + spec.warmup;
    let end = spec.requests.is_none().then_some(warm_end + spec.duration);

    let mut tasks = Vec::with_capacity(spec.clients);
    for i in 0..spec.clients {
        let (driver, ks, shared) = (driver.clone(), ks.clone(), shared.clone());
        let (op, timeout, page, ttl) = (
            spec.op,
            spec.request_timeout,
            spec.page_size,
            spec.lease_ttl,
        );
        let conns = driver.connections().max(1);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) * 0x1000_0001));
            let cursor = ks.keys[rng.next(ks.count)].clone();
            let mut st = ClientState {
                rng,
                conn: i % conns,
                cursor,
                lease: None,
            };
            let mut out = ClientOutcome {
                hist: new_histogram(),
                ok: 0,
                items: 0,
                errors: 0,
                timeouts: 0,
                kinds: BTreeMap::new(),
                last_done: None,
            };
            if let OpKind::LeaseRenew { stream } = op {
                // Granting is set-up, not a measured request; a client
                // without a lease counts one error and stops.
                match with_deadline(timeout, driver.lease_open(st.conn, ttl, stream)).await {
                    Ok(Ok(l)) => st.lease = Some(l),
                    Ok(Err(OpError::Timeout(m) | OpError::Other(m))) => {
                        out.errors += 1;
                        *out.kinds
                            .entry(kind_of(&format!("lease grant: {m}")))
                            .or_default() += 1;
                        return out;
                    }
                    Err(_) => {
                        out.timeouts += 1;
                        *out.kinds
                            .entry(format!("lease grant: no reply within {timeout:?}"))
                            .or_default() += 1;
                        return out;
                    }
                }
            }
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let t0 = Instant::now();
                let measured = t0 >= warm_end;
                if measured {
                    if let Some(p) = &shared.cpu {
                        shared
                            .cpu_start
                            .get_or_init(|| p.sample().map_err(|e| format!("{e:#}")));
                    }
                    if let Some(end) = end {
                        if t0 >= end {
                            break;
                        }
                    } else if shared.remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
                        break;
                    }
                }
                let res = one_request(&*driver, op, &ks, &mut st, page, timeout).await;
                let t1 = Instant::now();
                if !measured {
                    continue;
                }
                out.last_done = Some(t1);
                match res {
                    Ok(Ok(items)) => {
                        let ns = (t1 - t0).as_nanos().max(1) as u64;
                        out.hist.record(ns).expect("auto-resizing histogram");
                        out.ok += 1;
                        out.items += items;
                    }
                    Ok(Err(OpError::Timeout(m))) => {
                        out.timeouts += 1;
                        *out.kinds
                            .entry(kind_of(&format!("timeout: {m}")))
                            .or_default() += 1;
                    }
                    Ok(Err(OpError::Other(m))) => {
                        out.errors += 1;
                        *out.kinds.entry(kind_of(&m)).or_default() += 1;
                    }
                    Err(_) => {
                        out.timeouts += 1;
                        *out.kinds
                            .entry(format!("no reply within {timeout:?} (bench deadline)"))
                            .or_default() += 1;
                    }
                }
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
            out
        }));
    }

    // Range readers beside the clients: pages back to back until the
    // clients are done; only pages started in the measured window count.
    let mut readers = Vec::new();
    for i in 0..spec.range_readers {
        let (driver, ks, shared) = (driver.clone(), ks.clone(), shared.clone());
        let (page, timeout) = (spec.page_size, spec.request_timeout);
        let conns = driver.connections().max(1);
        readers.push(tokio::spawn(async move {
            let mut rng = Rng(0x5851_f42d_4c95_7f2d ^ ((i as u64 + 1) * 0x2000_0003));
            let cursor = ks.keys[rng.next(ks.count)].clone();
            let mut st = ClientState {
                rng,
                conn: (conns - 1 - i % conns) % conns,
                cursor,
                lease: None,
            };
            let mut out = ClientOutcome {
                hist: new_histogram(),
                ok: 0,
                items: 0,
                errors: 0,
                timeouts: 0,
                kinds: BTreeMap::new(),
                last_done: None,
            };
            while !shared.stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let res =
                    one_request(&*driver, OpKind::RangePage, &ks, &mut st, page, timeout).await;
                let t1 = Instant::now();
                if t0 < warm_end || end.is_some_and(|e| t0 >= e) {
                    continue;
                }
                out.last_done = Some(t1);
                match res {
                    Ok(Ok(items)) => {
                        let ns = (t1 - t0).as_nanos().max(1) as u64;
                        out.hist.record(ns).expect("auto-resizing histogram");
                        out.ok += 1;
                        out.items += items;
                    }
                    Ok(Err(OpError::Timeout(_))) | Err(_) => out.timeouts += 1,
                    Ok(Err(OpError::Other(m))) => {
                        out.errors += 1;
                        *out.kinds.entry(kind_of(&m)).or_default() += 1;
                    }
                }
            }
            out
        }));
    }

    let bar = spec.progress.then(|| progress_bar(spec));
    let ticker = bar.clone().map(|bar| {
        let shared = shared.clone();
        let requests = spec.requests;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = Instant::now();
                let done = shared.done.load(Ordering::Relaxed);
                if now < warm_end {
                    bar.set_message("warming up");
                    continue;
                }
                let secs = (now - warm_end).as_secs_f64().max(1e-3);
                bar.set_message(format!("{:.0} ops/s", done as f64 / secs));
                match (requests, end) {
                    (Some(_), _) => bar.set_position(done),
                    (None, Some(end)) => {
                        bar.set_position((now.min(end) - warm_end).as_millis() as u64)
                    }
                    _ => {}
                }
            }
        })
    });

    let mut hist = new_histogram();
    let (mut ok, mut items, mut errors, mut timeouts) = (0, 0, 0, 0);
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = warm_end;
    let mut join_errors = 0;
    for t in tasks {
        match t.await {
            Ok(o) => {
                hist.add(&o.hist).expect("auto-resizing histogram");
                ok += o.ok;
                items += o.items;
                errors += o.errors;
                timeouts += o.timeouts;
                for (k, v) in o.kinds {
                    *kinds.entry(k).or_default() += v;
                }
                if let Some(l) = o.last_done {
                    last = last.max(l);
                }
            }
            Err(e) => {
                join_errors += 1;
                *kinds.entry(format!("client task failed: {e}")).or_default() += 1;
            }
        }
    }
    errors += join_errors;
    let cpu = shared
        .cpu
        .as_ref()
        .and_then(|p| cpu_use(p, shared.cpu_start.get(), ok, &spec.label));
    shared.stop.store(true, Ordering::Relaxed);
    let elapsed = (last - warm_end).as_secs_f64().max(1e-9);
    let background = if readers.is_empty() {
        None
    } else {
        let mut b = Background {
            readers: readers.len(),
            page_size: spec.page_size,
            ..Default::default()
        };
        let mut bh = new_histogram();
        for r in readers {
            match r.await {
                Ok(o) => {
                    bh.add(&o.hist).expect("auto-resizing histogram");
                    b.pages += o.ok;
                    b.keys += o.items;
                    b.errors += o.errors;
                    b.timeouts += o.timeouts;
                }
                Err(_) => b.errors += 1,
            }
        }
        b.pages_per_sec = b.pages as f64 / elapsed;
        b.keys_per_sec = b.keys as f64 / elapsed;
        b.latency = Latency::from_histogram(&bh);
        Some(b)
    };
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(Round {
        ok,
        errors,
        timeouts,
        elapsed_s: elapsed,
        ops_per_sec: ok as f64 / elapsed,
        items,
        items_per_sec: items as f64 / elapsed,
        latency: Latency::from_histogram(&hist),
        error_kinds: kinds,
        background,
        cpu,
    })
}

/// The CPU of a round from its window-opening sample and one taken now; a
/// failed (or missing) sample is reported and leaves the round without CPU
/// figures rather than with wrong ones.
fn cpu_use(
    probe: &CpuProbe,
    start: Option<&Result<CpuSample, String>>,
    ops: u64,
    label: &str,
) -> Option<CpuUse> {
    let r = match start {
        None => Err("no request entered the measured window".to_string()),
        Some(Err(e)) => Err(e.clone()),
        Some(Ok(s0)) => probe
            .sample()
            .and_then(|s1| CpuUse::between(s0, &s1, ops))
            .map_err(|e| format!("{e:#}")),
    };
    match r {
        Ok(u) => Some(u),
        Err(e) => {
            eprintln!("  {label}: no CPU figures: {e}");
            None
        }
    }
}

fn progress_bar(spec: &RunSpec) -> ProgressBar {
    let len = match spec.requests {
        Some(r) => r,
        None => spec.duration.as_millis() as u64,
    };
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>40} [{bar:30}] {percent:>3}% {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(spec.label.clone());
    bar
}

/// Writes keys `0..count` (see [`key`]) once each, with `parallel`
/// concurrent writers, so reads find their key. Keys are made on the fly:
/// loading a million keys costs the tool no key table.
/// Fails on the first error: a benchmark on a half-loaded key space is wrong.
pub async fn preload<D: Driver>(
    driver: Arc<D>,
    count: usize,
    key_size: usize,
    value: Arc<Vec<u8>>,
    parallel: usize,
    timeout: Duration,
) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..parallel.max(1) {
        let (driver, value, next) = (driver.clone(), value.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let conn = w % driver.connections().max(1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                let k = key(i, key_size);
                match tokio::time::timeout(timeout, driver.put(conn, &k, &value)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => bail!("preloading key {i} failed: {e:?}"),
                    Err(_) => bail!("preloading key {i}: no reply within {timeout:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_size_and_distinct() {
        let k = make_keys(1000, 8).unwrap();
        assert_eq!(k.len(), 1000);
        assert!(k.iter().all(|k| k.len() == 8));
        assert_eq!(k[7], b"00000007");
        let set: std::collections::HashSet<_> = k.iter().collect();
        assert_eq!(set.len(), 1000);
    }

    #[test]
    fn too_small_key_size_is_a_clear_error() {
        let e = make_keys(1_000_000, 4).unwrap_err().to_string();
        assert!(e.contains("--key-size") && e.contains("6 bytes"), "{e}");
        assert!(check_key_size(1_000_000, 6).is_ok());
    }

    #[tokio::test]
    async fn preload_writes_each_key_once() {
        /// Records every key it is asked to write.
        struct Recorder(std::sync::Mutex<Vec<Vec<u8>>>);
        impl Driver for Recorder {
            fn connections(&self) -> usize {
                2
            }
            fn supports(&self, _: Consistency) -> bool {
                true
            }
            async fn put<'a>(&'a self, _: usize, k: &'a [u8], _: &'a [u8]) -> Result<(), OpError> {
                self.0.lock().unwrap().push(k.to_vec());
                Ok(())
            }
            async fn get<'a>(
                &'a self,
                _: usize,
                _: &'a [u8],
                _: Consistency,
            ) -> Result<bool, OpError> {
                Ok(true)
            }
        }
        let d = Arc::new(Recorder(Default::default()));
        let value = Arc::new(make_value(4));
        preload(d.clone(), 1000, 8, value, 7, Duration::from_secs(5))
            .await
            .unwrap();
        let mut got = d.0.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, make_keys(1000, 8).unwrap());
    }

    #[test]
    fn rng_stays_in_range_and_covers_it() {
        let mut r = Rng(42);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[r.next(10)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    /// A driver whose every third request fails and every fifth hangs.
    struct Flaky(AtomicU64);
    impl Driver for Flaky {
        fn connections(&self) -> usize {
            1
        }
        fn supports(&self, _: Consistency) -> bool {
            true
        }
        async fn put<'a>(&'a self, _: usize, _: &'a [u8], _: &'a [u8]) -> Result<(), OpError> {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            if n % 5 == 4 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if n % 3 == 2 {
                return Err(OpError::Other("boom".into()));
            }
            Ok(())
        }
        async fn get<'a>(&'a self, _: usize, _: &'a [u8], _: Consistency) -> Result<bool, OpError> {
            Ok(true)
        }
    }

    /// Requests that complete without waiting never yield to other tasks:
    /// the CPU window must still open when the measured window does.
    #[tokio::test]
    async fn cpu_window_matches_the_measured_window_when_requests_never_wait() {
        struct Instant0;
        impl Driver for Instant0 {
            fn connections(&self) -> usize {
                1
            }
            fn supports(&self, _: Consistency) -> bool {
                true
            }
            async fn put<'a>(&'a self, _: usize, _: &'a [u8], _: &'a [u8]) -> Result<(), OpError> {
                Ok(())
            }
            async fn get<'a>(
                &'a self,
                _: usize,
                _: &'a [u8],
                _: Consistency,
            ) -> Result<bool, OpError> {
                Ok(true)
            }
        }
        let spec = RunSpec {
            op: OpKind::Get(Consistency::Lease),
            clients: 2,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            requests: None,
            key_count: 10,
            request_timeout: Duration::from_secs(1),
            label: "t".into(),
            progress: false,
            page_size: 10,
            range_readers: 0,
            lease_ttl: Duration::from_secs(60),
            cpu: Some(CpuProbe::default()),
        };
        let keys = Arc::new(make_keys(10, 8).unwrap());
        let r = run_round(Arc::new(Instant0), keys, Arc::new(make_value(4)), &spec)
            .await
            .unwrap();
        let cpu = r.cpu.expect("measured");
        assert!(
            cpu.window_s >= 0.2 && cpu.window_s < 2.0,
            "CPU window {} s for a 0.3 s measured window",
            cpu.window_s
        );
        assert!(cpu.total_us_per_op.unwrap() > 0.0, "{cpu:?}");
    }

    #[tokio::test]
    async fn every_request_is_accounted_for() {
        let d = Arc::new(Flaky(AtomicU64::new(0)));
        let spec = RunSpec {
            op: OpKind::Put,
            clients: 4,
            warmup: Duration::ZERO,
            duration: Duration::ZERO,
            requests: Some(200),
            key_count: 10,
            request_timeout: Duration::from_millis(5),
            label: "t".into(),
            progress: false,
            page_size: 10,
            range_readers: 0,
            lease_ttl: Duration::from_secs(60),
            cpu: Some(CpuProbe::default()),
        };
        let keys = Arc::new(make_keys(10, 8).unwrap());
        let r = run_round(d, keys, Arc::new(make_value(4)), &spec)
            .await
            .unwrap();
        assert_eq!(r.ok + r.errors + r.timeouts, 200, "{r:?}");
        assert!(r.errors > 0 && r.timeouts > 0, "{r:?}");
        assert_eq!(r.error_kinds.values().sum::<u64>(), r.errors + r.timeouts);
        assert_eq!(r.error_kinds.get("boom"), Some(&r.errors));
        let cpu = r.cpu.expect("the tool's CPU is measured");
        assert_eq!(cpu.ops, r.ok);
        assert_eq!(cpu.server_processes, 0);
    }
}
