//! Command-line flags.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::workload::{Consistency, Scenario};

/// A system and cluster size to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    #[value(name = "embedded-1")]
    Embedded1,
    #[value(name = "embedded-3")]
    Embedded3,
    #[value(name = "standalone-1")]
    Standalone1,
    #[value(name = "standalone-3")]
    Standalone3,
    /// Upstream d-engine 0.2.4 (needs a build with `--features upstream`).
    #[value(name = "upstream-embedded-1")]
    UpstreamEmbedded1,
    #[value(name = "upstream-embedded-3")]
    UpstreamEmbedded3,
    #[value(name = "upstream-standalone-3")]
    UpstreamStandalone3,
    #[value(name = "etcd-1")]
    Etcd1,
    #[value(name = "etcd-3")]
    Etcd3,
}

impl Target {
    pub fn system(self) -> &'static str {
        match self {
            Target::Embedded1 | Target::Embedded3 => "d-engine-embedded",
            Target::Standalone1 | Target::Standalone3 => "d-engine-standalone",
            Target::UpstreamEmbedded1 | Target::UpstreamEmbedded3 => "upstream-embedded",
            Target::UpstreamStandalone3 => "upstream-standalone",
            Target::Etcd1 | Target::Etcd3 => "etcd",
        }
    }
    /// Upstream d-engine 0.2.4 (`--upstream`, `--features upstream`).
    pub fn is_upstream(self) -> bool {
        self.system().starts_with("upstream-")
    }
    /// The nodes live in this process (embedded).
    pub fn in_process(self) -> bool {
        self.system().ends_with("-embedded")
    }
    pub fn nodes(self) -> usize {
        match self {
            Target::Embedded1 | Target::Standalone1 | Target::UpstreamEmbedded1 | Target::Etcd1 => {
                1
            }
            _ => 3,
        }
    }
    pub fn name(self) -> String {
        format!("{}-{}", self.system(), self.nodes())
    }
}

/// The d-engine nodes' state machine backend (`[state_machine] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SmBackend {
    Memory,
    Sled,
}

impl SmBackend {
    pub fn config(self) -> d_engine::config::StateMachineBackend {
        match self {
            SmBackend::Sled => d_engine::config::StateMachineBackend::Sled,
            SmBackend::Memory => d_engine::config::StateMachineBackend::Memory,
        }
    }
    /// The value as written in a config file.
    pub fn toml_name(self) -> &'static str {
        match self {
            SmBackend::Sled => "sled",
            SmBackend::Memory => "memory",
        }
    }
}

/// Preset case lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Matrix {
    /// Every target (upstream's only with `--upstream`); write at 1/10/100/1,000 clients, reads at 1/100/1,000,
    /// hot-key at 100 (docs/performance.md); on 1-node targets also memory
    /// (`--memory-keys`, default 1 M) loaded by 1,000 clients.
    Standard,
    /// A few seconds in total: tiny request counts, every scenario once (CI;
    /// not `lease-renew` and `write-range-reader`, variants of others).
    Smoke,
}

