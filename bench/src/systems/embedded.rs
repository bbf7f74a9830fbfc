//! d-engine embedded: engines in this process, driven through
//! `EmbeddedClient` (no serialization, no sockets on the client path).
//!
//! One node runs without any listener. A 3-node cluster runs three engines
//! in this process that replicate over real gRPC on 127.0.0.1 (ephemeral
//! ports); the clients call the leader's `EmbeddedClient`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use d_engine::config::MemberConfig;
use d_engine::{Config, EmbeddedClient, EmbeddedEngine};
use tokio::net::TcpListener;

use super::{
    dengine_consistency, dengine_error, page_options, page_reply, transfer_reply, transfer_txn,
};
use crate::cli::SmBackend;
use crate::workload::{
    Consistency, Driver, LeaseRenewer, OpError, OpFuture, OpKind, PageReply, TxnReply,
};

pub struct EmbeddedCluster {
    engines: Vec<EmbeddedEngine>,
    _dirs: Vec<tempfile::TempDir>,
    /// One client per engine (same order).
    clients: Vec<EmbeddedClient>,
    /// Index of the leader in `engines`, as last resolved.
    leader: AtomicUsize,
    /// From the first engine's start to the leader's `wait_ready` returning.
    pub ready_in: Duration,
    /// From the first engine's start to the last engine's start returning.
    pub started_in: Duration,
}

async fn listener() -> Result<(TcpListener, String)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let a = l.local_addr()?.to_string();
    Ok((l, a))
}

impl EmbeddedCluster {
    /// Starts `nodes` engines with data dirs under `base` and waits for a leader.
    pub async fn start(nodes: usize, base: &Path, sm: SmBackend) -> Result<Self> {
        Self::start_with(nodes, base, sm, |_| {}).await
    }

    /// [`EmbeddedCluster::start`] with each node's configuration passed
    /// through `tune` last (e.g. another durability mode).
    pub async fn start_with(
        nodes: usize,
        base: &Path,
        sm: SmBackend,
        tune: impl Fn(&mut Config),
    ) -> Result<Self> {
        std::fs::create_dir_all(base)?;
        let t0 = Instant::now();
        let mut dirs = Vec::new();
        let mut engines = Vec::new();
        if nodes == 1 {
            let dir = tempfile::Builder::new().prefix("emb-").tempdir_in(base)?;
            let mut cfg = Config::single_node(dir.path());
            cfg.state_machine.backend = sm.config();
            apply_node_tuning(&mut cfg);
            tune(&mut cfg);
            let e = EmbeddedEngine::start_in_process(cfg)
                .await
                .context("starting the embedded engine")?;
            engines.push(e);
            dirs.push(dir);
        } else {
            let mut ls = Vec::new();
            for _ in 0..nodes {
                ls.push((listener().await?, listener().await?));
            }
            let members: Vec<MemberConfig> = ls
                .iter()
                .enumerate()
                .map(|(i, ((_, p), (_, c)))| MemberConfig {
                    id: i as u64 + 1,
                    peer_addr: p.clone(),
                    client_addr: c.clone(),
                })
                .collect();
            for (i, ((pl, pa), (cl, ca))) in ls.into_iter().enumerate() {
                let dir = tempfile::Builder::new().prefix("emb-").tempdir_in(base)?;
                let mut cfg = Config::single_node(dir.path());
                cfg.node_id = i as u64 + 1;
                cfg.peer_addr = pa;
                cfg.client_addr = ca;
                cfg.members = members.clone();
                cfg.state_machine.backend = sm.config();
                apply_node_tuning(&mut cfg);
                tune(&mut cfg);
                let e = EmbeddedEngine::builder(cfg)
                    .peer_listener(pl)
                    .client_listener(cl)
                    .start()
                    .await
                    .with_context(|| format!("starting embedded node {}", i + 1))?;
                engines.push(e);
                dirs.push(dir);
            }
        }
        let started_in = t0.elapsed();
        let leader = first_ready(&engines, Duration::from_secs(20)).await?;
        let ready_in = t0.elapsed();
        let clients = engines.iter().map(|e| e.client()).collect();
        Ok(EmbeddedCluster {
            engines,
            _dirs: dirs,
            clients,
            leader: AtomicUsize::new(leader),
            ready_in,
            started_in,
        })
    }

