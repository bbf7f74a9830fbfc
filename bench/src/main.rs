//! `d-engine-bench`: the standard Raft-KV scenarios against d-engine
//! (embedded and standalone) and etcd, next to the machine's floors.
//! See `docs/performance.md`.

/// The same allocator `d-engine-server` uses, so embedded and standalone
/// figures compare like with like (see docs/performance.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod cpu;
mod floors;
mod memory;
mod plot;
mod report;
mod seedtable;
mod stats;
mod systems;
mod workload;

/// Generated gRPC code: etcd's KV subset and the floor service.
pub mod pb {
    pub mod etcd {
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("etcdserverpb");
    }
    pub mod floor {
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("benchfloor");
    }
}

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Args, Case, Target};
use floors::FloorResult;
use memory::{Holder, MemoryResult, MemorySpec};
use report::{HostInfo, Report};
use stats::CaseResult;
use systems::embedded::EmbeddedCluster;
use systems::etcd::{find_etcd, EtcdCluster};
use systems::standalone::{find_server, StandaloneCluster};
use workload::{Consistency, Driver, OpKind, RunSpec, Scenario};

/// UTC date and time from the system clock: ("YYYY-MM-DD", "YYYY-MM-DD HH:MM:SS UTC").
fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let date = format!("{y:04}-{m:02}-{d:02}");
    let time = format!(
        "{date} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (date, time)
}

struct Ctx {
    args: Args,
    keys: Arc<Vec<Vec<u8>>>,
    value: Arc<Vec<u8>>,
    floors: Vec<FloorResult>,
    data_dir: PathBuf,
}

impl Ctx {
    fn floor_for(&self, target: Target, op: OpKind) -> Option<&FloorResult> {
        let name = match op {
            OpKind::Put | OpKind::Txn => floors::FSYNC_PREALLOC,
            OpKind::Get(_) | OpKind::RangePage | OpKind::LeaseRenew { .. } => {
                if target.in_process() {
                    floors::CHANNEL
                } else {
                    floors::GRPC
                }
            }
        };
        self.floors.iter().find(|f| f.name == name)
    }
}

/// What the cases of a run produced.
#[derive(Default)]
struct Outcomes {
    cases: Vec<CaseResult>,
    memory: Vec<MemoryResult>,
}

/// Runs a `memory` case against one freshly started system.
async fn run_memory<D: Driver>(
    ctx: &Ctx,
    target: Target,
    driver: Arc<D>,
    holder: &Holder,
    case: &Case,
) -> Result<MemoryResult> {
    let a = &ctx.args;
    eprintln!(
        "  {} memory: loading {} keys of {} B values with {} clients",
        target.name(),
        report::thousands(a.memory_keys as f64),
        a.value_size,
        case.clients
    );
    let spec = MemorySpec {
        keys: a.memory_keys,
        key_size: a.key_size,
        value: ctx.value.clone(),
        clients: case.clients,
        request_timeout: Duration::from_millis(a.request_timeout_ms),
    };
    let m = memory::run(driver, holder, target, &spec).await?;
    eprintln!(
        "  {} memory: loaded in {:.1} s ({}/s); VmRSS {} MiB, VmHWM {} MiB{} ({})",
        target.name(),
        m.load_s,
        report::thousands(m.load_ops_per_sec),
        report::mib(m.rss_kib),
        report::mib(m.hwm_kib),
        m.rss_before_kib
            .map(|b| format!(", VmRSS before loading {} MiB", report::mib(b)))
            .unwrap_or_default(),
        m.measured
    );
    Ok(m)
}

