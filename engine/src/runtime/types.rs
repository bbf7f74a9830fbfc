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

pub use d_engine_api::{Alarm, NodeRole, NodeStatus};

/// A state-machine pair as the API's type; the key and value buffers are
/// shared with the state machine, not copied.
pub(crate) fn to_client_kv(kv: &SmKv) -> KeyValue {
    KeyValue {
        key: kv.key.clone(),
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        expires_at_ms: kv.expires_at_ms.unwrap_or(0),
        lease: kv.lease,
    }
}
