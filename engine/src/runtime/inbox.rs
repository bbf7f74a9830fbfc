//! The node's [`PeerInbox`]: what a transport server hands to the node.
//!
//! Peer messages are queued for the consensus loop up to
//! `queues.peer_inbox_capacity`; beyond that a message is dropped and
//! counted (Raft retransmits: heartbeats and AppendEntries are re-sent, votes
//! are re-requested), so a flood from peers cannot grow memory without bound.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Weak};

use d_engine_core::{Message, NodeId, SnapshotMeta, Term};

use super::input::Input;
use super::shared::Shared;
use crate::transport::PeerInbox;

pub(crate) struct NodeInbox {
    input: std_mpsc::Sender<Input>,
    queued: Arc<AtomicUsize>,
    cap: usize,
    staging_dir: PathBuf,
    dropped: AtomicU64,
    /// For the published term (weak: the transport server must not keep
    /// the node's state alive).
    shared: Weak<Shared>,
}

impl NodeInbox {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        NodeInbox {
            input: shared.input.clone(),
            queued: shared.peer_queued.clone(),
            cap: shared.config.queues.peer_inbox_capacity,
            staging_dir: shared.staging_dir.clone(),
            dropped: AtomicU64::new(0),
            shared: Arc::downgrade(shared),
        }
    }
}

impl PeerInbox for NodeInbox {
    fn deliver(&self, msg: Message) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    cap = self.cap,
                    "peer inbox full (queues.peer_inbox_capacity); dropping peer messages"
                );
            }
            return;
        }
        if self
            .input
            .send(Input::Peer(msg, std::time::Instant::now()))
            .is_err()
        {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn unreachable(&self, peer: NodeId) {
        // Counted like a peer message so a transport reporting every dropped
        // message cannot flood the loop.
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        if self.input.send(Input::Unreachable(peer)).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn snapshot_staging_dir(&self) -> PathBuf {
        self.staging_dir.clone()
    }

    fn current_term(&self) -> Term {
        self.shared
            .upgrade()
            .map(|s| s.published.term.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    fn snapshot_staged(&self, from: NodeId, term: Term, meta: SnapshotMeta, path: PathBuf) {
        let _ = self.input.send(Input::SnapshotStaged {
            from,
            term,
            meta,
            path,
        });
    }
}