/// Runs every case against one started system whose nodes live in `holder`.
async fn run_cases<D: Driver>(
    ctx: &Ctx,
    target: Target,
    driver: Arc<D>,
    holder: &Holder,
    cases: &[Case],
    out: &mut Outcomes,
) -> Result<()> {
    let a = &ctx.args;
    let timeout = Duration::from_millis(a.request_timeout_ms);
    let mut preloaded = false;
    for case in cases {
        if let Some(note) = driver.before_case().await {
            eprintln!("  {}: {note}", target.name());
        }
        if case.scenario == Scenario::Memory {
            let m = run_memory(ctx, target, driver.clone(), holder, case).await?;
            out.memory.push(m);
            continue;
        }
        let op = case.scenario.op(a.consistency);
        let range_readers = case.scenario.range_readers(a.range_readers);
        if !driver.supports_op(op) {
            let what = match op {
                OpKind::Get(c) => format!("{} read", c.name()),
                OpKind::LeaseRenew { stream: false } => "unary lease renew".into(),
                other => format!("{other:?}"),
            };
            eprintln!(
                "  {} {} c={}: skipped ({} has no {what})",
                target.name(),
                case.scenario.name(),
                case.clients,
                target.system(),
            );
            continue;
        }
        if (op.needs_preload() || range_readers > 0) && !preloaded {
            eprintln!("  preloading {} keys", ctx.keys.len());
            workload::preload(
                driver.clone(),
                ctx.keys.len(),
                a.key_size,
                ctx.value.clone(),
                64,
                timeout,
            )
            .await
            .with_context(|| format!("preloading {}", target.name()))?;
            preloaded = true;
        }
        let mut rounds = Vec::new();
        for round in 0..a.rounds.max(1) {
            let spec = RunSpec {
                op,
                clients: case.clients,
                warmup: Duration::from_secs_f64(a.warmup),
                duration: Duration::from_secs_f64(a.duration),
                requests: a.requests,
                key_count: case.scenario.keys(ctx.keys.len()),
                request_timeout: timeout,
                label: format!(
                    "{} {} c={} #{}",
                    target.name(),
                    case.scenario.name(),
                    case.clients,
                    round + 1
                ),
                progress: !a.no_progress,
                page_size: a.page_size,
                range_readers,
                lease_ttl: Duration::from_secs_f64(a.lease_ttl),
                cpu: Some(cpu::CpuProbe::of(holder)),
            };
            let r = workload::run_round(driver.clone(), ctx.keys.clone(), ctx.value.clone(), &spec)
                .await?;
            let figure = match (op, &r.background) {
                (OpKind::Txn, _) => format!("  {:.1} % succeeded", 100.0 * r.success_ratio()),
                (OpKind::RangePage, _) => {
                    format!("  {} keys/s", report::thousands(r.items_per_sec))
                }
                (_, Some(b)) => format!(
                    "  readers {} pages/s (p50 {:.1} µs, p99 {:.1} µs)",
                    report::thousands(b.pages_per_sec),
                    b.latency.p50_us,
                    b.latency.p99_us
                ),
                _ => String::new(),
            };
            eprintln!(
                "  {:<44} {:>10}/s  p50 {:>9.1} µs  p99 {:>9.1} µs  err {} to {}{}{figure}",
                spec.label,
                report::thousands(r.ops_per_sec),
                r.latency.p50_us,
                r.latency.p99_us,
                r.errors,
                r.timeouts,
                r.cpu
                    .as_ref()
                    .map(|c| format!("  cpu {}", report::cpu_per_op(c)))
                    .unwrap_or_default(),
            );
            rounds.push(r);
        }
        let (median, all, errors, timeouts) = CaseResult::median_of(rounds);
        let floor = ctx.floor_for(target, op);
        let consistency = match op {
            OpKind::Put | OpKind::Txn | OpKind::LeaseRenew { .. } => "-".to_string(),
            OpKind::Get(c) => c.name().to_string(),
            OpKind::RangePage => Consistency::Linearizable.name().to_string(),
        };
        out.cases.push(CaseResult {
            system: target.system().into(),
            nodes: target.nodes(),
            scenario: case.scenario.name().into(),
            consistency,
            clients: case.clients,
            connections: driver.connections().min(case.clients),
            p50_over_floor: floor
                .filter(|f| f.latency.p50_us > 0.0)
                .map(|f| median.latency.p50_us / f.latency.p50_us),
            floor: floor.map(|f| f.name.clone()),
            floor_p50_us: floor.map(|f| f.latency.p50_us),
            median,
            rounds_ops_per_sec: all,
            total_errors: errors,
            total_timeouts: timeouts,
        });
    }
    Ok(())
}

