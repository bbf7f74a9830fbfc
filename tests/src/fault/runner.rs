//! Wires a run together: cluster with a proxy on every directed peer link
//! (and a tmpfs under every data dir when the disk-full fault is on), the
//! seven workloads, and the nemesis for a given duration; then checks every
//! workload and returns the [`Report`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::disk::Tmpfs;
use super::history::Clock;
use super::nemesis::{Fault, Nemesis};
use super::proxy::LinkProxy;
use super::report::Report;
use super::workloads::{
    bank::Bank, leases::LeaseWorkload, lock::LockWorkload, register::Register, set::SetWorkload,
    txn_bank::TxnBank, watch::WatchWorkload, Ctx,
};
use crate::cluster::{Cluster, ClusterConfig};
use crate::sim::rng::Rng;

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub nodes: usize,
    /// How long faults are injected (workloads run throughout).
    pub duration: Duration,
    pub seed: u64,
    /// Fault kinds to draw from.
    pub faults: Vec<Fault>,
    /// Inject every kind once (in a seeded order) before drawing at random.
    pub every_kind_first: bool,
    /// Size of each node's tmpfs (disk-full fault).
    pub disk_mb: u64,
    /// Extra `d-engine-server` flags for every node (e.g. the state machine
    /// backend, a low snapshot threshold).
    pub server_args: Vec<String>,
}

