//! Snapshots as the consensus loop runs them: built on a low-priority
//! thread from an image the apply thread takes at its applied index (with
//! the core's membership at that index), streamed to peers on the tokio
//! runtime, and installed from a staged file synchronously (state machine
//! first, then the WAL reset) before the core is told. Also counts the
//! committed payload bytes that `snapshot.threshold_bytes` bounds.
//!
//! Errors: a failed build or transfer is reported to its waiters (or to the
//! core, `snapshot_send_failed`) and the node keeps serving; a failed
//! install stops the node (`NodeFailure`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;

use d_engine_api::Error;
use d_engine_core::{ConfChange, Entry, EntryPayload, Index, SnapshotMeta};
use d_engine_storage::snapshot::priority::lower_this_thread_priority;
use tokio::sync::oneshot;

use super::super::apply::ApplyTask;
use super::super::failure::NodeFailure;
use super::super::shared::Input;
use super::super::wal_thread::WalTask;
use super::CoreLoop;

/// Payload bytes of the committed entries handed to the apply thread since
/// the latest snapshot: what a snapshot would release from the in-memory
/// log, and what `snapshot.threshold_bytes` bounds. Kept per handed-out
/// batch, so a snapshot at index `i` forgets exactly the batches it covers
/// (the apply thread applies whole batches, so a snapshot's index is always
/// a batch boundary). Entries replayed at start are counted as they are
/// handed out again; entries a sled state machine had already applied
/// before a restart are not (they are bounded by the previous run's
/// threshold).
#[derive(Default)]
pub(crate) struct LogBytes {
    /// (last index of the batch, its payload bytes), in log order.
    batches: VecDeque<(Index, u64)>,
    total: u64,
}

