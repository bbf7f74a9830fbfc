//! The consensus loop's effects for the host contract: how this node
//! executes each part of a `Ready` (the order is [`host::process_ready`]'s).
//!
//! - a changed term/vote is saved synchronously before anything is sent; a
//!   commit-only change is not saved (an optimisation the contract allows);
//! - entries go to the WAL thread (after the commit floor, in the same
//!   wake-up), which fsyncs in groups and reports `log_persisted` through the
//!   input queue: messages go out while the leader's own fsync runs;
//! - committed entries and the waiters registered for them go to the apply
//!   thread; confirmed and refused ReadIndex batches are published on the
//!   read watermark (`runtime/read_rounds.rs`), which wakes their readers;
//! - snapshot creation and transfers start here and finish on other threads
//!   (`snapshot.rs`).

use d_engine_core::{Entry, HardState, Message, NodeId, ReadReady, ReadRefused, SnapshotMeta};

use super::super::apply::ApplyTask;
use super::super::failure::NodeFailure;
use super::super::host::{self, HostEffects};
use super::super::wal_thread::WalTask;
use super::CoreLoop;

impl CoreLoop {
    /// Executes every pending `Ready` in contract order, then starts a
    /// snapshot if the committed log passed `snapshot.threshold_bytes`.
    pub(crate) fn process_ready(&mut self) -> Result<(), NodeFailure> {
        while self.core.has_ready() {
            let rd = self.core.ready();
            host::process_ready(rd, self)?;
        }
        self.maybe_snapshot_for_bytes();
        Ok(())
    }

    /// Hands the buffered proposal waiters to the apply thread. Called just
    /// before every task that can apply entries or fail waiters, so a
    /// waiter is registered before its entry is applied, without a wake-up
    /// of the apply thread per proposal batch.
    pub(super) fn register_waiters(&mut self) {
        if !self.unregistered.is_empty() {
            let list = std::mem::take(&mut self.unregistered);
            let _ = self.apply_tx.send(ApplyTask::Register(list));
        }
    }

    /// Tells the WAL the commit index it must never truncate below. Sent
    /// just before the next append (the only task that can truncate), in
    /// the same wake-up, not on every commit: a separate wake-up of the WAL
    /// thread per write would cost CPU the apply thread needs.
    fn send_commit_floor(&mut self) {
        if self.commit_to_send > self.last_commit_sent {
            self.last_commit_sent = self.commit_to_send;
            let _ = self
                .wal_tx
                .send(WalTask::SetCommitted(self.last_commit_sent));
        }
    }
}

impl HostEffects for CoreLoop {
    type Error = NodeFailure;

    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), NodeFailure> {
        self.install_staged_snapshot(meta)
    }

    fn persist_hard_state(&mut self, hs: HardState) -> Result<(), NodeFailure> {
        if self.hard_state.term_or_vote_changed(&hs) {
            self.hard_state.save(&hs)?;
        }
        Ok(())
    }

    fn append(&mut self, entries: Vec<Entry>) -> Result<(), NodeFailure> {
        self.send_commit_floor();
        let _ = self.wal_tx.send(WalTask::Append(entries));
        Ok(())
    }

    fn send(&mut self, msg: Message) -> Result<(), NodeFailure> {
        self.transport.send(msg);
        Ok(())
    }

    fn apply(&mut self, committed: Vec<Entry>) -> Result<(), NodeFailure> {
        let Some(last) = committed.last() else {
            return Ok(());
        };
        self.last_committed_term = last.term;
        let commit = last.index;
        self.log_bytes.committed(&committed);
        self.register_waiters();
        let _ = self.apply_tx.send(ApplyTask::Apply(committed));
        self.commit_to_send = self.commit_to_send.max(commit);
        Ok(())
    }

    fn release_reads(
        &mut self,
        reads: Vec<ReadReady>,
        refused: Vec<ReadRefused>,
    ) -> Result<(), NodeFailure> {
        if reads.is_empty() && refused.is_empty() {
            return Ok(());
        }
        // The core answers batches in the order they were registered; a
        // batch is answered once (confirmed or refused).
        let mut confirmed = None;
        for r in &reads {
            if r.id > self.read_batches.confirmed {
                self.read_batches.confirmed = r.id;
                confirmed = Some((r.id, r.read_index));
            }
        }
        let mut refused_upto = 0;
        for r in &refused {
            if r.id > self.read_batches.refused {
                self.read_batches.refused = r.id;
                refused_upto = r.id;
            }
        }
        let answered = self.read_batches.confirmed.max(self.read_batches.refused);
        self.reads.retain(|id| *id > answered);
        if confirmed.is_some() || refused_upto > 0 {
            self.shared.published.reads.publish(confirmed, refused_upto);
        }
        Ok(())
    }

    fn create_snapshot(&mut self) -> Result<(), NodeFailure> {
        self.request_snapshot(None);
        Ok(())
    }

    fn send_snapshot(&mut self, to: NodeId) -> Result<(), NodeFailure> {
        self.start_snapshot_transfer(to);
        Ok(())
    }
}
