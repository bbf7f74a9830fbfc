//! [`EmbeddedClient`]: the in-process key-value client of an
//! [`super::EmbeddedEngine`].
//!
//! Contract:
//! - Calls go straight to the local node ([`NodeHandle`]): no
//!   serialization, no socket, no authentication (the application is the
//!   node).
//! - A write, or a linearizable or lease read, that the local node refuses
//!   with `NotLeader`/`NoLeader` is forwarded to the leader (`forward.rs`
//!   states how and when it is not); otherwise the local error is returned.
//! - Eventual reads and watches are always served by the local node.
//!
//! # One implementation, callable two ways
//!
//! The key-value methods are written once, in the `kv_methods!` list
//! below. The macro emits each as an inherent method — so `client.put(..)`
//! works with only `use d_engine_node::EmbeddedEngine;` in scope, as the user
//! guides write it — and emits the [`KvClient`] implementation as calls to
//! those methods, so code generic over `KvClient` runs unchanged against the
//! gRPC client. A trait implementation alone would make every caller import
//! `KvClient` (trait methods resolve only when the trait is in scope);
//! inherent methods alone would not serve generic code. Their signatures are
//! therefore the trait's (`impl AsRef<[u8]> + Send` keys and values).

use std::time::Duration;

use bytes::Bytes;

use super::forward::{should_forward, Forwarder};
use crate::recipes;
use crate::runtime::{NodeHandle, WatchStream};
use d_engine_api::{
    scan_prefix_pages, CasOutcome, Consistency, CoordClient, DeleteRangeOutcome, HeldLock,
    KeyValue, KvClient, LeaderInfo, LeaderKey, LeaseGrant, LeaseKeeper, LeaseStatus, LeaseTtl,
    LockKey, MemberInfo, RangeEnd, RangeOptions, RangePage, Result, Txn, TxnOutcome, WatchOptions,
};

/// The in-process client of an [`super::EmbeddedEngine`]. Implements
/// [`KvClient`] exactly like the gRPC client, so business logic written
/// against `KvClient` runs unchanged in both modes.
#[derive(Clone)]
pub struct EmbeddedClient {
    handle: NodeHandle,
    forward: std::sync::Arc<Forwarder>,
}

impl std::fmt::Debug for EmbeddedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedClient")
            .field("node_id", &self.handle.id())
            .finish()
    }
}

fn b(x: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(x.as_ref())
}

