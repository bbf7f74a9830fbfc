//! `GrpcKv`: the key-value API over gRPC ([`KvClient`] for a remote cluster).

use std::future::Future;
use std::time::Duration;

use d_engine_proto::v1 as pb;
use tokio::time::Instant;

use crate::client::Client;
use crate::convert;
use crate::error::{Error, Result};
use crate::kv::{scan_prefix_pages, KvClient, RangeWalk, WatchStream};
use crate::router::{request, Retry, Route};
use crate::types::{
    CasOutcome, Consistency, DeleteRangeOutcome, KeyValue, LeaderKey, LeaseGrant, LeaseStatus,
    LeaseTtl, LockKey, RangeEnd, RangeOptions, RangePage, ScanPage, Txn, TxnOp, TxnOutcome,
    WatchOptions,
};
use crate::{CoordClient, HeldLock, LeaseKeeper};

/// Most compares, and most ops per branch, in one transaction.
const MAX_TXN_OPS: usize = 128;
use crate::watch;

/// Key-value operations against a cluster; from [`Client::kv`]. Cheap to
/// clone.
///
/// Writes go to the leader and carry a `WriteId` that stays the same on
/// every retry, so a write retried after a timeout or a leader change is
/// applied once. Linearizable and lease reads go to the leader; eventual
/// reads go to any node. All methods validate sizes first (key
/// 1..=4096 bytes, value <= 1 MiB by default) and return
/// `InvalidArgument` naming the limit.
///
/// The inherent methods mirror [`KvClient`], so `client.kv().put(..)` works
/// without importing the trait.
#[derive(Clone, Debug)]
pub struct GrpcKv {
    pub(crate) client: Client,
}

fn route_for(c: Consistency) -> Route {
    match c {
        Consistency::Linearizable | Consistency::Lease => Route::Leader,
        Consistency::Eventual => Route::Any,
    }
}

fn ttl_ms(ttl: Duration) -> Result<u64> {
    if ttl.is_zero() {
        return Err(Error::InvalidArgument(
            "ttl is 0; it must be at least 1ms (use put for no expiry)".into(),
        ));
    }
    // Round up so a sub-millisecond TTL still expires rather than never.
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).map_err(|_| Error::InvalidArgument(format!("ttl {ttl:?} is too large")))
}

