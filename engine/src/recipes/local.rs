//! [`LocalKv`]: the [`KvClient`] of one node's own handle, without
//! forwarding: what the client services run the recipes on (a follower
//! answers `NotLeader` and the remote client retries on the leader).

use std::time::Duration;

use bytes::Bytes;

use crate::runtime::{NodeHandle, WatchStream};
use d_engine_api::{
    CasOutcome, Consistency, DeleteRangeOutcome, KeyValue, KvClient, LeaseGrant, LeaseStatus,
    LeaseTtl, RangeEnd, RangeOptions, RangePage, Result, Txn, TxnOutcome,
};

/// A node handle seen as a [`KvClient`] (writes carry no write id: the
/// recipes are idempotent per lease, see [`super`]).
#[derive(Clone)]
pub struct LocalKv(pub NodeHandle);

fn b(x: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(x.as_ref())
}

impl KvClient for LocalKv {
    async fn put(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
    ) -> Result<u64> {
        self.0.put(b(key), b(value), None, None).await
    }

    async fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        ttl: Duration,
    ) -> Result<u64> {
        self.0.put(b(key), b(value), Some(ttl), None).await
    }

    async fn get_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>> {
        self.0.get(b(key), consistency).await
    }

    async fn get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<Vec<Option<KeyValue>>> {
        self.0
            .get_multi(keys.into_iter().map(Bytes::from).collect(), consistency)
            .await
    }

    async fn delete(&self, key: impl AsRef<[u8]> + Send) -> Result<bool> {
        Ok(self.0.delete(b(key), None).await?.deleted)
    }

    async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]> + Send,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
    ) -> Result<CasOutcome> {
        self.0
            .compare_and_swap(
                b(key),
                expected.map(Bytes::from),
                new_value.map(Bytes::from),
                None,
                None,
            )
            .await
    }

    async fn range(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: RangeOptions,
    ) -> Result<RangePage> {
        self.0.range(b(key), options).await
    }

    async fn delete_range(
        &self,
        key: impl AsRef<[u8]> + Send,
        end: RangeEnd,
        prev_kv: bool,
    ) -> Result<DeleteRangeOutcome> {
        self.0.delete_range(b(key), end, prev_kv, None).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.0.txn(txn, None).await
    }

    async fn put_with_lease(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        lease: u64,
    ) -> Result<u64> {
        self.0.put_with_lease(b(key), b(value), lease, None).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        self.0.lease_grant(ttl, 0, None).await
    }

    async fn lease_revoke(&self, id: u64) -> Result<u64> {
        self.0.lease_revoke(id, None).await
    }

    async fn lease_renew(&self, id: u64) -> Result<Duration> {
        self.0.lease_renew(id).await
    }

    async fn lease_time_to_live(&self, id: u64, keys: bool) -> Result<LeaseTtl> {
        self.0.lease_time_to_live(id, keys).await
    }

    async fn lease_list(&self) -> Result<Vec<LeaseStatus>> {
        self.0.lease_list().await
    }

    async fn watch(
        &self,
        key: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> Result<WatchStream> {
        self.0.watch(b(key), false, start_revision)
    }

    async fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> Result<WatchStream> {
        self.0.watch(b(prefix), true, start_revision)
    }

    async fn watch_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: d_engine_api::WatchOptions,
    ) -> Result<WatchStream> {
        self.0.watch_with(b(key), &options)
    }
}
