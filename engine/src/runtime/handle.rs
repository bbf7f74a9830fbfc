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

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

pub use d_engine_api::{
    CasOutcome, Consistency, Error, EventType, KeyValue, LeaderInfo, MemberInfo, MemberRole,
    Result, WatchEvent, WatchStream, WriteId,
};
use d_engine_core::NodeId;
pub use d_engine_storage::command::{Command, Op};
pub use d_engine_storage::sm::ApplyResult;

use super::shared::Shared;

/// Metadata for a response header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub node_id: u64,
    pub term: u64,
    /// Applied index of the local state machine.
    pub revision: u64,
}

/// Result of a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteOutcome {
    pub deleted: bool,
    /// Revision (log index) of the delete.
    pub revision: u64,
}

/// Result of a prefix scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanOutcome {
    pub kvs: Vec<KeyValue>,
    /// More keys match than were returned.
    pub more: bool,
}

/// Result of a raw proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposeOutcome {
    /// Log index of the entry.
    pub index: u64,
    /// The write's revision: `index`, or for a retry answered from the
    /// exactly-once table, the index of the entry that applied the original.
    pub revision: u64,
    pub term: u64,
    pub result: ApplyResult,
}

/// Role of this node, as reported by [`NodeHandle::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    Learner,
}

impl NodeRole {
    /// The lowercase name used by the admin API ("leader", "follower", ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeRole::Follower => "follower",
            NodeRole::PreCandidate => "pre_candidate",
            NodeRole::Candidate => "candidate",
            NodeRole::Leader => "leader",
            NodeRole::Learner => "learner",
        }
    }
}

/// An alarm a node raises in its [`NodeStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alarm {
    /// A write was refused with `Error::NoSpace` because it did not fit in
    /// the storage quota (`storage.quota_bytes`), and no space has been
    /// freed (nor a write admitted) since; or the applied data exceeds the
    /// quota.
    NoSpace,
}

impl Alarm {
    /// The name the admin API reports (`"NOSPACE"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Alarm::NoSpace => "NOSPACE",
        }
    }
}