impl GrpcKv {
    /// The client this handle belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stores `value` under `key`; returns the write's revision.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64> {
        self.do_put(key.as_ref().to_vec(), value.as_ref().to_vec(), 0, 0)
            .await
    }

    /// Like `put`; the key expires `ttl` after the write (rounded up to ms).
    pub async fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<u64> {
        let ms = ttl_ms(ttl)?;
        self.do_put(key.as_ref().to_vec(), value.as_ref().to_vec(), ms, 0)
            .await
    }

    /// Linearizable read of one key.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>> {
        self.do_get(key.as_ref().to_vec(), Consistency::Linearizable)
            .await
    }

    /// Reads one key with an explicit consistency.
    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>> {
        self.do_get(key.as_ref().to_vec(), consistency).await
    }

    /// Reads several keys at one point in time; one result per key, in order.
    pub async fn get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<Vec<Option<KeyValue>>> {
        self.do_get_multi(keys, consistency).await
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.do_delete(key.as_ref().to_vec()).await
    }

    /// Atomically replaces the value if it equals `expected` (`None`: the key
    /// must not exist); `new_value: None` deletes the key on success.
    pub async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
    ) -> Result<CasOutcome> {
        self.do_cas(key.as_ref().to_vec(), expected, new_value, 0)
            .await
    }

    /// Like `compare_and_swap`; on success the new value expires `ttl` after
    /// the write (rounded up to ms; zero is refused).
    pub async fn compare_and_swap_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
        ttl: Duration,
    ) -> Result<CasOutcome> {
        let ms = ttl_ms(ttl)?;
        self.do_cas(key.as_ref().to_vec(), expected, new_value, ms)
            .await
    }

    /// The pairs whose key starts with `prefix`, in key order: all of them
    /// (`limit` 0, read page by page through `Range`) or the first `limit`.
    pub async fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<Vec<KeyValue>> {
        scan_prefix_pages(self, prefix.as_ref().to_vec(), limit, consistency).await
    }

    /// One page of `[key, options.end)` in key order; when `more`, read on
    /// from `next_key` (or walk every page with [`GrpcKv::range_all`]).
    pub async fn range(&self, key: impl AsRef<[u8]>, options: RangeOptions) -> Result<RangePage> {
        self.do_range(key.as_ref().to_vec(), options).await
    }

    /// Walks every page of `[key, options.end)`.
    pub fn range_all(&self, key: impl AsRef<[u8]>, options: RangeOptions) -> RangeWalk<'_, Self> {
        RangeWalk::new(self, key.as_ref().to_vec(), options)
    }

    /// Deletes every key in `[key, end)` in one replicated step.
    pub async fn delete_range(
        &self,
        key: impl AsRef<[u8]>,
        end: RangeEnd,
        prev_kv: bool,
    ) -> Result<DeleteRangeOutcome> {
        self.do_delete_range(key.as_ref().to_vec(), end, prev_kv)
            .await
    }

    /// Runs a transaction atomically (see [`KvClient::txn`]).
    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.do_txn(txn).await
    }

    /// Stores `value` under `key`, attached to lease `lease`.
    pub async fn put_with_lease(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: u64,
    ) -> Result<u64> {
        self.do_put(key.as_ref().to_vec(), value.as_ref().to_vec(), 0, lease)
            .await
    }

    /// Grants a lease of `ttl`; the server picks its id.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        self.do_lease_grant(ttl).await
    }

    /// Grants a lease of `ttl` and keeps it alive in the background (see
    /// [`LeaseKeeper`]); drop the keeper to stop renewing.
    pub async fn lease_keep_alive(&self, ttl: Duration) -> Result<LeaseKeeper> {
        let g = self.do_lease_grant(ttl).await?;
        Ok(LeaseKeeper::start(
            std::sync::Arc::new(self.clone()),
            g.id,
            g.ttl,
        ))
    }

    /// Revokes a lease and deletes its keys; returns how many were deleted.
    pub async fn lease_revoke(&self, id: u64) -> Result<u64> {
        self.do_lease_revoke(id).await
    }

    /// Restarts the lease's TTL on the leader; returns the TTL.
    pub async fn lease_renew(&self, id: u64) -> Result<Duration> {
        self.do_lease_renew(id).await
    }

    /// The lease's granted and remaining TTL, and its keys if `keys`.
    pub async fn lease_time_to_live(&self, id: u64, keys: bool) -> Result<LeaseTtl> {
        self.do_lease_ttl(id, keys).await
    }

    /// Every live lease.
    pub async fn lease_list(&self) -> Result<Vec<LeaseStatus>> {
        self.do_lease_list().await
    }

    /// One page of the prefix (the deprecated `ScanPrefix` call), telling
    /// whether more keys match; prefer [`GrpcKv::range`], which can read
    /// the rest.
    pub async fn scan_prefix_page(
        &self,
        prefix: impl AsRef<[u8]>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<ScanPage> {
        self.do_scan(prefix.as_ref().to_vec(), limit, consistency)
            .await
    }

    /// Watches one key (see [`KvClient::watch`]).
    pub async fn watch(&self, key: impl AsRef<[u8]>, start_revision: u64) -> Result<WatchStream> {
        self.do_watch(
            key.as_ref().to_vec(),
            WatchOptions::key().with_start_revision(start_revision),
        )
        .await
    }

    /// Watches every key with the given prefix (empty = every key).
    pub async fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        start_revision: u64,
    ) -> Result<WatchStream> {
        self.do_watch(
            prefix.as_ref().to_vec(),
            WatchOptions::prefix().with_start_revision(start_revision),
        )
        .await
    }

    /// Watches the keys `options` describe, with `prev_kv`, progress
    /// notifications and filters (see [`KvClient::watch_with`]). Resumes
    /// across leader changes and restarts like every watch of this client.
    pub async fn watch_with(
        &self,
        key: impl AsRef<[u8]>,
        options: WatchOptions,
    ) -> Result<WatchStream> {
        self.do_watch(key.as_ref().to_vec(), options).await
    }

    async fn do_put(&self, key: Vec<u8>, value: Vec<u8>, ttl_ms: u64, lease: u64) -> Result<u64> {
        let inner = &self.client.inner;
        inner.cfg.limits.check_key(&key)?;
        inner.cfg.limits.check_value("value", &value)?;
        let deadline = Instant::now() + inner.cfg.request_timeout;
        let ticket = inner.sessions.acquire(deadline).await?;
        let req = pb::PutRequest {
            key,
            value,
            ttl_ms,
            write_id: Some(ticket.id()),
            lease,
        };
        let resp = inner
            .execute_until(deadline, "put", Route::Leader, Retry::Safe, |ch, t| {
                let mut rpc = inner.kv_rpc(ch);
                let req = request(req.clone(), t);
                async move { Ok(rpc.put(req).await?.into_inner()) }
            })
            .await?;
        drop(ticket);
        Ok(resp.revision)
    }

    async fn do_get(&self, key: Vec<u8>, consistency: Consistency) -> Result<Option<KeyValue>> {
        let inner = &self.client.inner;
        inner.cfg.limits.check_key(&key)?;
        let req = pb::GetRequest {
            key,
            consistency: convert::consistency(consistency),
        };
        let resp = inner
            .execute("get", route_for(consistency), Retry::Safe, |ch, t| {
                let mut rpc = inner.kv_rpc(ch);
                let req = request(req.clone(), t);
                async move { Ok(rpc.get(req).await?.into_inner()) }
            })
            .await?;
        Ok(resp.kv.map(convert::key_value))
    }

    async fn do_get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<Vec<Option<KeyValue>>> {
        let inner = &self.client.inner;
        for (i, k) in keys.iter().enumerate() {
            inner
                .cfg
                .limits
                .check_key(k)
                .map_err(|e| Error::InvalidArgument(format!("keys[{i}]: {e}")))?;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let n = keys.len();
        let req = pb::GetMultiRequest {
            keys,
            consistency: convert::consistency(consistency),
        };
        let resp = inner
            .execute("get_multi", route_for(consistency), Retry::Safe, |ch, t| {
                let mut rpc = inner.kv_rpc(ch);
                let req = request(req.clone(), t);
                async move { Ok(rpc.get_multi(req).await?.into_inner()) }
            })
            .await?;
        if resp.results.len() != n {
            return Err(Error::Internal(format!(
                "server returned {} results for {n} keys",
                resp.results.len()
            )));
        }
        Ok(resp
            .results
            .into_iter()
            .map(|r| r.kv.map(convert::key_value))
            .collect())
    }

    async fn do_delete(&self, key: Vec<u8>) -> Result<bool> {
        let inner = &self.client.inner;
        inner.cfg.limits.check_key(&key)?;
        let deadline = Instant::now() + inner.cfg.request_timeout;
        let ticket = inner.sessions.acquire(deadline).await?;
        let req = pb::DeleteRequest {
            key,
            write_id: Some(ticket.id()),
        };
        let resp = inner
            .execute_until(deadline, "delete", Route::Leader, Retry::Safe, |ch, t| {
                let mut rpc = inner.kv_rpc(ch);
                let req = request(req.clone(), t);
                async move { Ok(rpc.delete(req).await?.into_inner()) }
            })
            .await?;
        drop(ticket);
        Ok(resp.deleted)
    }

    async fn do_cas(
        &self,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
        ttl_ms: u64,
    ) -> Result<CasOutcome> {
        let inner = &self.client.inner;
        let limits = inner.cfg.limits;
        limits.check_key(&key)?;
        if let Some(v) = &expected {
            limits.check_value("expected_value", v)?;
        }
        if let Some(v) = &new_value {
            limits.check_value("new_value", v)?;
        }
        let deadline = Instant::now() + inner.cfg.request_timeout;
        let ticket = inner.sessions.acquire(deadline).await?;
        let req = pb::CompareAndSwapRequest {
            key,
            expected_value: expected,
            new_value,
            ttl_ms,
            write_id: Some(ticket.id()),
        };
        let resp = inner
            .execute_until(
                deadline,
                "compare_and_swap",
                Route::Leader,
                Retry::Safe,
                |ch, t| {
                    let mut rpc = inner.kv_rpc(ch);
                    let req = request(req.clone(), t);
                    async move { Ok(rpc.compare_and_swap(req).await?.into_inner()) }
                },
            )
            .await?;
        drop(ticket);
        Ok(CasOutcome {
            succeeded: resp.succeeded,
            current: resp.current.map(convert::key_value),
            revision: resp.revision,
        })
    }

    async fn do_scan(
        &self,
        prefix: Vec<u8>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<ScanPage> {
        let inner = &self.client.inner;
        inner.cfg.limits.check_prefix(&prefix)?;
        let req = pb::ScanPrefixRequest {
            prefix,
            limit,
            consistency: convert::consistency(consistency),
        };
        let resp = inner
            .execute(
                "scan_prefix",
                route_for(consistency),
                Retry::Safe,
                |ch, t| {
                    let mut rpc = inner.kv_rpc(ch);
                    let req = request(req.clone(), t);
                    async move { Ok(rpc.scan_prefix(req).await?.into_inner()) }
                },
            )
            .await?;
        Ok(ScanPage {
            kvs: resp.kvs.into_iter().map(convert::key_value).collect(),
            more: resp.more,
            revision: resp.header.map_or(0, |h| h.revision),
        })
    }

    fn check_range(&self, key: &[u8], end: &RangeEnd) -> Result<()> {
        let limits = self.client.inner.cfg.limits;
        match end {
            RangeEnd::Single => limits.check_key(key)?,
            // A range with an end may start at the empty key (every key).
            _ => limits.check_prefix(key)?,
        }
        if let RangeEnd::Before(e) = end {
            if e.as_slice() <= key {
                return Err(Error::InvalidArgument(
                    "range end is at or before the first key; use RangeEnd::Single for one key or an end above the key".into(),
                ));
            }
        }
        Ok(())
    }

    async fn do_range(&self, key: Vec<u8>, options: RangeOptions) -> Result<RangePage> {
        self.check_range(&key, &options.end)?;
        let inner = &self.client.inner;
        let req = convert::range_request(&key, &options);
        let resp = inner
            .execute(
                "range",
                route_for(options.consistency),
                Retry::Safe,
                |ch, t| {
                    let mut rpc = inner.kv_rpc(ch);
                    let req = request(req.clone(), t);
                    async move { Ok(rpc.range(req).await?.into_inner()) }
                },
            )
            .await?;
        Ok(convert::range_page(resp))
    }

    /// Runs a write on the leader with a write id kept across retries.
    async fn write<T, F, Fut>(&self, op: &str, mut rpc: F) -> Result<T>
    where
        F: FnMut(tonic::transport::Channel, Duration, pb::WriteId) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let inner = &self.client.inner;
        let deadline = Instant::now() + inner.cfg.request_timeout;
        let ticket = inner.sessions.acquire(deadline).await?;
        let id = ticket.id();
        let out = inner
            .execute_until(deadline, op, Route::Leader, Retry::Safe, |ch, t| {
                rpc(ch, t, id)
            })
            .await;
        drop(ticket);
        out
    }

    async fn do_delete_range(
        &self,
        key: Vec<u8>,
        end: RangeEnd,
        prev_kv: bool,
    ) -> Result<DeleteRangeOutcome> {
        self.check_range(&key, &end)?;
        let base = convert::delete_range_request(&key, &end, prev_kv);
        let inner = &self.client.inner;
        let resp = self
            .write("delete_range", |ch, t, id| {
                let mut rpc = inner.kv_rpc(ch);
                let mut req = base.clone();
                req.write_id = Some(id);
                let req = request(req, t);
                async move { Ok(rpc.delete_range(req).await?.into_inner()) }
            })
            .await?;
        Ok(convert::delete_range_outcome(resp))
    }

    async fn do_txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let limits = self.client.inner.cfg.limits;
        for (what, n) in [
            ("compares", txn.compares.len()),
            ("success ops", txn.success.len()),
            ("failure ops", txn.failure.len()),
        ] {
            if n > MAX_TXN_OPS {
                return Err(Error::InvalidArgument(format!(
                    "transaction has {n} {what}; the limit is {MAX_TXN_OPS}; split it into several transactions"
                )));
            }
        }
        for c in &txn.compares {
            limits.check_key(&c.key)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                TxnOp::Range { key, options } => self.check_range(key, &options.end)?,
                TxnOp::Put { key, value, .. } => {
                    limits.check_key(key)?;
                    limits.check_value("value", value)?;
                }
                TxnOp::DeleteRange { key, end, .. } => self.check_range(key, end)?,
            }
        }
        let base = convert::txn_request(&txn);
        let inner = &self.client.inner;
        let resp = self
            .write("txn", |ch, t, id| {
                let mut rpc = inner.kv_rpc(ch);
                let mut req = base.clone();
                req.write_id = Some(id);
                let req = request(req, t);
                async move { Ok(rpc.txn(req).await?.into_inner()) }
            })
            .await?;
        convert::txn_outcome(resp)
    }

    async fn do_lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        let ttl_ms = ttl_ms(ttl)?;
        let inner = &self.client.inner;
        let resp = self
            .write("lease_grant", |ch, t, id| {
                let mut rpc = inner.lease_rpc(ch);
                let req = request(
                    pb::LeaseGrantRequest {
                        ttl_ms,
                        id: 0,
                        write_id: Some(id),
                    },
                    t,
                );
                async move { Ok(rpc.lease_grant(req).await?.into_inner()) }
            })
            .await?;
        Ok(convert::lease_grant(resp))
    }

    async fn do_lease_revoke(&self, lease: u64) -> Result<u64> {
        let inner = &self.client.inner;
        let resp = self
            .write("lease_revoke", |ch, t, id| {
                let mut rpc = inner.lease_rpc(ch);
                let req = request(
                    pb::LeaseRevokeRequest {
                        id: lease,
                        write_id: Some(id),
                    },
                    t,
                );
                async move { Ok(rpc.lease_revoke(req).await?.into_inner()) }
            })
            .await?;
        Ok(resp.deleted)
    }

    async fn do_lease_renew(&self, id: u64) -> Result<Duration> {
        let inner = &self.client.inner;
        let resp = inner
            .execute("lease_renew", Route::Leader, Retry::Safe, |ch, t| {
                let mut rpc = inner.lease_rpc(ch);
                let req = request(pb::LeaseKeepAliveRequest { id }, t);
                async move { Ok(rpc.lease_renew(req).await?.into_inner()) }
            })
            .await?;
        Ok(Duration::from_millis(resp.ttl_ms))
    }

    async fn do_lease_ttl(&self, id: u64, keys: bool) -> Result<LeaseTtl> {
        let inner = &self.client.inner;
        let resp = inner
            .execute("lease_time_to_live", Route::Leader, Retry::Safe, |ch, t| {
                let mut rpc = inner.lease_rpc(ch);
                let req = request(pb::LeaseTimeToLiveRequest { id, keys }, t);
                async move { Ok(rpc.lease_time_to_live(req).await?.into_inner()) }
            })
            .await?;
        Ok(convert::lease_ttl(resp))
    }

    async fn do_lease_list(&self) -> Result<Vec<LeaseStatus>> {
        let inner = &self.client.inner;
        let resp = inner
            .execute("lease_list", Route::Leader, Retry::Safe, |ch, t| {
                let mut rpc = inner.lease_rpc(ch);
                let req = request(pb::LeaseListRequest {}, t);
                async move { Ok(rpc.lease_list(req).await?.into_inner()) }
            })
            .await?;
        Ok(convert::lease_list(resp))
    }

    async fn do_watch(&self, key: Vec<u8>, options: WatchOptions) -> Result<WatchStream> {
        let limits = self.client.inner.cfg.limits;
        match &options.end {
            RangeEnd::Prefix => limits.check_prefix(&key)?,
            end => self.check_range(&key, end)?,
        }
        watch::open(
            self.client.inner.clone(),
            convert::watch_request(&key, &options),
        )
        .await
    }
}

