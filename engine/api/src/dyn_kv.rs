//! [`DynKvClient`]: any [`KvClient`] behind one concrete type, chosen at
//! run time.
//!
//! `KvClient` is generic (`impl AsRef<[u8]>` arguments, `impl Future`
//! results), so `dyn KvClient` does not exist. [`ErasedKvClient`] is its
//! object-safe form (byte-slice arguments, boxed futures), implemented for
//! every `KvClient`; `Box<dyn ErasedKvClient>` / `Arc<dyn ErasedKvClient>`
//! work. [`DynKvClient`] wraps an `Arc<dyn ErasedKvClient>` and implements
//! `KvClient` itself, so code generic over `C: KvClient` takes it too:
//!
//! ```ignore
//! let kv = if embedded {
//!     DynKvClient::new(engine.client())
//! } else {
//!     DynKvClient::new(grpc_client.kv())
//! };
//! kv.put("k", "v").await?;
//! ```
//!
//! Each call costs one allocation (the boxed future) and a copy of its key
//! and value; the behaviour is the `KvClient` method of the same name.
//!
//! `ErasedKvClient` is not re-exported at the crate root on purpose: its
//! methods share `KvClient`'s names, and having both traits in scope would
//! make `client.put(..)` ambiguous. Name it by its path.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::kv::{KvClient, WatchStream};
use crate::types::{
    CasOutcome, Consistency, DeleteRangeOutcome, KeyValue, LeaseGrant, LeaseStatus, LeaseTtl,
    RangeEnd, RangeOptions, RangePage, Txn, TxnOutcome, WatchOptions,
};

/// A boxed, `Send` future borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The operations of [`KvClient`], callable through `dyn` (see the module
/// documentation). Implemented for every `KvClient`; each method has the
/// contract of the `KvClient` method of the same name.
pub trait ErasedKvClient: Send + Sync {
    fn put<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> BoxFuture<'a, Result<u64>>;
    fn put_with_ttl<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<u64>>;
    fn put_with_lease<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        lease: u64,
    ) -> BoxFuture<'a, Result<u64>>;
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<KeyValue>>>;
    fn get_with<'a>(
        &'a self,
        key: &'a [u8],
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<Option<KeyValue>>>;
    fn get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> BoxFuture<'_, Result<Vec<Option<KeyValue>>>>;
    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>>;
    fn compare_and_swap<'a>(
        &'a self,
        key: &'a [u8],
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
    ) -> BoxFuture<'a, Result<CasOutcome>>;
    fn scan_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
        limit: u32,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<Vec<KeyValue>>>;
    fn range<'a>(
        &'a self,
        key: &'a [u8],
        options: RangeOptions,
    ) -> BoxFuture<'a, Result<RangePage>>;
    fn delete_range<'a>(
        &'a self,
        key: &'a [u8],
        end: RangeEnd,
        prev_kv: bool,
    ) -> BoxFuture<'a, Result<DeleteRangeOutcome>>;
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome>>;
    fn lease_grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseGrant>>;
    fn lease_revoke(&self, id: u64) -> BoxFuture<'_, Result<u64>>;
    fn lease_renew(&self, id: u64) -> BoxFuture<'_, Result<Duration>>;
    fn lease_time_to_live(&self, id: u64, keys: bool) -> BoxFuture<'_, Result<LeaseTtl>>;
    fn lease_list(&self) -> BoxFuture<'_, Result<Vec<LeaseStatus>>>;
    fn watch_with<'a>(
        &'a self,
        key: &'a [u8],
        options: WatchOptions,
    ) -> BoxFuture<'a, Result<WatchStream>>;
    fn watch<'a>(
        &'a self,
        key: &'a [u8],
        start_revision: u64,
    ) -> BoxFuture<'a, Result<WatchStream>>;
    fn watch_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
        start_revision: u64,
    ) -> BoxFuture<'a, Result<WatchStream>>;
}

impl<C: KvClient> ErasedKvClient for C {
    fn put<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(KvClient::put(self, key, value))
    }
    fn put_with_ttl<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(KvClient::put_with_ttl(self, key, value, ttl))
    }
    fn put_with_lease<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        lease: u64,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(KvClient::put_with_lease(self, key, value, lease))
    }
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        Box::pin(KvClient::get(self, key))
    }
    fn get_with<'a>(
        &'a self,
        key: &'a [u8],
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        Box::pin(KvClient::get_with(self, key, consistency))
    }
    fn get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> BoxFuture<'_, Result<Vec<Option<KeyValue>>>> {
        Box::pin(KvClient::get_multi(self, keys, consistency))
    }
    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(KvClient::delete(self, key))
    }
    fn compare_and_swap<'a>(
        &'a self,
        key: &'a [u8],
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
    ) -> BoxFuture<'a, Result<CasOutcome>> {
        Box::pin(KvClient::compare_and_swap(self, key, expected, new_value))
    }
    fn scan_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
        limit: u32,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<Vec<KeyValue>>> {
        Box::pin(KvClient::scan_prefix(self, prefix, limit, consistency))
    }
    fn range<'a>(
        &'a self,
        key: &'a [u8],
        options: RangeOptions,
    ) -> BoxFuture<'a, Result<RangePage>> {
        Box::pin(KvClient::range(self, key, options))
    }
    fn delete_range<'a>(
        &'a self,
        key: &'a [u8],
        end: RangeEnd,
        prev_kv: bool,
    ) -> BoxFuture<'a, Result<DeleteRangeOutcome>> {
        Box::pin(KvClient::delete_range(self, key, end, prev_kv))
    }
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome>> {
        Box::pin(KvClient::txn(self, txn))
    }
    fn lease_grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseGrant>> {
        Box::pin(KvClient::lease_grant(self, ttl))
    }
    fn lease_revoke(&self, id: u64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(KvClient::lease_revoke(self, id))
    }
    fn lease_renew(&self, id: u64) -> BoxFuture<'_, Result<Duration>> {
        Box::pin(KvClient::lease_renew(self, id))
    }
    fn lease_time_to_live(&self, id: u64, keys: bool) -> BoxFuture<'_, Result<LeaseTtl>> {
        Box::pin(KvClient::lease_time_to_live(self, id, keys))
    }
    fn lease_list(&self) -> BoxFuture<'_, Result<Vec<LeaseStatus>>> {
        Box::pin(KvClient::lease_list(self))
    }
    fn watch_with<'a>(
        &'a self,
        key: &'a [u8],
        options: WatchOptions,
    ) -> BoxFuture<'a, Result<WatchStream>> {
        Box::pin(KvClient::watch_with(self, key, options))
    }
    fn watch<'a>(
        &'a self,
        key: &'a [u8],
        start_revision: u64,
    ) -> BoxFuture<'a, Result<WatchStream>> {
        Box::pin(KvClient::watch(self, key, start_revision))
    }
    fn watch_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
        start_revision: u64,
    ) -> BoxFuture<'a, Result<WatchStream>> {
        Box::pin(KvClient::watch_prefix(self, prefix, start_revision))
    }
}