/// Emits the listed methods as inherent `pub async fn`s of
/// [`EmbeddedClient`] and the [`KvClient`] implementation calling them (see
/// the module docs).
macro_rules! kv_methods {
    ($(
        $(#[$attr:meta])*
        async fn $name:ident(&$self:ident $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty $body:block
    )*) => {
        impl EmbeddedClient {
            $(
                $(#[$attr])*
                pub async fn $name(&$self $(, $arg: $ty)*) -> $ret $body
            )*
        }

        impl KvClient for EmbeddedClient {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    EmbeddedClient::$name(self $(, $arg)*).await
                }
            )*
        }
    };
}

kv_methods! {
    /// Stores `value` under `key`; returns the write's revision.
    async fn put(&self, key: impl AsRef<[u8]> + Send, value: impl AsRef<[u8]> + Send) -> Result<u64> {
        self.put_ttl(b(key), b(value), None).await
    }

    /// Like `put`; the key expires `ttl` after the write.
    async fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        ttl: Duration,
    ) -> Result<u64> {
        self.put_ttl(b(key), b(value), Some(ttl)).await
    }

    /// Linearizable read of one key.
    async fn get(&self, key: impl AsRef<[u8]> + Send) -> Result<Option<KeyValue>> {
        self.get_with(key, Consistency::Linearizable).await
    }

    /// Reads one key with an explicit consistency.
    async fn get_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>> {
        let k = b(key);
        match self.handle.get(k.clone(), consistency).await {
            Err(e) if should_forward(&e) => {
                self.forward.get(&self.handle, e, k, consistency).await
            }
            r => r,
        }
    }

    /// Reads several keys at one point in time.
    async fn get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<Vec<Option<KeyValue>>> {
        let ks: Vec<Bytes> = keys.iter().map(|k| Bytes::copy_from_slice(k)).collect();
        match self.handle.get_multi(ks, consistency).await {
            Err(e) if should_forward(&e) => {
                self.forward.get_multi(&self.handle, e, keys, consistency).await
            }
            r => r,
        }
    }

    /// Deletes `key`; returns whether it existed.
    async fn delete(&self, key: impl AsRef<[u8]> + Send) -> Result<bool> {
        let k = b(key);
        match self.handle.delete(k.clone(), None).await {
            Ok(d) => Ok(d.deleted),
            Err(e) if should_forward(&e) => self.forward.delete(&self.handle, e, k).await,
            Err(e) => Err(e),
        }
    }

    /// Atomically replaces the value if it equals `expected` (`None`: the
    /// key must not exist); `new_value: None` deletes the key on success.
    async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]> + Send,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
    ) -> Result<CasOutcome> {
        self.cas(b(key), expected, new_value, None).await
    }

    /// The pairs under `prefix` in key order: all of them (`limit` 0,
    /// read page by page) or the first `limit`.
    async fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        limit: u32,
        consistency: Consistency,
    ) -> Result<Vec<KeyValue>> {
        scan_prefix_pages(self, prefix.as_ref().to_vec(), limit, consistency).await
    }

    /// One page of `[key, options.end)` (see [`KvClient::range`]); walk the
    /// rest with [`d_engine_api::RangeWalk`].
    async fn range(&self, key: impl AsRef<[u8]> + Send, options: RangeOptions) -> Result<RangePage> {
        let k = b(key);
        match self.handle.range(k.clone(), options.clone()).await {
            Err(e) if should_forward(&e) => {
                self.forward.range(&self.handle, e, k, options).await
            }
            r => r,
        }
    }

    /// Deletes every key in `[key, end)` in one replicated step.
    async fn delete_range(
        &self,
        key: impl AsRef<[u8]> + Send,
        end: RangeEnd,
        prev_kv: bool,
    ) -> Result<DeleteRangeOutcome> {
        let k = b(key);
        match self.handle.delete_range(k.clone(), end.clone(), prev_kv, None).await {
            Err(e) if should_forward(&e) => {
                self.forward.delete_range(&self.handle, e, k, end, prev_kv).await
            }
            r => r,
        }
    }

    /// Runs a transaction atomically (see [`KvClient::txn`]).
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        match self.handle.txn(txn.clone(), None).await {
            Err(e) if should_forward(&e) => self.forward.txn(&self.handle, e, &txn).await,
            r => r,
        }
    }

    /// Stores `value` under `key`, attached to `lease`.
    async fn put_with_lease(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        lease: u64,
    ) -> Result<u64> {
        let (k, v) = (b(key), b(value));
        match self.handle.put_with_lease(k.clone(), v.clone(), lease, None).await {
            Err(e) if should_forward(&e) => {
                self.forward.put_with_lease(&self.handle, e, k, v, lease).await
            }
            r => r,
        }
    }

    /// Grants a lease of `ttl`; the leader picks its id.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        self.lease_grant_with_id(ttl, 0).await
    }

    /// Revokes a lease and deletes its keys; returns how many.
    async fn lease_revoke(&self, id: u64) -> Result<u64> {
        match self.handle.lease_revoke(id, None).await {
            Err(e) if should_forward(&e) => self.forward.lease_revoke(&self.handle, e, id).await,
            r => r,
        }
    }

    /// Restarts the lease's TTL on the leader.
    async fn lease_renew(&self, id: u64) -> Result<Duration> {
        match self.handle.lease_renew(id).await {
            Err(e) if should_forward(&e) => self.forward.lease_renew(&self.handle, e, id).await,
            r => r,
        }
    }

    /// The lease's granted and remaining TTL (and keys if asked).
    async fn lease_time_to_live(&self, id: u64, keys: bool) -> Result<LeaseTtl> {
        match self.handle.lease_time_to_live(id, keys).await {
            Err(e) if should_forward(&e) => {
                self.forward.lease_time_to_live(&self.handle, e, id, keys).await
            }
            r => r,
        }
    }

    /// Every live lease.
    async fn lease_list(&self) -> Result<Vec<LeaseStatus>> {
        match self.handle.lease_list().await {
            Err(e) if should_forward(&e) => self.forward.lease_list(&self.handle, e).await,
            r => r,
        }
    }

    /// Watches one key (served by the local node, events after apply).
    async fn watch(&self, key: impl AsRef<[u8]> + Send, start_revision: u64) -> Result<WatchStream> {
        self.handle.watch(b(key), false, start_revision)
    }

    /// Watches every key starting with `prefix`.
    async fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> Result<WatchStream> {
        self.handle.watch(b(prefix), true, start_revision)
    }

    /// Watches the keys `options` describe, with `prev_kv`, progress
    /// notifications and filters (served by the local node; see
    /// [`KvClient::watch_with`]).
    async fn watch_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: WatchOptions,
    ) -> Result<WatchStream> {
        self.handle.watch_with(b(key), &options)
    }
}

/// Locks and election, run in process by the recipes over this client:
/// each step goes to the local node and is forwarded to the leader when
/// this node is not it, like any call.
impl CoordClient for EmbeddedClient {
    async fn lock(&self, name: impl AsRef<[u8]> + Send, lease: u64) -> Result<LockKey> {
        recipes::lock::lock(self, name.as_ref(), lease).await
    }

    async fn unlock(&self, key: impl AsRef<[u8]> + Send) -> Result<()> {
        recipes::lock::unlock(self, key.as_ref()).await
    }