/// Runs `target`'s cases: each `memory` case first, on a system of its own
/// (so nothing else has touched that system's memory), then the timed cases
/// on one more. `Ok(Some(reason))`: skipped.
async fn run_target(ctx: &Ctx, target: Target, out: &mut Outcomes) -> Result<Option<String>> {
    let cases = ctx.args.cases(target);
    eprintln!("== {} ({} cases)", target.name(), cases.len());
    let (memory, timed): (Vec<Case>, Vec<Case>) = cases
        .into_iter()
        .partition(|c| c.scenario == Scenario::Memory);
    let mut sessions: Vec<Vec<Case>> = memory.into_iter().map(|c| vec![c]).collect();
    if !timed.is_empty() {
        sessions.push(timed);
    }
    for cases in &sessions {
        if let Some(reason) = run_session(ctx, target, cases, out).await? {
            return Ok(Some(reason));
        }
    }
    Ok(None)
}

/// Starts `target`, runs `cases`, stops it. `Ok(Some(reason))`: skipped.
async fn run_session(
    ctx: &Ctx,
    target: Target,
    cases: &[Case],
    out: &mut Outcomes,
) -> Result<Option<String>> {
    let a = &ctx.args;
    let max_clients = cases.iter().map(|c| c.clients).max().unwrap_or(1);
    let conns = a.connections.clamp(1, max_clients.max(1));
    let timeout = Duration::from_millis(a.request_timeout_ms);
    match target {
        Target::Embedded1 | Target::Embedded3 => {
            let c = Arc::new(
                EmbeddedCluster::start(target.nodes(), &ctx.data_dir, a.state_machine).await?,
            );
            let r = run_cases(ctx, target, c.clone(), &Holder::ThisProcess, cases, out).await;
            if let Ok(c) = Arc::try_unwrap(c) {
                c.stop().await;
            }
            r?;
        }
        Target::Standalone1 | Target::Standalone3 => {
            let bin = match find_server(a.server_bin.as_deref()) {
                Ok(b) => b,
                Err(e) if a.server_bin.is_none() => {
                    return Ok(Some(format!("{}: {e}", target.name())))
                }
                Err(e) => return Err(e),
            };
            let c = Arc::new(
                StandaloneCluster::start(
                    &bin,
                    target.nodes(),
                    conns,
                    &ctx.data_dir,
                    timeout,
                    a.state_machine,
                )
                .await?,
            );
            let r = match c.holder() {
                Ok(h) => run_cases(ctx, target, c.clone(), &h, cases, out).await,
                Err(e) => Err(e),
            };
            if let Ok(c) = Arc::try_unwrap(c) {
                c.stop().await;
            }
            r?;
        }
        #[cfg(feature = "upstream")]
        Target::UpstreamEmbedded1 | Target::UpstreamEmbedded3 => {
            use systems::upstream::UpstreamEmbedded;
            let c =
                Arc::new(UpstreamEmbedded::start(target.nodes(), &ctx.data_dir, timeout).await?);
            let r = run_cases(ctx, target, c.clone(), &Holder::ThisProcess, cases, out).await;
            if let Ok(c) = Arc::try_unwrap(c) {
                c.stop().await;
            }
            r?;
        }
        #[cfg(feature = "upstream")]
        Target::UpstreamStandalone3 => {
            use systems::upstream::{find_node_bin, UpstreamStandalone};
            let bin = find_node_bin()?;
            let c = Arc::new(
                UpstreamStandalone::start(&bin, target.nodes(), conns, &ctx.data_dir, timeout)
                    .await?,
            );
            let r = match c.holder() {
                Ok(h) => run_cases(ctx, target, c.clone(), &h, cases, out).await,
                Err(e) => Err(e),
            };
            if let Ok(c) = Arc::try_unwrap(c) {
                c.stop().await;
            }
            r?;
        }
        #[cfg(not(feature = "upstream"))]
        Target::UpstreamEmbedded1 | Target::UpstreamEmbedded3 | Target::UpstreamStandalone3 => {
            return Ok(Some(format!(
                "{}: this d-engine-bench was built without the `upstream` feature; build it with \
                 `cargo build --release -p d-engine-bench --features upstream` or run \
                 `bash scripts/bench.sh --upstream`",
                target.name()
            )));
        }
        Target::Etcd1 | Target::Etcd3 => {
            let Some(bin) = find_etcd(a.etcd_bin.as_deref()) else {
                return Ok(Some(format!(
                    "{}: etcd not found (install it with `apt-get install -y etcd-server` or pass --etcd-bin)",
                    target.name()
                )));
            };
            let c = Arc::new(EtcdCluster::start(&bin, target.nodes(), conns, &ctx.data_dir).await?);
            let r = match c.holder() {
                Ok(h) => run_cases(ctx, target, c.clone(), &h, cases, out).await,
                Err(e) => Err(e),
            };
            if let Ok(c) = Arc::try_unwrap(c) {
                c.stop().await;
            }
            r?;
        }
    }
    Ok(None)
}

