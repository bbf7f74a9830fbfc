//! Outbound side of the tonic peer transport: [`TonicTransport`] (its
//! per-peer links are in `links.rs`).
//!
//! One link task per peer owns a bounded queue and one long-lived
//! `Raft.Stream` client stream. The link connects lazily (on the first
//! message), reconnects with exponential backoff after a failure, and while
//! the peer cannot be reached it drops queued messages and reports the peer
//! through [`PeerInbox::unreachable`] (Raft re-sends what matters). Messages
//! to one peer are sent in the order they were queued.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use d_engine_core::{Message, NodeId, SnapshotMeta, Term};

use super::links::Links;
use super::tonic_common::{PeerDirectory, TransportOptions};
use super::tonic_server::RaftService;
use super::tonic_snapshot;
use super::{BoxFuture, PeerInbox, Transport, TransportError};

/// The tonic implementation of [`Transport`].
///
/// Must be created inside a tokio runtime (link tasks are spawned on it).
pub struct TonicTransport {
    opts: Arc<TransportOptions>,
    peers: PeerDirectory,
    links: Arc<Links>,
    refused: Arc<AtomicU64>,
}

impl TonicTransport {
    /// A transport for `opts.local_id` with the initial `peers` (id → peer
    /// address; the local id, if present, is ignored).
    pub fn new(
        opts: TransportOptions,
        inbox: Arc<dyn PeerInbox>,
        peers: BTreeMap<NodeId, String>,
    ) -> Self {
        Self::with_directory(opts, inbox, peers, PeerDirectory::default())
    }

    /// Like [`TonicTransport::new`], but keeps its peer list in `directory`,
    /// so a [`RaftService`] built before the transport (with the same
    /// directory) refuses exactly the senders this transport does not know.
    pub fn with_directory(
        opts: TransportOptions,
        inbox: Arc<dyn PeerInbox>,
        peers: BTreeMap<NodeId, String>,
        directory: PeerDirectory,
    ) -> Self {
        let opts = Arc::new(opts);
        let t = TonicTransport {
            links: Arc::new(Links::new(opts.clone(), inbox)),
            opts,
            peers: directory,
            refused: Arc::default(),
        };
        t.peers.set_joining(t.opts.joining);
        t.set_peers(peers);
        t
    }

    /// The inbound `Raft` service for this node, sharing this transport's
    /// peer directory (so senders removed by `set_peers` are refused) and
    /// its links (so a node waiting to join can answer a leader it was not
    /// configured with, at the address the leader advertises).
    pub fn raft_service(&self) -> RaftService {
        RaftService::new(
            (*self.opts).clone(),
            self.links.inbox().clone(),
            self.peers.clone(),
        )
        .with_return_links(self.links.clone())
        .with_refused_counter(self.refused.clone())
    }

    /// The current peer directory.
    pub fn peers(&self) -> PeerDirectory {
        self.peers.clone()
    }

    /// Inbound peer calls refused so far by this transport's service.
    pub fn refused_calls(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Return links currently learned from callers' advertised addresses.
    pub fn learned_links(&self) -> usize {
        self.links.learned_count()
    }
}

impl Transport for TonicTransport {
    fn send(&self, msg: Message) {
        self.links.send(msg);
    }

    fn send_snapshot(
        &self,
        to: NodeId,
        term: Term,
        meta: SnapshotMeta,
        path: PathBuf,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let opts = self.opts.clone();
        let addr = self.peers.addr(to).or_else(|| self.links.addr(to));
        Box::pin(async move {
            let addr = addr.ok_or_else(|| {
                TransportError(format!("cannot send a snapshot to unknown peer {to}"))
            })?;
            let addr = opts.dial_addr(to, &addr);
            tonic_snapshot::send(opts, to, addr, term, meta, path).await
        })
    }

    fn set_peers(&self, peers: BTreeMap<NodeId, String>) {
        let peers: BTreeMap<NodeId, String> = peers
            .into_iter()
            .filter(|(id, _)| *id != self.opts.local_id && *id != 0)
            .collect();
        self.links.set(&peers);
        self.peers.replace(peers);
    }

    fn set_joining(&self, joining: bool) {
        let was = self.peers.is_joining();
        self.peers.set_joining(joining);
        if was && !joining {
            self.links.forget_learned();
        }
    }
}
