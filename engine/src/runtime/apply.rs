//! The apply thread: applies committed entries, completes waiters.
//!
//! Contract:
//! - committed entries arrive in log order and are applied exactly once
//!   (the state machine skips entries at or below its applied index);
//! - a proposal registered at `(index, term)` succeeds iff the entry applied
//!   at `index` has that `term`; if another entry lands there, the proposal
//!   fails with a retryable NotLeader/NoLeader error (it was not applied);
//! - a read registered at `read_index` is released once the applied index
//!   reaches it;
//! - watch events are published after each applied batch, in log order;
//! - the state machine's data size is published to the storage quota after
//!   each applied batch and installed snapshot, before waiters complete;
//! - snapshots are begun here (so their point in time is exactly the applied
//!   index) and written by a separate builder thread while applies go on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use d_engine_api::Error;
use d_engine_core::Membership;
use d_engine_core::{Entry, Index, SnapshotMeta, Term};
use d_engine_storage::sm::{SmError, SnapshotRecord, SnapshotSource, StateMachine};
use tokio::sync::watch;

use super::failure::NodeFailure;
use super::input::{Input, ProposalWaiter};
use super::shared::Shared;
use super::types::ProposeOutcome;

pub(crate) enum ApplyTask {
    Register(Vec<(Index, Term, ProposalWaiter)>),
    Apply(Vec<Entry>),
    Install {
        path: PathBuf,
        done: std_mpsc::Sender<Result<SnapshotMeta, NodeFailure>>,
    },
    BeginSnapshot,
    Shutdown,
}

struct Applier {
    shared: Arc<Shared>,
    sm: Arc<dyn StateMachine>,
    applied_tx: watch::Sender<u64>,
    waiters: BTreeMap<Index, (Term, ProposalWaiter)>,
}

pub(crate) fn spawn(
    shared: Arc<Shared>,
    sm: Arc<dyn StateMachine>,
    applied_tx: watch::Sender<u64>,
) -> std::io::Result<(std_mpsc::Sender<ApplyTask>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std_mpsc::channel::<ApplyTask>();
    let id = shared.id;
    let h = std::thread::Builder::new()
        .name(format!("dengine-apply-{id}"))
        .spawn(move || {
            let mut a = Applier {
                shared,
                sm,
                applied_tx,
                waiters: BTreeMap::new(),
            };
            a.run(&rx);
        })?;
    Ok((tx, h))
}

impl Applier {
    fn run(&mut self, rx: &std_mpsc::Receiver<ApplyTask>) {
        let mut tasks = Vec::new();
        let mut batch: Vec<Entry> = Vec::new();
        let mut failed: Option<NodeFailure> = None;
        while let Ok(t) = rx.recv() {
            tasks.push(t);
            while let Ok(t) = rx.try_recv() {
                tasks.push(t);
            }
            for t in tasks.drain(..) {
                if let ApplyTask::Apply(mut entries) = t {
                    if batch.is_empty() {
                        batch = entries;
                    } else {
                        batch.append(&mut entries);
                    }
                    continue;
                }
                if !batch.is_empty() && failed.is_none() {
                    failed = self.apply(std::mem::take(&mut batch)).err();
                }
                batch.clear();
                match t {
                    ApplyTask::Apply(_) => unreachable!(),
                    ApplyTask::Register(list) => self.register(list),
                    ApplyTask::Install { path, done } => {
                        let _ = done.send(self.install(&path));
                    }
                    ApplyTask::BeginSnapshot => self.begin_snapshot(),
                    ApplyTask::Shutdown => {
                        self.fail_all();
                        return;
                    }
                }
            }
            if !batch.is_empty() && failed.is_none() {
                failed = self.apply(std::mem::take(&mut batch)).err();
            }
            batch.clear();
            if let Some(e) = failed.take() {
                tracing::error!(error = %e, "state machine failed; stopping the node");
                self.shared.send_internal(Input::Fatal(e));
                self.fail_all();
                // Drain until shutdown so senders never block.
                for t in rx.iter() {
                    match t {
                        ApplyTask::Install { done, .. } => {
                            let _ =
                                done.send(Err(NodeFailure::Thread("state machine stopped".into())));
                        }
                        ApplyTask::Shutdown => return,
                        _ => {}
                    }
                }
                return;
            }
        }
        self.fail_all();
    }

    fn register(&mut self, list: Vec<(Index, Term, ProposalWaiter)>) {
        let applied = self.shared.applied.load(Ordering::Acquire);
        for (index, term, w) in list {
            if index <= applied {
                // Cannot happen for a fresh proposal; be explicit if it does.
                w.complete(Err(Error::Internal(format!(
                    "proposal registered at index {index} at or below the applied index {applied}"
                ))));
                continue;
            }
            if let Some((_, old)) = self.waiters.insert(index, (term, w)) {
                old.complete(Err(self.not_committed(index)));
            }
        }
    }

