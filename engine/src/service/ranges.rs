//! `Kv.Range`, `Kv.DeleteRange` and `Kv.Txn`: the bodies behind the
//! `dengine.v1.Kv` methods of [`KvService`] (kept here so `kv.rs` stays one
//! file per concern).
//!
//! - Range: INVALID_ARGUMENT for an empty range (`range_end` at or before
//!   `key`), a `limit` above `limits.max_scan_limit`, an oversized key; the
//!   caller needs read access to the whole range (one grant covering it).
//!   The page ends at the response budget (`limits.max_request_bytes`
//!   less framing) with `more` and `next_key`; `header.revision` is the
//!   point in time the page was read at.
//! - DeleteRange: readwrite access to the whole range; `prev_kvs` are cut
//!   at the response budget (`prev_kvs_truncated`; the keys are deleted
//!   all the same).
//! - Txn: at most 128 compares and 128 ops per branch (`field`/`limit` in
//!   the status); puts inside carry no TTL and no write id (the txn's own
//!   write id covers them); read access to every compared key and range,
//!   readwrite access to every put key and deleted range. Range results
//!   and `prev_kvs` are cut at the response budget (their `more` /
//!   `prev_kvs_truncated` set). A put naming a missing lease is
//!   LEASE_NOT_FOUND (nothing applied).

use bytes::Bytes;
use d_engine_api::{RangeOptions, Txn, TxnOp};
use d_engine_proto::v1 as pb;
use d_engine_storage::command::MAX_TXN_OPS;
use d_engine_storage::sm::{KeyValue as SmKv, TxnOpResult};
use tonic::{Request, Response, Status};

use super::convert;
use super::convert::RESPONSE_SLACK;
use super::kv::KvService;
use super::status::{invalid, status};
use super::validate;
use crate::auth::{Access, Caller};
use crate::runtime::ranges::key_after;
use crate::runtime::reads::read_cost;

use d_engine_api::convert::range_end_from_wire as range_end;

/// Pairs from `kvs` until they pass the budget left (`used` counts what
/// the response already holds); whether some were left out.
fn within_budget(kvs: &[SmKv], used: &mut usize, budget: usize) -> (Vec<pb::KeyValue>, bool) {
    let mut out = Vec::with_capacity(kvs.len());
    for kv in kvs {
        let n = read_cost(kv);
        if *used + n > budget {
            return (out, true);
        }
        *used += n;
        out.push(convert::shared_kv(kv));
    }
    (out, false)
}

/// Checks one branch op (field `field`, e.g. "success[2]") and the
/// caller's access, and converts it.
fn txn_op(svc: &KvService, caller: &Caller, field: &str, op: pb::TxnOp) -> Result<TxnOp, Status> {
    use pb::txn_op::Op;
    let l = svc.limits();
    match op.op {
        None => Err(invalid(
            field,
            format!("{field} has no op; set one of range, put, delete_range"),
        )),
        Some(Op::Range(r)) => {
            let (kf, ef) = (
                format!("{field}.range.key"),
                format!("{field}.range.range_end"),
            );
            validate::range(l, &kf, &ef, &r.key, &r.range_end)?;
            validate::count(
                &format!("{field}.range.limit"),
                r.limit as usize,
                d_engine_storage::command::MAX_TXN_RANGE_LIMIT as usize,
                "read further pages with Range instead",
            )?;
            caller.require_range(&r.key, &r.range_end, Access::Read)?;
            Ok(TxnOp::Range {
                key: r.key,
                options: RangeOptions {
                    end: range_end(r.range_end),
                    limit: r.limit,
                    keys_only: r.keys_only,
                    count_only: r.count_only,
                    ..Default::default()
                },
            })
        }
        Some(Op::Put(p)) => {
            validate::key(l, &format!("{field}.put.key"), &p.key)?;
            validate::value(l, &format!("{field}.put.value"), &p.value)?;
            if p.ttl_ms != 0 {
                return Err(invalid(
                    &format!("{field}.put.ttl_ms"),
                    format!(
                        "{field}.put.ttl_ms is set; a put inside a transaction takes no TTL \
                         (attach the key to a lease instead)"
                    ),
                ));
            }
            if p.write_id.is_some_and(|w| w.client_id != 0) {
                return Err(invalid(
                    &format!("{field}.put.write_id"),
                    format!(
                        "{field}.put.write_id is set; ops inside a transaction carry none (set \
                         the transaction's write_id)"
                    ),
                ));
            }
            caller.require_key(&p.key, Access::Readwrite)?;
            Ok(TxnOp::Put {
                key: p.key,
                value: p.value,
                lease: p.lease,
            })
        }
        Some(Op::DeleteRange(d)) => {
            let (kf, ef) = (
                format!("{field}.delete_range.key"),
                format!("{field}.delete_range.range_end"),
            );
            validate::range(l, &kf, &ef, &d.key, &d.range_end)?;
            if d.write_id.is_some_and(|w| w.client_id != 0) {
                return Err(invalid(
                    &format!("{field}.delete_range.write_id"),
                    format!(
                        "{field}.delete_range.write_id is set; ops inside a transaction carry \
                         none (set the transaction's write_id)"
                    ),
                ));
            }
            caller.require_range(&d.key, &d.range_end, Access::Readwrite)?;
            Ok(TxnOp::DeleteRange {
                key: d.key,
                end: range_end(d.range_end),
                prev_kv: d.prev_kv,
            })
        }
    }
}