/// Any [`KvClient`] (the embedded client, the gRPC client, a test double)
/// as one cloneable type that implements `KvClient` (see the module
/// documentation).
#[derive(Clone)]
pub struct DynKvClient(Arc<dyn ErasedKvClient>);

impl std::fmt::Debug for DynKvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynKvClient")
    }
}

impl DynKvClient {
    /// Wraps `client`.
    pub fn new<C: KvClient + 'static>(client: C) -> Self {
        DynKvClient(Arc::new(client))
    }

    /// Wraps a client already behind `Arc<dyn ErasedKvClient>`.
    pub fn from_arc(client: Arc<dyn ErasedKvClient>) -> Self {
        DynKvClient(client)
    }

    /// The wrapped client as a trait object.
    pub fn as_erased(&self) -> &Arc<dyn ErasedKvClient> {
        &self.0
    }
}

impl KvClient for DynKvClient {
    fn put(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
    ) -> impl Future<Output = Result<u64>> + Send {
        let (key, value) = (key.as_ref().to_vec(), value.as_ref().to_vec());
        async move { self.0.put(&key, &value).await }
    }

    fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        ttl: Duration,
    ) -> impl Future<Output = Result<u64>> + Send {
        let (key, value) = (key.as_ref().to_vec(), value.as_ref().to_vec());
        async move { self.0.put_with_ttl(&key, &value, ttl).await }
    }

    fn get_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Option<KeyValue>>> + Send {
        let key = key.as_ref().to_vec();
        async move { self.0.get_with(&key, consistency).await }
    }

    fn get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Vec<Option<KeyValue>>>> + Send {
        self.0.get_multi(keys, consistency)
    }

    fn delete(&self, key: impl AsRef<[u8]> + Send) -> impl Future<Output = Result<bool>> + Send {
        let key = key.as_ref().to_vec();
        async move { self.0.delete(&key).await }
    }

    fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]> + Send,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<CasOutcome>> + Send {
        let key = key.as_ref().to_vec();
        async move { self.0.compare_and_swap(&key, expected, new_value).await }
    }

    fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        limit: u32,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Vec<KeyValue>>> + Send {
        let prefix = prefix.as_ref().to_vec();
        async move { self.0.scan_prefix(&prefix, limit, consistency).await }
    }

    fn range(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: RangeOptions,
    ) -> impl Future<Output = Result<RangePage>> + Send {
        let key = key.as_ref().to_vec();
        async move { self.0.range(&key, options).await }
    }

    fn delete_range(
        &self,
        key: impl AsRef<[u8]> + Send,
        end: RangeEnd,
        prev_kv: bool,
    ) -> impl Future<Output = Result<DeleteRangeOutcome>> + Send {
        let key = key.as_ref().to_vec();
        async move { self.0.delete_range(&key, end, prev_kv).await }
    }

    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnOutcome>> + Send {
        self.0.txn(txn)
    }

    fn put_with_lease(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        lease: u64,
    ) -> impl Future<Output = Result<u64>> + Send {
        let (key, value) = (key.as_ref().to_vec(), value.as_ref().to_vec());
        async move { self.0.put_with_lease(&key, &value, lease).await }
    }

    fn lease_grant(&self, ttl: Duration) -> impl Future<Output = Result<LeaseGrant>> + Send {
        self.0.lease_grant(ttl)
    }

    fn lease_revoke(&self, id: u64) -> impl Future<Output = Result<u64>> + Send {
        self.0.lease_revoke(id)
    }

    fn lease_renew(&self, id: u64) -> impl Future<Output = Result<Duration>> + Send {
        self.0.lease_renew(id)
    }

    fn lease_time_to_live(
        &self,
        id: u64,
        keys: bool,
    ) -> impl Future<Output = Result<LeaseTtl>> + Send {
        self.0.lease_time_to_live(id, keys)
    }

    fn lease_list(&self) -> impl Future<Output = Result<Vec<LeaseStatus>>> + Send {
        self.0.lease_list()
    }

    fn watch_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: WatchOptions,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        let key = key.as_ref().to_vec();
        async move { self.0.watch_with(&key, options).await }
    }
}
