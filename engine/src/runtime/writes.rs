//! The write path: `put`, `delete`, `compare_and_swap` and raw `propose`.
//!
//! Contracts:
//! - a write is validated (`InvalidArgument` naming the limit), refused at
//!   once on a non-leader (`NotLeader` with the leader's client address, or
//!   `NoLeader` during an election), admitted against the storage quota
//!   (`NoSpace`), `queues.max_pending_proposals` and
//!   `queues.input_capacity` (`Overloaded`), then queued for the loop;
//! - it succeeds iff the entry applied at its index has its term (then the
//!   returned revision is that index, or for a deduplicated retry the
//!   original's); another entry there fails it with a retryable
//!   `NotLeader`/`NoLeader`;
//! - no answer within `queues.request_timeout_ms` is `Timeout`: the outcome
//!   is unknown (retry with the same [`WriteId`] to make it safe).

use std::time::Duration;

use bytes::Bytes;
use d_engine_storage::command::TxnOp;
use d_engine_storage::sm::logical_kv_bytes;
use tokio::sync::oneshot;

use super::handle::NodeHandle;
use super::input::{Input, ProposalWaiter};
use super::shared::now_ms;
use super::types::{
    to_client_kv, ApplyResult, CasOutcome, Command, DeleteOutcome, Error, Op, ProposeOutcome,
    Result, WriteId,
};

impl NodeHandle {
    fn deadline(ttl: Option<Duration>) -> Result<Option<u64>> {
        match ttl {
            None => Ok(None),
            Some(d) if d.is_zero() => Err(Error::InvalidArgument(
                "ttl must be > 0 (omit it for a key that never expires)".into(),
            )),
            Some(d) => {
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                Ok(Some(now_ms().saturating_add(ms.max(1))))
            }
        }
    }

    /// The logical bytes a write stores if it succeeds (see
    /// [`d_engine_storage::sm::StateMachine::data_bytes`]); 0 for one that
    /// stores nothing (a delete, a CAS that deletes, expiry).
    fn stored_bytes(op: &Op) -> u64 {
        let puts = |ops: &[TxnOp]| -> u64 {
            ops.iter()
                .map(|o| match o {
                    TxnOp::Put { key, value, .. } => logical_kv_bytes(key.len(), value.len()),
                    TxnOp::Range(_) | TxnOp::DeleteRange { .. } => 0,
                })
                .sum()
        };
        match op {
            // Either branch may run: admit the larger.
            Op::Txn(t) => puts(&t.success).max(puts(&t.failure)),
            Op::DeleteRange { .. } | Op::LeaseGrant { .. } | Op::LeaseRevoke { .. } => 0,
            Op::Put { key, value, .. }
            | Op::CompareAndSwap {
                key,
                new_value: Some(value),
                ..
            } => logical_kv_bytes(key.len(), value.len()),
            Op::CompareAndSwap {
                new_value: None, ..
            }
            | Op::Delete { .. }
            | Op::Expire { .. }
            | Op::Auth(_) => 0,
        }
    }

    /// Proposes a raw state-machine command (validated first).
    ///
    /// Admits a write: the node runs, the op is valid, this node leads, and
    /// the write fits in the storage quota (checked here, on the leader,
    /// only: once in the log a write is applied on every replica).
    pub async fn propose(&self, cmd: Command) -> Result<ProposeOutcome> {
        self.shared.check_running()?;
        self.validate_op(&cmd.op)?;
        if !self.shared.is_leader() {
            return Err(self.shared.leader_hint_error());
        }
        if let Err(e) = self
            .shared
            .quota
            .admit(Self::stored_bytes(&cmd.op), self.shared.id)
        {
            return Err(match (e, &cmd.client) {
                // Admission cannot tell a retry from a first attempt: an
                // earlier attempt with the same write id may have been
                // applied before the quota was reached.
                (Error::NoSpace(m), Some(c)) => Error::NoSpace(format!(
                    "{m}. (This request, write id {}/{}, was refused; if it retries an \
                     attempt whose outcome was unknown, that attempt may have been applied: \
                     read the key to find out.)",
                    c.client_id, c.seq
                )),
                (e, _) => e,
            });
        }
        let slot = self.shared.proposal_slot()?;
        let started = std::time::Instant::now();
        let (tx, rx) = oneshot::channel();
        self.shared.send_client(Input::Propose {
            cmd: cmd.encode(),
            waiter: ProposalWaiter::new(tx, slot),
        })?;
        let out = self.shared.wait(rx, "the write").await;
        let m = &self.shared.metrics;
        match &out {
            Ok(_) => m.proposals_ok.inc(),
            Err(_) => m.proposals_failed.inc(),
        }
        m.proposal_seconds.observe(started.elapsed().as_secs_f64());
        out
    }

    pub(super) fn command(op: Op, write_id: Option<WriteId>) -> Command {
        match write_id {
            Some(w) if w.client_id != 0 => {
                Command::with_user_client(op, &w.user, w.client_id, w.seq)
            }
            _ => Command::new(op),
        }
    }

    fn rejected(reason: String) -> Error {
        Error::InvalidArgument(reason)
    }

    /// Stores `value` under `key` (with an optional TTL measured from now);
    /// returns the write's revision.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
        write_id: Option<WriteId>,
    ) -> Result<u64> {
        let op = Op::Put {
            key: key.into(),
            value: value.into(),
            expires_at_ms: Self::deadline(ttl)?,
            lease: 0,
        };
        let out = self.propose(Self::command(op, write_id)).await?;
        match out.result {
            ApplyResult::Put { .. } => Ok(out.revision),
            other => Err(self.unexpected(other)),
        }
    }

    /// Deletes `key`.
    pub async fn delete(
        &self,
        key: impl Into<Bytes>,
        write_id: Option<WriteId>,
    ) -> Result<DeleteOutcome> {
        let out = self
            .propose(Self::command(Op::Delete { key: key.into() }, write_id))
            .await?;
        match out.result {
            ApplyResult::Delete { existed } => Ok(DeleteOutcome {
                deleted: existed,
                revision: out.revision,
            }),
            other => Err(self.unexpected(other)),
        }
    }

    /// If the value equals `expected` (`None`: key absent), store `new_value`
    /// (`None`: delete). `ttl` applies to the new value.
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new_value: Option<Bytes>,
        ttl: Option<Duration>,
        write_id: Option<WriteId>,
    ) -> Result<CasOutcome> {
        let op = Op::CompareAndSwap {
            key: key.into(),
            expected,
            new_value,
            expires_at_ms: Self::deadline(ttl)?,
        };
        let out = self.propose(Self::command(op, write_id)).await?;
        match out.result {
            ApplyResult::CompareAndSwap { succeeded, current } => Ok(CasOutcome {
                succeeded,
                current: current.as_ref().map(to_client_kv),
                revision: out.revision,
            }),
            other => Err(self.unexpected(other)),
        }
    }

    /// The error for an apply result that does not answer the request.
    pub(super) fn unexpected(&self, r: ApplyResult) -> Error {
        match r {
            ApplyResult::Rejected { reason } => Self::rejected(reason),
            ApplyResult::DuplicateExpired { client_id, seq } => Error::InvalidArgument(format!(
                "write (client_id {client_id}, seq {seq}) is a retry older than the \
                 deduplication window; it was not applied again and its result is no longer \
                 known"
            )),
            other => Error::Internal(format!("unexpected apply result {other:?}")),
        }
    }
}
