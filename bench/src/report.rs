//! JSON and Markdown output: floors, every case, the side-by-side table
//! (d-engine embedded / standalone / etcd), the memory cases and the targets
//! of `shared/benchmarks/peers.md` checked against this run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::cpu::CpuUse;
use crate::floors::FloorResult;
use crate::memory::MemoryResult;
use crate::stats::CaseResult;

/// Everything one run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started_utc: String,
    pub host: HostInfo,
    pub settings: serde_json::Value,
    pub floors: Vec<FloorResult>,
    pub cases: Vec<CaseResult>,
    /// The `memory` cases (resident memory after loading).
    pub memory: Vec<MemoryResult>,
    /// Targets that could not be measured (binary missing, start failure...).
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    pub cpus: usize,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub kernel: String,
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn ms(us: f64) -> String {
    if us >= 100_000.0 {
        format!("{:.0}", us / 1000.0)
    } else if us >= 1_000.0 {
        format!("{:.1}", us / 1000.0)
    } else if us >= 1.0 {
        format!("{:.3}", us / 1000.0)
    } else {
        // Below a microsecond (in-process calls): keep two digits.
        format!("{:.5}", us / 1000.0)
    }
}

fn us(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// KiB as whole MiB.
pub fn mib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

pub fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// CPU µs per operation, total first, then the tool's and the servers'
/// shares when the system has server processes.
pub fn cpu_per_op(c: &CpuUse) -> String {
    let f = |v: Option<f64>| v.map(us).unwrap_or_else(|| "–".into());
    if c.server_processes == 0 {
        format!("{} µs/op (in process)", f(c.total_us_per_op))
    } else {
        format!(
            "{} µs/op (tool {} + servers {})",
            f(c.total_us_per_op),
            f(c.tool_us_per_op),
            f(c.servers_us_per_op)
        )
    }
}

/// The scenario's own figure beside throughput: the success ratio of a
/// txn, the keys/s of a range page, the pages/s of range readers.
fn extra(c: &CaseResult) -> String {
    let r = &c.median;
    match (c.scenario.as_str(), &r.background) {
        ("txn", _) => format!(", {:.1} % succeeded", 100.0 * r.success_ratio()),
        ("range-page", _) => format!(", {} keys/s", thousands(r.items_per_sec)),
        (_, Some(b)) => format!(
            ", {} reader{} {} pages/s",
            b.readers,
            if b.readers == 1 { "" } else { "s" },
            thousands(b.pages_per_sec)
        ),
        _ => String::new(),
    }
}

/// Scenarios of the coordination table.
const COORDINATION: [&str; 5] = [
    "txn",
    "range-page",
    "lease-keepalive",
    "lease-renew",
    "write-range-reader",
];

fn cell(c: &CaseResult) -> String {
    let l = &c.median.latency;
    let mut s = format!(
        "{}/s ({} / {} ms){}",
        thousands(c.median.ops_per_sec),
        ms(l.p50_us),
        ms(l.p99_us),
        extra(c)
    );
    if let Some(t) = c.median.cpu.as_ref().and_then(|u| u.total_us_per_op) {
        let _ = write!(s, ", {} µs CPU/op", us(t));
    }
    if c.total_errors + c.total_timeouts > 0 {
        let _ = write!(s, " **{} err, {} to**", c.total_errors, c.total_timeouts);
    }
    s
}

/// The Markdown report.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# d-engine benchmark, {}\n", r.started_utc);
    let _ = writeln!(
        s,
        "{} CPUs, kernel {}, load average before {} / after {}. Keys/values and settings in the JSON.\n",
        r.host.cpus, r.host.kernel, r.host.loadavg_before, r.host.loadavg_after
    );
    let _ = writeln!(s, "## Floors\n\n| floor | what | samples | p50 µs | p99 µs | p99.9 µs | max µs |\n|---|---|---|---|---|---|---|");
    for f in &r.floors {
        let l = &f.latency;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            f.name,
            f.what,
            f.samples,
            us(l.p50_us),
            us(l.p99_us),
            us(l.p999_us),
            us(l.max_us)
        );
    }
    s += &side_by_side(r);
    s += &coordination(r);
    s += &memory_section(r);
    s += &targets(r);
    let _ = writeln!(s, "\n## All cases (median round by throughput)\n");
    let _ = writeln!(s, "| system | nodes | scenario | consistency | clients | conns | ok | errors | timeouts | ops/s | rounds ops/s | p50 ms | p99 ms | p99.9 ms | max ms | p50 / floor | CPU µs/op tool | CPU µs/op servers | CPU µs/op total | cores busy |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for c in &r.cases {
        let l = &c.median.latency;
        let rounds: Vec<String> = c.rounds_ops_per_sec.iter().map(|v| thousands(*v)).collect();
        let ratio = match (&c.floor, c.p50_over_floor) {
            (Some(f), Some(x)) => format!("{x:.1}× {f}"),
            _ => String::new(),
        };
        let cpu = c.median.cpu.as_ref();
        let per_op = |v: Option<f64>| v.map(us).unwrap_or_else(|| "–".into());
        let (tool, servers, total, busy) = match cpu {
            Some(u) => (
                per_op(u.tool_us_per_op),
                if u.server_processes == 0 {
                    "–".to_string()
                } else {
                    per_op(u.servers_us_per_op)
                },
                per_op(u.total_us_per_op),
                format!("{:.2}", u.cores_busy),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {tool} | {servers} | {total} | {busy} |",
            c.system,
            c.nodes,
            c.scenario,
            c.consistency,
            c.clients,
            c.connections,
            c.median.ok,
            c.total_errors,
            c.total_timeouts,
            thousands(c.median.ops_per_sec),
            rounds.join(" / "),
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
            ratio
        );
    }
    let errs: Vec<&CaseResult> = r
        .cases
        .iter()
        .filter(|c| !c.median.error_kinds.is_empty())
        .collect();
    if !errs.is_empty() {
        let _ = writeln!(s, "\n## Errors (median round)\n");
        for c in errs {
            for (k, n) in &c.median.error_kinds {
                let _ = writeln!(
                    s,
                    "- {} {}n {} c={}: {n} × `{}`",
                    c.system,
                    c.nodes,
                    c.scenario,
                    c.clients,
                    k.replace('`', "'")
                );
            }
        }
    }
    if !r.skipped.is_empty() {
        let _ = writeln!(s, "\n## Not measured\n");
        for k in &r.skipped {
            let _ = writeln!(s, "- {k}");
        }
    }
    s
}

