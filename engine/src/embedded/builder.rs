//! [`EngineBuilder`]: what an [`EmbeddedEngine`] listens on and which peer
//! transport it uses. Collects choices only; nothing is bound or started
//! before [`EngineBuilder::start`] (see `assemble.rs`).

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::transport::{PeerInbox, Transport};

/// Builds a node's transport once the runtime has made the node's inbox.
pub(super) type TransportFactory = Box<dyn FnOnce(Arc<dyn PeerInbox>) -> Arc<dyn Transport> + Send>;

/// Builds an [`EmbeddedEngine`] with explicit listeners or transport.
pub struct EngineBuilder {
    pub(super) config: Config,
    pub(super) peer_listener: Option<TcpListener>,
    pub(super) client_listener: Option<TcpListener>,
    pub(super) network: bool,
    pub(super) transport: Option<TransportFactory>,
    pub(super) storage: crate::runtime::NodeStorage,
}

impl EngineBuilder {
    pub(super) fn new(config: Config) -> Self {
        EngineBuilder {
            config,
            peer_listener: None,
            client_listener: None,
            network: true,
            transport: None,
            storage: Default::default(),
        }
    }

    /// Run the state machine `open` returns instead of the configured
    /// key-value backend (the storage seam; see
    /// [`crate::runtime::StateMachineFactory`] and `docs/embedding.md`).
    /// The key-value API is then unavailable unless the machine offers
    /// it ([`d_engine_storage::sm::StateMachine::into_kv`]). For an
    /// application's own machine use [`EngineBuilder::start_app`].
    pub fn state_machine(mut self, open: crate::runtime::StateMachineFactory) -> Self {
        self.storage.state_machine = Some(open);
        self
    }

    /// Keep the Raft log in the store `open` returns instead of the
    /// built-in WAL (`<data_dir>/wal`). `open` is called once per start
    /// with a [`d_engine_storage::wal::LogStoreContext`] (node id, the
    /// private directory `<data_dir>/log-store`, the durability mode) and
    /// must return the store with everything it kept before. The store
    /// must meet the [`d_engine_storage::wal::LogStore`] contract — above
    /// all, entries appended before a `sync` that returned survive any
    /// crash — and should pass
    /// `d_engine_storage::conformance::run_durable_log_store_conformance`.
    /// A data dir keeps the log store it was created with (the node
    /// refuses to switch in place). See `docs/embedding.md`, "Storage
    /// backends".
    pub fn log_store(mut self, open: crate::runtime::LogStoreFactory) -> Self {
        self.storage.log_store = Some(open);
        self
    }

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
}
