//! Keeps a lease alive in the background and tells the application when it
//! is lost.
//!
//! Contract: renews every `ttl / 3` through [`KvClient::lease_renew`]
//! (retrying failed renewals every `ttl / 10`, at least 50 ms); the lease is
//! reported lost, once, when the server answers `LeaseNotFound`, when the
//! client is closed (`ClientClosed`, the lease then expires), or when no
//! renewal has been acknowledged for a whole `ttl`, counted from when the
//! last acknowledged renewal was *sent* (the server promises the lease
//! lives at least `ttl` from then; see `docs/guarantees.md` §13): the lease
//! may then have expired, and a holder must stop acting on it. Dropping the keeper or calling
//! [`LeaseKeeper::stop`] stops renewing (the lease then expires after its
//! TTL unless revoked). Runs on the caller's tokio runtime.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::Error;
use crate::kv::KvClient;

/// A background renewal of one lease (see the module docs).
pub struct LeaseKeeper {
    id: u64,
    lost: watch::Receiver<Option<Error>>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// Starts renewing lease `id` of TTL `ttl` through `client`.
    pub fn start<C: KvClient + 'static>(client: Arc<C>, id: u64, ttl: Duration) -> Self {
        let (tx, lost) = watch::channel(None);
        let task = tokio::spawn(renew_loop(client, id, ttl, tx));
        LeaseKeeper { id, lost, task }
    }

    /// The lease's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Why the lease was lost, if it was.
    pub fn lost_reason(&self) -> Option<Error> {
        self.lost.borrow().clone()
    }

    /// Waits until the lease is lost and returns why.
    pub async fn lost(&mut self) -> Error {
        loop {
            if let Some(e) = self.lost.borrow_and_update().clone() {
                return e;
            }
            if self.lost.changed().await.is_err() {
                return self.lost.borrow().clone().unwrap_or_else(|| {
                    Error::Internal("lease keeper stopped without a reason".into())
                });
            }
        }
    }

    /// Stops renewing (does not revoke the lease).
    pub fn stop(self) {}
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn renew_loop<C: KvClient>(
    client: Arc<C>,
    id: u64,
    ttl: Duration,
    lost: watch::Sender<Option<Error>>,
) {
    let period = ttl / 3;
    let retry = (ttl / 10)
        .max(Duration::from_millis(50))
        .min(period.max(Duration::from_millis(1)));
    // The grant was sent before this keeper started: counting from now is
    // at most as generous as counting from its send.
    let mut last_ok = Instant::now();
    loop {
        let sent = Instant::now();
        match client.lease_renew(id).await {
            Ok(_) => {
                last_ok = sent;
                tokio::time::sleep(period).await;
            }
            // Final: the lease is gone, or the client was closed.
            Err(e @ (Error::LeaseNotFound(_) | Error::ClientClosed { .. })) => {
                let _ = lost.send(Some(e));
                return;
            }
            Err(e) => {
                if last_ok.elapsed() >= ttl {
                    let _ = lost.send(Some(Error::LeaseNotFound(format!(
                        "lease {id}: no renewal acknowledged for its whole TTL of {ttl:?} \
                         (last error: {e}); it may have expired"
                    ))));
                    return;
                }
                tokio::time::sleep(retry).await;
            }
        }
        if last_ok.elapsed() >= ttl {
            let _ = lost.send(Some(Error::LeaseNotFound(format!(
                "lease {id}: no renewal acknowledged for its whole TTL of {ttl:?}; it may have expired"
            ))));
            return;
        }
    }
}