/// The coordination scenarios (txn, range pages, leases, writes beside a
/// range reader), one row per case, with the ratio to etcd's case of the
/// same nodes, scenario and clients in this run. A `write-range-reader`
/// row is followed by the same system's `write` case at the same clients.
fn coordination(r: &Report) -> String {
    let mut s = String::new();
    let rows: Vec<&CaseResult> = r
        .cases
        .iter()
        .filter(|c| COORDINATION.contains(&c.scenario.as_str()))
        .collect();
    if rows.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "## Coordination scenarios\n\ntxn: % of transactions whose compare held; range-page: keys/s; write-range-reader: the readers' pages/s and page p50 / p99. *÷ etcd*: this case's ops/s over etcd's (same nodes, scenario, clients, this run).\n\n| system | nodes | scenario | clients | ops/s | p50 ms | p99 ms | errors + timeouts | scenario figure | ÷ etcd |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    let row = |s: &mut String, c: &CaseResult| {
        let l = &c.median.latency;
        let figure = match (c.scenario.as_str(), &c.median.background) {
            ("txn", _) => format!("{:.1} % succeeded", 100.0 * c.median.success_ratio()),
            ("range-page", _) => format!("{} keys/s", thousands(c.median.items_per_sec)),
            (_, Some(b)) => format!(
                "{} × {}-key pages: {} pages/s ({} / {} ms)",
                b.readers,
                b.page_size,
                thousands(b.pages_per_sec),
                ms(b.latency.p50_us),
                ms(b.latency.p99_us)
            ),
            _ => String::new(),
        };
        let vs_etcd = find(r, "etcd", c.nodes, &c.scenario, c.clients)
            .filter(|e| c.system != "etcd" && e.median.ops_per_sec > 0.0)
            .map(|e| format!("{:.2}×", c.median.ops_per_sec / e.median.ops_per_sec))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.system,
            c.nodes,
            c.scenario,
            c.clients,
            thousands(c.median.ops_per_sec),
            ms(l.p50_us),
            ms(l.p99_us),
            c.total_errors + c.total_timeouts,
            figure,
            vs_etcd
        );
    };
    for c in rows {
        row(&mut s, c);
        if c.scenario == "write-range-reader" {
            if let Some(w) = find(r, &c.system, c.nodes, "write", c.clients) {
                row(&mut s, w);
            }
        }
    }
    s.push('\n');
    s
}

