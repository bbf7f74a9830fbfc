//! Lifecycle of a running node: its inbound peer side, whether it runs,
//! and stopping it.
//!
//! Contracts:
//! - [`NodeHandle::shutdown`] is idempotent: the first call asks the loop to
//!   stop; every call resolves once the node has stopped and its threads
//!   are joined (pending requests fail with `ShuttingDown`, the WAL is
//!   synced, the state machine is closed, the data-dir lock released);
//! - a node that stopped after a storage failure reports it the same way:
//!   `is_running` is false and every later request gets `Storage` with the
//!   cause.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::handle::NodeHandle;
use super::inbox::NodeInbox;
use super::shared::{Input, STATE_RUNNING, STATE_STOPPING};
use super::types::{Error, Result};
use crate::transport::PeerInbox;

impl NodeHandle {
    /// The inbound side of this node for a peer transport server: hand it
    /// to the peer gRPC service so received messages and snapshots reach
    /// the node.
    pub fn peer_inbox(&self) -> Arc<dyn PeerInbox> {
        Arc::new(NodeInbox::new(&self.shared))
    }

    /// True until the node stops (shutdown or a fatal storage error).
    pub fn is_running(&self) -> bool {
        self.shared.is_running()
    }

    /// Stops the node: pending requests fail with `ShuttingDown`, the WAL is
    /// synced, threads are joined. Idempotent.
    pub async fn shutdown(&self) -> Result<()> {
        let prev = self.shared.state.compare_exchange(
            STATE_RUNNING,
            STATE_STOPPING,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if prev.is_ok() {
            self.shared.send_internal(Input::Shutdown);
        }
        self.stopped().await;
        let threads: Vec<_> = std::mem::take(&mut *self.shared.threads.lock().expect("poisoned"));
        if !threads.is_empty() {
            tokio::task::spawn_blocking(move || {
                for t in threads {
                    let _ = t.join();
                }
            })
            .await
            .map_err(|e| Error::Internal(format!("joining runtime threads: {e}")))?;
        }
        Ok(())
    }

    /// Resolves once the node has stopped.
    pub async fn stopped(&self) {
        let mut rx = self.shared.stopped_tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}
