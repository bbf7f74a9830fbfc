//! CPU per operation: user + system CPU time spent by the system under test
//! and by this tool over a measured window, divided by the operations the
//! window completed.
//!
//! The tool's own CPU comes from `getrusage(RUSAGE_SELF)` (every thread of
//! this process, microsecond resolution). A server process's CPU comes from
//! fields 14 and 15 (`utime`, `stime`) of `/proc/<pid>/stat`: every thread
//! of the process, in clock ticks (`sysconf(_SC_CLK_TCK)`, normally 100 per
//! second, so 10 ms resolution per process and sample).
//!
//! Which processes count is given by the system's [`Holder`]: an embedded
//! system lives in this process (the tool's CPU is the system's CPU, load
//! generation included); a standalone or etcd system is its server
//! processes, reported apart from the tool (the client side) and summed.
//! A new target gets CPU per op by handing out its `Holder`.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::memory::Holder;

/// The processes whose CPU a round measures besides this tool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuProbe {
    /// Server processes of the system under test (empty: in-process system).
    pub server_pids: Vec<u32>,
}

impl CpuProbe {
    /// The servers of `holder` (none for an in-process system).
    pub fn of(holder: &Holder) -> CpuProbe {
        match holder {
            Holder::ThisProcess => CpuProbe::default(),
            Holder::Servers { pids, .. } => CpuProbe {
                server_pids: pids.clone(),
            },
        }
    }

    /// CPU consumed so far by the tool and by each server.
    pub fn sample(&self) -> Result<CpuSample> {
        let tick = clock_ticks_per_sec()?;
        let servers = self
            .server_pids
            .iter()
            .map(|pid| {
                let path = format!("/proc/{pid}/stat");
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {path} (has the server exited?)"))?;
                let ticks = parse_stat_cpu_ticks(&text)
                    .with_context(|| format!("no utime/stime in {path}"))?;
                Ok(ticks as f64 / tick as f64)
            })
            .collect::<Result<Vec<f64>>>()?;
        Ok(CpuSample {
            at: Instant::now(),
            tool_s: own_cpu_secs()?,
            servers_s: servers,
        })
    }
}

/// CPU seconds consumed up to one moment.
#[derive(Debug, Clone)]
pub struct CpuSample {
    pub at: Instant,
    /// This process (user + system).
    pub tool_s: f64,
    /// Each server process (user + system), in [`CpuProbe::server_pids`] order.
    pub servers_s: Vec<f64>,
}

/// CPU spent over a measured window and per completed operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CpuUse {
    /// Wall-clock seconds between the two samples.
    pub window_s: f64,
    /// Operations completed successfully in the window (the divisor).
    pub ops: u64,
    /// Server processes measured (0: the system lives in the tool).
    pub server_processes: usize,
    /// CPU seconds of this tool (for an embedded system: the system too).
    pub tool_s: f64,
    /// CPU seconds of all server processes together.
    pub servers_s: f64,
    /// `tool_s + servers_s`.
    pub total_s: f64,
    /// Per operation, microseconds (`None` without any completed operation).
    pub tool_us_per_op: Option<f64>,
    pub servers_us_per_op: Option<f64>,
    pub total_us_per_op: Option<f64>,
    /// `total_s / window_s`: how many CPU cores were busy on average.
    pub cores_busy: f64,
}

impl CpuUse {
    /// The CPU between `start` and `end` (samples of the same probe), for
    /// `ops` completed operations. Fails if the samples do not match.
    pub fn between(start: &CpuSample, end: &CpuSample, ops: u64) -> Result<CpuUse> {
        if start.servers_s.len() != end.servers_s.len() {
            bail!(
                "CPU samples of {} and {} server processes",
                start.servers_s.len(),
                end.servers_s.len()
            );
        }
        let window_s = end.at.saturating_duration_since(start.at).as_secs_f64();
        let tool_s = (end.tool_s - start.tool_s).max(0.0);
        let servers_s: f64 = start
            .servers_s
            .iter()
            .zip(&end.servers_s)
            .map(|(a, b)| (b - a).max(0.0))
            .sum();
        let total_s = tool_s + servers_s;
        let per_op = |s: f64| (ops > 0).then(|| s * 1e6 / ops as f64);
        Ok(CpuUse {
            window_s,
            ops,
            server_processes: start.servers_s.len(),
            tool_s,
            servers_s,
            total_s,
            tool_us_per_op: per_op(tool_s),
            servers_us_per_op: per_op(servers_s),
            total_us_per_op: per_op(total_s),
            cores_busy: if window_s > 0.0 {
                total_s / window_s
            } else {
                0.0
            },
        })
    }
}

