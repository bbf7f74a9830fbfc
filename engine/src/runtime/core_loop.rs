//! The consensus loop: one dedicated thread that owns the [`RaftNode`].
//!
//! Each iteration: wait for an input or the next tick; drain every waiting
//! input (coalescing proposals into one `propose` batch and linearizable
//! reads into one ReadIndex request); catch up on ticks; then execute the
//! core's `Ready` in contract order:
//!
//! 1. install a received snapshot (synchronously: state machine, then WAL reset);
//! 2. persist a changed term/vote synchronously (a commit-only change is
//!    deferred: it is an optimisation, a node may restart with a lower commit);
//! 3. hand new entries to the WAL thread (it reports `log_persisted` after
//!    its group-commit fsync);
//! 4. send messages — so followers receive entries while the leader's own
//!    fsync is still running;
//! 5. hand committed entries to the apply thread;
//! 6. hand read indexes to the apply thread (released once applied);
//! 7. start snapshot builds and transfers: when the core asks for one
//!    (`snapshot.threshold_entries`), or when the committed log since the
//!    latest snapshot holds more than `snapshot.threshold_bytes` of payload
//!    (counted here, see [`LogBytes`]).
//!
//! After each iteration it publishes role, term, leader, commit and the lease
//! deadline for the off-loop read paths.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use d_engine_api::{Error, LeaderInfo};
use d_engine_core::{
    ConfChange, Entry, EntryPayload, Index, Membership, Message, MessageBody, RaftNode,
    ReadConsistency, ReadId, Role, SnapshotMeta,
};
use d_engine_storage::command::{Command, Op};
use d_engine_storage::data_dir::DataDir;
use d_engine_storage::hard_state::HardStateStore;
use d_engine_storage::snapshot::priority::lower_this_thread_priority;
use d_engine_storage::snapshot::SnapshotStore;
use tokio::sync::oneshot;

use super::apply::ApplyTask;
use super::shared::*;
use super::wal_thread::WalTask;
use crate::transport::Transport;

/// Most inputs handled before the loop executes a `Ready` (bounds latency).
const MAX_DRAIN: usize = 16 * 1024;

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

    fn committed(&mut self, entries: &[Entry]) {
        let Some(last) = entries.last() else { return };
        let bytes: u64 = entries.iter().map(Self::entry_bytes).sum();
        self.total += bytes;
        self.batches.push_back((last.index, bytes));
    }

    /// A snapshot at `index` exists: the log up to it is compacted.
    fn compacted(&mut self, index: Index) {
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

pub(crate) struct CoreLoop {
    pub(crate) shared: Arc<Shared>,
    pub(crate) core: RaftNode,
    pub(crate) rx: std_mpsc::Receiver<Input>,
    pub(crate) wal_tx: std_mpsc::Sender<WalTask>,
    pub(crate) apply_tx: std_mpsc::Sender<ApplyTask>,
    pub(crate) threads: Vec<std::thread::JoinHandle<()>>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) hard_state: HardStateStore,
    pub(crate) snapshots: SnapshotStore,
    pub(crate) latest_snapshot: Option<(SnapshotMeta, PathBuf)>,
    pub(crate) _data_dir: DataDir,

    pub(crate) staged: HashMap<Index, PathBuf>,
    pub(crate) snapshot_building: bool,
    pub(crate) snapshot_waiters: Vec<oneshot::Sender<Result<u64, Error>>>,

    pub(crate) next_read_id: ReadId,
    pub(crate) read_batches: HashMap<ReadId, Vec<ReadWaiter>>,

    /// Ticks: the core's tick `k` is never processed before real time
    /// `epoch + (k - tick_offset) * tick` (catch-up, never early), which
    /// makes the published lease deadline conservative.
    pub(crate) tick: Duration,
    pub(crate) ticks_done: u64,
    pub(crate) tick_offset: u64,

    pub(crate) next_expire: Instant,
    pub(crate) last_committed_term: u64,
    pub(crate) last_commit_sent: Index,
    /// The newest commit index, sent to the WAL with the next append.
    pub(crate) commit_to_send: Index,
    pub(crate) last_membership: Option<Membership>,
    pub(crate) last_leader: (u64, u64),
    /// (leader id, term) last written to the log, to report each change once.
    pub(crate) logged_leader: (u64, u64),
    /// Per peer: when the transport last delivered a message from it, and
    /// when this loop stepped it (reported when the leader is lost).
    pub(crate) heard: HashMap<d_engine_core::NodeId, (Instant, Instant)>,

    // Per-iteration batches (kept to reuse their allocations).
    pub(crate) batch: Vec<Bytes>,
    pub(crate) batch_bytes: usize,
    pub(crate) batch_waiters: Vec<Option<ProposalWaiter>>,
    /// Waiters of proposed entries not yet handed to the apply thread: they
    /// go with the next `Apply` (or `Install`, or the shutdown), in the same
    /// wake-up of the apply thread, and always before the entries they wait
    /// for can be applied.
    pub(crate) unregistered: Vec<(Index, u64, ProposalWaiter)>,
    pub(crate) reads: Vec<ReadWaiter>,
    /// Committed payload bytes since the latest snapshot.
    pub(crate) log_bytes: LogBytes,
}

