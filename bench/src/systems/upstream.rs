//! Upstream d-engine 0.2.4, the published crate (renamed `upstream-d-engine`
//! in `bench/Cargo.toml`, compiled only with the `upstream` cargo feature),
//! driven with the same scenarios as our systems.
//!
//! - `upstream-embedded-1` / `-3`: `EmbeddedEngine`s in this process (a
//!   3-node cluster replicates over upstream's gRPC on 127.0.0.1), driven
//!   through the leader's `EmbeddedClient`.
//! - `upstream-standalone-3`: three `upstream-node` processes (the small
//!   server binary of this crate, `src/bin/upstream-node.rs`, since upstream
//!   publishes no server binary), driven through upstream's Rust gRPC
//!   client, one `Client` (its own connection pool) per connection.
//!
//! Storage: upstream's `FileStorageEngine` (Raft log) and `FileStateMachine`,
//! the engines the crate offers without its `rocksdb` feature (which would
//! compile RocksDB's C++ sources). Durability cannot be set to ours: 0.2.4
//! has one persistence strategy, `MemFirst`: a single node acknowledges
//! after a batched fsync of its log, but in a cluster the leader commits
//! once a majority holds the entry in memory (followers acknowledge before
//! their fsync). See docs/performance.md, "Upstream d-engine in the same run".
//!
//! Upstream has no transactions, range pages or lease (TTL) renewals in its
//! client API: those scenarios are skipped for these targets.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use up::{ClientApi, ClientApiError, ErrorCode};
use upstream_d_engine as up;

use super::procs::{free_port, Proc};
use crate::memory::Holder;
use crate::workload::{Consistency, Driver, OpError};

/// The server binary of the standalone target, as built by
/// `cargo build --release -p d-engine-bench --features upstream`.
pub const NODE_BIN: &str = "upstream-node";

/// The TOML configuration of upstream node `id` (1-based) of a cluster
/// whose node `i` listens on `127.0.0.1:ports[i - 1]` (Raft and client gRPC
/// share upstream's one listener).
///
/// Settings: the cluster, the data dir, snapshots off (as upstream's own
/// benchmark configs), and two timeouts set to `request_timeout`:
/// `raft.general_raft_timeout_duration_in_ms`, the deadline of a pending
/// client write or read inside the engine (default 50 ms), and
/// `network.control.request_timeout_in_ms`, the server-wide gRPC timeout,
/// which also cuts client calls (default 100 ms: under load every call got
/// `Cancelled: Timeout expired` and the cluster wedged). Ours answers every
/// request, so upstream gets the tool's request timeout. Everything else is
/// upstream's default (`MemFirst` persistence, its only strategy in 0.2.4).
pub fn node_config(id: usize, data_dir: &Path, ports: &[u16], request_timeout: Duration) -> String {
    let members: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "    {{ id = {}, address = \"127.0.0.1:{p}\", role = 1, status = 3 }},",
                i + 1
            )
        })
        .collect();
    format!(
        "[cluster]\nnode_id = {id}\nlisten_address = \"127.0.0.1:{}\"\ninitial_cluster = [\n{}\n]\ndb_root_dir = \"{}\"\nlog_dir = \"{}\"\n\n[raft]\ngeneral_raft_timeout_duration_in_ms = {timeout}\n\n[raft.snapshot]\nenable = false\n\n[network.control]\nrequest_timeout_in_ms = {timeout}\n",
        ports[id - 1],
        members.join("\n"),
        data_dir.display(),
        data_dir.join("logs").display(),
        timeout = request_timeout.as_millis().max(1),
    )
}

/// Upstream's storage for one node under `data_dir`: its file-based Raft log
/// and state machine (the engines its crate has without RocksDB).
pub async fn file_engines(
    data_dir: &Path,
) -> Result<(Arc<up::FileStorageEngine>, Arc<up::FileStateMachine>)> {
    let storage = up::FileStorageEngine::new(data_dir.join("storage")).map_err(|e| {
        anyhow!(
            "opening upstream's file log in {}: {e:?}",
            data_dir.display()
        )
    })?;
    let sm = up::FileStateMachine::new(data_dir.join("state_machine"))
        .await
        .map_err(|e| {
            anyhow!(
                "opening upstream's file state machine in {}: {e:?}",
                data_dir.display()
            )
        })?;
    Ok((Arc::new(storage), Arc::new(sm)))
}

/// Maps an upstream client error to the benchmark's error classes (its
/// timeouts carry `ConnectionTimeout`).
pub fn upstream_error(e: ClientApiError) -> OpError {
    if e.code() == ErrorCode::ConnectionTimeout {
        OpError::Timeout(e.message().to_string())
    } else {
        OpError::Other(format!("upstream {:?}: {}", e.code(), e.message()))
    }
}

/// One read through any upstream client, at the benchmark's consistency.
async fn upstream_get<C: ClientApi>(c: &C, key: &[u8], cons: Consistency) -> Result<bool, OpError> {
    let r = match cons {
        Consistency::Linearizable => ClientApi::get_linearizable(c, key).await,
        Consistency::Lease => ClientApi::get_lease(c, key).await,
        Consistency::Eventual => ClientApi::get_eventual(c, key).await,
    };
    r.map(|v| v.is_some()).map_err(upstream_error)
}