/// A snapshot of the node's state for the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u64,
    pub role: NodeRole,
    pub term: u64,
    /// 0 if unknown.
    pub leader_id: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: u64,
    pub members: Vec<MemberInfo>,
    /// This node is the only voter of its configuration. As leader it then
    /// confirms linearizable reads alone, with no ReadIndex round through
    /// the consensus loop.
    pub sole_voter: bool,
    /// Raised alarms (empty when none).
    pub alarms: Vec<Alarm>,
    /// Logical size of the stored data: every key's key + value + 32 bytes
    /// of metadata (what `storage.quota_bytes` counts).
    pub data_bytes: u64,
    /// `storage.quota_bytes`; 0 = no quota.
    pub quota_bytes: u64,
    /// Payload bytes of the committed log since the latest snapshot (a
    /// snapshot is taken once it passes `snapshot.threshold_bytes`).
    pub log_bytes: u64,
}

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

    // ----- writes -------------------------------------------------------

    /// Stores `value` under `key` (with an optional TTL measured from now);
    /// returns the write's revision.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
        write_id: Option<WriteId>,
    ) -> Result<u64> {
        self.shared
            .put(key.into(), value.into(), ttl, write_id)
            .await
    }

    /// Deletes `key`.
    pub async fn delete(
        &self,
        key: impl Into<Bytes>,
        write_id: Option<WriteId>,
    ) -> Result<DeleteOutcome> {
        self.shared.delete(key.into(), write_id).await
    }

    /// If the value equals `expected` (`None`: key absent), store `new_value`
    /// (`None`: delete). `ttl` applies to the new value.
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new_value: Option<Bytes>,
        ttl: Option<Duration>,
        write_id: Option<WriteId>,
    ) -> Result<CasOutcome> {
        self.shared
            .compare_and_swap(key.into(), expected, new_value, ttl, write_id)
            .await
    }

    /// Proposes a raw state-machine command (validated first).
    pub async fn propose(&self, cmd: Command) -> Result<ProposeOutcome> {
        self.shared.propose(cmd).await
    }

    // ----- reads --------------------------------------------------------

    /// Reads one key.
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>> {
        self.shared.get(key.into(), consistency).await
    }

    /// Reads several keys at one point in time (at most
    /// `limits.max_get_multi_keys`, each at most once: a repeated key is
    /// refused with `InvalidArgument` naming it).
    pub async fn get_multi(
        &self,
        keys: Vec<Bytes>,
        consistency: Consistency,
    ) -> Result<Vec<Option<KeyValue>>> {
        self.shared.get_multi(keys, consistency).await
    }

    /// Up to `limit` live pairs whose key starts with `prefix`, in key order
    /// (`limit` 0 = `limits.max_scan_limit`; larger limits are capped to it).
    pub async fn scan_prefix(
        &self,
        prefix: impl Into<Bytes>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<ScanOutcome> {
        self.shared
            .scan_prefix(prefix.into(), limit, consistency)
            .await
    }

    /// Watches `key` (or every key starting with it if `prefix`), from
    /// `start_revision` if it is still in the in-memory history (0 = only new
    /// changes). `Error::Compacted` if it is not.
    pub fn watch(
        &self,
        key: impl Into<Bytes>,
        prefix: bool,
        start_revision: u64,
    ) -> Result<WatchStream> {
        self.shared.watch(key.into(), prefix, start_revision)
    }

    // ----- cluster info -------------------------------------------------

    /// Current members (with peer and client addresses).
    pub fn members(&self) -> Vec<MemberInfo> {
        self.shared.members()
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> LeaderInfo {
        self.shared.leader()
    }

    /// Header values for a response.
    pub fn header(&self) -> Header {
        self.shared.header()
    }

    /// Role, indexes, members.
    pub fn status(&self) -> NodeStatus {
        self.shared.status()
    }

    /// Fires on every change of leader or term.
    pub fn subscribe_leader(&self) -> watch::Receiver<LeaderInfo> {
        self.shared.leader_tx.subscribe()
    }

    /// Fires on every membership change.
    pub fn subscribe_members(&self) -> watch::Receiver<Vec<MemberInfo>> {
        self.shared.members_tx.subscribe()
    }

    /// Waits until some leader is known (and, if this node leads, it has
    /// committed an entry of its term), or fails with `Timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<LeaderInfo> {
        self.shared.wait_leader(timeout).await
    }

    // ----- admin --------------------------------------------------------

    /// Adds a non-voting learner; returns the members after the change.
    pub async fn add_learner(
        &self,
        id: NodeId,
        peer_addr: String,
        client_addr: String,
    ) -> Result<Vec<MemberInfo>> {
        self.shared.add_learner(id, peer_addr, client_addr).await
    }

    /// Turns a learner into a voter.
    pub async fn promote(&self, id: NodeId) -> Result<Vec<MemberInfo>> {
        self.shared.promote(id).await
    }

    /// Removes a voter or learner.
    pub async fn remove_member(&self, id: NodeId) -> Result<Vec<MemberInfo>> {
        self.shared.remove_member(id).await
    }

    /// Hands leadership to `to`; resolves once `to` leads (or `Timeout`).
    pub async fn transfer_leader(&self, to: NodeId) -> Result<()> {
        self.shared.transfer_leader(to).await
    }

    /// Takes a snapshot now (and compacts the log); returns its index.
    pub async fn trigger_snapshot(&self) -> Result<u64> {
        self.shared.trigger_snapshot().await
    }

    // ----- lifecycle ----------------------------------------------------

    /// The inbound side of this node for a peer transport server: hand it
    /// to the peer gRPC service so received messages and snapshots reach
    /// the node.
    pub fn peer_inbox(&self) -> Arc<dyn crate::transport::PeerInbox> {
        self.shared.peer_inbox()
    }

    /// True until the node stops (shutdown or a fatal storage error).
    pub fn is_running(&self) -> bool {
        self.shared.is_running()
    }

    /// Stops the node: pending requests fail with `ShuttingDown`, the WAL is
    /// synced, threads are joined. Idempotent.
    pub async fn shutdown(&self) -> Result<()> {
        self.shared.shutdown().await
    }

    /// Resolves once the node has stopped.
    pub async fn stopped(&self) {
        self.shared.stopped().await
    }
}