impl LogBytes {
    /// Payload bytes of one entry: the command, or a config change's size.
    fn entry_bytes(e: &Entry) -> u64 {
        match &e.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(b) => b.len() as u64,
            EntryPayload::Config(ConfChange::AddLearner { addr, .. }) => 8 + addr.len() as u64,
            EntryPayload::Config(_) => 8,
        }
    }

    pub(crate) fn committed(&mut self, entries: &[Entry]) {
        let Some(last) = entries.last() else { return };
        let bytes: u64 = entries.iter().map(Self::entry_bytes).sum();
        self.total += bytes;
        self.batches.push_back((last.index, bytes));
    }

    /// A snapshot at `index` exists: the log up to it is compacted.
    pub(crate) fn compacted(&mut self, index: Index) {
        while let Some(&(last, bytes)) = self.batches.front() {
            if last > index {
                break;
            }
            self.total -= bytes;
            self.batches.pop_front();
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

impl CoreLoop {
    pub(super) fn request_snapshot(&mut self, tx: Option<oneshot::Sender<Result<u64, Error>>>) {
        let applied = self.shared.applied.load(Ordering::Acquire);
        if !self.snapshot_building {
            if let Some((meta, _)) = &self.latest_snapshot {
                if meta.last_index >= applied {
                    // Nothing applied since the latest snapshot (the core
                    // may have handed out entries the apply thread has not
                    // applied yet): the core asks again later.
                    self.core.snapshot_not_created();
                    if let Some(tx) = tx {
                        let _ = tx.send(Ok(meta.last_index));
                    }
                    return;
                }
            }
        }
        if let Some(tx) = tx {
            self.snapshot_waiters.push(tx);
        }
        if !self.snapshot_building {
            self.snapshot_building = true;
            let _ = self.apply_tx.send(ApplyTask::BeginSnapshot);
        }
    }

    /// The apply thread has an image at its applied index: stamp the exact
    /// membership at that index and write it on a builder thread.
    pub(super) fn snapshot_begun(
        &mut self,
        result: Result<Box<dyn d_engine_storage::sm::SnapshotSource>, NodeFailure>,
    ) {
        let source = match result {
            Ok(s) => s,
            Err(e) => return self.snapshot_created(Err(e)),
        };
        let index = source.meta().last_index;
        let Some(membership) = self.core.membership_at(index) else {
            return self.snapshot_created(Err(NodeFailure::Inconsistent(format!(
                "the core has no membership for index {index} (already compacted?)"
            ))));
        };
        let mut source = super::super::apply::WithMembership::new(source, membership);
        let store = self.snapshots.clone();
        let input = self.shared.input.clone();
        let metrics = self.shared.metrics.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("dengine-snapshot-{}", self.shared.id))
            .spawn(move || {
                if let Err(e) = lower_this_thread_priority() {
                    tracing::debug!(error = %e, "snapshot builder runs at normal priority");
                }
                let started = std::time::Instant::now();
                let result = store
                    .create(&mut source)
                    .map(|info| (info.meta, info.path))
                    .map_err(|e| NodeFailure::during("writing a snapshot", e));
                if let Ok((_, path)) = &result {
                    metrics
                        .snapshot_seconds
                        .observe(started.elapsed().as_secs_f64());
                    if let Ok(md) = std::fs::metadata(path) {
                        metrics.snapshot_bytes.set(md.len() as i64);
                    }
                }
                let _ = input.send(Input::SnapshotCreated { result });
            });
        if let Err(e) = spawned {
            self.snapshot_created(Err(NodeFailure::io("spawning the snapshot thread", e)));
        }
    }

    pub(super) fn snapshot_created(
        &mut self,
        result: Result<(SnapshotMeta, PathBuf), NodeFailure>,
    ) {
        self.snapshot_building = false;
        match result {
            Ok((meta, path)) => {
                tracing::info!(index = meta.last_index, path = %path.display(), "snapshot created");
                self.shared.metrics.snapshots_created.inc();
                let index = meta.last_index;
                let newer = self
                    .latest_snapshot
                    .as_ref()
                    .is_none_or(|(m, _)| m.last_index < index);
                if !newer {
                    self.core.snapshot_not_created();
                }
                if newer {
                    self.core.snapshot_created(meta.clone());
                    self.log_bytes.compacted(index);
                    let _ = self.wal_tx.send(WalTask::Compact(index));
                    self.latest_snapshot = Some((meta, path));
                    self.shared
                        .published
                        .snapshot_index
                        .store(index, Ordering::Release);
                }
                for tx in self.snapshot_waiters.drain(..) {
                    let _ = tx.send(Ok(index));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "snapshot failed");
                self.shared.metrics.snapshots_failed.inc();
                self.core.snapshot_not_created();
                for tx in self.snapshot_waiters.drain(..) {
                    let _ = tx.send(Err(Error::Storage(e.to_string())));
                }
            }
        }
    }

    pub(super) fn start_snapshot_transfer(&mut self, to: u64) {
        let Some((meta, path)) = self.latest_snapshot.clone() else {
            tracing::warn!(to, "asked to send a snapshot but none exists yet");
            self.core.snapshot_send_failed(to);
            return;
        };
        let term = self.core.status().term;
        let fut = self.transport.send_snapshot(to, term, meta, path);
        let input = self.shared.input.clone();
        self.rt.spawn(async move {
            if let Err(e) = fut.await {
                tracing::warn!(to, error = %e, "snapshot transfer failed");
                let _ = input.send(Input::SnapshotSendFailed(to));
            }
        });
    }

    /// Installs a staged snapshot: adopt the file into the snapshot store,
    /// replace the state machine, reset the WAL, then tell the core.
    pub(super) fn install_staged_snapshot(
        &mut self,
        meta: SnapshotMeta,
    ) -> Result<(), NodeFailure> {
        let Some(staged) = self.staged.remove(&meta.last_index) else {
            return Err(NodeFailure::HostContract(format!(
                "the core asked to install snapshot {} which was never staged",
                meta.last_index
            )));
        };
        let dest = self.snapshots.adopt_staged(&staged, &meta)?;
        let (tx, rx) = std_mpsc::channel();
        self.register_waiters();
        let _ = self.apply_tx.send(ApplyTask::Install {
            path: dest.clone(),
            done: tx,
        });
        let installed = rx
            .recv()
            .map_err(|_| NodeFailure::Thread("apply thread stopped".into()))?;
        if let Err(e) = installed {
            if refused_by_application(&e) {
                self.set_aside_refused(&dest);
            }
            return Err(e);
        }
        let (tx, rx) = std_mpsc::channel();
        let _ = self.wal_tx.send(WalTask::Reset {
            next: meta.last_index + 1,
            done: tx,
        });
        rx.recv()
            .map_err(|_| NodeFailure::Thread("WAL thread stopped".into()))??;
        if let Err(e) = self.snapshots.prune() {
            tracing::warn!(error = %e, "pruning old snapshots failed");
        }
        tracing::info!(index = meta.last_index, "installed snapshot from leader");
        let m = &self.shared.metrics;
        m.snapshots_installed.inc();
        if let Ok(md) = std::fs::metadata(&dest) {
            m.snapshot_bytes.set(md.len() as i64);
        }
        self.shared
            .published
            .snapshot_index
            .store(meta.last_index, Ordering::Release);
        self.latest_snapshot = Some((meta.clone(), dest));
        self.log_bytes.compacted(meta.last_index);
        self.last_commit_sent = self.last_commit_sent.max(meta.last_index);
        self.core.snapshot_installed(meta);
        Ok(())
    }

    /// Moves a snapshot an application machine refused (its reader failed)
    /// out of the store, so the next start comes back from the previous
    /// snapshot plus the log (which the install had not reset yet).
    fn set_aside_refused(&self, path: &std::path::Path) {
        let dir = self
            .snapshots
            .dir()
            .join(d_engine_storage::snapshot::QUARANTINE_DIR);
        let to = dir.join(path.file_name().unwrap_or_default());
        match std::fs::create_dir_all(&dir).and_then(|_| std::fs::rename(path, &to)) {
            Ok(()) => tracing::error!(
                file = %path.display(),
                moved_to = %to.display(),
                "the application state machine refused this snapshot; moved it aside \
                 (the previous snapshot and the log are kept)"
            ),
            Err(e) => tracing::error!(
                file = %path.display(),
                error = %e,
                "cannot move the refused snapshot aside; delete it before restarting"
            ),
        }
    }

    /// Starts a snapshot when the committed log since the latest one holds
    /// more than `snapshot.threshold_bytes` of payload (0: never). The
    /// entry threshold is the core's; whichever is passed first triggers.
    pub(super) fn maybe_snapshot_for_bytes(&mut self) {
        let threshold = self.shared.config.snapshot.threshold_bytes;
        if threshold == 0 || self.snapshot_building || self.log_bytes.total() <= threshold {
            return;
        }
        tracing::debug!(
            log_bytes = self.log_bytes.total(),
            threshold_bytes = threshold,
            "snapshot: the log passed snapshot.threshold_bytes"
        );
        self.request_snapshot(None);
    }
}

/// True if an install failed because an application machine refused the
/// image (not an I/O or corruption problem of the file itself).
fn refused_by_application(e: &NodeFailure) -> bool {
    match e {
        NodeFailure::During { source, .. } => refused_by_application(source),
        NodeFailure::StateMachine(d_engine_storage::sm::SmError::Application(_)) => true,
        _ => false,
    }
}
