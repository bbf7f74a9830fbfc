//! The value types of the node's in-process API: what [`super::NodeHandle`]
//! takes and returns. Plain data, no behaviour beyond naming; re-exported
//! from [`super::handle`] and `crate::runtime`.
//!
//! Kept apart from the handle so the runtime's internal modules (the input
//! queue, the apply thread, the watch hub) can name them without importing
//! the handle, which would close an import circle.

use d_engine_storage::sm::KeyValue as SmKv;

pub use d_engine_api::{
    CasOutcome, Consistency, Error, EventType, KeyValue, LeaderInfo, MemberInfo, MemberRole,
    Result, WatchEvent, WatchStream, WriteId,
};
pub use d_engine_storage::command::{Command, Op};
pub use d_engine_storage::sm::ApplyResult;

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

/// Copies a state-machine pair into the client type (the client types own
/// their bytes).
pub(crate) fn to_client_kv(kv: &SmKv) -> KeyValue {
    KeyValue {
        key: kv.key.to_vec(),
        value: kv.value.to_vec(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        expires_at_ms: kv.expires_at_ms.unwrap_or(0),
        lease: kv.lease,
    }
}
