//! Leader election (see the [module docs](super) for the queue): the holder
//! of the queue is the leader and its key's value is what it proclaims.

use std::time::Duration;

pub use d_engine_api::LeaderKey;
use d_engine_api::{Compare, Error, KeyValue, KvClient, Result, Txn, TxnOp, TxnOpResult};
use tokio::sync::mpsc;

use super::{check, enqueue, holder, queue_key, queue_prefix, wait_turn};

/// Waits until `lease`'s candidate leads election `name`, publishing
/// `value`. Campaigning again with the same lease keeps the queue position
/// and updates the value.
pub async fn campaign<C: KvClient + ?Sized>(
    c: &C,
    name: &[u8],
    lease: u64,
    value: &[u8],
) -> Result<LeaderKey> {
    check(name, lease)?;
    let key = queue_key(name, lease);
    let (revision, existed) = enqueue(c, &key, value, lease).await?;
    if existed {
        proclaim_at(c, &key, revision, lease, value).await?;
    }
    wait_turn(c, name, &key, revision).await?;
    Ok(LeaderKey {
        name: name.to_vec(),
        key,
        revision,
        lease,
    })
}

async fn proclaim_at<C: KvClient + ?Sized>(
    c: &C,
    key: &[u8],
    revision: u64,
    lease: u64,
    value: &[u8],
) -> Result<()> {
    let txn = Txn::new()
        .when([Compare::new(
            key.to_vec(),
            d_engine_api::CompareOp::Equal,
            d_engine_api::CompareTarget::CreateRevision(revision),
        )])
        .and_then([TxnOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
        }]);
    if c.txn(txn).await?.succeeded {
        Ok(())
    } else {
        Err(Error::NotHeld(format!(
            "{} (created at revision {revision}) no longer exists: the candidacy ended",
            String::from_utf8_lossy(key)
        )))
    }
}

/// Publishes a new value as the leader. `NotHeld` if the leadership ended.
pub async fn proclaim<C: KvClient + ?Sized>(c: &C, leader: &LeaderKey, value: &[u8]) -> Result<()> {
    proclaim_at(c, &leader.key, leader.revision, leader.lease, value).await
}

/// Gives up the leadership (or candidacy). Succeeds if the key is already
/// gone; `NotHeld` if the key now belongs to a newer candidacy.
pub async fn resign<C: KvClient + ?Sized>(c: &C, leader: &LeaderKey) -> Result<()> {
    let txn = Txn::new()
        .when([Compare::new(
            leader.key.clone(),
            d_engine_api::CompareOp::Equal,
            d_engine_api::CompareTarget::CreateRevision(leader.revision),
        )])
        .and_then([TxnOp::delete(leader.key.clone())])
        .or_else([TxnOp::get(leader.key.clone())]);
    let out = c.txn(txn).await?;
    if out.succeeded {
        return Ok(());
    }
    match out.results.first() {
        Some(TxnOpResult::Range(p)) if !p.kvs.is_empty() => Err(Error::NotHeld(format!(
            "{} belongs to a newer candidacy (created at revision {}, not {})",
            String::from_utf8_lossy(&leader.key),
            p.kvs[0].create_revision,
            leader.revision
        ))),
        _ => Ok(()),
    }
}

/// The current leader's key and value, if the election has one.
pub async fn leader<C: KvClient + ?Sized>(c: &C, name: &[u8]) -> Result<Option<KeyValue>> {
    check(name, 1)?;
    Ok(holder(c, name).await?.0)
}

/// Streams the leader each time it changes (its key, or its value),
/// starting with the current one. The stream ends after an error (sent
/// as its last item) or when the receiver is dropped.
pub fn observe<C: KvClient + Clone + 'static>(
    c: C,
    name: Vec<u8>,
    buffer: usize,
) -> Result<mpsc::Receiver<Result<KeyValue>>> {
    check(&name, 1)?;
    let (tx, rx) = mpsc::channel(buffer.max(1));
    tokio::spawn(async move {
        let mut last: Option<(bytes::Bytes, u64)> = None;
        loop {
            let (current, seen_at) = match holder(&c, &name).await {
                Ok(h) => h,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let from = seen_at + 1;
            if let Some(kv) = current {
                let id = (kv.key.clone(), kv.mod_revision);
                if last.as_ref() != Some(&id) {
                    last = Some(id);
                    if tx.send(Ok(kv)).await.is_err() {
                        return;
                    }
                }
            }
            // Wait for any change in the queue, then look again.
            let mut events = match c.watch_prefix(queue_prefix(&name), from).await {
                Ok(w) => w,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            tokio::select! {
                _ = events.recv() => {}
                _ = tx.closed() => return,
            }
            // Coalesce a burst of changes into one look.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    Ok(rx)
}