/// Benchmarks d-engine (embedded and standalone) and etcd with the standard
/// Raft-KV scenarios, next to the machine's floors.
#[derive(Debug, Clone, Parser)]
#[command(name = "d-engine-bench", version, args_override_self = true)]
pub struct Args {
    /// Systems to measure (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "embedded-1")]
    pub targets: Vec<Target>,
    /// Scenarios to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "write")]
    pub scenarios: Vec<Scenario>,
    /// Clients (requests in flight), comma-separated for a sweep.
    #[arg(
        long,
        alias = "concurrency",
        value_delimiter = ',',
        default_value = "1000"
    )]
    pub clients: Vec<usize>,
    /// gRPC connections the clients share (standalone and etcd; capped at the client count).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// A preset case list (overrides --targets/--scenarios/--clients; smoke also shrinks counts).
    #[arg(long, value_enum)]
    pub matrix: Option<Matrix>,
    /// Same as --matrix smoke.
    #[arg(long)]
    pub smoke: bool,
    /// With --matrix standard: also measure upstream d-engine 0.2.4
    /// (targets upstream-embedded-1, upstream-embedded-3,
    /// upstream-standalone-3; needs a build with `--features upstream`).
    #[arg(long)]
    pub upstream: bool,
    /// Measured seconds per round.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Measured requests per round (instead of --duration).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Warm-up seconds before each round (not recorded).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Rounds per case; the round with the median throughput is reported.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Distinct keys (reads draw from them after a preload; writes too).
    #[arg(long, default_value_t = 10_000)]
    pub key_space: usize,
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys the `memory` scenario loads before reading resident memory.
    #[arg(long, default_value_t = 1_000_000)]
    pub memory_keys: usize,
    /// Keys per page of `range-page` and of the `write-range-reader` readers.
    #[arg(long, default_value_t = 100)]
    pub page_size: u32,
    /// Range readers beside the writers of `write-range-reader`.
    #[arg(long, default_value_t = 1)]
    pub range_readers: usize,
    /// TTL (seconds) of each client's lease in the lease scenarios.
    #[arg(long, default_value_t = 60.0)]
    pub lease_ttl: f64,
    /// State machine backend of the d-engine nodes (embedded and standalone).
    #[arg(long, value_enum, default_value = "memory")]
    pub state_machine: SmBackend,
    /// `raft.max_read_rounds_in_flight` of the d-engine nodes (embedded and
    /// standalone): heartbeat rounds for linearizable reads out at once.
    /// Unset: the engine's default.
    #[arg(long)]
    pub read_rounds: Option<usize>,
    /// Consistency of the `read` and `hot-key` scenarios.
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: Consistency,
    /// A request without a reply after this many ms counts as a timeout.
    #[arg(long, default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Where the JSON, Markdown and PNG go.
    #[arg(long, default_value = "bench-results")]
    pub out_dir: PathBuf,
    /// File stem of the outputs (default: today's UTC date).
    #[arg(long)]
    pub name: Option<String>,
    /// Parent of the temporary data dirs (and where the fdatasync floor is measured).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The d-engine-server binary (default: next to this tool, else target/release).
    #[arg(long, env = "DENGINE_SERVER_BIN")]
    pub server_bin: Option<PathBuf>,
    /// The etcd binary (default: `etcd` on PATH, else /usr/bin/etcd).
    #[arg(long)]
    pub etcd_bin: Option<PathBuf>,
    /// Seconds spent measuring each floor.
    #[arg(long, default_value_t = 2.0)]
    pub floor_secs: f64,
    /// Write the throughput-vs-clients PNG.
    #[arg(long)]
    pub plot: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Instead of the matrix: measure the seed's latency table row by row
    /// (embedded and standalone put/get with 1 client, leader elections,
    /// standalone failover; docs/performance.md). Uses --duration,
    /// --warmup, --requests, --runs; with --smoke: 200 requests, 2 runs.
    #[arg(long)]
    pub latency_table: bool,
    /// Latency table: fresh systems per election / failover row.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
}

/// One case of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    pub scenario: Scenario,
    pub clients: usize,
}

impl Args {
    pub fn matrix(&self) -> Option<Matrix> {
        if self.smoke {
            Some(Matrix::Smoke)
        } else {
            self.matrix
        }
    }

    /// Applies the preset's targets and counts.
    pub fn apply_matrix(&mut self) {
        match self.matrix() {
            Some(Matrix::Standard) => {
                self.targets = Target::value_variants()
                    .iter()
                    .copied()
                    .filter(|t| self.upstream || !t.is_upstream())
                    .collect();
            }
            Some(Matrix::Smoke) => {
                self.targets = vec![
                    Target::Embedded1,
                    Target::Embedded3,
                    Target::Standalone1,
                    Target::Etcd1,
                ];
                self.requests = Some(self.requests.unwrap_or(200));
                self.warmup = self.warmup.min(0.1);
                self.rounds = 1;
                self.key_space = self.key_space.min(100);
                self.memory_keys = self.memory_keys.min(2_000);
                self.floor_secs = self.floor_secs.min(0.2);
                self.connections = self.connections.min(4);
            }
            None => {}
        }
    }

