//! The `memory` scenario: how much resident memory a node needs to hold
//! `--memory-keys` values of `--value-size` bytes.
//!
//! The keys are written through the system's normal client by the case's
//! clients (concurrent writers) on a freshly started system; after a short
//! settle the node's VmRSS and VmHWM are read from `/proc/<pid>/status`.
//! Standalone and etcd nodes are their own processes; an embedded node lives
//! in this process, so its figures include the tool itself and the RSS just
//! before loading is reported next to them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cli::Target;
use crate::systems::procs::Proc;
use crate::workload::{self, Driver};

/// Pause between the last acknowledged write and the reading, so the node's
/// background work (apply, flushes) settles.
const SETTLE: Duration = Duration::from_secs(1);

/// Resident memory of one process, in KiB (as `/proc/<pid>/status` gives it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resident {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: peak resident (since start, or since the last peak reset).
    pub hwm_kib: u64,
}

impl Resident {
    /// VmRSS and VmHWM from the text of a `/proc/<pid>/status` file; `None`
    /// if either line is missing or malformed.
    pub fn parse(status: &str) -> Option<Resident> {
        let field = |name: &str| {
            status.lines().find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                let mut parts = rest.split_whitespace();
                let n = parts.next()?.parse().ok()?;
                (parts.next()? == "kB").then_some(n)
            })
        };
        Some(Resident {
            rss_kib: field("VmRSS")?,
            hwm_kib: field("VmHWM")?,
        })
    }

    /// Of process `pid` (`"self"`: this process).
    pub fn of(pid: &str) -> Result<Resident> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        Resident::parse(&text).with_context(|| format!("no VmRSS/VmHWM in {path}"))
    }
}

/// Resets this process's VmHWM to its current VmRSS (Linux ≥ 4.0:
/// `clear_refs` value 5). Returns whether the kernel accepted it.
fn reset_own_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Where the nodes of a started system live.
pub enum Holder {
    /// In this process (embedded).
    ThisProcess,
    /// One server process per node: `program` names it in the output.
    Servers {
        program: &'static str,
        pids: Vec<u32>,
    },
}

impl Holder {
    /// The server processes `procs` (one per node, in node order), shown as
    /// `program`. Fails if one has already been reaped.
    pub fn servers(program: &'static str, procs: &[Proc]) -> Result<Holder> {
        Ok(Holder::Servers {
            program,
            pids: procs
                .iter()
                .map(|p| p.pid().with_context(|| format!("{} has exited", p.name)))
                .collect::<Result<_>>()?,
        })
    }

    /// The resident memory of every process holding a node, in node order.
    fn read(&self) -> Result<Vec<Resident>> {
        match self {
            Holder::ThisProcess => Ok(vec![Resident::of("self")?]),
            Holder::Servers { pids, .. } => {
                pids.iter().map(|p| Resident::of(&p.to_string())).collect()
            }
        }
    }

    /// What the headline figures are, for the reader.
    fn describe(&self, peak_reset: bool) -> String {
        match self {
            Holder::ThisProcess => format!(
                "bench process (the node is in-process: includes the tool itself); peak since {}",
                if peak_reset {
                    "just before loading"
                } else {
                    "the tool started"
                }
            ),
            Holder::Servers { program, pids } if pids.len() == 1 => format!("{program} process"),
            Holder::Servers { program, pids } => {
                format!("max over the {} {program} processes", pids.len())
            }
        }
    }
}

/// What to load.
#[derive(Debug, Clone)]
pub struct MemorySpec {
    pub keys: usize,
    pub key_size: usize,
    pub value: Arc<Vec<u8>>,
    /// Concurrent writers.
    pub clients: usize,
    pub request_timeout: Duration,
}

