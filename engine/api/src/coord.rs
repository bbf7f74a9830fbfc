//! The lock and election API every d-engine client implements
//! ([`CoordClient`]), and [`HeldLock`], a lock with its own kept-alive
//! lease.
//!
//! The recipes run in the node (the gRPC client calls the `Lock` and
//! `Election` services; the embedded client runs them in process), so every
//! client behaves the same. See `client.proto` for the queue and the
//! fencing token.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::kv::KvClient;
use crate::lease_keeper::LeaseKeeper;
use crate::types::{KeyValue, LeaderKey, LockKey};

/// Locks and leader election on leases.
pub trait CoordClient: Send + Sync {
    /// Waits until `lease`'s holder holds lock `name`. Again with the same
    /// lease: keeps the queue position. `LeaseNotFound` if the lease ends
    /// first.
    fn lock(
        &self,
        name: impl AsRef<[u8]> + Send,
        lease: u64,
    ) -> impl Future<Output = Result<LockKey>> + Send;

    /// Releases the lock held (or waited for) by `key`; succeeds if the key
    /// is already gone.
    fn unlock(&self, key: impl AsRef<[u8]> + Send) -> impl Future<Output = Result<()>> + Send;

    /// Waits until `lease`'s candidate leads election `name`, publishing
    /// `value`.
    fn campaign(
        &self,
        name: impl AsRef<[u8]> + Send,
        lease: u64,
        value: impl AsRef<[u8]> + Send,
    ) -> impl Future<Output = Result<LeaderKey>> + Send;

    /// Publishes a new value as the leader; `NotHeld` if the leadership
    /// ended.
    fn proclaim(
        &self,
        leader: &LeaderKey,
        value: impl AsRef<[u8]> + Send,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The current leader's key and value, if any.
    fn election_leader(
        &self,
        name: impl AsRef<[u8]> + Send,
    ) -> impl Future<Output = Result<Option<KeyValue>>> + Send;

    /// Gives up the leadership; succeeds if the key is already gone.
    fn resign(&self, leader: &LeaderKey) -> impl Future<Output = Result<()>> + Send;

    /// The leader each time it changes, starting with the current one.
    /// Ends after an error (sent as its last item).
    fn observe(
        &self,
        name: impl AsRef<[u8]> + Send,
    ) -> impl Future<Output = Result<mpsc::Receiver<Result<KeyValue>>>> + Send;
}

/// A lock held on a lease of its own, kept alive in the background.
///
/// [`HeldLock::acquire`] grants a lease of `ttl`, starts renewing it and
/// waits for the lock. [`HeldLock::release`] unlocks and revokes the lease.
/// Dropping it without `release` stops renewing: the lease, and with it
/// the lock, ends after at most `ttl`. Check [`HeldLock::lost`] (or wait on
/// it) before acting on the lock: once the lease may have expired, another
/// holder may hold it.
pub struct HeldLock<C: KvClient + CoordClient + 'static> {
    client: Arc<C>,
    key: LockKey,
    keeper: LeaseKeeper,
}

impl<C: KvClient + CoordClient + 'static> HeldLock<C> {
    /// Grants a lease of `ttl`, keeps it alive and waits for lock `name`.
    /// On failure the lease is revoked.
    pub async fn acquire(
        client: Arc<C>,
        name: impl AsRef<[u8]> + Send,
        ttl: Duration,
    ) -> Result<Self> {
        let grant = client.lease_grant(ttl).await?;
        let keeper = LeaseKeeper::start(client.clone(), grant.id, grant.ttl);
        match client.lock(name, grant.id).await {
            Ok(key) => Ok(HeldLock {
                client,
                key,
                keeper,
            }),
            Err(e) => {
                drop(keeper);
                let _ = client.lease_revoke(grant.id).await;
                Err(e)
            }
        }
    }

    /// The lock key and fencing token.
    pub fn key(&self) -> &LockKey {
        &self.key
    }

    /// The fencing token (see [`LockKey::revision`]).
    pub fn fencing_token(&self) -> u64 {
        self.key.revision
    }

    /// The lease the lock is held on.
    pub fn lease(&self) -> u64 {
        self.keeper.id()
    }

    /// Why the lock was lost, if its lease was (see the type docs).
    pub fn lost_reason(&self) -> Option<Error> {
        self.keeper.lost_reason()
    }

    /// Waits until the lock's lease is lost.
    pub async fn lost(&mut self) -> Error {
        self.keeper.lost().await
    }

    /// Unlocks and revokes the lease.
    pub async fn release(self) -> Result<()> {
        let HeldLock {
            client,
            key,
            keeper,
        } = self;
        let id = keeper.id();
        drop(keeper);
        client.unlock(&key.key).await?;
        match client.lease_revoke(id).await {
            Ok(_) | Err(Error::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
