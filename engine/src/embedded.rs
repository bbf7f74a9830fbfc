//! Embedded mode: the engine runs inside your process.
//!
//! ```no_run
//! use d_engine::EmbeddedEngine;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = EmbeddedEngine::start("./my-data").await?; // single node, no config file
//! engine.wait_ready(Duration::from_secs(5)).await?;
//! let client = engine.client();
//! client.put(b"key".to_vec(), b"value".to_vec()).await?;
//! assert_eq!(client.get(b"key").await?.unwrap().value, b"value");
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
//! leader over gRPC** (through `d_engine_client::Client`, which follows
//! leader changes and tags writes with a client id and sequence number so a
//! retried write is applied once) — an embedded application on any node just
//! works. This needs the members' client addresses (`members[].client_addr`);
//! with `embedded.forward_to_leader = false`, or when no client address is
//! known, the call fails with `Error::NotLeader` carrying the leader's id and
//! client address. Eventual reads and watches are always served locally.
//!
//! With `[auth]` enabled, the local calls of [`EmbeddedClient`] are not
//! checked (the application is the node); forwarded calls authenticate
//! with `auth.forward_token` (see `docs/auth.md`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use d_engine_client::{
    CasOutcome, Client, ClientBuilder, Consistency, Error, KeyValue, KvClient, LeaderInfo,
    MemberInfo, Result,
};
use tokio::net::TcpListener;
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::runtime::{self, NodeHandle, NodeStatus, StartError, WatchStream};
use crate::transport::{self, PeerInbox, Transport};

type TransportFactory = Box<dyn FnOnce(Arc<dyn PeerInbox>) -> Arc<dyn Transport> + Send>;

/// Builds an [`EmbeddedEngine`] with explicit listeners or transport.
pub struct EngineBuilder {
    config: Config,
    peer_listener: Option<TcpListener>,
    client_listener: Option<TcpListener>,
    network: bool,
    transport: Option<TransportFactory>,
}

impl EngineBuilder {
    /// Serve the peer service on this already-bound listener (instead of
    /// binding `config.peer_addr`).
    pub fn peer_listener(mut self, l: TcpListener) -> Self {
        self.peer_listener = Some(l);
        self
    }

    /// Serve the client API on this already-bound listener (instead of
    /// binding `config.client_addr`).
    pub fn client_listener(mut self, l: TcpListener) -> Self {
        self.client_listener = Some(l);
        self
    }

    /// No listeners at all (a single node used only in-process, or nodes
    /// joined through [`EngineBuilder::transport`]).
    pub fn without_network(mut self) -> Self {
        self.network = false;
        self
    }

    /// Use this transport instead of the tonic peer transport (implies
    /// [`EngineBuilder::without_network`] for the peer side).
    pub fn transport(
        mut self,
        f: impl FnOnce(Arc<dyn PeerInbox>) -> Arc<dyn Transport> + Send + 'static,
    ) -> Self {
        self.transport = Some(Box::new(f));
        self
    }

    /// Starts the node and its servers.
    pub async fn start(self) -> std::result::Result<EmbeddedEngine, StartError> {
        EmbeddedEngine::launch(self).await
    }
}

