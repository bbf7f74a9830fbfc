//! An in-process peer network for tests: nodes in one process exchange
//! messages through their [`PeerInbox`]es directly, and snapshot files are
//! copied into the receiver's staging directory. Links can be cut to
//! simulate partitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use d_engine_core::{Message, NodeId, SnapshotMeta, Term};

use crate::transport::{BoxFuture, PeerInbox, Transport, TransportError};

/// A set of in-process nodes that can reach each other.
#[derive(Default)]
pub struct LocalNetwork {
    inboxes: Mutex<HashMap<NodeId, Arc<dyn PeerInbox>>>,
    /// Directed links that drop everything: (from, to).
    cut: Mutex<BTreeSet<(NodeId, NodeId)>>,
}

impl LocalNetwork {
    pub fn new() -> Arc<Self> {
        Arc::new(LocalNetwork::default())
    }

    /// A transport factory for [`super::start`] for node `id`.
    pub fn transport_for(
        self: &Arc<Self>,
        id: NodeId,
    ) -> impl FnOnce(Arc<dyn PeerInbox>) -> Arc<dyn Transport> {
        let net = self.clone();
        move |inbox| {
            net.inboxes.lock().expect("poisoned").insert(id, inbox);
            Arc::new(LocalTransport { net, id })
        }
    }

    /// Removes node `id` (its messages are dropped from now on).
    pub fn remove(&self, id: NodeId) {
        self.inboxes.lock().expect("poisoned").remove(&id);
    }

    /// Cuts (both directions) or heals the link between `a` and `b`.
    pub fn set_link(&self, a: NodeId, b: NodeId, up: bool) {
        let mut cut = self.cut.lock().expect("poisoned");
        for l in [(a, b), (b, a)] {
            if up {
                cut.remove(&l);
            } else {
                cut.insert(l);
            }
        }
    }

    fn inbox(&self, from: NodeId, to: NodeId) -> Option<Arc<dyn PeerInbox>> {
        if self.cut.lock().expect("poisoned").contains(&(from, to)) {
            return None;
        }
        self.inboxes.lock().expect("poisoned").get(&to).cloned()
    }
}

struct LocalTransport {
    net: Arc<LocalNetwork>,
    id: NodeId,
}

impl Transport for LocalTransport {
    fn send(&self, msg: Message) {
        if let Some(inbox) = self.net.inbox(self.id, msg.to) {
            inbox.deliver(msg);
        }
    }

    fn send_snapshot(
        &self,
        to: NodeId,
        term: Term,
        meta: SnapshotMeta,
        path: PathBuf,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let inbox = self.net.inbox(self.id, to);
        let from = self.id;
        Box::pin(async move {
            let inbox = inbox.ok_or_else(|| TransportError(format!("node {to} unreachable")))?;
            let dir = inbox.snapshot_staging_dir();
            let dest = dir.join(format!("incoming-from{from}-{}.snap", meta.last_index));
            let d2 = dest.clone();
            tokio::task::spawn_blocking(move || std::fs::copy(&path, &d2))
                .await
                .map_err(|e| TransportError(e.to_string()))?
                .map_err(|e| TransportError(format!("copying snapshot: {e}")))?;
            inbox.snapshot_staged(from, term, meta, dest);
            Ok(())
        })
    }

    fn set_peers(&self, _peers: BTreeMap<NodeId, String>) {}
}
