//! The Raft node: inputs in, [`Ready`] out.

use bytes::Bytes;

use crate::config::{Config, ConfigError};
use crate::ready::Ready;
use crate::types::*;

/// What a host loads from stable storage when a node (re)starts.
#[derive(Clone, Debug, Default)]
pub struct RestoreState {
    pub hard_state: HardState,
    /// The latest installed or created snapshot, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// Durable entries after the snapshot, contiguous and in order.
    pub entries: Vec<Entry>,
    /// Membership for a brand-new cluster (no snapshot, no config entries).
    pub initial_membership: Membership,
    /// Highest index the host's state machine has already applied (it will
    /// not be handed those entries again).
    pub applied: Index,
}

/// A Raft node. Single-threaded and deterministic: the same inputs in the
/// same order produce the same outputs.
pub struct RaftNode {
    _cfg: Config,
}

impl RaftNode {
    /// Creates a node from durable state. Entries in `restore.entries` count as durable.
    pub fn new(cfg: Config, restore: RestoreState) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let _ = restore;
        todo!()
    }

    /// One unit of time passed.
    pub fn tick(&mut self) {
        todo!()
    }

    /// A message from a peer arrived.
    pub fn step(&mut self, msg: Message) {
        let _ = msg;
        todo!()
    }

    /// Proposes a batch of commands; returns the index of the first and the
    /// term they were appended in. They are committed iff an entry with that
    /// (index, term) is later handed out in `Ready::committed`.
    pub fn propose(&mut self, commands: Vec<Bytes>) -> Result<(Index, Term), ProposeError> {
        let _ = commands;
        todo!()
    }

    /// Proposes a membership change. Refused while another change is
    /// uncommitted or before the leader has committed an entry in its term.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(Index, Term), ProposeError> {
        let _ = change;
        todo!()
    }

    /// Asks for a read barrier. The answer arrives in `Ready::reads` or
    /// `Ready::refused_reads` with the same id.
    pub fn read(&mut self, id: ReadId, consistency: ReadConsistency) {
        let _ = (id, consistency);
        todo!()
    }

    /// Asks the leader to hand leadership to `to`.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        let _ = to;
        todo!()
    }

    /// The host made the log durable up to `index`, whose entry has `term`.
    /// A report for an entry that has since been replaced is ignored.
    pub fn log_persisted(&mut self, index: Index, term: Term) {
        let _ = (index, term);
        todo!()
    }

    /// The host finished a snapshot up to `meta.last_index`; the core may
    /// compact its log up to there.
    pub fn snapshot_created(&mut self, meta: SnapshotMeta) {
        let _ = meta;
        todo!()
    }

    /// The host installed the snapshot it was asked to install.
    pub fn snapshot_installed(&mut self, meta: SnapshotMeta) {
        let _ = meta;
        todo!()
    }

    /// Sending a snapshot to `to` failed (the host gives up for now); the
    /// core will retry later.
    pub fn snapshot_send_failed(&mut self, to: NodeId) {
        let _ = to;
        todo!()
    }

    /// Peer `to` appears unreachable (e.g. a stream broke): the leader drops
    /// back to probing it.
    pub fn report_unreachable(&mut self, to: NodeId) {
        let _ = to;
        todo!()
    }

    /// True if there is output waiting.
    pub fn has_ready(&self) -> bool {
        todo!()
    }

    /// Takes all pending output.
    pub fn ready(&mut self) -> Ready {
        todo!()
    }

    pub fn status(&self) -> Status {
        todo!()
    }

    /// Entries in `[lo, hi)` still held in memory (for hosts that re-read the log).
    pub fn entries(&self, lo: Index, hi: Index) -> Vec<Entry> {
        let _ = (lo, hi);
        todo!()
    }
}
