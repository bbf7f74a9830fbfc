//! [`NodeHandle`]: the in-process API of a running node.
//!
//! Everything that talks to a node (the embedded client, the gRPC client
//! services, the admin service, the server binary) goes through this handle.
//! It is cheap to clone (`Arc` inside) and every method is safe to call from
//! many tasks at once.
//!
//! # Contracts
//!
//! - **Writes** (`put`, `delete`, `compare_and_swap`, `propose`) succeed only
//!   once the entry carrying them is committed by a quorum (durable per the
//!   configured durability mode) and applied to the local state machine. The
//!   returned revision is the entry's log index. On a node that is not the
//!   leader they fail with [`Error::NotLeader`] carrying the leader's id and
//!   client address when known ([`Error::NoLeader`] during an election).
//!   `Error::Timeout` means the outcome is unknown (retry with the same
//!   [`WriteId`] to make the retry safe).
//! - **Reads**: `Linearizable` uses the core's ReadIndex (leader only);
//!   `Lease` is served by the leader off the consensus loop while its lease
//!   holds (falls back to ReadIndex otherwise); `Eventual` is served from the
//!   local state machine on any node.
//! - **Back-pressure**: every queue is bounded; when one is full the call
//!   fails at once with [`Error::Overloaded`] (never blocks forever, never
//!   drops silently).
//! - **Bad input** (empty or oversized key, oversized value, too many keys)
//!   fails with [`Error::InvalidArgument`] naming the limit.
//! - **Watches** deliver events after apply, in log order; a watcher that
//!   falls `watch.buffer` events or `watch.max_buffer_bytes` bytes behind
//!   is cancelled with a final `Err(Overloaded)`.
//! - **Memory**: reads return values copied out of the state machine into
//!   the caller's `Vec`s (the client types own their bytes); the client
//!   gRPC service uses crate-internal variants that share the stored bytes
//!   and stop at the response budget instead.
//!
//! # Where the methods live
//!
//! This file holds the handle itself; its methods are `impl NodeHandle`
//! blocks, one file per request path: [`super::lifecycle`] (peer inbox,
//! shutdown), [`super::cluster_info`] (leader, members, header, status),
//! [`super::writes`], [`super::reads`], [`super::watches`],
//! [`super::admin`] (membership, leadership transfer, snapshots). The state
//! they share with the runtime threads is [`super::shared::Shared`].

use std::sync::Arc;

use d_engine_core::NodeId;

use super::shared::Shared;
pub use super::types::*;

/// Handle to a running node. Clone it freely.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("id", &self.id())
            .finish()
    }
}

impl NodeHandle {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &crate::config::Config {
        &self.shared.config
    }
}
