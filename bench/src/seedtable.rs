//! `--latency-table`: the latency table of the seed's product brief
//! (`integration-modes.txt`: "put() < 0.1 ms single node", "leader election
//! 1–2 s", ...) measured row by row, each row judged on its p50.
//!
//! - put / get rows: one client in a closed loop (so the latency is the
//!   latency of one operation, not of a queue), `--duration` seconds (or
//!   `--requests`) after `--warmup`, through the same drivers as the matrix;
//!   CPU per operation as in the matrix.
//! - election rows: a fresh system per run, `--runs` runs. Embedded: from the
//!   call that starts the first engine to the leader's `wait_ready`
//!   returning. Standalone: from spawning the first server to the first
//!   acknowledged write (polled every 100 ms).
//! - failover: a fresh 3-process standalone cluster per run; after a few
//!   writes the leader's process is SIGKILLed and the time until the next
//!   acknowledged write (the Rust client with its default retry policy,
//!   all three endpoints) is recorded.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cli::Args;
use crate::cpu::CpuProbe;
use crate::memory::Holder;
use crate::stats::{quantile, Round};
use crate::systems::embedded::EmbeddedCluster;
use crate::systems::standalone::{find_server, StandaloneCluster};
use crate::workload::{self, Consistency, Driver, OpKind, RunSpec};

const FSYNC_1: &str = "fsync (default: fdatasync before acknowledging)";
const FSYNC_3: &str = "fsync on a majority (default)";
const PERIODIC: &str = "periodic (`durability.mode = \"periodic\"`, `interval_ms = 10`: acknowledged once written to the OS, fdatasync every 10 ms)";
const READ: &str = "– (read)";

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// "embedded" or "standalone".
    pub mode: &'static str,
    pub operation: String,
    /// The seed's figure, as written there.
    pub promise: String,
    /// The row is met when our p50 is at most this (µs); `None`: not judged.
    pub limit_us: Option<f64>,
    /// What exactly was timed.
    pub measured: String,
    pub durability: String,
    /// Operations or runs behind the figures.
    pub samples: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// CPU µs per operation (put/get rows).
    pub cpu_us_per_op: Option<f64>,
    /// Every run, ms (election and failover rows).
    pub runs_ms: Vec<f64>,
    /// Why not measured, or anything odd (errors).
    pub note: String,
}

impl Row {
    fn new(
        mode: &'static str,
        operation: &str,
        promise: &str,
        limit_us: Option<f64>,
        measured: &str,
        durability: &str,
    ) -> Row {
        Row {
            mode,
            operation: operation.into(),
            promise: promise.into(),
            limit_us,
            measured: measured.into(),
            durability: durability.into(),
            samples: 0,
            p50_us: None,
            p99_us: None,
            cpu_us_per_op: None,
            runs_ms: Vec::new(),
            note: String::new(),
        }
    }

    /// Met (p50 within the promise), missed, or not measured/judged.
    pub fn verdict(&self) -> Option<bool> {
        Some(self.p50_us? <= self.limit_us?)
    }

    fn with_round(mut self, r: &Round) -> Row {
        self.samples = r.ok;
        if r.ok > 0 {
            self.p50_us = Some(r.latency.p50_us);
            self.p99_us = Some(r.latency.p99_us);
        }
        self.cpu_us_per_op = r.cpu.as_ref().and_then(|c| c.total_us_per_op);
        if r.errors + r.timeouts > 0 {
            self.note = format!("{} errors, {} timeouts", r.errors, r.timeouts);
        }
        self
    }

    fn with_runs(mut self, runs: &[Duration]) -> Row {
        self.runs_ms = runs.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        let us: Vec<f64> = runs.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        self.samples = us.len() as u64;
        self.p50_us = quantile(&us, 0.5);
        self.p99_us = quantile(&us, 0.99);
        self
    }

    fn with_note(mut self, why: impl Into<String>) -> Row {
        self.note = why.into();
        self
    }
}

/// The whole output.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub started_utc: String,
    pub cpus: usize,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub command: String,
    pub rows: Vec<Row>,
}