impl KvClient for GrpcKv {
    fn put(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
    ) -> impl Future<Output = Result<u64>> + Send {
        self.do_put(key.as_ref().to_vec(), value.as_ref().to_vec(), 0, 0)
    }

    fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        ttl: Duration,
    ) -> impl Future<Output = Result<u64>> + Send {
        let (key, value) = (key.as_ref().to_vec(), value.as_ref().to_vec());
        async move { self.do_put(key, value, ttl_ms(ttl)?, 0).await }
    }

    fn get_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Option<KeyValue>>> + Send {
        self.do_get(key.as_ref().to_vec(), consistency)
    }

    fn get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Vec<Option<KeyValue>>>> + Send {
        self.do_get_multi(keys, consistency)
    }

    fn delete(&self, key: impl AsRef<[u8]> + Send) -> impl Future<Output = Result<bool>> + Send {
        self.do_delete(key.as_ref().to_vec())
    }

    fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]> + Send,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<CasOutcome>> + Send {
        self.do_cas(key.as_ref().to_vec(), expected, new_value, 0)
    }

    fn range(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: RangeOptions,
    ) -> impl Future<Output = Result<RangePage>> + Send {
        self.do_range(key.as_ref().to_vec(), options)
    }

    fn delete_range(
        &self,
        key: impl AsRef<[u8]> + Send,
        end: RangeEnd,
        prev_kv: bool,
    ) -> impl Future<Output = Result<DeleteRangeOutcome>> + Send {
        self.do_delete_range(key.as_ref().to_vec(), end, prev_kv)
    }

    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnOutcome>> + Send {
        self.do_txn(txn)
    }

    fn put_with_lease(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        lease: u64,
    ) -> impl Future<Output = Result<u64>> + Send {
        self.do_put(key.as_ref().to_vec(), value.as_ref().to_vec(), 0, lease)
    }

    fn lease_grant(&self, ttl: Duration) -> impl Future<Output = Result<LeaseGrant>> + Send {
        self.do_lease_grant(ttl)
    }

    fn lease_revoke(&self, id: u64) -> impl Future<Output = Result<u64>> + Send {
        self.do_lease_revoke(id)
    }

    fn lease_renew(&self, id: u64) -> impl Future<Output = Result<Duration>> + Send {
        self.do_lease_renew(id)
    }

    fn lease_time_to_live(
        &self,
        id: u64,
        keys: bool,
    ) -> impl Future<Output = Result<LeaseTtl>> + Send {
        self.do_lease_ttl(id, keys)
    }

    fn lease_list(&self) -> impl Future<Output = Result<Vec<LeaseStatus>>> + Send {
        self.do_lease_list()
    }

    fn watch_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: WatchOptions,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        self.do_watch(key.as_ref().to_vec(), options)
    }
}