    async fn campaign(
        &self,
        name: impl AsRef<[u8]> + Send,
        lease: u64,
        value: impl AsRef<[u8]> + Send,
    ) -> Result<LeaderKey> {
        recipes::election::campaign(self, name.as_ref(), lease, value.as_ref()).await
    }

    async fn proclaim(&self, leader: &LeaderKey, value: impl AsRef<[u8]> + Send) -> Result<()> {
        recipes::election::proclaim(self, leader, value.as_ref()).await
    }

    async fn election_leader(&self, name: impl AsRef<[u8]> + Send) -> Result<Option<KeyValue>> {
        recipes::election::leader(self, name.as_ref()).await
    }

    async fn resign(&self, leader: &LeaderKey) -> Result<()> {
        recipes::election::resign(self, leader).await
    }

    async fn observe(
        &self,
        name: impl AsRef<[u8]> + Send,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<KeyValue>>> {
        recipes::election::observe(self.clone(), name.as_ref().to_vec(), 16)
    }
}

impl EmbeddedClient {
    /// Grants a lease of `ttl`, keeps it alive in the background and waits
    /// for lock `name` (see [`HeldLock`]).
    pub async fn lock_with_ttl(
        &self,
        name: impl AsRef<[u8]> + Send,
        ttl: Duration,
    ) -> Result<HeldLock<Self>> {
        HeldLock::acquire(std::sync::Arc::new(self.clone()), name, ttl).await
    }

    /// Grants a lease of `ttl` and keeps it alive in the background (see
    /// [`LeaseKeeper`]); drop the keeper to stop renewing.
    pub async fn lease_keep_alive(&self, ttl: Duration) -> Result<LeaseKeeper> {
        let g = KvClient::lease_grant(self, ttl).await?;
        Ok(LeaseKeeper::start(
            std::sync::Arc::new(self.clone()),
            g.id,
            g.ttl,
        ))
    }

    /// Grants lease `id` (0 = the leader picks one) of `ttl`;
    /// `InvalidArgument` if `id` names a live lease.
    pub async fn lease_grant_with_id(&self, ttl: Duration, id: u64) -> Result<LeaseGrant> {
        match self.handle.lease_grant(ttl, id, None).await {
            Err(e) if should_forward(&e) => {
                self.forward.lease_grant(&self.handle, e, ttl, id).await
            }
            r => r,
        }
    }

    pub(super) fn new(handle: NodeHandle, forward: std::sync::Arc<Forwarder>) -> Self {
        EmbeddedClient { handle, forward }
    }

    /// The node handle behind this client.
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// Like `compare_and_swap`; the new value expires `ttl` after the write.
    pub async fn compare_and_swap_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
        ttl: Duration,
    ) -> Result<CasOutcome> {
        self.cas(b(key), expected, new_value, Some(ttl)).await
    }

    async fn put_ttl(&self, k: Bytes, v: Bytes, ttl: Option<Duration>) -> Result<u64> {
        match self.handle.put(k.clone(), v.clone(), ttl, None).await {
            Err(e) if should_forward(&e) => self.forward.put(&self.handle, e, k, v, ttl).await,
            r => r,
        }
    }

    /// Compare-and-swap on this node, forwarded to the leader (with the same
    /// TTL) when this node is not it.
    async fn cas(
        &self,
        k: Bytes,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome> {
        let local = self
            .handle
            .compare_and_swap(
                k.clone(),
                expected.clone().map(Bytes::from),
                new_value.clone().map(Bytes::from),
                ttl,
                None,
            )
            .await;
        match local {
            Err(e) if should_forward(&e) => {
                self.forward
                    .compare_and_swap(&self.handle, e, k, expected, new_value, ttl)
                    .await
            }
            r => r,
        }
    }

    // ----- admin ---------------------------------------------------------

    pub fn members(&self) -> Vec<MemberInfo> {
        self.handle.members()
    }

    pub fn leader(&self) -> LeaderInfo {
        self.handle.leader()
    }

    pub async fn add_learner(
        &self,
        id: u64,
        peer_addr: impl Into<String>,
        client_addr: impl Into<String>,
    ) -> Result<Vec<MemberInfo>> {
        self.handle
            .add_learner(id, peer_addr.into(), client_addr.into())
            .await
    }

    pub async fn promote(&self, id: u64) -> Result<Vec<MemberInfo>> {
        self.handle.promote(id).await
    }

    pub async fn remove_member(&self, id: u64) -> Result<Vec<MemberInfo>> {
        self.handle.remove_member(id).await
    }

    pub async fn transfer_leader(&self, to: u64) -> Result<()> {
        self.handle.transfer_leader(to).await
    }

    pub async fn trigger_snapshot(&self) -> Result<u64> {
        self.handle.trigger_snapshot().await
    }
}