/// A running embedded node. See the module docs.
pub struct EmbeddedEngine {
    handle: NodeHandle,
    /// The runtime that carries peer traffic (None without a network). On
    /// drop it is shut down in the background, never blocking the caller's
    /// runtime, and the peer tasks still on it are cancelled.
    _net: Option<NetRuntime>,
    peer_addr: Option<SocketAddr>,
    client_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    servers: std::sync::Mutex<Vec<JoinHandle<()>>>,
    forward: Arc<Forwarder>,
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

async fn bind(key: &'static str, addr: &str) -> std::result::Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| {
        StartError::Config(crate::config::ConfigError::new(
            key,
            format!(
                "cannot listen on {addr}: {e}{}",
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    " (the port is already in use: stop the other process or choose another port)"
                } else {
                    ""
                }
            ),
        ))
    })
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
        EngineBuilder {
            config,
            peer_listener: None,
            client_listener: None,
            network: true,
            transport: None,
        }
    }

    async fn launch(b: EngineBuilder) -> std::result::Result<Self, StartError> {
        let mut config = b.config;
        config.validate()?;
        // TLS files are read and checked before anything is bound.
        let tls = crate::tls::NodeTls::load(&config.tls)?.unwrap_or_default();
        // So is the cluster secret (`[peer] secret_file`), when this node
        // serves the tonic peer transport.
        let peer_secret = if b.network && b.transport.is_none() {
            transport::peer_auth::startup(&config)?
        } else {
            None
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut servers = Vec::new();
        let mut peer_addr = None;
        let mut client_addr = None;

        let peer_listener = if b.network && b.transport.is_none() {
            Some(match b.peer_listener {
                Some(l) => l,
                None => bind("peer_addr", &config.peer_addr).await?,
            })
        } else {
            None
        };
        let client_listener =
            if b.network && (b.client_listener.is_some() || !config.client_addr.is_empty()) {
                Some(match b.client_listener {
                    Some(l) => l,
                    None => bind("client_addr", &config.client_addr).await?,
                })
            } else {
                None
            };

        // Advertise what was actually bound when the configured port is 0
        // (or a pre-bound listener was given): the single-node default
        // membership carries these addresses.
        if let Some(a) = peer_listener.as_ref().and_then(|l| l.local_addr().ok()) {
            if config.peer_addr.ends_with(":0") {
                config.peer_addr = a.to_string();
            }
        }
        if let Some(a) = client_listener.as_ref().and_then(|l| l.local_addr().ok()) {
            if config.client_addr.is_empty() || config.client_addr.ends_with(":0") {
                config.client_addr = a.to_string();
            }
        }
        let config = config;
        let mut net = None;
        let handle = match b.transport {
            Some(f) => runtime::start(config.clone(), f).await?,
            None if peer_listener.is_some() => {
                let listener = peer_listener.expect("checked");
                peer_addr = listener.local_addr().ok();
                let mut opts = transport::TransportOptions::from_config(&config);
                opts.tls = tls.peer.clone();
                opts.secret = peer_secret.clone();
                let peers: std::collections::BTreeMap<u64, String> = config
                    .members
                    .iter()
                    .filter(|m| m.id != config.node_id)
                    .map(|m| (m.id, m.peer_addr.clone()))
                    .collect();
                let svc_slot: Arc<std::sync::Mutex<Option<transport::RaftService>>> =
                    Arc::default();
                let slot = svc_slot.clone();
                // Started on the peer runtime: the transport's links and the
                // node's snapshot transfers spawn their tasks there.
                let net_rt = NetRuntime::new(config.node_id)?;
                let cfg = config.clone();
                let handle = net_rt
                    .handle()
                    .spawn(async move {
                        runtime::start(cfg, move |inbox| {
                            let t = transport::TonicTransport::new(opts, inbox, peers);
                            *slot.lock().expect("poisoned") = Some(t.raft_service());
                            Arc::new(t) as Arc<dyn Transport>
                        })
                        .await
                    })
                    .await
                    .map_err(|e| {
                        StartError::Io(std::io::Error::other(format!(
                            "the node's start task failed: {e}"
                        )))
                    })??;
                let svc = svc_slot
                    .lock()
                    .expect("poisoned")
                    .take()
                    .expect("transport factory ran");
                let mut rx = shutdown_rx.clone();
                // Re-registered with the peer runtime's reactor, so accepted
                // peer connections are polled there too.
                let listener = {
                    let _on_net = net_rt.handle().enter();
                    TcpListener::from_std(listener.into_std()?)?
                };
                servers.push(net_rt.handle().spawn(async move {
                    let stop = async move {
                        let _ = rx.wait_for(|s| *s).await;
                    };
                    if let Err(e) = transport::serve_peers(listener, svc, stop).await {
                        tracing::error!(error = %e, "peer server failed");
                    }
                }));
                net = Some(net_rt);
                handle
            }
            None => {
                runtime::start(config.clone(), |_inbox| {
                    Arc::new(NoTransport) as Arc<dyn Transport>
                })
                .await?
            }
        };

        if let Some(listener) = client_listener {
            client_addr = listener.local_addr().ok();
            let h = handle.clone();
            let mut rx = shutdown_rx.clone();
            let server_tls = tls.client_api.clone();
            servers.push(tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = serve_clients(listener, h, server_tls, stop).await {
                    tracing::error!(error = %e, "client API server failed");
                }
            }));
        }

        Ok(EmbeddedEngine {
            _net: net,
            forward: Arc::new(Forwarder {
                enabled: config.embedded.forward_to_leader,
                client: OnceCell::new(),
                tls: forward_tls(&config, &tls),
            }),
            handle,
            peer_addr,
            client_addr,
            shutdown_tx,
            servers: std::sync::Mutex::new(servers),
        })
    }

    /// Waits until a leader is elected (and, if this node leads, it has
    /// committed an entry of its term so reads and writes are served).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<LeaderInfo> {
        self.handle.wait_leader(timeout).await
    }

    /// The in-process key-value client (cheap to clone).
    pub fn client(&self) -> EmbeddedClient {
        EmbeddedClient {
            handle: self.handle.clone(),
            forward: self.forward.clone(),
        }
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

/// A dedicated one-thread tokio runtime for peer traffic (Raft messages,
/// snapshot transfers, the peer gRPC server). The application's (or the
/// server's client API's) tasks cannot delay heartbeats: with 1,000 client
/// tasks on the caller's runtime, peer messages sharing it went undelivered
/// for 150–270 ms and deposed healthy leaders (`docs/performance.md`).
struct NetRuntime(Option<tokio::runtime::Runtime>);

impl NetRuntime {
    fn new(node_id: u64) -> std::result::Result<Self, StartError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("dengine-net-{node_id}"))
            .enable_all()
            .build()?;
        Ok(NetRuntime(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running").handle()
    }
}

impl Drop for NetRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// How forwarded calls reach the other nodes' client API: plaintext, or
/// TLS trusting `tls.ca_file` (presenting this node's certificate). With a
/// TLS client API but no CA to trust, forwarding is off.
fn forward_tls(config: &Config, tls: &crate::tls::NodeTls) -> ForwardTls {
    if !config.tls.client_api {
        return ForwardTls::Plain;
    }
    match &tls.forward {
        Some(o) => ForwardTls::Tls(o.clone()),
        None => {
            if config.embedded.forward_to_leader {
                tracing::warn!(
                    "embedded.forward_to_leader is on but tls.ca_file is empty: writes on a \
                     follower return NotLeader (set tls.ca_file to forward over TLS)"
                );
            }
            ForwardTls::Unavailable
        }
    }
}

/// Serves the client gRPC API (Kv, Cluster, Admin) over `handle`.
async fn serve_clients(
    listener: TcpListener,
    handle: NodeHandle,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::result::Result<(), String> {
    crate::service::serve_clients_tls(listener, handle, tls, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// A transport for a node with no peers.
struct NoTransport;

impl Transport for NoTransport {
    fn send(&self, _msg: d_engine_core::Message) {}
    fn send_snapshot(
        &self,
        to: u64,
        _term: u64,
        _meta: d_engine_core::SnapshotMeta,
        _path: std::path::PathBuf,
    ) -> transport::BoxFuture<'static, std::result::Result<(), transport::TransportError>> {
        Box::pin(async move {
            Err(transport::TransportError(format!(
                "node {to} unreachable: this engine runs without network listeners"
            )))
        })
    }
    fn set_peers(&self, _peers: std::collections::BTreeMap<u64, String>) {}
}

/// Lazily connects to the cluster's client API for forwarding.
struct Forwarder {
    enabled: bool,
    client: OnceCell<Client>,
    tls: ForwardTls,
}

/// The transport security of forwarded calls.
enum ForwardTls {
    Plain,
    Tls(d_engine_client::TlsOptions),
    /// The client API uses TLS but there is no CA to verify it with.
    Unavailable,
}

impl Forwarder {
    /// The gRPC client to forward with, or `None` (forwarding disabled or no
    /// client addresses known): the caller then returns `original`.
    async fn client(&self, handle: &NodeHandle) -> Option<&Client> {
        if !self.enabled || matches!(self.tls, ForwardTls::Unavailable) {
            return None;
        }
        let scheme = match self.tls {
            ForwardTls::Tls(_) => "https",
            _ => "http",
        };
        let endpoints: Vec<String> = handle
            .members()
            .into_iter()
            .filter(|m| m.id != handle.id() && !m.client_addr.is_empty())
            .map(|m| format!("{scheme}://{}", m.client_addr))
            .collect();
        if endpoints.is_empty() {
            return None;
        }
        let timeout = handle.config().request_timeout();
        // With auth on, the leader checks forwarded requests like any other;
        // they act as the user owning `auth.forward_token`.
        let token = handle.config().auth.forward_token.clone();
        self.client
            .get_or_try_init(|| async move {
                let mut b = ClientBuilder::new(endpoints)
                    .request_timeout(timeout)
                    .lazy(true);
                if let ForwardTls::Tls(o) = &self.tls {
                    b = b.tls(o.clone());
                }
                if let Some(t) = token {
                    b = b.token(t);
                }
                b.build().await
            })
            .await
            .ok()
    }
}

fn should_forward(e: &Error) -> bool {
    matches!(e, Error::NotLeader { .. } | Error::NoLeader(_))
}

/// The in-process client of an [`EmbeddedEngine`]. Implements
/// [`KvClient`] exactly like the gRPC client, so business logic written
/// against `KvClient` runs unchanged in both modes.
#[derive(Clone)]
pub struct EmbeddedClient {
    handle: NodeHandle,
    forward: Arc<Forwarder>,
}

impl std::fmt::Debug for EmbeddedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedClient")
            .field("node_id", &self.handle.id())
            .finish()
    }
}

fn b(x: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(x.as_ref())
}

/// Runs `local`; on NotLeader/NoLeader, runs `remote` with the forwarding
/// client if there is one.
macro_rules! with_forward {
    ($self:ident, $local:expr, |$c:ident| $remote:expr) => {{
        match $local {
            Err(e) if should_forward(&e) => match $self.forward.client(&$self.handle).await {
                Some($c) => $remote,
                None => Err(e),
            },
            r => r,
        }
    }};
}

impl EmbeddedClient {
    /// The node handle behind this client.
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// Stores `value` under `key`; returns the write's revision.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64> {
        let (k, v) = (b(key), b(value));
        with_forward!(
            self,
            self.handle.put(k.clone(), v.clone(), None, None).await,
            |c| c.kv().put(&k, &v).await
        )
    }

    /// Like `put`; the key expires `ttl` after the write.
    pub async fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<u64> {
        let (k, v) = (b(key), b(value));
        with_forward!(
            self,
            self.handle.put(k.clone(), v.clone(), Some(ttl), None).await,
            |c| c.kv().put_with_ttl(&k, &v, ttl).await
        )
    }

    /// Linearizable read of one key.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>> {
        self.get_with(key, Consistency::Linearizable).await
    }

    /// Reads one key with an explicit consistency.
    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>> {
        let k = b(key);
        with_forward!(self, self.handle.get(k.clone(), consistency).await, |c| c
            .kv()
            .get_with(&k, consistency)
            .await)
    }

    /// Reads several keys at one point in time.
    pub async fn get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<Vec<Option<KeyValue>>> {
        let ks: Vec<Bytes> = keys.iter().map(|k| Bytes::copy_from_slice(k)).collect();
        with_forward!(self, self.handle.get_multi(ks, consistency).await, |c| c
            .kv()
            .get_multi(keys.clone(), consistency)
            .await)
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let k = b(key);
        with_forward!(
            self,
            self.handle.delete(k.clone(), None).await.map(|d| d.deleted),
            |c| c.kv().delete(&k).await
        )
    }

    /// Atomically replaces the value if it equals `expected` (`None`: the
    /// key must not exist); `new_value: None` deletes the key on success.
    pub async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
    ) -> Result<CasOutcome> {
        self.cas(b(key), expected, new_value, None).await
    }

    /// Like `compare_and_swap`; the new value expires `ttl` after the write.
    pub async fn compare_and_swap_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
        ttl: Duration,
    ) -> Result<CasOutcome> {
        self.cas(b(key), expected, new_value, Some(ttl)).await
    }

    /// Compare-and-swap on this node, forwarded to the leader (with the same
    /// TTL) when this node is not it.
    async fn cas(
        &self,
        k: Bytes,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome> {
        let local = self
            .handle
            .compare_and_swap(
                k.clone(),
                expected.clone().map(Bytes::from),
                new_value.clone().map(Bytes::from),
                ttl,
                None,
            )
            .await;
        with_forward!(self, local, |c| match ttl {
            None => c.kv().compare_and_swap(&k, expected, new_value).await,
            Some(ttl) => {
                c.kv()
                    .compare_and_swap_with_ttl(&k, expected, new_value, ttl)
                    .await
            }
        })
    }

    /// Up to `limit` pairs under `prefix` in key order (0 = server maximum).
    pub async fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<Vec<KeyValue>> {
        let p = b(prefix);
        with_forward!(
            self,
            self.handle
                .scan_prefix(p.clone(), limit, consistency)
                .await
                .map(|s| s.kvs),
            |c| c.kv().scan_prefix(&p, limit, consistency).await
        )
    }

    /// Watches one key (served by the local node, events after apply).
    pub async fn watch(&self, key: impl AsRef<[u8]>, start_revision: u64) -> Result<WatchStream> {
        self.handle.watch(b(key), false, start_revision)
    }

    /// Watches every key starting with `prefix`.
    pub async fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        start_revision: u64,
    ) -> Result<WatchStream> {
        self.handle.watch(b(prefix), true, start_revision)
    }

    // ----- admin ---------------------------------------------------------

    pub fn members(&self) -> Vec<MemberInfo> {
        self.handle.members()
    }

    pub fn leader(&self) -> LeaderInfo {
        self.handle.leader()
    }

    pub async fn add_learner(
        &self,
        id: u64,
        peer_addr: impl Into<String>,
        client_addr: impl Into<String>,
    ) -> Result<Vec<MemberInfo>> {
        self.handle
            .add_learner(id, peer_addr.into(), client_addr.into())
            .await
    }

    pub async fn promote(&self, id: u64) -> Result<Vec<MemberInfo>> {
        self.handle.promote(id).await
    }

    pub async fn remove_member(&self, id: u64) -> Result<Vec<MemberInfo>> {
        self.handle.remove_member(id).await
    }

    pub async fn transfer_leader(&self, to: u64) -> Result<()> {
        self.handle.transfer_leader(to).await
    }

    pub async fn trigger_snapshot(&self) -> Result<u64> {
        self.handle.trigger_snapshot().await
    }
}

