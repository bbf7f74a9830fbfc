//! Ranges: `range` (one page of `[key, end)`) and `delete_range`.
//!
//! Contracts:
//! - a range is `[key, end)`: `end` empty = the single key `key`; `[0]` =
//!   every key from `key` on; otherwise `end` must sort after `key`
//!   (`InvalidArgument` if not). An empty `key` is allowed only with an
//!   end (it then starts at the first key);
//! - `range` reads behind the read barrier of `options.consistency`, like
//!   `get` (leader-only levels answer `NotLeader`/`NoLeader` on a
//!   follower). `limit` 0 = `limits.max_scan_limit`; above it is
//!   `InvalidArgument` naming the setting. The page is one point in time:
//!   its `revision` is the applied index of the state the page was read from
//!   (the walk sees whole batches), so a watch
//!   from `revision + 1` misses nothing after it. `count` = live keys in
//!   the whole requested range (counted right after the page when the page
//!   does not hold them all, so it may include writes applied since);
//!   `more` + `next_key` (= last key returned + `0x00`) read the next page;
//! - the crate-internal [`NodeHandle::range_shared`] shares the state
//!   machine's bytes and, with a budget, ends the page before the pair that
//!   would pass it (`more` set; the first pair is always returned): nothing
//!   past the budget is read or copied;
//! - `delete_range` is a write (see `writes.rs`): it deletes every key of
//!   the range in one log entry and succeeds once that entry is committed
//!   and applied; `prev_kv` returns the deleted pairs, cut at the state
//!   machine's result budget (`prev_kvs_truncated`; every key is deleted
//!   all the same).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use d_engine_api::{DeleteRangeOutcome, RangeEnd, RangeOptions, RangePage};
use d_engine_storage::command::KeyRange;
use d_engine_storage::sm::KeyValue as SmKv;

use super::handle::NodeHandle;
use super::reads::read_cost;
use super::shared::now_ms;
use super::types::{to_client_kv, ApplyResult, Consistency, Error, Op, Result, WriteId};

/// One page of a range, sharing the state machine's bytes.
#[derive(Debug, Default)]
pub(crate) struct SharedRange {
    pub(crate) kvs: Vec<SmKv>,
    pub(crate) more: bool,
    pub(crate) count: u64,
    /// When `more`: where the next page starts.
    pub(crate) next_key: Option<Bytes>,
    /// The applied index the page was read at (or after).
    pub(crate) revision: u64,
}

/// What a delete-range removed.
#[derive(Debug)]
pub(crate) struct SharedDeleteRange {
    pub(crate) deleted: u64,
    pub(crate) prev_kvs: Vec<SmKv>,
    pub(crate) truncated: bool,
    pub(crate) revision: u64,
}

/// The key after `key` in byte order: `key + 0x00` (where the next page
/// starts).
pub(crate) fn key_after(key: &[u8]) -> Bytes {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    Bytes::from(k)
}

/// A range's end from the API form (see [`RangeEnd::to_wire`]).
pub(crate) fn wire_end(key: &[u8], end: &RangeEnd) -> Bytes {
    Bytes::from(end.to_wire(key))
}

impl NodeHandle {
    /// Checks `[key, end)` (fields named `key_field`, `end_field` in
    /// errors) and returns it as the state machine's range. An empty key
    /// with an end starts at the smallest key (`[0]`).
    pub(crate) fn key_range(
        &self,
        key: Bytes,
        end: Bytes,
        key_field: &str,
        end_field: &str,
    ) -> Result<KeyRange> {
        let l = self.limits();
        if end.is_empty() {
            l.key(key_field, &key)?;
            return Ok(KeyRange { start: key, end });
        }
        l.prefix(key_field, &key)?;
        let start = if key.is_empty() {
            Bytes::from_static(&[0])
        } else {
            key
        };
        if end[..] == [0] {
            return Ok(KeyRange { start, end });
        }
        if end.len() > l.max_key_bytes + 1 {
            return Err(Error::InvalidArgument(format!(
                "{end_field} is {} bytes; the limit is {} bytes (limits.max_key_bytes + 1)",
                end.len(),
                l.max_key_bytes + 1
            )));
        }
        if end <= start {
            return Err(Error::InvalidArgument(format!(
                "{end_field} is at or before {key_field}: the range is empty; use an empty \
                 {end_field} for one key, \"\\0\" for every key from {key_field} on, or an end \
                 above {key_field}"
            )));
        }
        Ok(KeyRange { start, end })
    }