/// A duration in µs, readable: µs below 1 ms, ms below 1 s, else s.
pub fn human(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// The Markdown table.
pub fn markdown(t: &Table) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# The seed's latency table, {}\n\n{} CPUs, load average before {} / after {}.\nCommand: `{}`\n\nVerdict: *met* when our p50 is within the promise (its upper bound). put/get: 1 client, closed loop; CPU per op = user + system CPU of the tool and every server process over the measured window.\n\n| mode | operation | promise | our p50 | our p99 | samples | CPU µs/op | durability | measured | verdict |\n|---|---|---|---|---|---|---|---|---|---|",
        t.started_utc, t.cpus, t.loadavg_before, t.loadavg_after, t.command
    );
    for r in &t.rows {
        let f = |v: Option<f64>| v.map(human).unwrap_or_else(|| "–".into());
        let verdict = match r.verdict() {
            Some(true) => "met".to_string(),
            Some(false) => "**missed**".to_string(),
            None => "not measured".to_string(),
        };
        let mut measured = r.measured.clone();
        if !r.runs_ms.is_empty() {
            let runs: Vec<String> = r.runs_ms.iter().map(|v| format!("{v:.0}")).collect();
            let _ = write!(measured, "; runs (ms): {}", runs.join(", "));
        }
        if !r.note.is_empty() {
            if !measured.is_empty() {
                measured += "; ";
            }
            measured += &r.note;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            r.operation,
            r.promise,
            f(r.p50_us),
            f(r.p99_us),
            r.samples,
            r.cpu_us_per_op
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "–".into()),
            r.durability,
            measured,
            verdict
        );
    }
    s
}

/// What the put/get rows run with.
struct Load {
    keys: Arc<Vec<Vec<u8>>>,
    value: Arc<Vec<u8>>,
    warmup: Duration,
    duration: Duration,
    requests: Option<u64>,
    timeout: Duration,
    progress: bool,
}

impl Load {
    /// One client, closed loop, `op`, CPU of `holder` and the tool.
    async fn round<D: Driver>(
        &self,
        driver: Arc<D>,
        holder: &Holder,
        op: OpKind,
        label: &str,
    ) -> Result<Round> {
        let spec = RunSpec {
            op,
            clients: 1,
            warmup: self.warmup,
            duration: self.duration,
            requests: self.requests,
            key_count: self.keys.len(),
            request_timeout: self.timeout,
            label: label.into(),
            progress: self.progress,
            page_size: 1,
            range_readers: 0,
            lease_ttl: Duration::from_secs(60),
            cpu: Some(CpuProbe::of(holder)),
        };
        let r = workload::run_round(driver, self.keys.clone(), self.value.clone(), &spec).await?;
        eprintln!(
            "  {label:<40} p50 {:>10}  p99 {:>10}  ({} ops, {} err, {} to)",
            human(r.latency.p50_us),
            human(r.latency.p99_us),
            r.ok,
            r.errors,
            r.timeouts
        );
        Ok(r)
    }

    async fn preload<D: Driver>(&self, driver: Arc<D>) -> Result<()> {
        let key_size = self.keys[0].len();
        workload::preload(
            driver,
            self.keys.len(),
            key_size,
            self.value.clone(),
            16,
            self.timeout,
        )
        .await
    }
}