fn settings_json(a: &Args) -> serde_json::Value {
    serde_json::json!({
        "matrix": a.matrix().map(|m| format!("{m:?}").to_lowercase()),
        "targets": a.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "duration_s": a.duration,
        "requests": a.requests,
        "warmup_s": a.warmup,
        "rounds": a.rounds,
        "key_space": a.key_space,
        "key_size": a.key_size,
        "value_size": a.value_size,
        "memory_keys": a.memory_keys,
        "read_rounds": a.read_rounds,
        "consistency": a.consistency.name(),
        "connections": a.connections,
        "request_timeout_ms": a.request_timeout_ms,
        "state_machine": a.state_machine.toml_name(),
        "page_size": a.page_size,
        "range_readers": a.range_readers,
        "lease_ttl_s": a.lease_ttl,
    })
}

async fn run(mut args: Args) -> Result<bool> {
    let (date, started) = utc_now();
    if args.latency_table {
        return seedtable::run(&args, started, date).await;
    }
    args.apply_matrix();
    let data_dir = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let loadavg_before = report::loadavg();
    eprintln!(
        "d-engine-bench: load average {loadavg_before}; measuring floors in {}",
        data_dir.display()
    );
    let floors = floors::measure_all(&data_dir, Duration::from_secs_f64(args.floor_secs)).await?;
    for f in &floors {
        eprintln!(
            "  floor {:<10} p50 {:>8.1} µs  p99 {:>8.1} µs  ({})",
            f.name, f.latency.p50_us, f.latency.p99_us, f.what
        );
    }
    let ctx = Ctx {
        keys: Arc::new(workload::make_keys(args.key_space, args.key_size)?),
        value: Arc::new(workload::make_value(args.value_size)),
        floors,
        data_dir,
        args,
    };
    let mut out = Outcomes::default();
    let mut skipped = Vec::new();
    let mut failed = false;
    for &t in &ctx.args.targets {
        match run_target(&ctx, t, &mut out).await {
            Ok(None) => {}
            Ok(Some(reason)) => {
                eprintln!("  skipped: {reason}");
                skipped.push(reason);
            }
            Err(e) => {
                eprintln!("  FAILED {}: {e:#}", t.name());
                skipped.push(format!("{}: FAILED: {e:#}", t.name()));
                failed = true;
            }
        }
    }
    let report = Report {
        started_utc: started,
        host: HostInfo {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            loadavg_before,
            loadavg_after: report::loadavg(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        },
        settings: settings_json(&ctx.args),
        floors: ctx.floors.clone(),
        cases: out.cases,
        memory: out.memory,
        skipped,
    };
    let a = &ctx.args;
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("creating {}", a.out_dir.display()))?;
    let stem = a.name.clone().unwrap_or(date);
    let json = a.out_dir.join(format!("{stem}.json"));
    let md = a.out_dir.join(format!("{stem}.md"));
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    let mut text = report::markdown(&report);
    if a.plot {
        let png = a.out_dir.join(format!("{stem}.png"));
        let legend = plot::write_png(&report.cases, &png)?;
        if !legend.is_empty() {
            text += &format!("\n## Plot\n\n![throughput vs clients]({stem}.png)\n\n{legend}");
        }
    }
    std::fs::write(&md, &text)?;
    println!("{text}");
    eprintln!("wrote {} and {}", json.display(), md.display());
    Ok(!failed)
}

fn main() -> Result<()> {
    let args = Args::parse();
    systems::set_node_tuning(systems::NodeTuning {
        read_rounds: args.read_rounds,
    });
    // The engines' own logs (elections, snapshot transfers) go to stderr;
    // `RUST_LOG=d_engine=info` shows every leader change during a run.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let ok = rt.block_on(run(args))?;
    rt.shutdown_timeout(Duration::from_secs(5));
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_date_is_well_formed() {
        let (d, t) = super::utc_now();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20") && t.ends_with("UTC"), "{d} {t}");
    }
}