/// One memory case.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryResult {
    pub system: String,
    pub nodes: usize,
    pub clients: usize,
    /// Distinct keys loaded.
    pub keys: usize,
    pub key_size: usize,
    pub value_size: usize,
    /// Seconds from the first write to the last acknowledgement.
    pub load_s: f64,
    pub load_ops_per_sec: f64,
    /// Which process(es) the headline figures are from.
    pub measured: String,
    /// VmRSS after loading and settling (max over the node processes).
    pub rss_kib: u64,
    /// VmHWM at the same moment (max over the node processes).
    pub hwm_kib: u64,
    /// Embedded only: this process's VmRSS just before loading (the system
    /// already started), so `rss_kib - rss_before_kib` is the data's share.
    pub rss_before_kib: Option<u64>,
    /// Every process read, in node order.
    pub processes: Vec<Resident>,
}

/// Loads `spec.keys` distinct keys into the started `target` with
/// `spec.clients` concurrent writers (failing on the first failed write),
/// waits [`SETTLE`], and reads the resident memory of `holder`.
pub async fn run<D: Driver>(
    driver: Arc<D>,
    holder: &Holder,
    target: Target,
    spec: &MemorySpec,
) -> Result<MemoryResult> {
    if spec.keys == 0 {
        bail!("--memory-keys must be at least 1");
    }
    workload::check_key_size(spec.keys, spec.key_size)?;
    let (before, peak_reset) = match holder {
        Holder::ThisProcess => {
            let reset = reset_own_peak();
            (Some(Resident::of("self")?.rss_kib), reset)
        }
        Holder::Servers { .. } => (None, false),
    };
    let t0 = Instant::now();
    workload::preload(
        driver,
        spec.keys,
        spec.key_size,
        spec.value.clone(),
        spec.clients,
        spec.request_timeout,
    )
    .await
    .with_context(|| format!("loading {} keys into {}", spec.keys, target.name()))?;
    let load_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let processes = holder.read()?;
    Ok(MemoryResult {
        system: target.system().into(),
        nodes: target.nodes(),
        clients: spec.clients,
        keys: spec.keys,
        key_size: spec.key_size,
        value_size: spec.value.len(),
        load_s,
        load_ops_per_sec: spec.keys as f64 / load_s.max(1e-9),
        measured: holder.describe(peak_reset),
        rss_kib: processes.iter().map(|p| p.rss_kib).max().unwrap_or(0),
        hwm_kib: processes.iter().map(|p| p.hwm_kib).max().unwrap_or(0),
        rss_before_kib: before,
        processes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\td-engine-server\nVmPeak:\t 2000000 kB\nVmHWM:\t  524288 kB\nVmRSS:\t  400000 kB\nRssAnon:\t  300000 kB\nThreads:\t8\n";

    #[test]
    fn parses_rss_and_peak() {
        assert_eq!(
            Resident::parse(STATUS),
            Some(Resident {
                rss_kib: 400_000,
                hwm_kib: 524_288
            })
        );
    }

    #[test]
    fn missing_or_malformed_fields_are_none() {
        assert_eq!(Resident::parse("Name:\tx\nVmRSS:\t 10 kB\n"), None);
        assert_eq!(Resident::parse("VmHWM:\t 10 kB\nVmRSS:\t ten kB\n"), None);
        // A longer field name that starts with "VmRSS" is not VmRSS.
        assert_eq!(Resident::parse("VmHWM:\t 10 kB\nVmRSSx:\t 5 kB\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let r = Resident::of("self").unwrap();
        assert!(r.rss_kib > 0 && r.hwm_kib >= r.rss_kib, "{r:?}");
    }

    #[test]
    fn describes_what_was_measured() {
        let one = Holder::Servers {
            program: "etcd",
            pids: vec![1],
        };
        let three = Holder::Servers {
            program: "d-engine-server",
            pids: vec![1, 2, 3],
        };
        assert_eq!(one.describe(false), "etcd process");
        assert_eq!(
            three.describe(false),
            "max over the 3 d-engine-server processes"
        );
        assert!(Holder::ThisProcess
            .describe(true)
            .contains("includes the tool itself"));
    }
}