impl CoreLoop {
    /// Runs until shutdown or a fatal error; always leaves the node stopped.
    pub(crate) fn run(mut self) {
        let shared = self.shared.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let r = self.main_loop();
            self.stop(r.err());
            // Dropping the loop releases the data dir lock (after the state
            // machine was closed in `stop`).
            drop(self);
        }));
        if result.is_err() {
            *shared.failure.lock().expect("poisoned") =
                Some("the consensus loop panicked (see the log)".into());
            shared.state.store(STATE_FAILED, Ordering::Release);
            shared.hub.close_all("the node failed");
            shared.sm.write().expect("poisoned").take();
        }
        shared.stopped_tx.send_replace(true);
    }

    /// Before the first input: a lone voter elects itself at once instead of
    /// waiting a randomized election timeout (nobody else can compete).
    pub(crate) fn fast_single_node_election(&mut self) -> Result<(), String> {
        let st = self.core.status();
        let voters: Vec<_> = st.membership.voters().collect();
        if voters != [self.shared.id] {
            return Ok(());
        }
        let cfg = self.shared.config.core_config();
        for _ in 0..(4 * cfg.election_ticks) {
            self.core.tick();
            self.ticks_done += 1;
            self.tick_offset += 1;
            self.process_ready()?;
            if self.core.status().role == Role::Leader {
                break;
            }
        }
        Ok(())
    }

    fn main_loop(&mut self) -> Result<(), String> {
        const SLOW_ITERATION: Duration = Duration::from_millis(50);
        self.fast_single_node_election()?;
        self.publish();
        loop {
            let next_tick =
                self.shared.epoch + self.tick * ((self.ticks_done - self.tick_offset + 1) as u32);
            let waited_from = Instant::now();
            let timeout = next_tick.saturating_duration_since(waited_from);
            let mut stop = false;
            match self.rx.recv_timeout(timeout) {
                Ok(i) => stop |= self.handle(i)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let woke = Instant::now();
            let mut n = 0;
            while n < MAX_DRAIN && !stop {
                match self.rx.try_recv() {
                    Ok(i) => stop |= self.handle(i)?,
                    Err(_) => break,
                }
                n += 1;
            }
            if stop {
                return Ok(());
            }
            let drained = Instant::now();
            self.catch_up_ticks();
            self.maybe_expire();
            self.flush_proposals();
            self.flush_reads();
            self.process_ready()?;
            self.publish();
            let done = Instant::now();
            if done - waited_from > SLOW_ITERATION {
                tracing::warn!(
                    waited_ms = (woke - waited_from).as_millis() as u64,
                    timeout_ms = timeout.as_millis() as u64,
                    drain_ms = (drained - woke).as_millis() as u64,
                    inputs = n + 1,
                    ready_ms = (done - drained).as_millis() as u64,
                    "slow consensus loop iteration"
                );
            }
        }
    }

    fn catch_up_ticks(&mut self) {
        let elapsed = self.shared.epoch.elapsed();
        let due = (elapsed.as_nanos() / self.tick.as_nanos().max(1)) as u64 + self.tick_offset;
        while self.ticks_done < due {
            self.core.tick();
            self.ticks_done += 1;
        }
    }

    /// Handles one input; returns true to stop.
    fn handle(&mut self, input: Input) -> Result<bool, String> {
        if input.is_client() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
        }
        match input {
            Input::Propose { cmd, waiter } => {
                self.batch_bytes += cmd.len();
                self.batch.push(cmd);
                self.batch_waiters.push(Some(waiter));
                let b = &self.shared.config.batching;
                if self.batch.len() >= b.max_batch_entries || self.batch_bytes >= b.max_batch_bytes
                {
                    self.flush_proposals();
                }
            }
            Input::Read { waiter } => self.reads.push(waiter),
            Input::ConfChange { change, waiter } => {
                self.flush_proposals();
                match self.core.propose_conf_change(change) {
                    Ok((index, term)) => {
                        let _ = self
                            .apply_tx
                            .send(ApplyTask::Register(vec![(index, term, waiter)]));
                    }
                    Err(e) => waiter.complete(Err(self.shared.map_propose_error(e))),
                }
            }
            Input::Transfer { to, tx } => {
                let r = self
                    .core
                    .transfer_leadership(to)
                    .map_err(|e| self.shared.map_propose_error(e));
                let _ = tx.send(r);
            }
            Input::Snapshot { tx } => self.request_snapshot(Some(tx)),
            Input::Peer(msg, delivered) => {
                self.shared.peer_queued.fetch_sub(1, Ordering::AcqRel);
                let (from, term) = (msg.from, msg.term);
                match self.core.step(msg) {
                    Ok(()) => {
                        self.heard.insert(from, (delivered, Instant::now()));
                    }
                    Err(refusal) => self.log_refusal(from, term, &refusal),
                }
            }
            Input::Unreachable(peer) => {
                self.shared.peer_queued.fetch_sub(1, Ordering::AcqRel);
                self.core.report_unreachable(peer);
            }
            Input::SnapshotStaged {
                from,
                term,
                meta,
                path,
            } => {
                if let Some(old) = self.staged.insert(meta.last_index, path.clone()) {
                    if old != path {
                        let _ = std::fs::remove_file(old);
                    }
                }
                let index = meta.last_index;
                let stepped = self.core.step(Message {
                    from,
                    to: self.shared.id,
                    term,
                    body: MessageBody::InstallSnapshot { meta },
                });
                if let Err(refusal) = stepped {
                    self.log_refusal(from, term, &refusal);
                    if let Some(p) = self.staged.remove(&index) {
                        let _ = std::fs::remove_file(p);
                    }
                }
            }
            Input::Persisted { index, term } => self.core.log_persisted(index, term),
            Input::SnapshotBegun { result } => self.snapshot_begun(result),
            Input::SnapshotCreated { result } => self.snapshot_created(result),
            Input::SnapshotSendFailed(to) => self.core.snapshot_send_failed(to),
            Input::Fatal(e) => return Err(e),
            Input::Shutdown => return Ok(true),
        }
        Ok(false)
    }

    /// The core refused a peer message (it had no effect). Logged with the
    /// sender and the reason: the first 16 refusals, then every 1024th, each
    /// with the running total (`refused_messages` in the core's status), so
    /// a flood cannot flood the log.
    fn log_refusal(
        &self,
        from: d_engine_core::NodeId,
        term: u64,
        refusal: &d_engine_core::Refusal,
    ) {
        let total = self.core.status().refused_messages;
        if total <= 16 || total.is_multiple_of(1024) {
            tracing::warn!(
                from,
                term,
                refused_total = total,
                "refused a peer message: {refusal}"
            );
        }
    }

    fn flush_proposals(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let cmds = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let n = cmds.len() as u64;
        match self.core.propose(cmds) {
            Ok((first, term)) => {
                let list: Vec<_> = self
                    .batch_waiters
                    .drain(..)
                    .enumerate()
                    .filter_map(|(i, w)| w.map(|w| (first + i as u64, term, w)))
                    .collect();
                debug_assert!(list.len() as u64 <= n);
                self.unregistered.extend(list);
            }
            Err(e) => {
                let err = self.shared.map_propose_error(e);
                for w in self.batch_waiters.drain(..).flatten() {
                    w.complete(Err(err.clone()));
                }
            }
        }
    }

    fn flush_reads(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        self.read_batches
            .insert(id, std::mem::take(&mut self.reads));
        self.core.read(id, ReadConsistency::Linearizable);
    }

    /// The leader periodically proposes `Expire { now }` so keys whose TTL
    /// passed are removed on every replica at the same log position. It
    /// proposes only when its applied state holds a key whose deadline has
    /// passed, so an idle cluster's log does not grow.
    fn maybe_expire(&mut self) {
        let now = Instant::now();
        if now < self.next_expire {
            return;
        }
        self.next_expire = now + Duration::from_millis(self.shared.config.ttl.expire_interval_ms);
        if !self.shared.published.leader_ready.load(Ordering::Acquire) {
            return;
        }
        let now_ms = now_ms();
        let due = match self.shared.sm().map(|sm| sm.earliest_deadline()) {
            Ok(Ok(Some(deadline))) => deadline <= now_ms,
            Ok(Ok(None)) => false,
            // Let the apply path report a failing state machine.
            Ok(Err(_)) | Err(_) => true,
        };
        if !due {
            return;
        }
        let cmd = Command::new(Op::Expire { now_ms }).encode();
        self.batch_bytes += cmd.len();
        self.batch.push(cmd);
        self.batch_waiters.push(None);
    }

    fn request_snapshot(&mut self, tx: Option<oneshot::Sender<Result<u64, Error>>>) {
        let applied = self.shared.applied.load(Ordering::Acquire);
        if !self.snapshot_building {
            if let Some((meta, _)) = &self.latest_snapshot {
                if meta.last_index >= applied {
                    // Nothing applied since the latest snapshot.
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
    fn snapshot_begun(
        &mut self,
        result: Result<Box<dyn d_engine_storage::sm::SnapshotSource>, String>,
    ) {
        let source = match result {
            Ok(s) => s,
            Err(e) => return self.snapshot_created(Err(e)),
        };
        let index = source.meta().last_index;
        let Some(membership) = self.core.membership_at(index) else {
            return self.snapshot_created(Err(format!(
                "the core has no membership for index {index} (already compacted?)"
            )));
        };
        let mut source = super::apply::WithMembership::new(source, membership);
        let store = self.snapshots.clone();
        let input = self.shared.input.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("dengine-snapshot-{}", self.shared.id))
            .spawn(move || {
                if let Err(e) = lower_this_thread_priority() {
                    tracing::debug!(error = %e, "snapshot builder runs at normal priority");
                }
                let result = store
                    .create(&mut source)
                    .map(|info| (info.meta, info.path))
                    .map_err(|e| format!("writing a snapshot: {e}"));
                let _ = input.send(Input::SnapshotCreated { result });
            });
        if let Err(e) = spawned {
            self.snapshot_created(Err(format!("spawning the snapshot thread: {e}")));
        }
    }

    fn snapshot_created(&mut self, result: Result<(SnapshotMeta, PathBuf), String>) {
        self.snapshot_building = false;
        match result {
            Ok((meta, path)) => {
                tracing::info!(index = meta.last_index, path = %path.display(), "snapshot created");
                let index = meta.last_index;
                let newer = self
                    .latest_snapshot
                    .as_ref()
                    .is_none_or(|(m, _)| m.last_index < index);
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
                for tx in self.snapshot_waiters.drain(..) {
                    let _ = tx.send(Err(Error::Storage(e.clone())));
                }
            }
        }
    }

    fn send_snapshot(&mut self, to: u64) {
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
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), String> {
        let Some(staged) = self.staged.remove(&meta.last_index) else {
            return Err(format!(
                "the core asked to install snapshot {} which was never staged",
                meta.last_index
            ));
        };
        let dest = self.snapshots.dir().join(format!(
            "snapshot-{:020}-{:020}.snap",
            meta.last_index, meta.last_term
        ));
        std::fs::rename(&staged, &dest)
            .map_err(|e| format!("moving {} to {}: {e}", staged.display(), dest.display()))?;
        std::fs::File::open(self.snapshots.dir())
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("syncing {}: {e}", self.snapshots.dir().display()))?;
        let (tx, rx) = std_mpsc::channel();
        self.register_waiters();
        let _ = self.apply_tx.send(ApplyTask::Install {
            path: dest.clone(),
            done: tx,
        });
        rx.recv()
            .map_err(|_| "apply thread stopped".to_string())??;
        let (tx, rx) = std_mpsc::channel();
        let _ = self.wal_tx.send(WalTask::Reset {
            next: meta.last_index + 1,
            done: tx,
        });
        rx.recv().map_err(|_| "WAL thread stopped".to_string())??;
        if let Err(e) = self.snapshots.prune() {
            tracing::warn!(error = %e, "pruning old snapshots failed");
        }
        tracing::info!(index = meta.last_index, "installed snapshot from leader");
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

    /// Executes every pending `Ready` in contract order.
    pub(crate) fn process_ready(&mut self) -> Result<(), String> {
        while self.core.has_ready() {
            let rd = self.core.ready();
            if let Some(meta) = rd.snapshot_to_install {
                self.install_snapshot(meta)?;
            }
            if let Some(hs) = rd.hard_state {
                if self.hard_state.term_or_vote_changed(&hs) {
                    self.hard_state
                        .save(&hs)
                        .map_err(|e| format!("saving hard state: {e}"))?;
                }
            }
            if !rd.entries.is_empty() {
                self.send_commit_floor();
                let _ = self.wal_tx.send(WalTask::Append(rd.entries));
            }
            for m in rd.messages {
                self.transport.send(m);
            }
            if let Some(last) = rd.committed.last() {
                self.last_committed_term = last.term;
                let commit = last.index;
                self.log_bytes.committed(&rd.committed);
                self.register_waiters();
                let _ = self.apply_tx.send(ApplyTask::Apply(rd.committed));
                self.commit_to_send = self.commit_to_send.max(commit);
            }
            for r in rd.reads {
                if let Some(waiters) = self.read_batches.remove(&r.id) {
                    self.release_or_park_reads(r.read_index, waiters);
                }
            }
            for r in rd.refused_reads {
                if let Some(waiters) = self.read_batches.remove(&r.id) {
                    let e = self.shared.map_propose_error(r.error);
                    for w in waiters {
                        w.complete(Err(e.clone()));
                    }
                }
            }
            if rd.create_snapshot {
                self.request_snapshot(None);
            }
            for to in rd.send_snapshot_to {
                self.send_snapshot(to);
            }
        }
        self.maybe_snapshot_for_bytes();
        Ok(())
    }

    /// Starts a snapshot when the committed log since the latest one holds
    /// more than `snapshot.threshold_bytes` of payload (0: never). The
    /// entry threshold is the core's; whichever is passed first triggers.
    fn maybe_snapshot_for_bytes(&mut self) {
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

    /// Hands the buffered proposal waiters to the apply thread. Called just
    /// before every task that can apply entries or fail waiters, so a
    /// waiter is registered before its entry is applied, without a wake-up
    /// of the apply thread per proposal batch.
    fn register_waiters(&mut self) {
        if !self.unregistered.is_empty() {
            let list = std::mem::take(&mut self.unregistered);
            let _ = self.apply_tx.send(ApplyTask::Register(list));
        }
    }

    /// Confirmed reads at `read_index`: released here when the state machine
    /// has already applied that far (the common case: no hop through the
    /// apply thread), otherwise parked on the apply thread, which releases
    /// them once it applies `read_index` (it re-checks, so an apply racing
    /// with this check loses no read).
    fn release_or_park_reads(&mut self, read_index: Index, waiters: Vec<ReadWaiter>) {
        let applied = self.shared.applied.load(Ordering::Acquire);
        if let Some(waiters) = ReadWaiter::release_if_applied(read_index, applied, waiters) {
            let _ = self.apply_tx.send(ApplyTask::ReadAt {
                index: read_index,
                waiters,
            });
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

    /// Logs a change of leader or term as this node sees it: an election
    /// under load shows up here (and in latency), nowhere else.
    fn log_leader_change(&mut self, now: (u64, u64), role: Role) {
        let (was_leader, was_term) = std::mem::replace(&mut self.logged_leader, now);
        let (leader, term) = now;
        if term >= d_engine_core::MAX_TERM && was_term < d_engine_core::MAX_TERM {
            tracing::error!(
                term,
                max_term = d_engine_core::MAX_TERM,
                "the term reached its maximum: this node will never campaign again (terms \
                 above it are refused so that term + 1 cannot overflow). Only a buggy or \
                 hostile member pushes terms this far; find it in the refused-message log"
            );
        }
        if was_term == 0 && was_leader == 0 {
            tracing::info!(term, leader, ?role, "initial leader view");
        } else if leader == 0 && was_leader == self.shared.id {
            tracing::warn!(
                term,
                "stepped down: no quorum of followers heard from within an election timeout \
                 (check_quorum)"
            );
        } else if leader == 0
            && was_leader != 0
            && matches!(role, Role::PreCandidate | Role::Candidate)
        {
            // This node's election timer fired: say where the leader's
            // messages stopped, in the transport or in this loop.
            let at = Instant::now();
            let ago = |t: Instant| at.saturating_duration_since(t).as_millis() as u64;
            let heard = self.heard.get(&was_leader);
            tracing::warn!(
                term,
                previous_leader = was_leader,
                ?role,
                delivered_ms_ago = heard.map(|h| ago(h.0)),
                stepped_ms_ago = heard.map(|h| ago(h.1)),
                "lost the leader: nothing from it within an election timeout (the transport \
                 last delivered a message from it delivered_ms_ago, this loop stepped it \
                 stepped_ms_ago)"
            );
        } else if leader == 0 {
            tracing::info!(
                term,
                previous_leader = was_leader,
                ?role,
                "no leader (an election is under way)"
            );
        } else {
            tracing::info!(
                term,
                leader,
                previous_leader = was_leader,
                previous_term = was_term,
                ?role,
                "leader changed"
            );
        }
    }

    /// Publishes the loop's view for the off-loop paths and notifications.
    pub(crate) fn publish(&mut self) {
        let st = self.core.status();
        let p = &self.shared.published;
        let is_leader = st.role == Role::Leader;
        let ready = is_leader && self.last_committed_term == st.term && st.term > 0;
        p.role.store(role_code(st.role), Ordering::Release);
        p.term.store(st.term, Ordering::Release);
        p.leader.store(st.leader.unwrap_or(0), Ordering::Release);
        p.commit.store(st.commit, Ordering::Release);
        p.last_index.store(st.last_index, Ordering::Release);
        p.snapshot_index.store(st.snapshot_index, Ordering::Release);
        p.log_bytes.store(self.log_bytes.total(), Ordering::Release);
        p.leader_ready.store(ready, Ordering::Release);
        let deadline = if ready && st.lease_until_tick > st.now_tick {
            // Nominal real time of the current tick plus the remaining lease.
            let nominal_now = self.ticks_done - self.tick_offset;
            let ticks = nominal_now + (st.lease_until_tick - st.now_tick);
            (self.tick.as_nanos() as u64).saturating_mul(ticks)
        } else {
            0
        };
        p.lease_deadline_ns.store(deadline, Ordering::Release);

        if self.last_membership.as_ref() != Some(&st.membership) {
            let mut voters = st.membership.voters();
            let sole = voters.next() == Some(self.shared.id) && voters.next().is_none();
            p.sole_voter.store(sole, Ordering::Release);
            let view = Arc::new(MembersView::from_membership(&st.membership));
            let mut peers = view.peer_map(self.shared.id);
            if st.membership.members.is_empty() {
                // A joining node: reach the existing cluster through the
                // configured members until the leader tells us the membership.
                for m in &self.shared.config.members {
                    if m.id != self.shared.id {
                        peers.insert(m.id, m.peer_addr.clone());
                    }
                }
            }
            // Only a node with no membership yet accepts unknown senders.
            self.transport.set_joining(st.membership.members.is_empty());
            self.transport.set_peers(peers);
            *p.members.write().expect("poisoned") = view.clone();
            self.shared.members_tx.send_replace(view.list.clone());
            self.last_membership = Some(st.membership.clone());
            // The leader's client address may have become known.
            self.last_leader = (u64::MAX, u64::MAX);
        }
        let leader = (st.leader.unwrap_or(0), st.term);
        if leader != self.logged_leader {
            self.log_leader_change(leader, st.role);
        }
        if leader != self.last_leader {
            self.last_leader = leader;
            let view = self.shared.members_view();
            self.shared.leader_tx.send_replace(LeaderInfo {
                id: leader.0,
                client_addr: if leader.0 == 0 {
                    String::new()
                } else {
                    view.client_addr(leader.0).unwrap_or_default()
                },
                term: leader.1,
            });
        }
    }

    /// Stops the node: fails queued requests, stops and joins the WAL and
    /// apply threads (the WAL syncs what it has), closes watches.
    fn stop(&mut self, error: Option<String>) {
        let shared = self.shared.clone();
        let failed = error.is_some();
        if let Some(e) = &error {
            tracing::error!(error = %e, node = shared.id, "node stopping after a fatal error");
            *shared.failure.lock().expect("poisoned") = Some(e.clone());
            shared.state.store(STATE_FAILED, Ordering::Release);
        } else {
            let _ = shared.state.compare_exchange(
                STATE_RUNNING,
                STATE_STOPPING,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        let err = || match &error {
            Some(e) => Error::Storage(format!("node stopped after a storage failure: {e}")),
            None => Error::ShuttingDown("the node is shutting down".into()),
        };
        for w in self.batch_waiters.drain(..).flatten() {
            w.complete(Err(err()));
        }
        for w in self.reads.drain(..) {
            w.complete(Err(err()));
        }
        for (_, ws) in self.read_batches.drain() {
            for w in ws {
                w.complete(Err(err()));
            }
        }
        for tx in self.snapshot_waiters.drain(..) {
            let _ = tx.send(Err(err()));
        }
        while let Ok(i) = self.rx.try_recv() {
            if i.is_client() {
                shared.queued.fetch_sub(1, Ordering::AcqRel);
            }
            i.fail(err());
        }
        let _ = self.wal_tx.send(WalTask::Shutdown);
        self.register_waiters(); // the apply thread fails them on shutdown
        let _ = self.apply_tx.send(ApplyTask::Shutdown);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        shared.hub.close_all(if failed {
            "the node failed"
        } else {
            "the node is shutting down"
        });
        if !failed {
            shared.state.store(STATE_STOPPED, Ordering::Release);
        }
        shared
            .published
            .role
            .store(ROLE_FOLLOWER, Ordering::Release);
        shared
            .published
            .leader_ready
            .store(false, Ordering::Release);
        shared
            .published
            .lease_deadline_ns
            .store(0, Ordering::Release);
        // Close the state machine: wait (bounded) for in-flight reads to
        // drop their references so sled flushes and releases its lock.
        let sm = shared.sm.write().expect("poisoned").take();
        if let Some(sm) = sm {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Arc::strong_count(&sm) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if Arc::strong_count(&sm) > 1 {
                tracing::warn!("state machine still referenced at shutdown");
            }
            if failed {
                close_failed_state_machine(sm);
            } else {
                drop(sm);
            }
        }
    }
}

/// How long a stopping node waits for a failed state machine to close.
const FAILED_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Closes the state machine of a node that stopped after a storage failure
/// without letting it block the stop: sled flushes when its last handle is
/// dropped, and after an I/O error (a full disk) that flush can wait
/// forever. The drop runs on its own thread; after [`FAILED_CLOSE_WAIT`]
/// the node stops anyway (the WAL, not sled, is the durable record, and the
/// next start replays it).
fn close_failed_state_machine(sm: Arc<dyn d_engine_storage::sm::StateMachine>) {
    let (done_tx, done_rx) = std_mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("dengine-sm-close".into())
        .spawn(move || {
            drop(sm);
            let _ = done_tx.send(());
        });
    match spawned {
        Ok(_) => {
            if done_rx.recv_timeout(FAILED_CLOSE_WAIT).is_err() {
                tracing::warn!(
                    "the failed state machine did not close within {FAILED_CLOSE_WAIT:?} \
                     (sled flushing to a failed disk); stopping without waiting for it"
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot spawn a thread to close the state machine; it was closed on this thread")
        }
    }
}