/// `FAULT_SEED` if set, else a fresh seed (printed by the caller).
pub fn seed_from_env() -> u64 {
    match std::env::var("FAULT_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FAULT_SEED={s} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// Runs the suite once. Never panics on an anomaly: they are in the report.
pub async fn run(cfg: RunConfig) -> Report {
    let started = Instant::now();
    eprintln!(
        "[fault] seed {} ({} nodes, {:?}); reproduce with FAULT_SEED={}",
        cfg.seed, cfg.nodes, cfg.duration, cfg.seed
    );
    let mut report = Report {
        seed: cfg.seed,
        nodes: cfg.nodes,
        ..Default::default()
    };
    let mut cluster = Cluster::prepare(ClusterConfig {
        nodes: cfg.nodes,
        election_timeout_ms: 500,
        heartbeat_interval_ms: 50,
        extra_args: cfg.server_args.clone(),
        ..Default::default()
    });
    let ids = cluster.ids();

    // A tmpfs under every data dir, if the disk-full fault may run.
    let mut disks = BTreeMap::new();
    if cfg.faults.contains(&Fault::DiskFull) {
        for id in &ids {
            match Tmpfs::mount(&cluster.data_dir(*id), cfg.disk_mb) {
                Ok(t) => {
                    disks.insert(*id, t);
                }
                Err(e) => {
                    let msg = format!("disk-full fault SKIPPED: {e}");
                    eprintln!("[fault] NOTICE: {msg}");
                    report.notes.push(msg);
                    disks.clear();
                    break;
                }
            }
        }
    }

    // A proxy per directed link; node a dials b through proxy (a, b).
    let mut links = BTreeMap::new();
    for a in &ids {
        for b in &ids {
            if a != b {
                let p = LinkProxy::start(*a, *b, cluster.peer_addr(*b))
                    .await
                    .expect("start proxy");
                links.insert((*a, *b), p);
            }
        }
    }
    for a in &ids {
        let overrides = links
            .iter()
            .filter(|((from, _), _)| from == a)
            .map(|((_, to), p)| format!("{to}={}", p.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let args = &mut cluster.node(*a).spec.args;
        args.push("--peer-dial-overrides".into());
        args.push(overrides);
    }
    cluster.start_all();
    if let Err(e) = cluster.wait_leader(Duration::from_secs(60)).await {
        report.anomalies.push(format!(
            "cluster did not start: {e}\n{}",
            cluster.log_tails(30)
        ));
        return report;
    }
    let client = d_engine_client::ClientBuilder::new(cluster.endpoints())
        .request_timeout(Duration::from_secs(6))
        .attempt_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("client builds");
    let ctx = Ctx {
        client: client.clone(),
        clock: Clock::default(),
        stop: Arc::new(AtomicBool::new(false)),
        unique: Arc::new(AtomicU64::new(0)),
    };

    let register = Register::new();
    let set = SetWorkload::new();
    let bank = Bank::new();
    let watch = WatchWorkload::new();
    let txn_bank = TxnBank::new();
    let leases = LeaseWorkload::new(&ctx);
    let lock = LockWorkload::new(&ctx);
    if let Err(e) = bank.setup(&ctx).await {
        report.anomalies.push(e);
    }
    if let Err(e) = txn_bank.setup(&ctx).await {
        report.anomalies.push(e);
    }
    let mut tasks = Vec::new();
    tasks.extend(register.spawn(&ctx, 4, cfg.seed));
    tasks.extend(set.spawn(&ctx, 2));
    tasks.extend(bank.spawn(&ctx, 2, cfg.seed));
    tasks.extend(watch.spawn(&ctx, 2));
    tasks.extend(txn_bank.spawn(&ctx, 2, 2, cfg.seed));
    tasks.extend(leases.spawn(&ctx, 3, cfg.seed));
    tasks.extend(lock.spawn(&ctx, 3, cfg.seed));

    let mut nemesis = Nemesis::new(cluster, links, disks, client.clone(), cfg.seed);
    let mut rng = Rng::new(cfg.seed);
    let mut schedule: Vec<Fault> = Vec::new();
    if cfg.every_kind_first {
        let mut kinds = cfg.faults.clone();
        while !kinds.is_empty() {
            let i = rng.below(kinds.len() as u64) as usize;
            schedule.push(kinds.remove(i));
        }
        schedule.reverse();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fault_start = Instant::now();
    while fault_start.elapsed() < cfg.duration || (cfg.every_kind_first && !schedule.is_empty()) {
        let fault = schedule
            .pop()
            .unwrap_or_else(|| *rng.pick(&cfg.faults).expect("fault kinds"));
        let at = fault_start.elapsed();
        let res = nemesis.inject(fault).await;
        let recovered = nemesis.recover().await;
        match res {
            Ok(what) => {
                if !what.starts_with("SKIPPED") {
                    *report.faults.entry(fault.name().to_string()).or_default() += 1;
                }
                let rec = recovered
                    .as_ref()
                    .map(|d| format!("{:.1} s", d.as_secs_f64()))
                    .unwrap_or_else(|e| e.clone());
                report.timeline.push(format!(
                    "{:>6.1}s {}: {what}; recovered in {rec}",
                    at.as_secs_f64(),
                    fault.name()
                ));
            }
            Err(e) => {
                *report.faults.entry(fault.name().to_string()).or_default() += 1;
                report.anomalies.push(format!("{}: {e}", fault.name()));
            }
        }
        if let Err(e) = recovered {
            report.anomalies.push(format!(
                "after {}: {e}\n{}",
                fault.name(),
                nemesis.cluster.log_tails(20)
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let faults_end = ctx.clock.now();
    // Let the workloads run on a healthy cluster for a moment, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctx.stop.store(true, Ordering::Relaxed);
    let watch_checked = watch.check(Duration::from_secs(15));
    let (watch_anomalies, _) = tokio::join!(watch_checked, async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
    });
    report.anomalies.extend(watch_anomalies);
    let (reg_anomalies, reg_notes) = register.check();
    report.anomalies.extend(reg_anomalies);
    report.notes.extend(reg_notes);
    report.anomalies.extend(set.check(&ctx).await);
    report.anomalies.extend(bank.check(&ctx).await);
    report.anomalies.extend(txn_bank.check(&ctx).await);
    let (lease_anomalies, lease_notes) = leases.check(&ctx, faults_end).await;
    report.anomalies.extend(lease_anomalies);
    report.notes.extend(lease_notes);
    let (lock_anomalies, lock_note) = lock.check();
    report.anomalies.extend(lock_anomalies);
    report.notes.push(lock_note);
    report.ops.insert("register".into(), register.counts());
    report.ops.insert("set".into(), set.counts());
    report.ops.insert("bank".into(), bank.counts());
    report.ops.insert("watch (writes)".into(), watch.counts());
    report.ops.insert("txn-bank".into(), txn_bank.counts());
    report.ops.insert("leases".into(), leases.counts());
    report.ops.insert("lock".into(), lock.counts());
    let (events, instances, cancelled) = watch.stats();
    report.notes.push(format!(
        "watch: {events} events delivered to {instances} watch instances ({cancelled} ended with a cancellation or failed to open)"
    ));
    for r in watch.cancel_reasons(5) {
        report.notes.push(format!("watch cancellation: {r}"));
    }
    report.notes.push(format!(
        "bank: {} balance reads checked",
        *bank.reads.lock().unwrap()
    ));
    {
        let r = *txn_bank.reads.lock().unwrap();
        let t = *txn_bank.transfers.lock().unwrap();
        report.notes.push(format!(
            "txn-bank: {} transfers committed ({} compares failed and retried); reads checked: {} txn range ops, {} txn get ops, {} range pages",
            t[0], t[1], r[0], r[1], r[2]
        ));
    }
    for (name, c) in &report.ops {
        if c[0] == 0 {
            report.anomalies.push(format!(
                "{name}: no operation succeeded during the whole run"
            ));
        }
    }
    report.duration = started.elapsed();

    // Teardown: processes first, then the mounts, then the directory.
    let Nemesis {
        mut cluster, disks, ..
    } = nemesis;
    for id in cluster.ids() {
        cluster.kill(id);
    }
    drop(disks);
    if !report.anomalies.is_empty() {
        let dir = cluster.dir().to_path_buf();
        report
            .notes
            .push(format!("cluster data and logs: {}", dir.display()));
        std::mem::forget(cluster);
    }
    report
}