/// Upstream embedded engines in this process.
pub struct UpstreamEmbedded {
    engines: Vec<up::EmbeddedEngine>,
    clients: Vec<Arc<up::EmbeddedClient>>,
    /// Index of the leader in `engines`, as last resolved.
    leader: AtomicUsize,
    _dir: tempfile::TempDir,
}

impl UpstreamEmbedded {
    /// Starts `nodes` engines with data dirs under `base` and waits until one
    /// leads with its first entry committed.
    pub async fn start(nodes: usize, base: &Path, request_timeout: Duration) -> Result<Self> {
        std::fs::create_dir_all(base)?;
        let dir = tempfile::Builder::new()
            .prefix("upstream-emb-")
            .tempdir_in(base)?;
        let mut ports = Vec::new();
        for _ in 0..nodes {
            ports.push(free_port()?);
        }
        let mut engines = Vec::new();
        for id in 1..=nodes {
            let data = dir.path().join(format!("node{id}"));
            let cfg = dir.path().join(format!("node{id}.toml"));
            std::fs::write(&cfg, node_config(id, &data, &ports, request_timeout))?;
            let (storage, sm) = file_engines(&data).await?;
            let cfg = cfg.to_str().context("temporary dir path is not UTF-8")?;
            let e = up::EmbeddedEngine::start_custom(storage, sm, Some(cfg))
                .await
                .map_err(|e| anyhow!("starting upstream embedded node {id}: {e:?}"))?;
            engines.push(e);
        }
        let leader = wait_leader(&engines, Duration::from_secs(30)).await?;
        let clients = engines.iter().map(|e| e.client()).collect();
        Ok(UpstreamEmbedded {
            engines,
            clients,
            leader: AtomicUsize::new(leader),
            _dir: dir,
        })
    }

    pub async fn stop(self) {
        drop(self.clients);
        for e in &self.engines {
            let _ = e.stop().await;
        }
    }

    fn client(&self) -> &up::EmbeddedClient {
        &self.clients[self.leader.load(Ordering::Relaxed)]
    }
}

