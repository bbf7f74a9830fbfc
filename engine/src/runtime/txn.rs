//! Transactions (`txn`) and puts attached to a lease (`put_with_lease`).
//!
//! Contracts (writes, see `writes.rs` for admission, leadership and
//! timeouts):
//! - a transaction is checked before it is proposed: at most
//!   `MAX_TXN_OPS` (128) compares and ops per branch, every key and value
//!   within `limits.*`, every range non-empty, range limits at most
//!   `MAX_TXN_RANGE_LIMIT`, a put's lease and TTL not both, and all its
//!   keys and values together at most `limits.max_request_bytes`; each
//!   refusal is `InvalidArgument` naming the field (`success[3].put.key`);
//! - it is one log entry: the compares and the branch that runs are
//!   applied atomically at its revision; the call returns once the entry
//!   is committed and applied. The storage quota admits the bytes the
//!   larger branch's puts store;
//! - a put naming a lease that does not exist fails the whole transaction
//!   with `LeaseNotFound` (nothing applied);
//! - a retry with the same write id of a transaction already applied gets
//!   its outcome back with `replayed` set (its writes happened once; range
//!   results are not remembered and come back empty).

use bytes::Bytes;
use d_engine_api::{
    Compare as ApiCompare, CompareOp as ApiCompareOp, CompareTarget as ApiCompareTarget,
    DeleteRangeOutcome, RangePage, Txn as ApiTxn, TxnOp as ApiTxnOp, TxnOpResult as ApiResult,
    TxnOutcome,
};
use d_engine_storage::command::{
    Compare, CompareOp, CompareTarget, RangeSpec, Txn, TxnOp, MAX_TXN_OPS, MAX_TXN_RANGE_LIMIT,
};
use d_engine_storage::sm::TxnOpResult;

use super::handle::NodeHandle;
use super::ranges::{key_after, wire_end};
use super::types::{to_client_kv, ApplyResult, Error, Op, Result, WriteId};

/// A transaction's outcome in the state machine's types (sharing its
/// bytes).
#[derive(Debug)]
pub(crate) struct SharedTxn {
    pub(crate) succeeded: bool,
    pub(crate) results: Vec<TxnOpResult>,
    pub(crate) revision: u64,
    pub(crate) replayed: bool,
}

/// The error for a lease that does not exist.
pub(crate) fn lease_not_found(id: u64) -> Error {
    Error::LeaseNotFound(format!(
        "lease {id} does not exist (never granted, revoked, or expired); grant a new lease"
    ))
}

fn compare(c: ApiCompare) -> Compare {
    Compare {
        key: Bytes::from(c.key),
        op: match c.op {
            ApiCompareOp::Equal => CompareOp::Equal,
            ApiCompareOp::NotEqual => CompareOp::NotEqual,
            ApiCompareOp::Less => CompareOp::Less,
            ApiCompareOp::Greater => CompareOp::Greater,
        },
        target: match c.target {
            ApiCompareTarget::Value(v) => CompareTarget::Value(Bytes::from(v)),
            ApiCompareTarget::Version(x) => CompareTarget::Version(x),
            ApiCompareTarget::CreateRevision(x) => CompareTarget::CreateRevision(x),
            ApiCompareTarget::ModRevision(x) => CompareTarget::ModRevision(x),
            ApiCompareTarget::Lease(x) => CompareTarget::Lease(x),
        },
    }
}

impl NodeHandle {
    fn txn_op(&self, op: ApiTxnOp, field: &str, bytes: &mut usize) -> Result<TxnOp> {
        let l = self.limits();
        Ok(match op {
            ApiTxnOp::Range { key, options } => {
                let key = Bytes::from(key);
                let end = wire_end(&key, &options.end);
                *bytes += key.len() + end.len();
                let range = self.key_range(
                    key,
                    end,
                    &format!("{field}.range.key"),
                    &format!("{field}.range.range_end"),
                )?;
                if options.limit > MAX_TXN_RANGE_LIMIT {
                    return Err(Error::InvalidArgument(format!(
                        "{field}.range.limit is {}; the limit inside a transaction is \
                         {MAX_TXN_RANGE_LIMIT}; read further pages with Range instead",
                        options.limit
                    )));
                }
                TxnOp::Range(RangeSpec {
                    range,
                    limit: options.limit,
                    keys_only: options.keys_only,
                    count_only: options.count_only,
                })
            }
            ApiTxnOp::Put { key, value, lease } => {
                l.key(&format!("{field}.put.key"), &key)?;
                l.value(&format!("{field}.put.value"), &value)?;
                *bytes += key.len() + value.len();
                TxnOp::Put {
                    key: Bytes::from(key),
                    value: Bytes::from(value),
                    expires_at_ms: None,
                    lease,
                }
            }
            ApiTxnOp::DeleteRange { key, end, prev_kv } => {
                let key = Bytes::from(key);
                let end = wire_end(&key, &end);
                *bytes += key.len() + end.len();
                TxnOp::DeleteRange {
                    range: self.key_range(
                        key,
                        end,
                        &format!("{field}.delete_range.key"),
                        &format!("{field}.delete_range.range_end"),
                    )?,
                    prev_kv,
                }
            }
        })
    }