fn wire_leader(l: &LeaderKey) -> pb::LeaderKey {
    pb::LeaderKey {
        name: l.name.clone(),
        key: l.key.clone(),
        revision: l.revision,
        lease: l.lease,
    }
}

impl GrpcKv {
    /// Grants a lease of `ttl`, keeps it alive in the background and waits
    /// for lock `name` (see [`HeldLock`]).
    pub async fn lock_with_ttl(
        &self,
        name: impl AsRef<[u8]> + Send,
        ttl: Duration,
    ) -> Result<HeldLock<Self>> {
        HeldLock::acquire(std::sync::Arc::new(self.clone()), name, ttl).await
    }

    /// Runs a call that may wait for a lock or an election as long as it
    /// takes: an attempt cut by `attempt_timeout` is sent again (the server
    /// keeps the queue position of the same lease).
    async fn waiting<T, F, Fut>(&self, op: &str, call: F) -> Result<T>
    where
        F: Fn(tonic::transport::Channel, Duration) -> Fut + Clone,
        Fut: Future<Output = Result<T>>,
    {
        loop {
            match self
                .client
                .inner
                .execute(op, Route::Leader, Retry::Safe, call.clone())
                .await
            {
                Err(Error::Timeout(_)) => continue,
                other => return other,
            }
        }
    }
}

