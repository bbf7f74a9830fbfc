//! Node assembly: from an [`EngineBuilder`] to a running [`EmbeddedEngine`],
//! in the order the steps happen.
//!
//! Contract:
//! - Everything that can be checked without side effects (configuration,
//!   TLS files, the cluster secret) is checked before any port is bound; a
//!   port that cannot be bound is a `StartError::Config` naming the key.
//! - A configured port 0 (or a pre-bound listener) is replaced by the bound
//!   address before the node starts, so the membership advertises what
//!   really listens.
//! - With the tonic transport, the node, its peer links and the peer server
//!   run on a dedicated one-thread runtime ([`NetRuntime`]); the client API
//!   server runs on the caller's runtime.
//! - The metrics/health listener (`[metrics] listen_addr`) is served only
//!   when configured, also by an engine without the other listeners.
//! - The servers stop when the engine's shutdown signal fires
//!   ([`EmbeddedEngine::stop`] or drop).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::builder::{EngineBuilder, TransportFactory};
use super::forward::Forwarder;
use super::net_runtime::{stopped, NetRuntime};
use super::EmbeddedEngine;
use crate::config::{Config, ConfigError};
use crate::runtime::{self, NodeHandle, StartError};
use crate::tls::NodeTls;
use crate::transport::{self, peer_auth, RaftService, TonicTransport, Transport, TransportOptions};

/// How the node talks to its peers.
enum PeerSide {
    /// The application's transport ([`EngineBuilder::transport`]).
    Custom(TransportFactory),
    /// The tonic transport, serving the peer gRPC service.
    Tonic(Box<TransportOptions>),
    /// No peers: a single node without network listeners.
    Alone,
}

impl EngineBuilder {
    /// Starts the node and its servers (the steps of [`assemble`]).
    pub async fn start(self) -> Result<EmbeddedEngine, StartError> {
        assemble(self).await
    }
}

/// Starts the node described by `b` and its servers.
pub(super) async fn assemble(b: EngineBuilder) -> Result<EmbeddedEngine, StartError> {
    let EngineBuilder {
        mut config,
        peer_listener,
        client_listener,
        network,
        transport,
        storage,
    } = b;

    // 1. Check what needs no side effects: configuration, TLS files and
    //    (for the tonic transport) the cluster secret.
    config.validate()?;
    let tls = NodeTls::load(&config.tls)?.unwrap_or_default();
    let peers = match transport {
        Some(f) => PeerSide::Custom(f),
        None if network => {
            let mut opts = TransportOptions::from_config(&config);
            opts.tls = tls.peer.clone();
            opts.secret = peer_auth::startup(&config)?;
            PeerSide::Tonic(Box::new(opts))
        }
        None => PeerSide::Alone,
    };

    // 2. Bind the listeners (or take the pre-bound ones) and advertise the
    //    bound addresses.
    let peer_listener = match peers {
        PeerSide::Tonic(_) => {
            Some(take_or_bind(peer_listener, "peer_addr", &config.peer_addr).await?)
        }
        _ => None,
    };
    let client_listener =
        if network && (client_listener.is_some() || !config.client_addr.is_empty()) {
            Some(take_or_bind(client_listener, "client_addr", &config.client_addr).await?)
        } else {
            None
        };
    advertise_bound(
        &mut config,
        peer_listener.as_ref(),
        client_listener.as_ref(),
    );
    let config = config;
    let peer_addr = peer_listener.as_ref().and_then(|l| l.local_addr().ok());
    let client_addr = client_listener.as_ref().and_then(|l| l.local_addr().ok());
    // The metrics/health listener is opt-in (`[metrics] listen_addr`), with
    // or without the other listeners.
    let metrics_listener = if config.metrics.listen_addr.is_empty() {
        None
    } else {
        Some(take_or_bind(None, "metrics.listen_addr", &config.metrics.listen_addr).await?)
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    // 3. Start the node with its transport; with tonic, serve the peer
    //    service from the peer runtime.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_rx_metrics = shutdown_rx.clone();
    let mut servers = Vec::new();
    let (handle, net) = match (peers, peer_listener) {
        (PeerSide::Custom(f), _) => (
            runtime::start_with_storage(config.clone(), storage, |inbox| (f(inbox), ()))
                .await?
                .0,
            None,
        ),
        (PeerSide::Tonic(opts), Some(listener)) => {
            let net = NetRuntime::new(config.node_id)?;
            let (handle, raft_service) = net
                .run(start_with_tonic(config.clone(), *opts, storage))
                .await??;
            servers.push(net.serve_peers(listener, raft_service, shutdown_rx.clone())?);
            (handle, Some(net))
        }
        (PeerSide::Tonic(_), None) => unreachable!("bound in step 2"),
        (PeerSide::Alone, _) => {
            let alone = |_inbox| Arc::new(NoTransport) as Arc<dyn Transport>;
            (
                runtime::start_with_storage(config.clone(), storage, |inbox| (alone(inbox), ()))
                    .await?
                    .0,
                None,
            )
        }
    };

    // 4. Serve the client gRPC API (if listening) on the caller's runtime.
    if let Some(listener) = client_listener {
        servers.push(serve_clients(
            listener,
            handle.clone(),
            tls.client_api.clone(),
            shutdown_rx,
        ));
    }

    // 5. Serve /metrics, /health and /ready (if configured).
    if let Some(listener) = metrics_listener {
        let (h, stop) = (handle.clone(), shutdown_rx_metrics);
        servers.push(tokio::spawn(async move {
            if let Err(e) = crate::metrics::http::serve(listener, h, stopped(stop)).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        }));
        tracing::info!(metrics_addr = ?metrics_addr, "serving /metrics, /health and /ready");
    }

    // 6. The in-process client's way to the leader.
    let forward =
        Arc::new(Forwarder::new(&config, &tls).map_err(|e| {
            StartError::Io(std::io::Error::other(format!("leader forwarder: {e}")))
        })?);
    Ok(EmbeddedEngine {
        handle,
        _net: net,
        peer_addr,
        client_addr,
        metrics_addr,
        shutdown_tx,
        servers: std::sync::Mutex::new(servers),
        forward,
    })
}

/// `given`, or a new listener on `addr`; a bind failure names `key`.
async fn take_or_bind(
    given: Option<TcpListener>,
    key: &'static str,
    addr: &str,
) -> Result<TcpListener, StartError> {
    if let Some(l) = given {
        return Ok(l);
    }
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (the port is already in use: stop the other process or choose another port)"
        } else {
            ""
        };
        StartError::Config(ConfigError::new(
            key,
            format!("cannot listen on {addr}: {e}{hint}"),
        ))
    })
}