/// `utime + stime` (clock ticks) from the text of a `/proc/<pid>/stat`
/// file. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts with field 3 (state): utime is field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn clock_ticks_per_sec() -> Result<u64> {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(t as u64)
}

/// User + system CPU seconds of this process (all threads).
fn own_cpu_secs() -> Result<f64> {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        bail!("getrusage: {}", std::io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A real stat line (kernel 6.1) whose command name holds a space and
    /// parentheses; utime 1234, stime 567.
    const STAT: &str = "4242 (d-engine (x) srv) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 567 0 0 20 0 9 0 123456 2000000 5000 18446744073709551615 1 1 0 0 0 0 0 4096 17663 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_cpu_is_utime_plus_stime_after_the_command_name() {
        assert_eq!(parse_stat_cpu_ticks(STAT), Some(1234 + 567));
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis here"), None);
        let bad = STAT.replace(" 1234 ", " 12x4 ");
        assert_eq!(parse_stat_cpu_ticks(&bad), None);
    }

    #[test]
    fn this_process_stat_parses() {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_cpu_ticks(&text).is_some(), "{text}");
    }

    fn sample(at: Instant, tool: f64, servers: &[f64]) -> CpuSample {
        CpuSample {
            at,
            tool_s: tool,
            servers_s: servers.to_vec(),
        }
    }

    #[test]
    fn per_op_figures_split_tool_and_servers() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        let a = sample(t0, 10.0, &[1.0, 2.0, 3.0]);
        let b = sample(t1, 10.5, &[1.5, 2.25, 3.25]);
        let u = CpuUse::between(&a, &b, 1_000).unwrap();
        assert_eq!(u.server_processes, 3);
        assert!((u.tool_s - 0.5).abs() < 1e-9 && (u.servers_s - 1.0).abs() < 1e-9);
        assert!((u.total_s - 1.5).abs() < 1e-9);
        assert!((u.tool_us_per_op.unwrap() - 500.0).abs() < 1e-6);
        assert!((u.servers_us_per_op.unwrap() - 1_000.0).abs() < 1e-6);
        assert!((u.total_us_per_op.unwrap() - 1_500.0).abs() < 1e-6);
        assert!((u.cores_busy - 0.75).abs() < 1e-9);
        let none = CpuUse::between(&a, &b, 0).unwrap();
        assert_eq!(none.total_us_per_op, None);
        let e = CpuUse::between(&a, &sample(t1, 11.0, &[1.0]), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 and 1 server processes"), "{e}");
    }

    #[test]
    fn samples_see_cpu_spent_by_this_process_and_a_child() {
        // A child that burns CPU (writes to /dev/null) until killed.
        let mut child = std::process::Command::new("yes")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let probe = CpuProbe {
            server_pids: vec![child.id()],
        };
        let a = probe.sample().unwrap();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        std::thread::sleep(Duration::from_millis(400));
        let b = probe.sample().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let u = CpuUse::between(&a, &b, 100).unwrap();
        assert!(u.tool_s >= 0.05, "{u:?}");
        assert!(u.servers_s >= 0.02, "{u:?}");
        let gone = CpuProbe {
            server_pids: vec![u32::MAX - 1],
        };
        let e = format!("{:#}", gone.sample().unwrap_err());
        assert!(e.contains("has the server exited"), "{e}");
    }

    #[test]
    fn an_in_process_holder_measures_only_the_tool() {
        assert!(CpuProbe::of(&Holder::ThisProcess).server_pids.is_empty());
        let h = Holder::Servers {
            program: "etcd",
            pids: vec![7, 8],
        };
        assert_eq!(CpuProbe::of(&h).server_pids, vec![7, 8]);
    }
}