    /// Checks a transaction (see the module docs) and converts it to the
    /// state machine's form.
    pub(crate) fn txn_to_op(&self, t: ApiTxn) -> Result<Txn> {
        for (what, len) in [
            ("compare", t.compares.len()),
            ("success", t.success.len()),
            ("failure", t.failure.len()),
        ] {
            if len > MAX_TXN_OPS {
                return Err(Error::InvalidArgument(format!(
                    "{what} has {len} entries; the limit is {MAX_TXN_OPS} per transaction; \
                     split it into several transactions"
                )));
            }
        }
        let l = self.limits();
        let mut bytes = 0usize;
        let mut compares = Vec::with_capacity(t.compares.len());
        for (i, c) in t.compares.into_iter().enumerate() {
            l.key(&format!("compare[{i}].key"), &c.key)?;
            bytes += c.key.len();
            if let ApiCompareTarget::Value(v) = &c.target {
                l.value(&format!("compare[{i}].value"), v)?;
                bytes += v.len();
            }
            compares.push(compare(c));
        }
        let mut branch = |name: &str, ops: Vec<ApiTxnOp>| -> Result<Vec<TxnOp>> {
            ops.into_iter()
                .enumerate()
                .map(|(i, op)| self.txn_op(op, &format!("{name}[{i}]"), &mut bytes))
                .collect()
        };
        let success = branch("success", t.success)?;
        let failure = branch("failure", t.failure)?;
        let max = self.shared.config.limits.max_request_bytes;
        if bytes > max {
            return Err(Error::InvalidArgument(format!(
                "the transaction's keys and values add up to {bytes} bytes; the limit is {max} \
                 bytes (limits.max_request_bytes); split it into several transactions"
            )));
        }
        Ok(Txn {
            compares,
            success,
            failure,
        })
    }

    /// Runs `txn` atomically in one log entry (see the module docs).
    pub async fn txn(&self, txn: ApiTxn, write_id: Option<WriteId>) -> Result<TxnOutcome> {
        let t = self.txn_shared(txn, write_id).await?;
        let revision = t.revision;
        let results = t
            .results
            .into_iter()
            .map(|r| match r {
                TxnOpResult::Range(r) => ApiResult::Range(RangePage {
                    next_key: if r.more {
                        r.kvs.last().map(|kv| key_after(&kv.key).to_vec())
                    } else {
                        None
                    },
                    kvs: r.kvs.iter().map(to_client_kv).collect(),
                    more: r.more,
                    count: r.count,
                    revision,
                }),
                TxnOpResult::Put { .. } => ApiResult::Put { revision },
                TxnOpResult::DeleteRange {
                    deleted,
                    prev_kvs,
                    truncated,
                } => ApiResult::DeleteRange(DeleteRangeOutcome {
                    deleted,
                    prev_kvs: prev_kvs.iter().map(to_client_kv).collect(),
                    prev_kvs_truncated: truncated,
                    revision,
                }),
            })
            .collect();
        Ok(TxnOutcome {
            succeeded: t.succeeded,
            results,
            revision,
            replayed: t.replayed,
        })
    }

    /// [`NodeHandle::txn`] answering in the state machine's types.
    pub(crate) async fn txn_shared(
        &self,
        txn: ApiTxn,
        write_id: Option<WriteId>,
    ) -> Result<SharedTxn> {
        let op = Op::Txn(Box::new(self.txn_to_op(txn)?));
        let out = self.propose(Self::command(op, write_id)).await?;
        match out.result {
            ApplyResult::Txn { succeeded, results } => Ok(SharedTxn {
                succeeded,
                results,
                revision: out.revision,
                replayed: out.revision != out.index,
            }),
            ApplyResult::LeaseNotFound { id } => Err(lease_not_found(id)),
            other => Err(self.unexpected(other)),
        }
    }

    /// Stores `value` under `key` attached to lease `lease` (non-zero): the
    /// key is deleted when the lease expires or is revoked. A write (see
    /// `writes.rs`); `LeaseNotFound` if the lease does not exist when the
    /// put applies (nothing is stored then). Returns the write's revision.
    pub async fn put_with_lease(
        &self,
        key: Bytes,
        value: Bytes,
        lease: u64,
        write_id: Option<WriteId>,
    ) -> Result<u64> {
        if lease == 0 {
            return Err(Error::InvalidArgument(
                "lease is 0 (no lease); use put for a key without a lease".into(),
            ));
        }
        let op = Op::Put {
            key,
            value,
            expires_at_ms: None,
            lease,
        };
        let out = self.propose(Self::command(op, write_id)).await?;
        match out.result {
            ApplyResult::Put { .. } => Ok(out.revision),
            ApplyResult::LeaseNotFound { id } => Err(lease_not_found(id)),
            other => Err(self.unexpected(other)),
        }
    }
}