/// Replaces a configured port 0 (or an empty client address) by what was
/// bound: the single-node default membership carries these addresses.
fn advertise_bound(config: &mut Config, peer: Option<&TcpListener>, client: Option<&TcpListener>) {
    if let Some(a) = peer.and_then(|l| l.local_addr().ok()) {
        if config.peer_addr.ends_with(":0") {
            config.peer_addr = a.to_string();
        }
    }
    if let Some(a) = client.and_then(|l| l.local_addr().ok()) {
        if config.client_addr.is_empty() || config.client_addr.ends_with(":0") {
            config.client_addr = a.to_string();
        }
    }
}

/// Starts the node with the tonic transport to the configured members and
/// returns it with the transport's inbound Raft service (the transport
/// needs the node's inbox, so it is built in `runtime::start_with`'s
/// callback, which hands the service back).
async fn start_with_tonic(
    config: Config,
    opts: TransportOptions,
    storage: runtime::NodeStorage,
) -> Result<(NodeHandle, RaftService), StartError> {
    let peers: BTreeMap<u64, String> = config
        .members
        .iter()
        .filter(|m| m.id != config.node_id)
        .map(|m| (m.id, m.peer_addr.clone()))
        .collect();
    runtime::start_with_storage(config, storage, |inbox| {
        let transport = TonicTransport::new(opts, inbox, peers);
        let raft_service = transport.raft_service();
        (Arc::new(transport) as Arc<dyn Transport>, raft_service)
    })
    .await
}

/// Serves the client gRPC API (Kv, Cluster, Admin) over `handle` until
/// `stop` fires.
fn serve_clients(
    listener: TcpListener,
    handle: NodeHandle,
    tls: Option<tonic::transport::ServerTlsConfig>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) =
            crate::service::serve_clients_tls(listener, handle, tls, stopped(stop)).await
        {
            tracing::error!(error = %e, "client API server failed");
        }
    })
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
    ) -> transport::BoxFuture<'static, Result<(), transport::TransportError>> {
        Box::pin(async move {
            Err(transport::TransportError(format!(
                "node {to} unreachable: this engine runs without network listeners"
            )))
        })
    }
    fn set_peers(&self, _peers: BTreeMap<u64, String>) {}
}
