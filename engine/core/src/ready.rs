//! The output of the core: one batch of actions for the host.

use crate::types::*;

/// A read the host may now serve: once the host's state machine has applied
/// at least `read_index`, reading it is linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadReady {
    pub id: ReadId,
    pub read_index: Index,
}

/// A read the core could not serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRefused {
    pub id: ReadId,
    pub error: ProposeError,
}

/// Everything the host must do after feeding inputs to the core.
///
/// Host contract, in this order (the full text, with what must be durable
/// before which message, is in `docs/raft-core.md`):
/// 1. If `snapshot_to_install` is set: install it atomically (replacing the
///    state machine and discarding the whole log), then call
///    [`crate::RaftNode::snapshot_installed`].
/// 2. Make `hard_state` durable (synchronously) if set.
/// 3. Start persisting `entries` (the first entry's index replaces the log
///    from that index on); report durability later with
///    [`crate::RaftNode::log_persisted`]. Persisting may run in parallel with 4.
/// 4. Send `messages` (only after step 2 is durable).
/// 5. Apply `committed` in order, exactly once each (they are committed and
///    durable locally).
/// 6. Serve `reads` once the applied index reaches each `read_index`.
/// 7. Create a snapshot when `create_snapshot` is set, then call
///    [`crate::RaftNode::snapshot_created`]; stream a snapshot for each id in
///    `send_snapshot_to`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub committed: Vec<Entry>,
    pub reads: Vec<ReadReady>,
    pub refused_reads: Vec<ReadRefused>,
    pub snapshot_to_install: Option<SnapshotMeta>,
    pub create_snapshot: bool,
    pub send_snapshot_to: Vec<NodeId>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self == &Ready::default()
    }
}