    /// A range's page size: 0 = `limits.max_scan_limit`, above it refused.
    pub(crate) fn range_limit(&self, limit: u32, field: &str) -> Result<usize> {
        let max = self.shared.config.limits.max_scan_limit;
        if limit > max {
            return Err(Error::InvalidArgument(format!(
                "{field} is {limit}; the limit is {max} (limits.max_scan_limit); read further \
                 pages with next_key instead"
            )));
        }
        Ok(if limit == 0 { max } else { limit } as usize)
    }

    /// One page of the live keys in `[key, options.end)`, in key order
    /// (see the module docs for the contract).
    pub async fn range(&self, key: Bytes, options: RangeOptions) -> Result<RangePage> {
        let end = wire_end(&key, &options.end);
        let r = self
            .range_shared(
                key,
                end,
                options.limit,
                options.keys_only,
                options.count_only,
                options.consistency,
                None,
            )
            .await?;
        Ok(RangePage {
            kvs: r.kvs.iter().map(to_client_kv).collect(),
            more: r.more,
            count: r.count,
            next_key: r.next_key.map(|k| k.to_vec()),
            revision: r.revision,
        })
    }

    /// [`NodeHandle::range`] with the wire's `end`, sharing the state
    /// machine's bytes, stopping at `budget` response bytes (by
    /// [`read_cost`]) when given.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn range_shared(
        &self,
        key: Bytes,
        end: Bytes,
        limit: u32,
        keys_only: bool,
        count_only: bool,
        c: Consistency,
        budget: Option<usize>,
    ) -> Result<SharedRange> {
        let range = self.key_range(key, end, "key", "range_end")?;
        let limit = self.range_limit(limit, "limit")?;
        self.read_barrier(c).await?;
        let sm = self.shared.kv()?;
        // Before reading (kept for a count-only read); a page's own
        // revision comes from the walk: exactly the state it read.
        let revision = self.shared.applied.load(Ordering::Acquire);
        let now = now_ms();
        let mut out = SharedRange {
            revision,
            ..Default::default()
        };
        let sm_err = |e: d_engine_storage::sm::SmError| Error::Storage(e.to_string());
        if !count_only {
            let mut bytes = 0usize;
            let (kvs, more) = (&mut out.kvs, &mut out.more);
            out.revision = sm
                .range_each(&range, now, &mut |mut kv| {
                    if keys_only {
                        kv.value = Bytes::new();
                    }
                    let n = read_cost(&kv);
                    let over_budget = budget.is_some_and(|b| bytes + n > b) && !kvs.is_empty();
                    if kvs.len() == limit || over_budget {
                        *more = true;
                        return false;
                    }
                    bytes += n;
                    kvs.push(kv);
                    true
                })
                .map_err(sm_err)?;
        }
        out.count = if count_only || out.more {
            sm.range_count(&range, now).map_err(sm_err)?
        } else {
            out.kvs.len() as u64
        };
        if out.more {
            out.next_key = out.kvs.last().map(|kv| key_after(&kv.key));
        }
        Ok(out)
    }

    /// Deletes every key in `[key, end)` in one replicated step; with
    /// `prev_kv`, returns the deleted pairs (see the module docs).
    pub async fn delete_range(
        &self,
        key: Bytes,
        end: RangeEnd,
        prev_kv: bool,
        write_id: Option<WriteId>,
    ) -> Result<DeleteRangeOutcome> {
        let end = wire_end(&key, &end);
        let d = self
            .delete_range_shared(key, end, prev_kv, write_id)
            .await?;
        Ok(DeleteRangeOutcome {
            deleted: d.deleted,
            prev_kvs: d.prev_kvs.iter().map(to_client_kv).collect(),
            prev_kvs_truncated: d.truncated,
            revision: d.revision,
        })
    }

    /// [`NodeHandle::delete_range`] with the wire's `end`, sharing the
    /// deleted pairs' bytes.
    pub(crate) async fn delete_range_shared(
        &self,
        key: Bytes,
        end: Bytes,
        prev_kv: bool,
        write_id: Option<WriteId>,
    ) -> Result<SharedDeleteRange> {
        let range = self.key_range(key, end, "key", "range_end")?;
        let out = self
            .propose(Self::command(Op::DeleteRange { range, prev_kv }, write_id))
            .await?;
        match out.result {
            ApplyResult::DeleteRange {
                deleted,
                prev_kvs,
                truncated,
            } => Ok(SharedDeleteRange {
                deleted,
                prev_kvs,
                truncated,
                revision: out.revision,
            }),
            other => Err(self.unexpected(other)),
        }
    }
}
