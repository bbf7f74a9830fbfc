//! Distributed locks (see the [module docs](super) for the queue).

use d_engine_api::{KvClient, LockKey, Result};

use super::{check, enqueue, queue_key, wait_turn};

/// Waits until `lease`'s holder holds lock `name`. Calling it again with
/// the same lease keeps the queue position (a retry after a timeout is
/// safe). Fails with `LeaseNotFound` if the lease ends first, and with the
/// caller's deadline (dropping the future) otherwise; the queued key then
/// stays until the lease ends or [`unlock`] deletes it.
pub async fn lock<C: KvClient + ?Sized>(c: &C, name: &[u8], lease: u64) -> Result<LockKey> {
    check(name, lease)?;
    let key = queue_key(name, lease);
    let (revision, _) = enqueue(c, &key, b"", lease).await?;
    wait_turn(c, name, &key, revision).await?;
    Ok(LockKey { key, revision })
}

/// Releases the lock held (or waited for) by `key`. Succeeds if the key is
/// already gone.
pub async fn unlock<C: KvClient + ?Sized>(c: &C, key: &[u8]) -> Result<()> {
    c.delete(key).await.map(|_| ())
}