    fn not_committed(&self, index: Index) -> Error {
        let leader = self.shared.published.leader.load(Ordering::Acquire);
        match self.shared.not_leader(Some(leader)) {
            Error::NotLeader {
                leader_id,
                leader_addr,
            } => Error::NotLeader {
                leader_id,
                leader_addr,
            },
            _ => Error::NoLeader(format!(
                "the write at index {index} was not committed: leadership changed before it \
                 was replicated; it was not applied and is safe to retry"
            )),
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), NodeFailure> {
        let started = std::time::Instant::now();
        let mut results = self.sm.apply(&entries).map_err(|e| {
            NodeFailure::during(format!("applying entries {}..", entries[0].index), e)
        })?;
        let m = &self.shared.metrics;
        m.apply_seconds.observe(started.elapsed().as_secs_f64());
        m.apply_batch_entries.observe(entries.len() as f64);
        drop(entries);
        // The applied index (the `revision` in response headers) moves
        // before the events are published: a watch created in between
        // reports a revision that covers the events it will not receive,
        // so a client resuming "after the created revision" skips nothing.
        let applied = self.sm.applied_index();
        self.shared.applied.store(applied, Ordering::Release);
        // Before any waiter completes: a client told its delete succeeded
        // finds the quota (and the alarm) already updated.
        self.shared.quota.observe(self.sm.data_bytes());
        // Likewise the leader's lease clock: a granted lease can be renewed
        // as soon as its grant is acknowledged; a revoked one is forgotten.
        // Replays of deduplicated writes changed nothing and are skipped.
        self.shared.leases.applied(
            results
                .iter()
                .filter(|a| a.revision == a.index)
                .map(|a| &a.result),
            std::time::Instant::now(),
        );
        let events: Vec<_> = results
            .iter_mut()
            .flat_map(|a| std::mem::take(&mut a.events))
            .collect();
        self.shared.hub.publish(events, applied);
        for a in results {
            if let Some((term, w)) = self.waiters.remove(&a.index) {
                if term == a.term {
                    w.complete(Ok(ProposeOutcome {
                        index: a.index,
                        revision: a.revision,
                        term: a.term,
                        result: a.result,
                    }));
                } else {
                    w.complete(Err(self.not_committed(a.index)));
                }
            }
        }
        // Waiters whose index was passed without a matching result (the
        // entry was skipped or replaced).
        while let Some(entry) = self.waiters.first_entry() {
            if *entry.key() > applied {
                break;
            }
            let (index, (_, w)) = entry.remove_entry();
            w.complete(Err(self.not_committed(index)));
        }
        self.applied_tx.send_replace(applied);
        Ok(())
    }

    fn install(&mut self, path: &std::path::Path) -> Result<SnapshotMeta, NodeFailure> {
        let meta = self.sm.install_snapshot(path).map_err(|e| {
            NodeFailure::during(format!("installing snapshot {}", path.display()), e)
        })?;
        let applied = self.sm.applied_index();
        self.shared.applied.store(applied, Ordering::Release);
        self.shared.quota.observe(self.sm.data_bytes());
        self.shared.hub.reset(applied);
        while let Some(entry) = self.waiters.first_entry() {
            if *entry.key() > applied {
                break;
            }
            let (index, (_, w)) = entry.remove_entry();
            w.complete(Err(Error::Timeout(format!(
                "a snapshot replaced the log up to index {}; the outcome of the write at \
                 index {index} is unknown (retry with the same write id to make it safe)",
                meta.last_index
            ))));
        }
        self.applied_tx.send_replace(applied);
        Ok(meta)
    }

    /// Starts a point-in-time image at the current applied index and hands
    /// it to the consensus loop, which stamps the exact membership at that
    /// index (from the core) and writes it on a builder thread.
    fn begin_snapshot(&mut self) {
        let result = self
            .sm
            .begin_snapshot()
            .map_err(|e| NodeFailure::during("starting a snapshot", e));
        self.shared.send_internal(Input::SnapshotBegun { result });
    }

    fn fail_all(&mut self) {
        let e = || Error::ShuttingDown("the node stopped before the request completed".into());
        for (_, (_, w)) in std::mem::take(&mut self.waiters) {
            w.complete(Err(e()));
        }
    }
}

/// A snapshot image whose meta carries the membership the core computed for
/// its index (the state machine only folds applied config entries, starting
/// from nothing, so its own view can be wrong).
pub(crate) struct WithMembership {
    inner: Box<dyn SnapshotSource>,
    meta: SnapshotMeta,
}

impl WithMembership {
    pub(crate) fn new(inner: Box<dyn SnapshotSource>, membership: Membership) -> Self {
        let mut meta = inner.meta().clone();
        meta.membership = membership;
        WithMembership { inner, meta }
    }
}

impl SnapshotSource for WithMembership {
    fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }
    fn next_record(&mut self) -> Result<Option<SnapshotRecord>, SmError> {
        self.inner.next_record()
    }
}
