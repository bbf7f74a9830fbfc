//! Embedded mode: the engine runs inside your process.
//!
//! ```no_run
//! use d_engine_node::EmbeddedEngine;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = EmbeddedEngine::start("./my-data").await?; // single node, no config file
//! engine.wait_ready(Duration::from_secs(5)).await?;
//! let client = engine.client();
//! client.put(b"key".to_vec(), b"value".to_vec()).await?;
//! assert_eq!(client.get(b"key").await?.unwrap().value, b"value"[..]);
//! engine.stop().await?;
//! # Ok(()) }
//! ```
//!
//! - [`EmbeddedEngine::start`]`(data_dir)`: a single-node engine with **no
//!   network listeners** (nothing to configure, nothing to collide with).
//! - [`EmbeddedEngine::start_with`]`("d-engine.toml")`: any configuration,
//!   from one node to a cluster. The node serves the peer (Raft) gRPC service
//!   on `peer_addr` and, when `client_addr` is non-empty (the default is
//!   127.0.0.1:9083), the client gRPC API too, so standalone clients and other
//!   languages can use the same cluster.
//! - [`EmbeddedEngine::builder`]: the same with pre-bound listeners (tests,
//!   ephemeral ports) or an in-process transport.
//!
//! # Writes on a follower
//!
//! [`EmbeddedClient`] calls the local node directly. When the local node is
//! not the leader, writes and linearizable/lease reads are **forwarded to the
//! leader over gRPC** (following leader changes, and tagging writes with a
//! client id and sequence number so a retried write is applied once) — an
//! embedded application on any node just works. This needs the members' client addresses (`members[].client_addr`);
//! with `embedded.forward_to_leader = false`, or when no client address is
//! known, the call fails with `Error::NotLeader` carrying the leader's id and
//! client address. Eventual reads and watches are always served locally.
//! Application commands (`AppEngine::propose`, `crate::app`) follow the
//! same rules, to the leader's `dengine.v1.App` service.
//!
//! With `[auth]` enabled, the local calls of [`EmbeddedClient`] are not
//! checked (the application is the node); forwarded calls authenticate
//! with `auth.forward_token` (see `docs/auth.md`).
//!
//! # Layout
//!
//! - this file: [`EmbeddedEngine`], the running node's public API;
//! - `builder.rs`: [`EngineBuilder`] (listeners, transport);
//! - `assemble.rs`: from a builder to a running node, step by step;
//! - `client.rs`: [`EmbeddedClient`], the one in-process client;
//! - `forward.rs`: forwarding to the leader on the `d-engine-proto` stubs.

mod assemble;
mod builder;
mod client;
mod forward;
mod net_runtime;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use builder::EngineBuilder;
pub use client::EmbeddedClient;

use crate::config::Config;
use crate::runtime::{NodeHandle, NodeStatus, StartError};
use d_engine_api::{ClusterStateStream, LeaderInfo, MemberInfo, Result};

/// A running embedded node. See the module docs.
pub struct EmbeddedEngine {
    handle: NodeHandle,
    /// The runtime that carries peer traffic (None without a network).
    _net: Option<net_runtime::NetRuntime>,
    peer_addr: Option<SocketAddr>,
    client_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    servers: std::sync::Mutex<Vec<JoinHandle<()>>>,
    forward: Arc<forward::Forwarder>,
}

impl std::fmt::Debug for EmbeddedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedEngine")
            .field("node_id", &self.handle.id())
            .field("peer_addr", &self.peer_addr)
            .field("client_addr", &self.client_addr)
            .finish()
    }
}

impl EmbeddedEngine {
    /// A single-node engine storing its data in `data_dir`, with no network
    /// listeners. Restarting with the same directory keeps every
    /// acknowledged write.
    pub async fn start(data_dir: impl AsRef<Path>) -> std::result::Result<Self, StartError> {
        Self::start_in_process(Config::single_node(data_dir.as_ref())).await
    }