/// Locks and election through the server's `Lock` and `Election` services
/// (the recipes run there).
impl CoordClient for GrpcKv {
    async fn lock(&self, name: impl AsRef<[u8]> + Send, lease: u64) -> Result<LockKey> {
        let name = name.as_ref().to_vec();
        let inner = &self.client.inner;
        let resp = self
            .waiting("lock", |ch, t| {
                let mut rpc = inner.lock_rpc(ch);
                let req = request(
                    pb::LockRequest {
                        name: name.clone(),
                        lease,
                    },
                    t,
                );
                async move { Ok(rpc.lock(req).await?.into_inner()) }
            })
            .await?;
        Ok(LockKey {
            key: resp.key,
            revision: resp.revision,
        })
    }

    async fn unlock(&self, key: impl AsRef<[u8]> + Send) -> Result<()> {
        let key = key.as_ref().to_vec();
        let inner = &self.client.inner;
        inner
            .execute("unlock", Route::Leader, Retry::Safe, |ch, t| {
                let mut rpc = inner.lock_rpc(ch);
                let req = request(pb::UnlockRequest { key: key.clone() }, t);
                async move { Ok(rpc.unlock(req).await?.into_inner()) }
            })
            .await
            .map(|_| ())
    }

    async fn campaign(
        &self,
        name: impl AsRef<[u8]> + Send,
        lease: u64,
        value: impl AsRef<[u8]> + Send,
    ) -> Result<LeaderKey> {
        let (name, value) = (name.as_ref().to_vec(), value.as_ref().to_vec());
        let inner = &self.client.inner;
        let resp = self
            .waiting("campaign", |ch, t| {
                let mut rpc = inner.election_rpc(ch);
                let req = request(
                    pb::CampaignRequest {
                        name: name.clone(),
                        lease,
                        value: value.clone(),
                    },
                    t,
                );
                async move { Ok(rpc.campaign(req).await?.into_inner()) }
            })
            .await?;
        let l = resp
            .leader
            .ok_or_else(|| Error::Internal("campaign response without a leader key".into()))?;
        Ok(LeaderKey {
            name: l.name,
            key: l.key,
            revision: l.revision,
            lease: l.lease,
        })
    }

