//! Peer transport: how Raft messages and snapshots travel between nodes.
//!
//! The runtime talks to peers only through [`Transport`] (outbound) and
//! [`PeerInbox`] (inbound), so tests can swap the tonic implementation for
//! another one.
//!
//! The gRPC implementation lives in the `tonic_*` modules:
//! [`TonicTransport`] (outbound: one long-lived stream per peer, chunked
//! snapshot sending with resume) and [`RaftService`] / [`serve_peers`]
//! (inbound: validates the caller's cluster id, authentication
//! ([`peer_auth`]: cluster secret; or peer mTLS) and membership, hands messages
//! to a [`PeerInbox`], stages snapshots). [`tonic_convert`] maps core
//! messages to and from `dengine.v1.RaftMessage`.

mod links;
pub mod peer_auth;
pub mod tonic_client;
pub mod tonic_common;
pub mod tonic_convert;
pub mod tonic_server;
pub mod tonic_snapshot;
#[cfg(test)]
mod tonic_snapshot_tests;
#[cfg(test)]
mod tonic_tests;

pub use tonic_client::TonicTransport;
pub use tonic_common::{PeerDirectory, TransportOptions, UnauthenticatedReturnLinks};
pub use tonic_server::{serve_peers, RaftService};

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use d_engine_core::{Message, NodeId, SnapshotMeta, Term};

/// Why a snapshot transfer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError(pub String);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Outbound side, owned by the runtime.
pub trait Transport: Send + Sync + 'static {
    /// Queues `msg` for `msg.to`. Never blocks. If the peer's queue is full
    /// or its stream is down the message is dropped (Raft tolerates loss)
    /// and the drop is reported through [`PeerInbox::unreachable`].
    fn send(&self, msg: Message);

    /// Streams the snapshot file at `path` to `to` in chunks, resuming from
    /// the receiver's acknowledged offset after a broken stream. Resolves
    /// once the receiver has staged and verified the whole file (it then
    /// hands an `InstallSnapshot` message to its core).
    fn send_snapshot(
        &self,
        to: NodeId,
        term: Term,
        meta: SnapshotMeta,
        path: PathBuf,
    ) -> BoxFuture<'static, Result<(), TransportError>>;

    /// Replaces the set of peers (id → peer address) after a membership change.
    fn set_peers(&self, peers: BTreeMap<NodeId, String>);

    /// `true` while the node has no membership (started with `join = true`
    /// and not yet added): the inbound side then accepts senders it does
    /// not know. `false` once it has one: only members may call, and return
    /// links learned while joining are dropped. Default: ignored.
    fn set_joining(&self, joining: bool) {
        let _ = joining;
    }
}

/// Inbound side: what a transport server hands to the local node.
pub trait PeerInbox: Send + Sync + 'static {
    /// A Raft message arrived from a peer.
    fn deliver(&self, msg: Message);
    /// Messages to `peer` are being dropped (stream broken / queue full).
    fn unreachable(&self, peer: NodeId);
    /// Directory where incoming snapshot files are staged.
    fn snapshot_staging_dir(&self) -> PathBuf;
    /// A snapshot for `meta` from `from` (sent in `term`) is fully staged at
    /// `path` and its checksum verified.
    fn snapshot_staged(&self, from: NodeId, term: Term, meta: SnapshotMeta, path: PathBuf);
    /// The local node's current term, as last published (it may lag the
    /// core by one loop iteration, never run ahead of it). An inbound
    /// snapshot transfer sent in a lower term is refused before anything is
    /// staged. The default, 0, refuses nothing.
    fn current_term(&self) -> Term {
        0
    }
}