/// The memory cases, if any: one row each.
fn memory_section(r: &Report) -> String {
    let mut s = String::new();
    if r.memory.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "## Memory (resident after loading)\n\nVmRSS / VmHWM from `/proc/<pid>/status`, read 1 s after the last write. An embedded node lives in the bench process: its figures include the tool itself, and *before* is the same process just before loading (system started), so *after − before* is the data's share.\n\n| system | nodes | keys × value | clients | load s (writes/s) | VmRSS MiB | VmHWM MiB | before MiB | after − before MiB | measured |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for m in &r.memory {
        let (before, delta) = match m.rss_before_kib {
            Some(b) => (mib(b), mib(m.rss_kib.saturating_sub(b))),
            None => ("–".into(), "–".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} × {} B | {} | {:.1} ({}) | {} | {} | {} | {} | {} |",
            m.system,
            m.nodes,
            thousands(m.keys as f64),
            m.value_size,
            m.clients,
            m.load_s,
            thousands(m.load_ops_per_sec),
            mib(m.rss_kib),
            mib(m.hwm_kib),
            before,
            delta,
            m.measured
        );
    }
    s.push('\n');
    s
}

/// The columns of the side-by-side tables, in this order; the upstream ones
/// only when the run measured upstream (`--upstream`).
const SYSTEMS: [&str; 5] = [
    "d-engine-embedded",
    "upstream-embedded",
    "d-engine-standalone",
    "upstream-standalone",
    "etcd",
];

fn side_by_side(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Side by side: throughput (p50 / p99)\n\nCells: successful ops/s of the median round (p50 / p99 latency in ms), then CPU µs per successful op (user + system CPU of the tool and of every server process of the system over the measured window; embedded: the tool's process, which holds the system); errors and timeouts in bold if any. The CPU split (tool / servers) is in *All cases*.\n"
    );
    let nodes: BTreeSet<usize> = r.cases.iter().map(|c| c.nodes).collect();
    let systems: Vec<&str> = SYSTEMS
        .into_iter()
        .filter(|sys| !sys.starts_with("upstream-") || r.cases.iter().any(|c| c.system == *sys))
        .collect();
    for n in nodes {
        let _ = writeln!(
            s,
            "### {n} node{}\n\n| scenario | clients | {} |\n|---|---|{}",
            if n == 1 { "" } else { "s" },
            systems.join(" | "),
            "---|".repeat(systems.len())
        );
        let mut rows: BTreeMap<(String, usize), BTreeMap<&str, &CaseResult>> = BTreeMap::new();
        let mut order: Vec<(String, usize)> = Vec::new();
        for c in r.cases.iter().filter(|c| c.nodes == n) {
            let key = (format!("{} ({})", c.scenario, c.consistency), c.clients);
            if !rows.contains_key(&key) {
                order.push(key.clone());
            }
            rows.entry(key).or_default().insert(c.system.as_str(), c);
        }
        order.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        for key in order {
            let row = &rows[&key];
            let cells: Vec<String> = systems
                .iter()
                .map(|sys| row.get(sys).map(|c| cell(c)).unwrap_or_else(|| "–".into()))
                .collect();
            let _ = writeln!(s, "| {} | {} | {} |", key.0, key.1, cells.join(" | "));
        }
        s.push('\n');
    }
    s
}

fn find<'a>(
    r: &'a Report,
    system: &str,
    nodes: usize,
    scenario: &str,
    clients: usize,
) -> Option<&'a CaseResult> {
    r.cases.iter().find(|c| {
        c.system == system && c.nodes == nodes && c.scenario == scenario && c.clients == clients
    })
}

/// One target of peers.md: (description, verdict, evidence).
pub type TargetCheck = (String, Option<bool>, String);

/// The memory target: 1 M values of 256 B held in under 1 GiB resident.
const MEMORY_TARGET_KEYS: usize = 1_000_000;
const MEMORY_TARGET_VALUE: usize = 256;
const MEMORY_LIMIT_KIB: u64 = 1 << 20;