    async fn proclaim(&self, leader: &LeaderKey, value: impl AsRef<[u8]> + Send) -> Result<()> {
        let req0 = pb::ProclaimRequest {
            leader: Some(wire_leader(leader)),
            value: value.as_ref().to_vec(),
        };
        let inner = &self.client.inner;
        inner
            .execute("proclaim", Route::Leader, Retry::Safe, |ch, t| {
                let mut rpc = inner.election_rpc(ch);
                let req = request(req0.clone(), t);
                async move { Ok(rpc.proclaim(req).await?.into_inner()) }
            })
            .await
            .map(|_| ())
    }

    async fn election_leader(&self, name: impl AsRef<[u8]> + Send) -> Result<Option<KeyValue>> {
        let name = name.as_ref().to_vec();
        let inner = &self.client.inner;
        let resp = inner
            .execute("election_leader", Route::Leader, Retry::Safe, |ch, t| {
                let mut rpc = inner.election_rpc(ch);
                let req = request(pb::ElectionLeaderRequest { name: name.clone() }, t);
                async move { Ok(rpc.leader(req).await?.into_inner()) }
            })
            .await?;
        Ok(resp.kv.map(convert::key_value))
    }

    async fn resign(&self, leader: &LeaderKey) -> Result<()> {
        let req0 = pb::ResignRequest {
            leader: Some(wire_leader(leader)),
        };
        let inner = &self.client.inner;
        inner
            .execute("resign", Route::Leader, Retry::Safe, |ch, t| {
                let mut rpc = inner.election_rpc(ch);
                let req = request(req0.clone(), t);
                async move { Ok(rpc.resign(req).await?.into_inner()) }
            })
            .await
            .map(|_| ())
    }

