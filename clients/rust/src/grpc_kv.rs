//! `GrpcKv`: the key-value API over gRPC ([`KvClient`] for a remote cluster).

use std::future::Future;
use std::time::Duration;

use d_engine_proto::v1 as pb;
use tokio::time::Instant;

use crate::client::Client;
use crate::convert;
use crate::error::{Error, Result};
use crate::kv::{KvClient, WatchStream};
use crate::router::{request, Retry, Route};
use crate::types::{CasOutcome, Consistency, KeyValue, ScanPage};
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
        self.do_put(key.as_ref().to_vec(), value.as_ref().to_vec(), 0)
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
        self.do_put(key.as_ref().to_vec(), value.as_ref().to_vec(), ms)
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

    /// Up to `limit` pairs whose key starts with `prefix`, in key order
    /// (`limit` 0 = server maximum).
    pub async fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<Vec<KeyValue>> {
        self.do_scan(prefix.as_ref().to_vec(), limit, consistency)
            .await
            .map(|p| p.kvs)
    }

    /// Like `scan_prefix`, also telling whether more keys match.
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
        self.do_watch(key.as_ref().to_vec(), false, start_revision)
            .await
    }

    /// Watches every key with the given prefix (empty = every key).
    pub async fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        start_revision: u64,
    ) -> Result<WatchStream> {
        self.do_watch(prefix.as_ref().to_vec(), true, start_revision)
            .await
    }

    async fn do_put(&self, key: Vec<u8>, value: Vec<u8>, ttl_ms: u64) -> Result<u64> {
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

    async fn do_watch(&self, key: Vec<u8>, prefix: bool, start: u64) -> Result<WatchStream> {
        let limits = self.client.inner.cfg.limits;
        if prefix {
            limits.check_prefix(&key)?;
        } else {
            limits.check_key(&key)?;
        }
        watch::open(
            self.client.inner.clone(),
            pb::WatchRequest {
                key,
                prefix,
                start_revision: start,
            },
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
        self.do_put(key.as_ref().to_vec(), value.as_ref().to_vec(), 0)
    }

    fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        ttl: Duration,
    ) -> impl Future<Output = Result<u64>> + Send {
        let (key, value) = (key.as_ref().to_vec(), value.as_ref().to_vec());
        async move { self.do_put(key, value, ttl_ms(ttl)?).await }
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

    fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        limit: u32,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Vec<KeyValue>>> + Send {
        let prefix = prefix.as_ref().to_vec();
        async move {
            self.do_scan(prefix, limit, consistency)
                .await
                .map(|p| p.kvs)
        }
    }

    fn watch(
        &self,
        key: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        self.do_watch(key.as_ref().to_vec(), false, start_revision)
    }

    fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        self.do_watch(prefix.as_ref().to_vec(), true, start_revision)
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
