//! The read path: `get`, `get_multi`, `scan_prefix`, and the read barrier
//! each consistency level needs.
//!
//! Contracts:
//! - `Linearizable` (default): leader only, through a batched ReadIndex
//!   round of the consensus loop; served once applied >= the read index.
//!   The reader sends nothing per read: it waits on the loop's published
//!   watermark for a batch registered after it arrived
//!   (`runtime/read_rounds.rs`), and at most one reader per loop iteration
//!   wakes the loop. A leader that is the only voter (and has committed an
//!   entry of its term) serves it without a round;
//! - `Lease`: leader only, off the loop while the published lease holds and
//!   the leader has committed an entry of its term; else as `Linearizable`;
//! - `Eventual`: any node, the local state machine as it is;
//! - a non-leader refuses leader-only reads with `NotLeader`/`NoLeader`; a
//!   full read queue is `Overloaded`; no answer within
//!   `queues.request_timeout_ms` is `Timeout`;
//! - the crate-internal `*_shared` variants share the state machine's bytes
//!   and, with a budget, stop at it without reading or copying further.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use d_engine_storage::sm::KeyValue as SmKv;

use super::handle::NodeHandle;
use super::input::{take_slot, Input};
use super::shared::now_ms;
use super::types::{to_client_kv, Consistency, Error, KeyValue, Result};
use super::validate::{duplicate_key_message, first_duplicate};

/// Response bytes one pair costs in a read's byte budget: its key, value
/// and the protobuf framing of a `KeyValue` with every field set.
pub(crate) fn read_cost(kv: &SmKv) -> usize {
    kv.key.len() + kv.value.len() + 64
}

/// Response bytes an absent key costs in `get_multi`'s budget.
pub(crate) const ABSENT_COST: usize = 4;

/// The outcome of [`NodeHandle::get_multi_shared`].
#[derive(Debug)]
pub(crate) enum MultiRead {
    /// One entry per requested key, in request order.
    Complete(Vec<Option<SmKv>>),
    /// Reading stopped at the budget: the first `read` keys already cost
    /// `bytes`.
    OverBudget { read: usize, bytes: usize },
}

/// The outcome of [`NodeHandle::scan_prefix_shared`].
#[derive(Debug)]
pub(crate) struct SharedScan {
    pub(crate) kvs: Vec<SmKv>,
    /// More pairs match than were returned (limit or budget).
    pub(crate) more: bool,
}

fn sm_err(e: d_engine_storage::sm::SmError) -> Error {
    Error::Storage(e.to_string())
}

impl NodeHandle {
    /// Waits until this node may serve a read with `consistency`.
    pub(crate) async fn read_barrier(&self, consistency: Consistency) -> Result<()> {
        self.shared.check_running()?;
        match consistency {
            Consistency::Eventual => Ok(()),
            Consistency::Lease if self.lease_valid() => self.wait_published_commit().await,
            // The only voter confirms its own leadership: a ReadIndex round
            // would ask a quorum of one, itself, so it is skipped.
            Consistency::Lease | Consistency::Linearizable if self.sole_voter_leader() => {
                self.wait_published_commit().await
            }
            Consistency::Lease | Consistency::Linearizable => {
                if !self.shared.is_leader() {
                    return Err(self.shared.leader_hint_error());
                }
                let slot = take_slot(
                    &self.shared.pending_reads,
                    self.shared.config.queues.max_pending_reads,
                    "linearizable reads",
                    "queues.max_pending_reads",
                )
                .inspect_err(|_| self.shared.metrics.overloaded("queues.max_pending_reads"))?;
                let started = std::time::Instant::now();
                let index = self.read_index_round().await;
                drop(slot);
                let index = index?;
                self.shared
                    .metrics
                    .read_index_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.wait_applied(index).await
            }
        }
    }

    /// Waits for a ReadIndex batch registered after this call to be
    /// confirmed, and returns its read index (the protocol and why it is
    /// linearizable: `runtime/read_rounds.rs`).
    async fn read_index_round(&self) -> Result<u64> {
        let progress = &self.shared.published.reads;
        let mut rx = progress.subscribe();
        let after = progress.arrive();
        if progress.want() {
            self.shared.send_internal(Input::ReadRound);
        }
        let waited = async {
            rx.wait_for(|w| w.confirmed > after || w.refused > after)
                .await
                .map(|w| *w)
        };
        let outcome = tokio::time::timeout(self.shared.config.request_timeout(), waited).await;
        match outcome {
            Ok(Ok(w)) if w.confirmed > after => Ok(w.index),
            // Refused: the node lost leadership (or stopped) meanwhile.
            Ok(Ok(_)) => {
                self.shared.check_running()?;
                Err(self.shared.leader_hint_error())
            }
            Ok(Err(_)) => Err(self.shared.stopped_error()),
            Err(_) => Err(Error::Timeout(format!(
                "the linearizable read was not confirmed by a quorum within \
                 queues.request_timeout_ms = {} ms",
                self.shared.config.queues.request_timeout_ms
            ))),
        }
    }

    /// Waits until the published commit index is applied. Every write
    /// acknowledged before this call is at or below it (a write is
    /// acknowledged only once applied, and applied never passes commit).
    async fn wait_published_commit(&self) -> Result<()> {
        let commit = self.shared.published.commit.load(Ordering::Acquire);
        self.wait_applied(commit).await
    }

