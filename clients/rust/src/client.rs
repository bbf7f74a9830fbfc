//! `Client`: the handle to a d-engine cluster over gRPC.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;
use tonic::transport::Channel;

use crate::admin::GrpcAdmin;
use crate::builder::{ClientBuilder, ClientConfig, EndpointHook};
use crate::cluster::GrpcCluster;
use crate::endpoint::normalize_endpoints;
use crate::error::{Error, Result};
use crate::grpc_kv::GrpcKv;
use crate::router::Inner;

/// A connection to a d-engine cluster. Cheap to clone (one shared set of
/// connections, leader cache and write sessions); use it from any number
/// of tasks.
///
/// - [`Client::kv`]: key-value operations and watches (implements
///   [`crate::KvClient`], like the embedded client).
/// - [`Client::cluster`]: members and leader.
/// - [`Client::admin`]: membership changes, leadership transfer, snapshots.
///
/// The connections are released when the last handle (clone, watch,
/// stream) is dropped, or at once with [`Client::close`].
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints)
            .field("leader", &self.inner.cached_leader())
            .field("client_ids", &self.inner.sessions.client_ids())
            .finish()
    }
}

impl Client {
    /// Same as [`ClientBuilder::new`].
    pub fn builder<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(endpoints)
    }

    pub(crate) async fn connect(
        raw: Vec<String>,
        cfg: ClientConfig,
        hook: Option<EndpointHook>,
    ) -> Result<Client> {
        let (endpoints, scheme) = normalize_endpoints(&raw)?;
        let lazy = cfg.lazy;
        let inner = Inner::new(cfg, endpoints, scheme, hook)?;
        // Fail early on a bad endpoint hook, for every endpoint.
        for e in &inner.endpoints {
            inner.channel(e)?;
        }
        let client = Client {
            inner: Arc::new(inner),
        };
        if !lazy {
            client.probe().await?;
        }
        Ok(client)
    }

    /// Succeeds once any endpoint answers `Cluster.Leader` (caching the
    /// leader if it names one) within `connect_timeout`.
    async fn probe(&self) -> Result<()> {
        let deadline = Instant::now() + self.inner.cfg.connect_timeout;
        match self.inner.discover(deadline, false).await {
            Ok(_) | Err(Error::NoLeader(_)) => Ok(()),
            Err(Error::Unavailable(m)) | Err(Error::Timeout(m)) => {
                Err(Error::Unavailable(format!(
                    "cannot reach any of {:?} within {:?}: {m}",
                    self.inner.endpoints, self.inner.cfg.connect_timeout
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Key-value operations and watches.
    pub fn kv(&self) -> GrpcKv {
        GrpcKv {
            client: self.clone(),
        }
    }

    /// Cluster information (members, leader).
    pub fn cluster(&self) -> GrpcCluster {
        GrpcCluster {
            client: self.clone(),
        }
    }

    /// Runtime users, roles, grants and tokens (needs the `admin` role).
    pub fn auth(&self) -> crate::GrpcAuth {
        crate::GrpcAuth {
            client: self.clone(),
        }
    }

    /// Cluster administration.
    pub fn admin(&self) -> GrpcAdmin {
        GrpcAdmin {
            client: self.clone(),
        }
    }

    /// Leader and membership changes as a stream of whole states
    /// ([`ClusterState`](crate::ClusterState)), served by any node and
    /// followed to another endpoint when that node goes away; the same
    /// items as the embedded engine's `cluster_changes()`. Contract in
    /// the `cluster_watch` module: first item has both `*_changed` flags,
    /// no repeats, the term never goes backwards; one `Err` then the end
    /// when no endpoint serves it within `request_timeout`. Fails at once
    /// when no endpoint serves it now.
    /// Ends with `Err(Error::ClientClosed)` when the client is closed.
    pub async fn cluster_changes(&self) -> Result<crate::ClusterChangeStream> {
        crate::cluster_watch::open(self.inner.clone()).await
    }

    /// Closes the client and all its clones (they share the state);
    /// idempotent. After it returns:
    /// - every call on any clone fails at once with
    ///   [`Error::CLIENT_CLOSED`] (not retried; `is_retryable()` is false),
    ///   and calls still in flight end with it;
    /// - every open watch, `cluster_changes` stream and election observer
    ///   of this client yields its buffered items, then one
    ///   `Err(Error::ClientClosed { .. })` (a watch's carries its
    ///   `resume_revision`: one past its last delivered event), then ends;
    /// - the cached connections are dropped (they close once the streams'
    ///   tasks have ended). Lease keepers stop renewing (`lost()` answers
    ///   `ClientClosed`), so their leases expire after their TTL.
    ///
    /// Writes in flight may or may not have been applied. Build a new
    /// client to talk to the cluster again.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Whether [`Client::close`] was called on this client or a clone.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The configured endpoints, normalized (`scheme://host:port`).
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// The client ids this client's writes carry (one per write session).
    pub fn client_ids(&self) -> Vec<u64> {
        self.inner.sessions.client_ids()
    }

    /// The leader address the client currently sends writes to, if known.
    pub fn cached_leader(&self) -> Option<String> {
        self.inner.cached_leader()
    }

    /// Forgets the cached leader and asks the endpoints again; returns the
    /// leader's normalized address.
    pub async fn refresh_leader(&self) -> Result<String> {
        self.inner.set_leader(None);
        let deadline = Instant::now() + self.inner.cfg.request_timeout;
        self.inner
            .discover(deadline, false)
            .await
            .map(|(addr, _)| addr)
    }

    /// The cached channel to one node (normalized like an endpoint), for
    /// calling `d_engine_proto` services directly.
    pub fn channel(&self, addr: &str) -> Result<Channel> {
        let addr = self.inner.normalize(addr)?;
        self.inner.channel(&addr)
    }
}
