//! The consensus loop's input queue: what is sent to it ([`Input`]) and the
//! waiters a request leaves behind.
//!
//! Contracts:
//! - client inputs are admitted against bounded counters; a waiter (and a
//!   linearizable reader waiting for its ReadIndex round) holds a [`Slot`]
//!   of its counter (`queues.max_pending_proposals`,
//!   `queues.max_pending_reads`) until it completes or is dropped, so a
//!   caller that goes away frees its slot;
//! - a full counter refuses at once with `Overloaded` naming the limit;
//! - internal inputs (durability reports, snapshot events, failures) are
//!   never refused;
//! - a client input failed with [`Input::fail`] answers its waiter exactly
//!   once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use d_engine_core::{ConfChange, Message, NodeId, SnapshotMeta, Term};
use tokio::sync::oneshot;

use super::failure::NodeFailure;
use super::types::{Error, ProposeOutcome, Result};

/// The result a proposal waiter receives from the apply thread.
pub(crate) type ProposeReply = Result<ProposeOutcome>;

/// Something waiting for a proposal's entry to be applied. Dropping it
/// releases its slot in `max_pending_proposals`.
pub(crate) struct ProposalWaiter {
    pub(crate) tx: oneshot::Sender<ProposeReply>,
    _slot: Slot,
}

impl ProposalWaiter {
    pub(crate) fn new(tx: oneshot::Sender<ProposeReply>, slot: Slot) -> Self {
        ProposalWaiter { tx, _slot: slot }
    }

    pub(crate) fn complete(self, r: ProposeReply) {
        let _ = self.tx.send(r);
    }
}

/// One unit of a bounded counter, released on drop.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot counted nowhere, for the node's own proposals (never refused).
    pub(crate) fn untracked() -> Slot {
        Slot(Arc::new(AtomicUsize::new(1)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes one unit of `counter`, or refuses with `Overloaded` naming `key`
/// when `cap` are taken.
pub(crate) fn take_slot(
    counter: &Arc<AtomicUsize>,
    cap: usize,
    what: &str,
    key: &str,
) -> Result<Slot> {
    let n = counter.fetch_add(1, Ordering::AcqRel);
    if n >= cap {
        counter.fetch_sub(1, Ordering::AcqRel);
        return Err(Error::Overloaded(format!(
            "{n} {what} are pending, the limit is {key} = {cap}; back off and retry"
        )));
    }
    Ok(Slot(counter.clone()))
}

/// Inputs of the consensus loop.
pub(crate) enum Input {
    // -- from clients (counted against queues.input_capacity) --
    Propose {
        cmd: Bytes,
        waiter: ProposalWaiter,
    },
    ConfChange {
        change: ConfChange,
        waiter: ProposalWaiter,
    },
    Transfer {
        to: NodeId,
        tx: oneshot::Sender<Result<()>>,
    },
    Snapshot {
        tx: oneshot::Sender<Result<u64>>,
    },
    // -- from peers (counted against queues.peer_inbox_capacity) --
    /// A message and when the transport handed it over (for the queueing
    /// delay reported when an election starts).
    Peer(Message, Instant),
    // -- internal (never refused) --
    /// A reader raised `ReadProgress::wanted` (`runtime/read_rounds.rs`):
    /// wakes the loop, which registers a ReadIndex batch. At most one per
    /// loop iteration, so it needs no admission.
    ReadRound,
    Unreachable(NodeId),
    SnapshotStaged {
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        path: PathBuf,
    },
    Persisted {
        index: u64,
        term: u64,
    },
    SnapshotBegun {
        result: std::result::Result<Box<dyn d_engine_storage::sm::SnapshotSource>, NodeFailure>,
    },
    SnapshotCreated {
        result: std::result::Result<(SnapshotMeta, PathBuf), NodeFailure>,
    },
    SnapshotSendFailed(NodeId),
    /// A storage failure or a dead thread: the node stops with it.
    Fatal(NodeFailure),
    Shutdown,
}

impl Input {
    pub(crate) fn is_client(&self) -> bool {
        matches!(
            self,
            Input::Propose { .. }
                | Input::ConfChange { .. }
                | Input::Transfer { .. }
                | Input::Snapshot { .. }
        )
    }

    /// Fails a client input (the node is stopping).
    pub(crate) fn fail(self, e: Error) {
        match self {
            Input::Propose { waiter, .. } | Input::ConfChange { waiter, .. } => {
                waiter.complete(Err(e))
            }
            Input::Transfer { tx, .. } => {
                let _ = tx.send(Err(e));
            }
            Input::Snapshot { tx } => {
                let _ = tx.send(Err(e));
            }
            _ => {}
        }
    }
}