    /// True if this node leads a configuration in which it is the only
    /// voter, and has committed an entry of its term (so its commit index
    /// covers every earlier term's entries).
    pub(crate) fn sole_voter_leader(&self) -> bool {
        self.shared.is_leader()
            && self.shared.published.leader_ready.load(Ordering::Acquire)
            && self.shared.published.sole_voter.load(Ordering::Acquire)
    }

    /// True if this node leads under a lease that still holds now.
    pub(crate) fn lease_valid(&self) -> bool {
        if !self.shared.is_leader() || !self.shared.published.leader_ready.load(Ordering::Acquire) {
            return false;
        }
        let deadline = self
            .shared
            .published
            .lease_deadline_ns
            .load(Ordering::Acquire);
        deadline != 0 && (self.shared.epoch.elapsed().as_nanos() as u64) < deadline
    }

    async fn wait_applied(&self, index: u64) -> Result<()> {
        if self.shared.applied.load(Ordering::Acquire) >= index {
            return Ok(());
        }
        let mut rx = self.shared.applied_rx.clone();
        let fut = async move { rx.wait_for(|a| *a >= index).await.map(|_| ()) };
        match tokio::time::timeout(self.shared.config.request_timeout(), fut).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(self.shared.stopped_error()),
            Err(_) => Err(Error::Timeout(format!(
                "the state machine did not reach index {index} within {} ms",
                self.shared.config.queues.request_timeout_ms
            ))),
        }
    }

    /// Reads one key.
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>> {
        Ok(self
            .get_shared(key.into(), consistency)
            .await?
            .as_ref()
            .map(to_client_kv))
    }

    /// Reads one key; the value shares the state machine's bytes.
    pub(crate) async fn get_shared(&self, key: Bytes, c: Consistency) -> Result<Option<SmKv>> {
        self.validate_key(&key)?;
        self.read_barrier(c).await?;
        self.shared.kv()?.get(&key, now_ms()).map_err(sm_err)
    }

    /// Reads several keys at one point in time (at most
    /// `limits.max_get_multi_keys`, each at most once: a repeated key is
    /// refused with `InvalidArgument` naming it).
    pub async fn get_multi(
        &self,
        keys: Vec<Bytes>,
        consistency: Consistency,
    ) -> Result<Vec<Option<KeyValue>>> {
        match self.get_multi_shared(keys, consistency, None).await? {
            MultiRead::Complete(kvs) => {
                Ok(kvs.iter().map(|kv| kv.as_ref().map(to_client_kv)).collect())
            }
            MultiRead::OverBudget { .. } => Err(Error::Internal(
                "get_multi without a budget stopped at a budget".into(),
            )),
        }
    }

    /// Reads several keys at one point in time, sharing the state
    /// machine's bytes. Keys must be distinct (a repeated key is refused
    /// with `InvalidArgument` naming both positions and the key). With a
    /// `budget`, reading stops as soon as the pairs read pass it (counted
    /// by [`read_cost`]): nothing past the budget is read or copied.
    pub(crate) async fn get_multi_shared(
        &self,
        keys: Vec<Bytes>,
        c: Consistency,
        budget: Option<usize>,
    ) -> Result<MultiRead> {
        let max = self.shared.config.limits.max_get_multi_keys;
        if keys.len() > max {
            return Err(Error::InvalidArgument(format!(
                "{} keys requested; the limit is limits.max_get_multi_keys = {max}",
                keys.len()
            )));
        }
        for k in &keys {
            self.validate_key(k)?;
        }
        if let Some((first, again)) = first_duplicate(&keys) {
            return Err(Error::InvalidArgument(duplicate_key_message(
                &keys, first, again,
            )));
        }
        self.read_barrier(c).await?;
        let now = now_ms();
        let sm = self.shared.kv()?;
        let mut out = Vec::with_capacity(keys.len());
        let mut bytes = 0usize;
        for k in &keys {
            let kv = sm.get(k, now).map_err(sm_err)?;
            bytes += kv.as_ref().map_or(ABSENT_COST, read_cost);
            if budget.is_some_and(|b| bytes > b) {
                return Ok(MultiRead::OverBudget {
                    read: out.len() + 1,
                    bytes,
                });
            }
            out.push(kv);
        }
        Ok(MultiRead::Complete(out))
    }

    /// Up to `limit` live pairs under `prefix` in key order (`limit` 0 =
    /// `limits.max_scan_limit`, larger limits are capped to it), sharing
    /// the state machine's bytes. With a `budget`, the page ends before the
    /// pair that would pass it (by [`read_cost`]; the first pair is always
    /// returned) and `more` is set: nothing past the budget is read or
    /// copied.
    pub(crate) async fn scan_prefix_shared(
        &self,
        prefix: Bytes,
        limit: u32,
        c: Consistency,
        budget: Option<usize>,
    ) -> Result<SharedScan> {
        self.limits().prefix("prefix", &prefix)?;
        let max = self.shared.config.limits.max_scan_limit;
        let limit = if limit == 0 { max } else { limit.min(max) } as usize;
        self.read_barrier(c).await?;
        let mut kvs = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        self.shared
            .kv()?
            .scan_prefix_each(&prefix, now_ms(), &mut |kv| {
                let n = read_cost(&kv);
                let over_budget = budget.is_some_and(|b| bytes + n > b) && !kvs.is_empty();
                if kvs.len() == limit || over_budget {
                    more = true;
                    return false;
                }
                bytes += n;
                kvs.push(kv);
                true
            })
            .map_err(sm_err)?;
        Ok(SharedScan { kvs, more })
    }
}