/// Index of the engine that leads (upstream's `wait_ready`: elected, and its
/// no-op entry committed).
async fn wait_leader(engines: &[up::EmbeddedEngine], timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(info) = engines[0]
            .wait_ready(left.min(Duration::from_secs(1)))
            .await
        {
            if let Some(i) = engines.iter().position(|e| e.node_id() == info.leader_id) {
                if engines[i].is_leader() {
                    return Ok(i);
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("no upstream embedded leader within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Driver for UpstreamEmbedded {
    fn connections(&self) -> usize {
        0
    }

    async fn before_case(&self) -> Option<String> {
        let was = self.leader.load(Ordering::Relaxed);
        let now = wait_leader(&self.engines, Duration::from_secs(20))
            .await
            .ok()?;
        if now == was {
            return None;
        }
        self.leader.store(now, Ordering::Relaxed);
        Some(format!(
            "upstream leadership moved from node {} to node {}; the cases from here on drive the new leader",
            was + 1,
            now + 1
        ))
    }

    fn supports(&self, _: Consistency) -> bool {
        true
    }

    async fn put<'a>(&'a self, _: usize, key: &'a [u8], value: &'a [u8]) -> Result<(), OpError> {
        self.client().put(key, value).await.map_err(upstream_error)
    }

    async fn get<'a>(&'a self, _: usize, key: &'a [u8], c: Consistency) -> Result<bool, OpError> {
        upstream_get(self.client(), key, c).await
    }
}

/// `upstream-node` next to this tool (the same cargo build makes both).
pub fn find_node_bin() -> Result<PathBuf> {
    let me = std::env::current_exe().context("locating this executable")?;
    let p = me
        .parent()
        .map(|d| d.join(NODE_BIN))
        .unwrap_or_else(|| PathBuf::from(NODE_BIN));
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "{} not found; build it with `cargo build --release -p d-engine-bench --features upstream` (or run `bash scripts/bench.sh --upstream`)",
        p.display()
    )
}

/// Upstream standalone: `upstream-node` processes on free 127.0.0.1 ports
/// with temporary data dirs.
pub struct UpstreamStandalone {
    procs: Vec<Proc>,
    clients: Vec<up::Client>,
    _dir: tempfile::TempDir,
}

impl UpstreamStandalone {
    pub async fn start(
        node_bin: &Path,
        nodes: usize,
        connections: usize,
        base: &Path,
        request_timeout: Duration,
    ) -> Result<Self> {
        std::fs::create_dir_all(base)?;
        let dir = tempfile::Builder::new()
            .prefix("upstream-sa-")
            .tempdir_in(base)?;
        let mut ports = Vec::new();
        for _ in 0..nodes {
            ports.push(free_port()?);
        }
        let mut procs = Vec::new();
        for id in 1..=nodes {
            let data = dir.path().join(format!("node{id}"));
            let cfg = dir.path().join(format!("node{id}.toml"));
            std::fs::write(&cfg, node_config(id, &data, &ports, request_timeout))?;
            let log = dir.path().join(format!("node{id}.log"));
            procs.push(Proc::spawn(
                &format!("upstream node {id}"),
                node_bin,
                &[
                    "--config".into(),
                    cfg.display().to_string(),
                    "--data-dir".into(),
                    data.display().to_string(),
                ],
                &log,
            )?);
        }
        let endpoints: Vec<String> = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let mut cluster = UpstreamStandalone {
            procs,
            clients: Vec::new(),
            _dir: dir,
        };
        cluster
            .wait_ready(&endpoints, Duration::from_secs(30))
            .await?;
        for i in 0..connections.max(1) {
            let c = up::ClientBuilder::new(endpoints.clone())
                .request_timeout(request_timeout)
                .cluster_ready_timeout(Duration::from_secs(10))
                .build()
                .await
                .map_err(|e| anyhow!("connecting upstream client {i}: {e:?}"))?;
            cluster.clients.push(c);
        }
        Ok(cluster)
    }

    async fn wait_ready(&mut self, endpoints: &[String], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for p in &mut self.procs {
                p.check_alive()?;
            }
            let attempt = async {
                let c = up::ClientBuilder::new(endpoints.to_vec())
                    .request_timeout(Duration::from_secs(2))
                    .cluster_ready_timeout(Duration::from_secs(2))
                    .build()
                    .await?;
                c.put(b"bench-ready", b"1").await
            };
            let last = match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => format!("{e:?}"),
                Err(_) => "no reply within 3 s".to_string(),
            };
            if Instant::now() >= deadline {
                bail!(
                    "upstream cluster not serving writes within {timeout:?} (last error: {last}); log of node 1:\n{}",
                    self.procs[0].log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `upstream-node` processes, in node order (see [`Holder`]).
    /// Fails if one has already been reaped.
    pub fn holder(&self) -> Result<Holder> {
        Holder::servers(NODE_BIN, &self.procs)
    }

    pub async fn stop(self) {
        drop(self.clients);
        for p in self.procs {
            p.stop().await;
        }
    }
}

impl Driver for UpstreamStandalone {
    fn connections(&self) -> usize {
        self.clients.len()
    }

    fn supports(&self, _: Consistency) -> bool {
        true
    }

    async fn put<'a>(&'a self, conn: usize, key: &'a [u8], value: &'a [u8]) -> Result<(), OpError> {
        ClientApi::put(&*self.clients[conn], key, value)
            .await
            .map_err(upstream_error)
    }

    async fn get<'a>(
        &'a self,
        conn: usize,
        key: &'a [u8],
        c: Consistency,
    ) -> Result<bool, OpError> {
        upstream_get(&*self.clients[conn], key, c).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_node_config_names_every_member_and_the_timeout() {
        let text = node_config(
            2,
            Path::new("/tmp/u"),
            &[7001, 7002, 7003],
            Duration::from_secs(10),
        );
        assert!(text.contains("node_id = 2\n"), "{text}");
        assert!(
            text.contains("listen_address = \"127.0.0.1:7002\""),
            "{text}"
        );
        for (id, port) in [(1, 7001), (2, 7002), (3, 7003)] {
            let m =
                format!("{{ id = {id}, address = \"127.0.0.1:{port}\", role = 1, status = 3 }}");
            assert!(text.contains(&m), "{text}");
        }
        assert!(
            text.contains("general_raft_timeout_duration_in_ms = 10000\n"),
            "{text}"
        );
        assert!(text.contains("[raft.snapshot]\nenable = false"), "{text}");
        assert!(
            text.contains("[network.control]\nrequest_timeout_in_ms = 10000\n"),
            "{text}"
        );
    }

    /// Upstream's own config loader accepts the generated file (a wrong key
    /// or shape fails here), and a 1-node engine serves a write and reads it
    /// back at every consistency.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_embedded_node_serves_a_write_and_reads() {
        let base = tempfile::tempdir().unwrap();
        let c = UpstreamEmbedded::start(1, base.path(), Duration::from_secs(5))
            .await
            .unwrap();
        c.put(0, b"k1", b"v1").await.unwrap();
        for cons in [
            Consistency::Linearizable,
            Consistency::Lease,
            Consistency::Eventual,
        ] {
            assert!(c.get(0, b"k1", cons).await.unwrap(), "{cons:?}");
        }
        assert!(!c
            .get(0, b"absent", Consistency::Linearizable)
            .await
            .unwrap());
        c.stop().await;
    }

    #[test]
    fn timeouts_are_classed_as_timeouts() {
        let t = ClientApiError::Network {
            code: ErrorCode::ConnectionTimeout,
            message: "Operation timed out after 10s".into(),
            retry_after_ms: None,
            leader_hint: None,
        };
        assert!(matches!(upstream_error(t), OpError::Timeout(_)));
        let other = ClientApiError::Business {
            code: ErrorCode::NotLeader,
            message: "Not leader".into(),
            required_action: None,
        };
        assert!(matches!(upstream_error(other), OpError::Other(m) if m.contains("NotLeader")));
    }
}