impl KvService {
    fn budget(&self) -> usize {
        self.limits()
            .max_request_bytes
            .saturating_sub(RESPONSE_SLACK)
    }

    pub(super) async fn range_impl(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        let l = self.limits();
        validate::range(l, "key", "range_end", &r.key, &r.range_end)?;
        validate::range_limit(l, "limit", r.limit)?;
        caller.require_range(&r.key, &r.range_end, Access::Read)?;
        let c = validate::consistency(r.consistency)?;
        let page = self
            .node
            .range_shared(
                Bytes::from(r.key),
                Bytes::from(r.range_end),
                r.limit,
                r.keys_only,
                r.count_only,
                c,
                Some(self.budget()),
            )
            .await
            .map_err(|e| status(&e))?;
        let mut header = self.header();
        if let Some(h) = header.as_mut() {
            h.revision = page.revision;
        }
        Ok(Response::new(pb::RangeResponse {
            header,
            kvs: page.kvs.iter().map(convert::shared_kv).collect(),
            more: page.more,
            count: page.count,
            next_key: page.next_key.map(|k| k.to_vec()).unwrap_or_default(),
        }))
    }

    pub(super) async fn delete_range_impl(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        validate::range(self.limits(), "key", "range_end", &r.key, &r.range_end)?;
        caller.require_range(&r.key, &r.range_end, Access::Readwrite)?;
        let wid = validate::write_id(r.write_id)?.map(|w| w.owned_by(caller.user()));
        let d = self
            .node
            .delete_range_shared(Bytes::from(r.key), Bytes::from(r.range_end), r.prev_kv, wid)
            .await
            .map_err(|e| status(&e))?;
        let (prev_kvs, cut) = within_budget(&d.prev_kvs, &mut 0, self.budget());
        Ok(Response::new(pb::DeleteRangeResponse {
            header: self.header(),
            deleted: d.deleted,
            prev_kvs,
            revision: d.revision,
            prev_kvs_truncated: d.truncated || cut,
        }))
    }

    pub(super) async fn txn_impl(
        &self,
        req: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let caller = self.gate.authenticate_request(&req).await?;
        let r = req.into_inner();
        let split = "split it into several transactions";
        validate::count("compare", r.compare.len(), MAX_TXN_OPS, split)?;
        validate::count("success", r.success.len(), MAX_TXN_OPS, split)?;
        validate::count("failure", r.failure.len(), MAX_TXN_OPS, split)?;
        let l = self.limits();
        let mut txn = Txn::default();
        for (i, c) in r.compare.into_iter().enumerate() {
            let field = format!("compare[{i}]");
            validate::key(l, &format!("{field}.key"), &c.key)?;
            if let Some(pb::compare::Target::Value(v)) = &c.target {
                validate::value(l, &format!("{field}.value"), v)?;
            }
            caller.require_key(&c.key, Access::Read)?;
            let c = d_engine_api::convert::compare_from_wire(c).map_err(|e| {
                let d_engine_api::Error::InvalidArgument(m) = &e else {
                    return status(&e);
                };
                invalid(&field, format!("{field}: {m}"))
            })?;
            txn.compares.push(c);
        }
        for (i, op) in r.success.into_iter().enumerate() {
            txn.success
                .push(txn_op(self, &caller, &format!("success[{i}]"), op)?);
        }
        for (i, op) in r.failure.into_iter().enumerate() {
            txn.failure
                .push(txn_op(self, &caller, &format!("failure[{i}]"), op)?);
        }
        let wid = validate::write_id(r.write_id)?.map(|w| w.owned_by(caller.user()));
        let t = self
            .node
            .txn_shared(txn, wid)
            .await
            .map_err(|e| status(&e))?;
        let budget = self.budget();
        let mut used = 0usize;
        let results = t
            .results
            .iter()
            .map(|r| {
                use pb::txn_op_result::Result as R;
                let result = match r {
                    TxnOpResult::Range(p) => {
                        let (kvs, cut) = within_budget(&p.kvs, &mut used, budget);
                        let more = p.more || cut;
                        let next_key = match kvs.last() {
                            Some(kv) if more => key_after(&kv.key).to_vec(),
                            _ => Vec::new(),
                        };
                        R::Range(pb::RangeResponse {
                            header: None,
                            kvs,
                            more,
                            count: p.count,
                            next_key,
                        })
                    }
                    TxnOpResult::Put { .. } => R::Put(pb::PutResponse {
                        header: None,
                        revision: t.revision,
                    }),
                    TxnOpResult::DeleteRange {
                        deleted,
                        prev_kvs,
                        truncated,
                    } => {
                        let (prev_kvs, cut) = within_budget(prev_kvs, &mut used, budget);
                        R::DeleteRange(pb::DeleteRangeResponse {
                            header: None,
                            deleted: *deleted,
                            prev_kvs,
                            revision: t.revision,
                            prev_kvs_truncated: *truncated || cut,
                        })
                    }
                };
                pb::TxnOpResult {
                    result: Some(result),
                }
            })
            .collect();
        Ok(Response::new(pb::TxnResponse {
            header: self.header(),
            succeeded: t.succeeded,
            results,
            revision: t.revision,
            replayed: t.replayed,
        }))
    }
}