    pub async fn stop(self) {
        for e in &self.engines {
            let _ = e.stop().await;
        }
    }
}

/// The run's command-line node settings ([`super::node_tuning`]).
fn apply_node_tuning(cfg: &mut Config) {
    if let Some(n) = super::node_tuning().read_rounds {
        cfg.raft.max_read_rounds_in_flight = n;
    }
}

/// Index of the engine that leads and serves, without polling pauses:
/// waits for node 1 to know a leader, then for that leader's `wait_ready`
/// (it has committed an entry of its term); again if leadership moved.
async fn first_ready(engines: &[EmbeddedEngine], timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no embedded leader elected within {timeout:?}");
        }
        let Ok(info) = engines[0].wait_ready(left).await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        if engines.len() == 1 {
            return Ok(0);
        }
        let Some(i) = engines.iter().position(|e| e.node_id() == info.id) else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(info) = engines[i].wait_ready(left).await {
            if info.id == engines[i].node_id() {
                return Ok(i);
            }
        }
    }
}

/// Index of the engine that leads and serves (committed an entry of its term).
async fn wait_leader(engines: &[EmbeddedEngine], timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        for (i, e) in engines.iter().enumerate() {
            if let Ok(info) = e.wait_ready(Duration::from_millis(100)).await {
                if info.id == e.node_id() || engines.len() == 1 {
                    return Ok(i);
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("no embedded leader elected within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl EmbeddedCluster {
    fn client(&self) -> &EmbeddedClient {
        &self.clients[self.leader.load(Ordering::Relaxed)]
    }
}

impl Driver for EmbeddedCluster {
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
            "leadership moved from node {} to node {} (an election under load); \
             the cases from here on drive the new leader",
            was + 1,
            now + 1
        ))
    }

    fn supports(&self, _: Consistency) -> bool {
        true
    }

    async fn put<'a>(&'a self, _: usize, key: &'a [u8], value: &'a [u8]) -> Result<(), OpError> {
        self.client()
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(dengine_error)
    }

    async fn get<'a>(&'a self, _: usize, key: &'a [u8], c: Consistency) -> Result<bool, OpError> {
        self.client()
            .get_with(key, dengine_consistency(c))
            .await
            .map(|kv| kv.is_some())
            .map_err(dengine_error)
    }

    /// Every op; a lease "stream" is the in-process renew call (an
    /// embedded client has no stream to keep).
    fn supports_op(&self, _: OpKind) -> bool {
        true
    }

    async fn txn_transfer<'a>(
        &'a self,
        _: usize,
        from: &'a [u8],
        to: &'a [u8],
        from_mod_revision: u64,
        value: &'a [u8],
    ) -> Result<TxnReply, OpError> {
        self.client()
            .txn(transfer_txn(from, to, from_mod_revision, value))
            .await
            .map(|o| transfer_reply(&o))
            .map_err(dengine_error)
    }

    async fn range_page<'a>(
        &'a self,
        _: usize,
        start: &'a [u8],
        end: &'a [u8],
        limit: u32,
    ) -> Result<PageReply, OpError> {
        self.client()
            .range(start, page_options(end, limit))
            .await
            .map(page_reply)
            .map_err(dengine_error)
    }

    async fn lease_open(
        &self,
        _: usize,
        ttl: Duration,
        _stream: bool,
    ) -> Result<Box<dyn LeaseRenewer>, OpError> {
        let client = self.client().clone();
        let g = client.lease_grant(ttl).await.map_err(dengine_error)?;
        Ok(Box::new(EmbeddedLease { client, id: g.id }))
    }
}

/// A lease renewed through the leader's `EmbeddedClient`.
struct EmbeddedLease {
    client: EmbeddedClient,
    id: u64,
}

impl LeaseRenewer for EmbeddedLease {
    fn renew(&mut self) -> OpFuture<'_, ()> {
        Box::pin(async move {
            self.client
                .lease_renew(self.id)
                .await
                .map(|_| ())
                .map_err(dengine_error)
        })
    }
}