/// Judges the memory target from the d-engine memory cases with at least
/// 1 M values of at least 256 B, one node per process (an embedded 3-node
/// cluster holds three copies in one process, so it is not judged): met if
/// every such case's VmRSS after loading is under 1 GiB. Embedded figures
/// include the tool, so they err on the side of "missed".
fn memory_target(r: &Report) -> TargetCheck {
    let what = "1 M values of 256 B: resident < 1 GiB".to_string();
    let dengine: Vec<&MemoryResult> = r
        .memory
        .iter()
        .filter(|m| m.system.starts_with("d-engine"))
        .collect();
    let judged: Vec<&MemoryResult> = dengine
        .iter()
        .copied()
        .filter(|m| {
            m.keys >= MEMORY_TARGET_KEYS
                && m.value_size >= MEMORY_TARGET_VALUE
                && !(m.system == "d-engine-embedded" && m.nodes > 1)
        })
        .collect();
    if judged.is_empty() {
        let ev = match dengine.iter().map(|m| m.keys).max() {
            Some(k) => format!(
                "not measured (at most {} keys loaded; the target needs {})",
                thousands(k as f64),
                thousands(MEMORY_TARGET_KEYS as f64)
            ),
            None => "not measured".into(),
        };
        return (what, None, ev);
    }
    let ev: Vec<String> = judged
        .iter()
        .map(|m| {
            let before = m
                .rss_before_kib
                .map(|b| format!(", {} MiB before loading", mib(b)))
                .unwrap_or_default();
            format!(
                "{} {}n: VmRSS {} MiB (peak {} MiB{before}; {})",
                m.system,
                m.nodes,
                mib(m.rss_kib),
                mib(m.hwm_kib),
                m.measured
            )
        })
        .collect();
    let met = judged.iter().all(|m| m.rss_kib < MEMORY_LIMIT_KIB);
    (what, Some(met), ev.join("; "))
}

/// Upstream d-engine 0.2.4 standalone 3-node p99 (µs) from peers.md.
const UPSTREAM_SA3_WRITE_P99_US: f64 = 33_055.0;
const UPSTREAM_SA3_LINREAD_P99_US: f64 = 20_383.0;