    async fn observe(
        &self,
        name: impl AsRef<[u8]> + Send,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<KeyValue>>> {
        let name = name.as_ref().to_vec();
        let inner = self.client.inner.clone();
        // Open the stream on the leader (no per-message deadline).
        let mut stream = inner
            .execute("observe", Route::Leader, Retry::Safe, |ch, _t| {
                let mut rpc = inner.election_rpc(ch);
                let req = tonic::Request::new(pb::ElectionLeaderRequest { name: name.clone() });
                async move { Ok(rpc.observe(req).await?.into_inner()) }
            })
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    biased;
                    _ = tx.closed() => return,
                    _ = inner.wait_closed() => {
                        let _ = tx.send(Err(Error::CLIENT_CLOSED)).await;
                        return;
                    }
                    m = stream.message() => m,
                };
                let out = match item {
                    Ok(Some(m)) => match m.kv {
                        Some(kv) => Ok(convert::key_value(kv)),
                        None => continue,
                    },
                    Ok(None) => return,
                    Err(st) => Err(crate::status_codec::from_status(&st)),
                };
                let end = out.is_err();
                if tx.send(out).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_and_rejects_zero() {
        assert_eq!(ttl_ms(Duration::from_micros(1)).unwrap(), 1);
        assert_eq!(ttl_ms(Duration::from_millis(1500)).unwrap(), 1500);
        assert_eq!(ttl_ms(Duration::from_micros(1500)).unwrap(), 2);
        assert!(
            matches!(ttl_ms(Duration::ZERO), Err(Error::InvalidArgument(m)) if m.contains("ttl"))
        );
    }

    #[test]
    fn reads_route_by_consistency() {
        assert_eq!(route_for(Consistency::Linearizable), Route::Leader);
        assert_eq!(route_for(Consistency::Lease), Route::Leader);
        assert_eq!(route_for(Consistency::Eventual), Route::Any);
    }
}
