//! The `d-engine-server` binary as a library, so tests can run it in-process.
//!
//! - [`Cli`]: flags and environment variables ([`cli`]).
//! - [`bind`]: binds the configured listeners with startup errors that say
//!   what to do ("client address 127.0.0.1:9083 is already in use: stop the
//!   other process or set --listen-client").
//! - [`certs`]: the `certs` subcommand (development CA and certificates).
//! - [`run`]: starts the node on given listeners and serves until
//!   `shutdown` resolves (then drains and closes the node), or until the
//!   node stops on its own (a fatal storage error: [`ServerError::NodeStopped`]).
//!
//! Exit codes of the binary ([`ServerError::exit_code`]): 0 clean shutdown,
//! 1 the node failed while running, 2 bad configuration or flags, 3 a
//! listen address cannot be bound, 4 the data directory / storage cannot
//! be opened.

pub mod certs;
pub mod cli;
pub mod logging;
pub mod restore;
pub mod secrets;

use std::future::Future;
use std::net::SocketAddr;

use d_engine::config::{Config, ConfigError};
use d_engine::runtime::StartError;
use d_engine::EmbeddedEngine;
use tokio::net::TcpListener;

pub use cli::{Cli, Command, LogFormat};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration file, a flag or an environment variable is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A listen address could not be bound.
    #[error("{message}")]
    Bind {
        message: String,
        #[source]
        source: std::io::Error,
    },
    /// The node could not start (storage, data directory).
    #[error("cannot start the node: {0}")]
    Start(String),
    /// The node stopped while serving (e.g. a storage failure).
    #[error("the node stopped unexpectedly; see the log above for the cause")]
    NodeStopped,
}

impl ServerError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::NodeStopped => 1,
            ServerError::Config(_) => 2,
            ServerError::Bind { .. } => 3,
            ServerError::Start(_) => 4,
        }
    }
}

impl From<StartError> for ServerError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Config(c) => ServerError::Config(c),
            other => ServerError::Start(other.to_string()),
        }
    }
}

/// The bound sockets a node serves on.
pub struct Listeners {
    /// Peer (Raft) service.
    pub peer: TcpListener,
    /// Client API; `None` when `client_addr` is empty.
    pub client: Option<TcpListener>,
}

impl Listeners {
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.local_addr().ok()
    }
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client.as_ref().and_then(|l| l.local_addr().ok())
    }
}

async fn bind_one(what: &str, flag: &str, addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| {
        let message = match source.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "{what} address {addr} is already in use: stop the other process or set {flag}"
            ),
            std::io::ErrorKind::AddrNotAvailable => format!(
                "{what} address {addr} is not an address of this machine: set {flag} to a local address"
            ),
            std::io::ErrorKind::PermissionDenied => format!(
                "no permission to listen on {what} address {addr}: use a port above 1023 or set {flag}"
            ),
            _ => format!("cannot listen on {what} address {addr}: {source}; set {flag}"),
        };
        ServerError::Bind { message, source }
    })
}

/// Binds `config.peer_addr` and (unless empty) `config.client_addr`. A
/// configured port 0 is replaced in `config` by the port actually bound, so
/// the node advertises addresses that work.
pub async fn bind(config: &mut Config) -> Result<Listeners, ServerError> {
    let client = if config.client_addr.is_empty() {
        None
    } else {
        Some(bind_one("client", "--listen-client", &config.client_addr).await?)
    };
    let peer = bind_one("peer", "--listen-peer", &config.peer_addr).await?;
    if let Some(a) = peer
        .local_addr()
        .ok()
        .filter(|_| config.peer_addr.ends_with(":0"))
    {
        config.peer_addr = a.to_string();
    }
    if let Some(a) = client
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .filter(|_| config.client_addr.ends_with(":0"))
    {
        config.client_addr = a.to_string();
    }
    Ok(Listeners { peer, client })
}