/// Checks this run against the targets of `shared/benchmarks/peers.md`.
pub fn check_targets(r: &Report) -> Vec<TargetCheck> {
    let mut out: Vec<TargetCheck> = Vec::new();
    let fsync = r.floors.iter().find(|f| f.name == crate::floors::FSYNC);
    let prealloc = r
        .floors
        .iter()
        .find(|f| f.name == crate::floors::FSYNC_PREALLOC);
    let mut min_ops = |what: &str, sys: &str, n: usize, sc: &str, cl: usize, min: f64| {
        let c = find(r, sys, n, sc, cl);
        out.push((
            what.to_string(),
            c.map(|c| c.median.ops_per_sec >= min),
            c.map(|c| format!("{}/s", thousands(c.median.ops_per_sec)))
                .unwrap_or_else(|| "not measured".into()),
        ));
    };
    let e = "d-engine-embedded";
    let sa = "d-engine-standalone";
    min_ops(
        "embedded 1 node: write, 100 clients ≥ 160,000/s",
        e,
        1,
        "write",
        100,
        160_000.0,
    );
    min_ops(
        "embedded 1 node: lease read ≥ 1,000,000/s",
        e,
        1,
        "read-lease",
        100,
        1_000_000.0,
    );
    min_ops(
        "embedded 1 node: eventual read ≥ 1,000,000/s",
        e,
        1,
        "read-eventual",
        100,
        1_000_000.0,
    );
    min_ops(
        "embedded 1 node: linearizable read ≥ 500,000/s",
        e,
        1,
        "read-linearizable",
        100,
        500_000.0,
    );
    min_ops(
        "embedded 3 nodes: write, 100 clients ≥ 60,000/s",
        e,
        3,
        "write",
        100,
        60_000.0,
    );
    min_ops(
        "embedded 3 nodes: linearizable read ≥ 480,000/s",
        e,
        3,
        "read-linearizable",
        100,
        480_000.0,
    );
    min_ops(
        "standalone 3 nodes: write, 1,000 clients ≥ 25,000/s",
        sa,
        3,
        "write",
        1000,
        25_000.0,
    );
    min_ops(
        "standalone 3 nodes: linearizable read, 1,000 clients ≥ 45,000/s",
        sa,
        3,
        "read-linearizable",
        1000,
        45_000.0,
    );

    let single = find(r, e, 1, "write-single", 1);
    out.push((
        "embedded 1 node: 1-client write p50 ≤ 1.3 × fdatasync p50".into(),
        match (single, fsync) {
            (Some(c), Some(f)) => Some(c.median.latency.p50_us <= 1.3 * f.latency.p50_us),
            _ => None,
        },
        match (single, fsync) {
            (Some(c), Some(f)) => format!(
                "{} µs vs append floor {} µs ({:.2}×){}",
                us(c.median.latency.p50_us),
                us(f.latency.p50_us),
                c.median.latency.p50_us / f.latency.p50_us,
                prealloc
                    .map(|p| format!(
                        "; vs preallocated floor {} µs ({:.2}×)",
                        us(p.latency.p50_us),
                        c.median.latency.p50_us / p.latency.p50_us
                    ))
                    .unwrap_or_default()
            ),
            _ => "not measured".into(),
        },
    ));
    for sc in ["read-lease", "read-eventual"] {
        let c = find(r, e, 1, sc, 100);
        out.push((
            format!("embedded 1 node: {sc} p50 ≤ 2 µs"),
            c.map(|c| c.median.latency.p50_us <= 2.0),
            c.map(|c| format!("{} µs", us(c.median.latency.p50_us)))
                .unwrap_or_else(|| "not measured".into()),
        ));
    }
    for (sc, upstream) in [
        ("write", UPSTREAM_SA3_WRITE_P99_US),
        ("read-linearizable", UPSTREAM_SA3_LINREAD_P99_US),
    ] {
        let ours = find(r, sa, 3, sc, 1000);
        let etcd = find(r, "etcd", 3, sc, 1000);
        // Upstream measured in this run (`--upstream`) beats the old figure.
        let (upstream, whose) = match find(r, "upstream-standalone", 3, sc, 1000) {
            Some(u) => (u.median.latency.p99_us, "same run"),
            None => (upstream, "peers.md"),
        };
        out.push((
            format!("standalone 3 nodes: {sc} p99 at 1,000 clients below etcd's (same run) and upstream's ({} ms, {whose})", ms(upstream)),
            match (ours, etcd) {
                (Some(o), Some(e)) => Some(
                    o.median.latency.p99_us < e.median.latency.p99_us
                        && o.median.latency.p99_us < upstream,
                ),
                _ => None,
            },
            format!(
                "ours {} ms, etcd {} ms",
                ours.map(|c| ms(c.median.latency.p99_us)).unwrap_or_else(|| "–".into()),
                etcd.map(|c| ms(c.median.latency.p99_us)).unwrap_or_else(|| "–".into())
            ),
        ));
    }
    let at_1000: Vec<&CaseResult> = r
        .cases
        .iter()
        .filter(|c| c.clients >= 1000 && c.system.starts_with("d-engine"))
        .collect();
    let dropped: u64 = at_1000
        .iter()
        .map(|c| c.total_errors + c.total_timeouts)
        .sum();
    out.push((
        "no request dropped at 1,000 clients (d-engine)".into(),
        (!at_1000.is_empty()).then_some(dropped == 0),
        if at_1000.is_empty() {
            "not measured".into()
        } else {
            format!("{dropped} errors + timeouts over {} cases", at_1000.len())
        },
    ));
    out.push(memory_target(r));
    out
}