impl KvClient for EmbeddedClient {
    async fn put(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
    ) -> Result<u64> {
        EmbeddedClient::put(self, key, value).await
    }

    async fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        ttl: Duration,
    ) -> Result<u64> {
        EmbeddedClient::put_with_ttl(self, key, value, ttl).await
    }

    async fn get_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>> {
        EmbeddedClient::get_with(self, key, consistency).await
    }

    async fn get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<Vec<Option<KeyValue>>> {
        EmbeddedClient::get_multi(self, keys, consistency).await
    }

    async fn delete(&self, key: impl AsRef<[u8]> + Send) -> Result<bool> {
        EmbeddedClient::delete(self, key).await
    }

    async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]> + Send,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
    ) -> Result<CasOutcome> {
        EmbeddedClient::compare_and_swap(self, key, expected, new_value).await
    }

    async fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        limit: u32,
        consistency: Consistency,
    ) -> Result<Vec<KeyValue>> {
        EmbeddedClient::scan_prefix(self, prefix, limit, consistency).await
    }

    async fn watch(
        &self,
        key: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> Result<WatchStream> {
        EmbeddedClient::watch(self, key, start_revision).await
    }

    async fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> Result<WatchStream> {
        EmbeddedClient::watch_prefix(self, prefix, start_revision).await
    }
}
