//! The consensus loop: one dedicated thread that owns the [`RaftNode`].
//!
//! Each iteration: wait for an input or the next tick; drain every waiting
//! input (coalescing proposals into one `propose` batch); catch up on
//! ticks; hand the core one ReadIndex request if a linearizable reader asked
//! for one (`runtime/read_rounds.rs`: readers wait on a published
//! watermark, not in the loop); then execute every
//! pending `Ready` through [`super::host::process_ready`] (the contract's
//! order, shared with the simulator) with this loop's effects
//! (`core_loop/ready.rs`):
//!
//! 1. install a received snapshot (synchronously: state machine, then WAL reset);
//! 2. persist a changed term/vote synchronously (a commit-only change is
//!    deferred: it is an optimisation, a node may restart with a lower commit);
//! 3. hand new entries to the WAL thread (it reports `log_persisted` after
//!    its group-commit fsync);
//! 4. send messages — so followers receive entries while the leader's own
//!    fsync is still running;
//! 5. hand committed entries to the apply thread;
//! 6. publish the ReadIndex batches the core confirmed or refused (the
//!    waiting readers wake, wait for their read index to be applied, read);
//! 7. start snapshot builds and transfers: when the core asks for one
//!    (`snapshot.threshold_entries`), or when the committed log since the
//!    latest snapshot holds more than `snapshot.threshold_bytes` of payload
//!    (`core_loop/snapshot.rs`).
//!
//! After each iteration it publishes its view for the off-loop read paths
//! (`core_loop/publish.rs`). A storage failure, a failed thread or a broken
//! host contract ends the loop with a [`NodeFailure`]; the node then stops
//! failed (`core_loop/stop.rs`), as after a panic.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use d_engine_api::Error;
use d_engine_core::{
    Index, Membership, Message, MessageBody, RaftNode, ReadConsistency, ReadId, Role, SnapshotMeta,
};
use d_engine_storage::command::{Command, Op};
use d_engine_storage::data_dir::DataDir;
use d_engine_storage::hard_state::HardStateStore;
use d_engine_storage::snapshot::SnapshotStore;
use tokio::sync::oneshot;

use super::apply::ApplyTask;
use super::failure::NodeFailure;
use super::input::ProposeReply;
use super::read_rounds::ReadBatches;
use super::shared::*;
use super::wal_thread::WalTask;
use crate::transport::Transport;

mod leases;
mod publish;
mod ready;
mod snapshot;
mod stop;

pub(crate) use snapshot::LogBytes;

/// Most inputs handled before the loop executes a `Ready` (bounds latency).
const MAX_DRAIN: usize = 16 * 1024;

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

    /// The next ReadIndex batch id (ids start at 1 and only grow).
    pub(crate) next_read_id: ReadId,
    /// What this loop last published on the read watermark (so it touches
    /// the watch channel only when something changed).
    pub(crate) read_batches: ReadBatches,

    /// Ticks: the core's tick `k` is never processed before real time
    /// `epoch + (k - tick_offset) * tick` (catch-up, never early), which
    /// makes the published lease deadline conservative.
    pub(crate) tick: Duration,
    pub(crate) ticks_done: u64,
    pub(crate) tick_offset: u64,

    pub(crate) next_expire: Instant,
    /// When the leader next looks for expired leases (`core_loop/leases.rs`).
    pub(crate) next_lease_check: Instant,
    /// Revokes of expired leases proposed and not yet answered.
    pub(crate) lease_revokes: Vec<(u64, oneshot::Receiver<ProposeReply>)>,
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
    /// `ticks_done` when the followers' match indexes were last published
    /// to the metrics.
    pub(crate) metrics_tick: u64,

    // Per-iteration batches (kept to reuse their allocations).
    pub(crate) batch: Vec<Bytes>,
    pub(crate) batch_bytes: usize,
    pub(crate) batch_waiters: Vec<Option<ProposalWaiter>>,
    /// Waiters of proposed entries not yet handed to the apply thread: they
    /// go with the next `Apply` (or `Install`, or the shutdown), in the same
    /// wake-up of the apply thread, and always before the entries they wait
    /// for can be applied.
    pub(crate) unregistered: Vec<(Index, u64, ProposalWaiter)>,
    /// ReadIndex batches handed to the core and not answered yet, oldest
    /// first (the core answers them in order).
    pub(crate) reads: Vec<ReadId>,
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
            *shared.failure.lock().expect("poisoned") = Some(NodeFailure::Thread(
                "the consensus loop panicked (see the log)".into(),
            ));
            shared.state.store(STATE_FAILED, Ordering::Release);
            shared.hub.close_all("the node failed");
            shared.sm.write().expect("poisoned").take();
        }
        shared.stopped_tx.send_replace(true);
    }

    /// Before the first input: a lone voter elects itself at once instead of
    /// waiting a randomized election timeout (nobody else can compete).
    pub(crate) fn fast_single_node_election(&mut self) -> Result<(), NodeFailure> {
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

    fn main_loop(&mut self) -> Result<(), NodeFailure> {
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
            self.maybe_expire_leases();
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
    fn handle(&mut self, input: Input) -> Result<bool, NodeFailure> {
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
            // Only a wake-up: `flush_reads` looks at the flag.
            Input::ReadRound => {}
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
            // Boundary: the WAL and apply threads report failures as text.
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

    /// If a linearizable reader asked since the last iteration, hands the
    /// core one ReadIndex request for all of them (the batch id is
    /// published before the core sees it: `runtime/read_rounds.rs` says why
    /// that order makes the reads linearizable). The core starts a
    /// heartbeat round for it at the next `ready()`, or when the round in
    /// flight is confirmed.
    fn flush_reads(&mut self) {
        let id = self.next_read_id;
        if !self.shared.published.reads.take_wanted(id) {
            return;
        }
        self.next_read_id += 1;
        self.reads.push(id);
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
        self.next_expire = now + self.shared.config.ttl.expire_interval();
        if !self.shared.published.leader_ready.load(Ordering::Acquire) {
            return;
        }
        let now_ms = now_ms();
        let due = match self
            .shared
            .sm()
            .map(|sm| sm.into_kv().map(|kv| kv.earliest_deadline()))
        {
            Ok(Some(Ok(Some(deadline)))) => deadline <= now_ms,
            // No keys (an application machine), or none with a TTL.
            Ok(None) | Ok(Some(Ok(None))) => false,
            // Let the apply path report a failing state machine.
            Ok(Some(Err(_))) | Err(_) => true,
        };
        if !due {
            return;
        }
        let cmd = Command::new(Op::Expire { now_ms }).encode();
        self.batch_bytes += cmd.len();
        self.batch.push(cmd);
        self.batch_waiters.push(None);
    }
}