/// Embedded put (1 node periodic and fsync, 3 nodes) and get rows.
async fn embedded_ops(a: &Args, base: &Path, load: &Load, rows: &mut Vec<Row>) -> Result<()> {
    let put = OpKind::Put;
    let get = OpKind::Get(Consistency::Linearizable);
    let put_what = "`EmbeddedClient::put`, 1 client";
    let get_what =
        "`EmbeddedClient::get` (linearizable, the default) on the leader, 1 client, preloaded keys";

    let c = Arc::new(
        EmbeddedCluster::start_with(1, base, a.state_machine, |cfg| {
            cfg.durability.mode = d_engine::config::DurabilityMode::Periodic;
            cfg.durability.interval_ms = 10;
        })
        .await?,
    );
    let r = load
        .round(
            c.clone(),
            &Holder::ThisProcess,
            put,
            "embedded-1 put periodic",
        )
        .await;
    stop_embedded(c).await;
    rows.push(
        Row::new(
            "embedded",
            "put(), 1 node",
            "< 0.1 ms",
            Some(100.0),
            put_what,
            PERIODIC,
        )
        .with_round(&r?),
    );

    let c = Arc::new(EmbeddedCluster::start(1, base, a.state_machine).await?);
    let r = async {
        let p = load
            .round(c.clone(), &Holder::ThisProcess, put, "embedded-1 put fsync")
            .await?;
        load.preload(c.clone()).await?;
        let g = load
            .round(c.clone(), &Holder::ThisProcess, get, "embedded-1 get")
            .await?;
        Ok::<_, anyhow::Error>((p, g))
    }
    .await;
    stop_embedded(c).await;
    let (p, g) = r?;
    rows.push(
        Row::new(
            "embedded",
            "put(), 1 node",
            "< 0.1 ms",
            Some(100.0),
            put_what,
            FSYNC_1,
        )
        .with_round(&p),
    );
    let get_row = Row::new(
        "embedded",
        "get(), local, 1 node",
        "< 0.1 ms",
        Some(100.0),
        get_what,
        READ,
    )
    .with_round(&g);

    let c = Arc::new(EmbeddedCluster::start(3, base, a.state_machine).await?);
    let r = async {
        let p = load
            .round(c.clone(), &Holder::ThisProcess, put, "embedded-3 put")
            .await?;
        load.preload(c.clone()).await?;
        let g = load
            .round(c.clone(), &Holder::ThisProcess, get, "embedded-3 get")
            .await?;
        let l = load
            .round(
                c.clone(),
                &Holder::ThisProcess,
                OpKind::Get(Consistency::Lease),
                "embedded-3 get lease",
            )
            .await?;
        Ok::<_, anyhow::Error>((p, g, l))
    }
    .await;
    stop_embedded(c).await;
    let (p, g, l) = r?;
    rows.push(
        Row::new(
            "embedded",
            "put(), 3 nodes",
            "1–5 ms",
            Some(5_000.0),
            "`EmbeddedClient::put` on the leader, 1 client, replicated over gRPC on 127.0.0.1",
            FSYNC_3,
        )
        .with_round(&p),
    );
    rows.push(get_row);
    rows.push(
        Row::new(
            "embedded",
            "get(), 3 nodes",
            "< 0.1 ms (local)",
            Some(100.0),
            get_what,
            READ,
        )
        .with_round(&g),
    );
    rows.push(
        Row::new(
            "embedded",
            "get(), 3 nodes, lease read",
            "< 0.1 ms (local)",
            Some(100.0),
            "`EmbeddedClient::get_with(key, Consistency::Lease)` on the leader (served from its own state under its lease), 1 client",
            READ,
        )
        .with_round(&l),
    );
    Ok(())
}

async fn stop_embedded(c: Arc<EmbeddedCluster>) {
    if let Ok(c) = Arc::try_unwrap(c) {
        c.stop().await;
    }
}