    /// The cases `target` runs. The standard matrix measures memory on
    /// 1-node targets only (a 3-node load of 1 M keys takes minutes).
    pub fn cases(&self, target: Target) -> Vec<Case> {
        let c = |scenario, clients| Case { scenario, clients };
        use Scenario::*;
        match self.matrix() {
            Some(Matrix::Standard) => {
                let mut cases = vec![
                    c(WriteSingle, 1),
                    c(Write, 10),
                    c(Write, 100),
                    c(Write, 1000),
                    c(ReadLinearizable, 1),
                    c(ReadLinearizable, 100),
                    c(ReadLinearizable, 1000),
                    c(ReadLease, 100),
                    c(ReadLease, 1000),
                    c(ReadEventual, 100),
                    c(ReadEventual, 1000),
                    c(HotKey, 100),
                ];
                // Not upstream's: its file state machine rewrites every
                // key on each checkpoint (every 1,000 writes).
                if target.nodes() == 1 && !target.is_upstream() {
                    cases.push(c(Memory, 1000));
                }
                cases
            }
            Some(Matrix::Smoke) => vec![
                c(WriteSingle, 1),
                c(Write, 10),
                c(ReadLinearizable, 10),
                c(ReadLease, 10),
                c(ReadEventual, 10),
                c(HotKey, 10),
                c(Txn, 10),
                c(RangePage, 10),
                c(LeaseKeepalive, 10),
                c(Memory, 10),
            ],
            None => {
                let mut out = Vec::new();
                for s in &self.scenarios {
                    for &n in &self.clients {
                        let case = c(*s, s.clients(n));
                        if !out.contains(&case) {
                            out.push(case);
                        }
                    }
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_dedups_single_client_writes() {
        let a = Args::parse_from([
            "b",
            "--scenarios",
            "write-single,write",
            "--clients",
            "1,10,100",
        ]);
        let cases = a.cases(Target::Embedded1);
        assert_eq!(cases.len(), 4, "{cases:?}");
        assert_eq!(
            cases[0],
            Case {
                scenario: Scenario::WriteSingle,
                clients: 1
            }
        );
    }

    #[test]
    fn smoke_is_small() {
        let mut a = Args::parse_from(["b", "--smoke"]);
        a.apply_matrix();
        assert_eq!(a.requests, Some(200));
        assert!(a.key_space <= 100 && a.rounds == 1);
        assert!(a.memory_keys <= 2_000);
        assert!(a.targets.contains(&Target::Etcd1));
        let memory = |t| a.cases(t).iter().any(|c| c.scenario == Scenario::Memory);
        assert!(memory(Target::Embedded1) && memory(Target::Standalone1));
        let has = |s| a.cases(Target::Etcd1).iter().any(|c| c.scenario == s);
        assert!(has(Scenario::Txn) && has(Scenario::RangePage) && has(Scenario::LeaseKeepalive));
    }

    #[test]
    fn standard_measures_memory_on_one_node_targets() {
        let mut a = Args::parse_from(["b", "--matrix", "standard"]);
        a.apply_matrix();
        assert_eq!(a.memory_keys, 1_000_000);
        let memory = |t| a.cases(t).iter().any(|c| c.scenario == Scenario::Memory);
        assert!(memory(Target::Embedded1) && memory(Target::Standalone1) && memory(Target::Etcd1));
        assert!(!memory(Target::Embedded3) && !memory(Target::Standalone3));
        assert!(!a.targets.iter().any(|t| t.is_upstream()));
    }

    #[test]
    fn upstream_targets_join_the_standard_matrix_on_request() {
        let mut a = Args::parse_from(["b", "--matrix", "standard", "--upstream"]);
        a.apply_matrix();
        let names: Vec<String> = a.targets.iter().map(|t| t.name()).collect();
        for n in [
            "upstream-embedded-1",
            "upstream-embedded-3",
            "upstream-standalone-3",
            "etcd-3",
        ] {
            assert!(names.iter().any(|x| x == n), "{names:?}");
        }
        assert!(
            Target::UpstreamEmbedded1.in_process() && !Target::UpstreamStandalone3.in_process()
        );
        let memory = a
            .cases(Target::UpstreamEmbedded1)
            .iter()
            .any(|c| c.scenario == Scenario::Memory);
        assert!(!memory);
    }
}