fn targets(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Targets (shared/benchmarks/peers.md)\n\n| target | verdict | this run |\n|---|---|---|"
    );
    for (what, ok, ev) in check_targets(r) {
        let v = match ok {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {what} | {v} | {ev} |");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Latency, Round};

    fn case(
        system: &str,
        nodes: usize,
        scenario: &str,
        clients: usize,
        ops: f64,
        p50: f64,
    ) -> CaseResult {
        CaseResult {
            system: system.into(),
            nodes,
            scenario: scenario.into(),
            consistency: "-".into(),
            clients,
            connections: 0,
            median: Round {
                ok: 10,
                errors: 0,
                timeouts: 0,
                elapsed_s: 1.0,
                ops_per_sec: ops,
                latency: Latency {
                    p50_us: p50,
                    p99_us: p50 * 2.0,
                    p999_us: p50 * 3.0,
                    max_us: p50 * 4.0,
                    mean_us: p50,
                },
                ..Default::default()
            },
            rounds_ops_per_sec: vec![ops],
            total_errors: 0,
            total_timeouts: 0,
            floor: None,
            floor_p50_us: None,
            p50_over_floor: None,
        }
    }

    fn report(cases: Vec<CaseResult>) -> Report {
        Report {
            started_utc: "t".into(),
            host: HostInfo {
                cpus: 2,
                loadavg_before: String::new(),
                loadavg_after: String::new(),
                kernel: String::new(),
            },
            settings: serde_json::Value::Null,
            floors: vec![],
            cases,
            memory: vec![],
            skipped: vec![],
        }
    }

    #[test]
    fn cpu_per_op_is_beside_throughput_and_split_in_all_cases() {
        let mut sa = case("d-engine-standalone", 3, "write", 100, 10_000.0, 900.0);
        let t0 = std::time::Instant::now();
        let at = |tool: f64, servers: &[f64], secs: u64| crate::cpu::CpuSample {
            at: t0 + std::time::Duration::from_secs(secs),
            tool_s: tool,
            servers_s: servers.to_vec(),
        };
        let u = CpuUse::between(
            &at(1.0, &[1.0, 1.0, 1.0], 0),
            &at(1.2, &[1.4, 1.1, 1.1], 1),
            10_000,
        )
        .unwrap();
        assert_eq!(cpu_per_op(&u), "80.0 µs/op (tool 20.0 + servers 60.0)");
        sa.median.cpu = Some(u);
        let mut emb = case("d-engine-embedded", 1, "write", 100, 50_000.0, 500.0);
        emb.median.cpu = Some(CpuUse::between(&at(1.0, &[], 0), &at(1.5, &[], 1), 50_000).unwrap());
        let md = markdown(&report(vec![sa, emb]));
        assert!(
            md.contains("| write (-) | 100 | – | 10,000/s (0.900 / 1.8 ms), 80.0 µs CPU/op | – |"),
            "{md}"
        );
        assert!(md.contains("| 20.0 | 60.0 | 80.0 | 0.80 |"), "{md}");
        assert!(md.contains("| 10.0 | – | 10.0 | 0.50 |"), "{md}");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
    }

    #[test]
    fn targets_are_judged_from_the_run() {
        let r = report(vec![
            case("d-engine-embedded", 1, "write", 100, 170_000.0, 500.0),
            case("d-engine-embedded", 3, "write", 100, 10_000.0, 500.0),
        ]);
        let t = check_targets(&r);
        let get = |p: &str| t.iter().find(|x| x.0.starts_with(p)).unwrap().1;
        assert_eq!(get("embedded 1 node: write, 100"), Some(true));
        assert_eq!(get("embedded 3 nodes: write"), Some(false));
        assert_eq!(get("standalone 3 nodes: write, 1,000"), None);
    }

    #[test]
    fn markdown_puts_systems_side_by_side_and_flags_errors() {
        let mut bad = case("etcd", 1, "write", 1000, 17_000.0, 54_000.0);
        bad.total_timeouts = 3;
        let r = report(vec![
            case("d-engine-embedded", 1, "write", 1000, 100_000.0, 900.0),
            bad,
        ]);
        let md = markdown(&r);
        assert!(md.contains("| write (-) | 1000 | 100,000/s (0.900 / 1.8 ms) | – | 17,000/s (54.0 / 108 ms) **0 err, 3 to** |"), "{md}");
    }

    #[test]
    fn coordination_table_shows_each_scenario_figure_and_the_ratio_to_etcd() {
        let mut txn = case("d-engine-standalone", 3, "txn", 100, 9_000.0, 800.0);
        txn.median.items = 9;
        let mut etcd_txn = case("etcd", 3, "txn", 100, 3_000.0, 2_000.0);
        etcd_txn.median.items = 10;
        let mut page = case("d-engine-embedded", 1, "range-page", 10, 2_000.0, 500.0);
        page.median.items_per_sec = 200_000.0;
        let mut rr = case(
            "d-engine-embedded",
            1,
            "write-range-reader",
            100,
            5_000.0,
            900.0,
        );
        rr.median.background = Some(crate::stats::Background {
            readers: 1,
            page_size: 100,
            pages_per_sec: 1_500.0,
            ..Default::default()
        });
        let w = case("d-engine-embedded", 1, "write", 100, 6_000.0, 800.0);
        let md = markdown(&report(vec![txn, etcd_txn, page, rr, w]));
        assert!(md.contains("| d-engine-standalone | 3 | txn | 100 | 9,000 | 0.800 | 1.6 | 0 | 90.0 % succeeded | 3.00× |"), "{md}");
        assert!(
            md.contains("| etcd | 3 | txn | 100 | 3,000 | 2.0 | 4.0 | 0 | 100.0 % succeeded |  |"),
            "{md}"
        );
        assert!(md.contains("| d-engine-embedded | 1 | range-page | 10 | 2,000 | 0.500 | 1.0 | 0 | 200,000 keys/s |  |"), "{md}");
        let rr_at = md
            .find("| d-engine-embedded | 1 | write-range-reader |")
            .unwrap();
        let w_at = md
            .find("| d-engine-embedded | 1 | write | 100 | 6,000 |")
            .unwrap();
        assert!(
            w_at > rr_at,
            "the plain write case follows its reader case: {md}"
        );
        assert!(md.contains("1 × 100-key pages: 1,500 pages/s"), "{md}");
        assert!(
            md.contains("9,000/s (0.800 / 1.6 ms), 90.0 % succeeded"),
            "{md}"
        );
    }

    fn mem(system: &str, nodes: usize, keys: usize, rss_mib: u64) -> MemoryResult {
        MemoryResult {
            system: system.into(),
            nodes,
            clients: 100,
            keys,
            key_size: 8,
            value_size: 256,
            load_s: 10.0,
            load_ops_per_sec: keys as f64 / 10.0,
            measured: "m".into(),
            rss_kib: rss_mib * 1024,
            hwm_kib: rss_mib * 1024 + 1024,
            rss_before_kib: (system == "d-engine-embedded").then_some(20 * 1024),
            processes: vec![],
        }
    }

    fn memory_verdict(memory: Vec<MemoryResult>) -> (Option<bool>, String) {
        let mut r = report(vec![]);
        r.memory = memory;
        let t = check_targets(&r);
        let row = t.iter().find(|x| x.0.starts_with("1 M values")).unwrap();
        (row.1, row.2.clone())
    }

    #[test]
    fn memory_target_is_judged_on_full_size_dengine_cases() {
        assert_eq!(memory_verdict(vec![]).0, None);
        let (v, ev) = memory_verdict(vec![mem("d-engine-embedded", 1, 2_000, 30)]);
        assert_eq!(v, None);
        assert!(ev.contains("2,000 keys"), "{ev}");
        let (v, ev) = memory_verdict(vec![
            mem("d-engine-embedded", 1, 1_000_000, 600),
            mem("d-engine-standalone", 1, 1_000_000, 500),
            mem("etcd", 1, 1_000_000, 2_000),
            mem("d-engine-embedded", 3, 1_000_000, 1_500),
        ]);
        assert_eq!(v, Some(true), "{ev}");
        assert!(
            ev.contains("VmRSS 600 MiB (peak 601 MiB, 20 MiB before loading"),
            "{ev}"
        );
        let (v, _) = memory_verdict(vec![
            mem("d-engine-embedded", 1, 1_000_000, 600),
            mem("d-engine-standalone", 1, 1_000_000, 1_024),
        ]);
        assert_eq!(v, Some(false));
    }

    #[test]
    fn markdown_lists_memory_cases_with_the_embedded_delta() {
        let mut r = report(vec![]);
        r.memory = vec![
            mem("d-engine-embedded", 1, 1_000_000, 600),
            mem("d-engine-standalone", 1, 1_000_000, 500),
        ];
        let md = markdown(&r);
        assert!(md.contains("| d-engine-embedded | 1 | 1,000,000 × 256 B | 100 | 10.0 (100,000) | 600 | 601 | 20 | 580 | m |"), "{md}");
        assert!(md.contains("| d-engine-standalone | 1 | 1,000,000 × 256 B | 100 | 10.0 (100,000) | 500 | 501 | – | – | m |"), "{md}");
        assert!(md.contains("include the tool itself"), "{md}");
    }
}