/// Embedded elections: `runs` fresh systems of `nodes` nodes.
async fn embedded_elections(a: &Args, base: &Path, runs: usize, nodes: usize) -> Result<Row> {
    let mut times = Vec::new();
    let mut started = Vec::new();
    for i in 0..runs {
        let c = EmbeddedCluster::start(nodes, base, a.state_machine).await?;
        eprintln!(
            "  embedded-{nodes} election run {}: {} (engines started after {})",
            i + 1,
            human(c.ready_in.as_secs_f64() * 1e6),
            human(c.started_in.as_secs_f64() * 1e6)
        );
        started.push(c.started_in.as_secs_f64() * 1e3);
        times.push(c.ready_in);
        c.stop().await;
    }
    let (op, promise, limit) = if nodes == 1 {
        ("leader election, 1 node", "< 100 ms", 100_000.0)
    } else {
        ("leader election, 3 nodes", "1–2 s", 2_000_000.0)
    };
    Ok(Row::new(
        "embedded",
        op,
        promise,
        Some(limit),
        "fresh data dirs; from starting the first engine to the leader's `wait_ready` returning (leader elected and an entry of its term committed)",
        if nodes == 1 { FSYNC_1 } else { FSYNC_3 },
    )
    .with_runs(&times)
    .with_note(format!(
        "of which starting the engine(s) took (ms): {}",
        started
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// SIGKILLs the leader of a started 3-node standalone cluster and times the
/// next acknowledged write (new writes issued back to back from the kill
/// on, through a client that knows all three endpoints).
async fn failover_once(c: &mut StandaloneCluster, value: &[u8]) -> Result<Duration> {
    let client = c.client(0).clone();
    let kv = client.kv();
    for i in 0..10 {
        kv.put(format!("failover-warm-{i}"), value)
            .await
            .context("writing before the kill")?;
    }
    let leader = client
        .refresh_leader()
        .await
        .context("finding the leader")?;
    let port = |e: &str| e.rsplit(':').next().map(str::to_string);
    let index = c
        .endpoints()
        .iter()
        .position(|e| port(e) == port(&leader))
        .with_context(|| format!("leader {leader} is not one of {:?}", c.endpoints()))?;
    let t0 = Instant::now();
    c.kill_node(index).await?;
    let deadline = t0 + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), kv.put(b"failover-after", value)).await {
            Ok(Ok(_)) => return Ok(t0.elapsed()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no reply within 5 s".into(),
        }
        // The client retries inside a call; this only keeps a call that
        // fails at once from spinning.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("no write acknowledged within 30 s of killing the leader (last error: {last})")
}

/// Standalone rows: put/get on a local 1-node server, start → first write
/// in 3 processes, failover in 3 processes.
async fn standalone(
    a: &Args,
    base: &Path,
    load: &Load,
    runs: usize,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let put_row = Row::new(
        "standalone",
        "put(), local",
        "1–2 ms",
        Some(2_000.0),
        "Rust gRPC client (`GrpcKv::put`) → local 1-node `d-engine-server`, 1 client",
        FSYNC_1,
    );
    let get_row = Row::new(
        "standalone",
        "get() (gRPC)",
        "1–2 ms",
        Some(2_000.0),
        "`GrpcKv::get` (linearizable, the default) → local 1-node server, 1 client, preloaded keys",
        READ,
    );
    let start_row = Row::new(
        "standalone",
        "leader election, 3 processes: start",
        "1–2 s",
        Some(2_000_000.0),
        "fresh data dirs; from spawning the first of 3 `d-engine-server` processes to the first acknowledged write (polled every 100 ms)",
        FSYNC_3,
    );
    let fail_row = Row::new(
        "standalone",
        "leader election, 3 processes: failover",
        "1–2 s (issue 20 target: p50 ≤ 1 s)",
        Some(1_000_000.0),
        "SIGKILL of the leader's process → next acknowledged write (Rust client, default retries, all 3 endpoints)",
        FSYNC_3,
    );
    let remote = Row::new(
        "standalone",
        "put(), remote",
        "2–10 ms",
        Some(10_000.0),
        "",
        FSYNC_1,
    )
    .with_note("needs a second machine (every server here is on 127.0.0.1)");
    let bin = match find_server(a.server_bin.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            for r in [put_row, remote, get_row, start_row, fail_row] {
                rows.push(r.with_note(format!("{e:#}")));
            }
            return Ok(());
        }
    };
    let timeout = Duration::from_millis(a.request_timeout_ms);
    let c = Arc::new(StandaloneCluster::start(&bin, 1, 1, base, timeout, a.state_machine).await?);
    let r = async {
        let h = c.holder()?;
        let p = load
            .round(c.clone(), &h, OpKind::Put, "standalone-1 put")
            .await?;
        load.preload(c.clone()).await?;
        let g = load
            .round(
                c.clone(),
                &h,
                OpKind::Get(Consistency::Linearizable),
                "standalone-1 get",
            )
            .await?;
        Ok::<_, anyhow::Error>((p, g))
    }
    .await;
    if let Ok(c) = Arc::try_unwrap(c) {
        c.stop().await;
    }
    let (p, g) = r?;
    rows.push(put_row.with_round(&p));
    rows.push(remote);
    rows.push(get_row.with_round(&g));

    let (mut starts, mut failovers) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let mut c = StandaloneCluster::start(&bin, 3, 1, base, timeout, a.state_machine).await?;
        starts.push(c.ready_in);
        let f = failover_once(&mut c, &load.value).await;
        c.stop().await;
        let f = f.with_context(|| format!("failover run {}", i + 1))?;
        eprintln!(
            "  standalone-3 run {}: start → first write {}, failover {}",
            i + 1,
            human(starts[i].as_secs_f64() * 1e6),
            human(f.as_secs_f64() * 1e6)
        );
        failovers.push(f);
    }
    rows.push(start_row.with_runs(&starts));
    rows.push(fail_row.with_runs(&failovers));
    Ok(())
}

/// Runs the table; writes `<out-dir>/<name>.{md,json}` and prints the
/// Markdown. `Ok(false)` if a part failed (its rows say why).
pub async fn run(args: &Args, started_utc: String, date: String) -> Result<bool> {
    let mut a = args.clone();
    if a.smoke {
        a.requests = Some(a.requests.unwrap_or(200));
        a.warmup = a.warmup.min(0.1);
        a.runs = a.runs.min(2);
        a.key_space = a.key_space.min(100);
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let base = a.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let loadavg_before = crate::report::loadavg();
    eprintln!(
        "d-engine-bench --latency-table: load average {loadavg_before}; data in {}",
        base.display()
    );
    let load = Load {
        keys: Arc::new(workload::make_keys(a.key_space, a.key_size)?),
        value: Arc::new(workload::make_value(a.value_size)),
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.duration),
        requests: a.requests,
        timeout: Duration::from_millis(a.request_timeout_ms),
        progress: !a.no_progress,
    };
    let mut rows = Vec::new();
    let mut ok = true;
    let mut failed = |what: &str, e: anyhow::Error, rows: &mut Vec<Row>| {
        eprintln!("  FAILED {what}: {e:#}");
        rows.push(Row::new("–", what, "–", None, "", "–").with_note(format!("FAILED: {e:#}")));
        ok = false;
    };
    if let Err(e) = embedded_ops(&a, &base, &load, &mut rows).await {
        failed("embedded put/get", e, &mut rows);
    }
    for nodes in [1, 3] {
        match embedded_elections(&a, &base, a.runs, nodes).await {
            Ok(r) => rows.push(r),
            Err(e) => failed(&format!("embedded election, {nodes} nodes"), e, &mut rows),
        }
    }
    if let Err(e) = standalone(&a, &base, &load, a.runs, &mut rows).await {
        failed("standalone", e, &mut rows);
    }
    let command: Vec<String> = std::env::args().collect();
    let table = Table {
        started_utc,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        loadavg_before,
        loadavg_after: crate::report::loadavg(),
        command: command.join(" "),
        rows,
    };
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("creating {}", a.out_dir.display()))?;
    let stem = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{date}-latency-table"));
    let json = a.out_dir.join(format!("{stem}.json"));
    let md = a.out_dir.join(format!("{stem}.md"));
    std::fs::write(&json, serde_json::to_string_pretty(&table)?)?;
    let text = markdown(&table);
    std::fs::write(&md, &text)?;
    println!("{text}");
    eprintln!("wrote {} and {}", json.display(), md.display());
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p50_us: Option<f64>, limit: Option<f64>) -> Row {
        let mut r = Row::new("embedded", "put(), 1 node", "< 0.1 ms", limit, "x", FSYNC_1);
        r.p50_us = p50_us;
        r
    }

    #[test]
    fn a_row_is_met_when_its_p50_is_within_the_promise() {
        assert_eq!(row(Some(80.0), Some(100.0)).verdict(), Some(true));
        assert_eq!(row(Some(100.0), Some(100.0)).verdict(), Some(true));
        assert_eq!(row(Some(120.0), Some(100.0)).verdict(), Some(false));
        assert_eq!(row(None, Some(100.0)).verdict(), None);
        assert_eq!(row(Some(1.0), None).verdict(), None);
    }

    #[test]
    fn runs_give_nearest_rank_p50_and_p99() {
        let runs: Vec<Duration> = [300, 100, 200, 900, 400]
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect();
        let r = row(None, Some(1e6)).with_runs(&runs);
        assert_eq!(r.samples, 5);
        assert_eq!(r.p50_us, Some(300_000.0));
        assert_eq!(r.p99_us, Some(900_000.0));
        assert_eq!(r.runs_ms, vec![300.0, 100.0, 200.0, 900.0, 400.0]);
    }

    #[test]
    fn markdown_shows_figures_runs_and_verdicts() {
        let mut met = row(Some(42.0), Some(100.0));
        met.p99_us = Some(1_500.0);
        met.samples = 1000;
        met.cpu_us_per_op = Some(12.34);
        let missed = row(None, Some(1e6))
            .with_runs(&[Duration::from_millis(1500), Duration::from_millis(1200)]);
        let none = row(None, Some(1.0)).with_note("needs a second machine");
        let t = Table {
            started_utc: "t".into(),
            cpus: 2,
            loadavg_before: "1.0".into(),
            loadavg_after: "2.0".into(),
            command: "d-engine-bench --latency-table".into(),
            rows: vec![met, missed, none],
        };
        let md = markdown(&t);
        assert!(md.contains("| embedded | put(), 1 node | < 0.1 ms | 42.0 µs | 1.50 ms | 1000 | 12.3 | fsync (default: fdatasync before acknowledging) | x | met |"), "{md}");
        assert!(
            md.contains("| 1.20 s | 1.50 s | 2 | – |")
                && md.contains("runs (ms): 1500, 1200 | **missed** |"),
            "{md}"
        );
        assert!(
            md.contains("x; needs a second machine | not measured |"),
            "{md}"
        );
        assert!(md.contains("`d-engine-bench --latency-table`"), "{md}");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(42.04), "42.0 µs");
        assert_eq!(human(1_234.0), "1.23 ms");
        assert_eq!(human(2_500_000.0), "2.50 s");
    }
}