/// Runs a node with `config` on `listeners` until `shutdown` resolves.
///
/// On shutdown: the client API stops accepting connections, open watches
/// end with a `canceled` message, in-flight requests finish (pending writes
/// that cannot complete fail with `SHUTTING_DOWN`), then the node syncs its
/// WAL and stops. Returns `Err(NodeStopped)` if the node stops by itself.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let node_id = config.node_id;
    let data_dir = config.data_dir.display().to_string();
    let mut builder = EmbeddedEngine::builder(config).peer_listener(listeners.peer);
    if let Some(c) = listeners.client {
        builder = builder.client_listener(c);
    }
    let engine = builder.start().await?;
    tracing::info!(
        node_id,
        data_dir = %data_dir,
        client_addr = %engine.client_addr().map(|a| a.to_string()).unwrap_or_else(|| "disabled".into()),
        peer_addr = %engine.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
        metrics_addr = %engine.metrics_addr().map(|a| a.to_string()).unwrap_or_else(|| "disabled".into()),
        "d-engine-server started"
    );
    let handle = engine.handle().clone();
    let mut leader = handle.subscribe_leader();
    let log_leaders = async move {
        let mut last = (0, 0);
        while leader.changed().await.is_ok() {
            let l = leader.borrow_and_update().clone();
            if (l.id, l.term) != last {
                last = (l.id, l.term);
                tracing::info!(leader_id = l.id, term = l.term, leader_client_addr = %l.client_addr, "leader changed");
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = shutdown => {
            tracing::info!(node_id, "shutting down: draining client requests and closing the node");
            let res = engine.stop().await;
            match res {
                Ok(()) => tracing::info!(node_id, "d-engine-server stopped cleanly"),
                Err(e) => tracing::warn!(node_id, error = %e, "error while stopping the node"),
            }
            Ok(())
        }
        _ = handle.stopped() => {
            tracing::error!(node_id, "the node stopped unexpectedly");
            let _ = engine.stop().await;
            Err(ServerError::NodeStopped)
        }
        _ = log_leaders => unreachable!("pending forever"),
    }
}

/// Resolves on the first SIGTERM or SIGINT. A second signal while draining
/// exits the process at once with code 130.
pub async fn shutdown_signal() {
    let mut signals = Signals::new();
    let name = signals.next().await;
    tracing::info!(
        signal = name,
        "signal received; shutting down gracefully (send again to exit at once)"
    );
    tokio::spawn(async move {
        let name = signals.next().await;
        tracing::warn!(
            signal = name,
            "second signal: exiting without a graceful shutdown"
        );
        std::process::exit(130);
    });
}

/// SIGTERM and SIGINT listeners, registered once (a listener registered
/// after a delivery could observe that same delivery again).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    #[cfg(unix)]
    async fn next(&mut self) -> &'static str {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => "SIGTERM",
            _ = recv(&mut self.int) => "SIGINT",
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}

/// `--force-new-cluster`: rewrites the membership of the node's data dir
/// (it becomes the only voter) before the node starts; logged at `warn` by
/// the runtime. Refused for a joining node.
async fn force_new_cluster(config: &Config) -> Result<(), ServerError> {
    if config.join {
        return Err(ConfigError::new(
            "join",
            "--force-new-cluster restarts a survivor from its own data; a joining node has              none. Remove --join (or --force-new-cluster)",
        )
        .into());
    }
    tracing::warn!(
        node_id = config.node_id,
        data_dir = %config.data_dir.display(),
        "FORCE-NEW-CLUSTER requested: making this node the only voter of its cluster"
    );
    let cfg = config.clone();
    tokio::task::spawn_blocking(move || d_engine::runtime::force_new_cluster(&cfg))
        .await
        .map_err(|e| ServerError::Start(format!("force-new-cluster task failed: {e}")))?
        .map_err(|e| ServerError::Start(format!("force-new-cluster: {e}")))?;
    Ok(())
}

/// Everything `main` does after parsing flags: configuration, listeners,
/// serving until a signal.
pub async fn main_with(cli: Cli) -> Result<(), ServerError> {
    let (mut config, overrides) = cli.config()?;
    if cli.print_config {
        print!("{}", config.to_redacted_toml_string());
        return Ok(());
    }
    if !overrides.is_empty() {
        let keys: Vec<&str> = overrides.iter().map(|o| o.key).collect();
        tracing::info!(?keys, "configuration keys set by flags or environment");
    }
    if cli.force_new_cluster {
        force_new_cluster(&config).await?;
    }
    let listeners = bind(&mut config).await?;
    run(config, listeners, shutdown_signal()).await
}