    /// Starts `config` (normally a [`Config::single_node`] with settings
    /// changed) with no network listeners and no advertised client address.
    pub async fn start_in_process(mut config: Config) -> std::result::Result<Self, StartError> {
        // Nothing listens: do not advertise a client address.
        config.client_addr.clear();
        Self::builder(config).without_network().start().await
    }

    /// Starts with the TOML configuration file at `path` (see `docs/config.md`).
    pub async fn start_with(path: impl AsRef<Path>) -> std::result::Result<Self, StartError> {
        Self::start_with_config(Config::from_file(path)?).await
    }

    /// Starts with `config`, binding `peer_addr` and (if set) `client_addr`.
    pub async fn start_with_config(config: Config) -> std::result::Result<Self, StartError> {
        Self::builder(config).start().await
    }

    /// A builder for listeners / transport overrides.
    pub fn builder(config: Config) -> EngineBuilder {
        EngineBuilder::new(config)
    }

    /// Waits until a leader is elected (and, if this node leads, it has
    /// committed an entry of its term so reads and writes are served).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<LeaderInfo> {
        self.handle.wait_leader(timeout).await
    }

    /// The in-process key-value client (cheap to clone).
    pub fn client(&self) -> EmbeddedClient {
        EmbeddedClient::new(self.handle.clone(), self.forward.clone())
    }

    /// The node handle (admin operations, status, notifications).
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    pub fn node_id(&self) -> u64 {
        self.handle.id()
    }

    /// Bound address of the peer service, if served.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// Bound address of the client gRPC API, if served.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client_addr
    }

    /// Bound address of the `/metrics`, `/health` and `/ready` listener,
    /// if `[metrics] listen_addr` is set (`docs/metrics.md`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn status(&self) -> NodeStatus {
        self.handle.status()
    }

    /// Fires on every leader or term change.
    pub fn leader_changes(&self) -> watch::Receiver<LeaderInfo> {
        self.handle.subscribe_leader()
    }

    /// Fires on every membership change.
    pub fn member_changes(&self) -> watch::Receiver<Vec<MemberInfo>> {
        self.handle.subscribe_members()
    }

    /// Leader and membership changes as one stream of whole states
    /// ([`d_engine_api::ClusterState`]): the current state at once, then one item per
    /// change; ends when the node stops. The same stream the gRPC
    /// `Cluster.WatchCluster` call serves and `Client::cluster_changes`
    /// follows across nodes.
    pub fn cluster_changes(&self) -> ClusterStateStream {
        self.handle.cluster_changes()
    }

    /// An application command (`crate::app`) proposed here, or forwarded
    /// to the leader under the same write id when this node is not the
    /// leader (see "Writes on a follower").
    pub(crate) async fn propose_app(
        &self,
        command: &[u8],
        write_id: (u64, u64),
    ) -> Result<crate::runtime::AppOutcome> {
        match self.handle.propose_app(command, Some(write_id)).await {
            Err(e) if forward::should_forward(&e) => {
                self.forward
                    .app_propose(&self.handle, e, command, write_id)
                    .await
            }
            other => other,
        }
    }

    /// Stops the servers and the node (the WAL is synced, threads joined).
    /// Idempotent.
    pub async fn stop(&self) -> Result<()> {
        self.shutdown_tx.send_replace(true);
        let servers: Vec<_> = std::mem::take(&mut *self.servers.lock().expect("poisoned"));
        // Graceful first (in-flight client calls finish), then abort: a
        // long-lived peer stream would otherwise keep the old server alive
        // and a peer would keep delivering into a stopped node.
        for mut s in servers {
            if tokio::time::timeout(Duration::from_millis(500), &mut s)
                .await
                .is_err()
            {
                s.abort();
                let _ = s.await;
            }
        }
        self.handle.shutdown().await
    }
}

impl Drop for EmbeddedEngine {
    fn drop(&mut self) {
        // Without an explicit stop: stop the servers and ask the node to
        // stop (its threads finish on their own; the WAL syncs first).
        self.shutdown_tx.send_replace(true);
        for s in self.servers.lock().expect("poisoned").drain(..) {
            s.abort();
        }
        if self.handle.is_running() {
            let h = self.handle.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = h.shutdown().await;
                });
            }
        }
    }
}
