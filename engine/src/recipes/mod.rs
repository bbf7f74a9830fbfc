//! Coordination recipes on top of leases, ranges, transactions and watches:
//! [`lock`] and [`election`]. Written once, over any [`d_engine_api::KvClient`]:
//! the client services run them on the local node ([`local::LocalKv`]) and
//! the embedded client runs them over itself (so each step is forwarded to
//! the leader like any call).
//!
//! # The queue
//!
//! A lock or an election `name` is a queue of keys `name/<lease id as 16 hex
//! digits>`, each attached to its holder's lease. The key with the smallest
//! create revision holds; every other waits for the key created just before
//! its own to be deleted, then checks again. A holder's key is deleted when
//! it unlocks or resigns, or when its lease ends (expiry decided by the
//! leader, or revoke), so a holder that dies passes the lock on after its
//! TTL. A key's create revision only grows from one holder to the next: it
//! is the fencing token.
//!
//! Safety rests on the lease: a holder must stop acting on the lock once
//! its lease may have expired (the keepalive helper reports it), and a
//! protected resource should refuse requests with a fencing token below the
//! highest it has seen.

pub mod election;
pub mod local;
pub mod lock;

use d_engine_api::{
    Compare, Consistency, Error, ErrorCode, EventType, KeyValue, KvClient, RangeOptions, Result,
    Txn, TxnOp, TxnOpResult,
};

/// Longest lock or election name, in bytes (the key adds 17).
pub const MAX_NAME_BYTES: usize = 3072;

/// Checks a lock or election name and a lease id.
fn check(name: &[u8], lease: u64) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(
            "name is empty; a lock or election needs a name of 1..=3072 bytes".into(),
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidArgument(format!(
            "name is {} bytes; the limit is {MAX_NAME_BYTES} bytes",
            name.len()
        )));
    }
    if lease == 0 {
        return Err(Error::InvalidArgument(
            "lease is 0; grant a lease first and pass its id (the lock or candidacy ends with it)"
                .into(),
        ));
    }
    Ok(())
}

/// The queue prefix of `name`: `name/`.
pub fn queue_prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// The key a holder with `lease` queues under in `name`.
pub fn queue_key(name: &[u8], lease: u64) -> Vec<u8> {
    let mut k = queue_prefix(name);
    k.extend_from_slice(format!("{lease:016x}").as_bytes());
    k
}

/// Creates `key` attached to `lease` with `value` if absent; returns its
/// create revision and whether it already existed (a retry, or a second
/// call with the same lease: the queue position is kept).
async fn enqueue<C: KvClient + ?Sized>(
    c: &C,
    key: &[u8],
    value: &[u8],
    lease: u64,
) -> Result<(u64, bool)> {
    let txn = Txn::new()
        .when([Compare::missing(key.to_vec())])
        .and_then([TxnOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
        }])
        .or_else([TxnOp::get(key.to_vec())]);
    let out = c.txn(txn).await?;
    if out.succeeded {
        return Ok((out.revision, false));
    }
    match out.results.first() {
        Some(TxnOpResult::Range(page)) => match page.kvs.first() {
            Some(kv) => Ok((kv.create_revision, true)),
            // Deleted between the compare and... impossible in one txn, but
            // a replayed txn has empty range results: read it again.
            None => match c.get(key).await? {
                Some(kv) => Ok((kv.create_revision, true)),
                None => Err(Error::LeaseNotFound(format!(
                    "queue key {} is gone: its lease {lease} ended",
                    String::from_utf8_lossy(key)
                ))),
            },
        },
        _ => Err(Error::Internal(
            "enqueue txn returned no range result".into(),
        )),
    }
}

/// Every key of `name`'s queue with its metadata, each with the revision
/// of the page it was read at.
async fn queue<C: KvClient + ?Sized>(c: &C, name: &[u8]) -> Result<Vec<(KeyValue, u64)>> {
    Ok(queue_read(c, name).await?.0)
}

/// [`queue`], also returning the revision of the first page (every change
/// after it is visible to a watch from it + 1).
async fn queue_read<C: KvClient + ?Sized>(
    c: &C,
    name: &[u8],
) -> Result<(Vec<(KeyValue, u64)>, u64)> {
    let mut walk = d_engine_api::RangeWalk::new(
        c,
        queue_prefix(name),
        RangeOptions::prefix().with_consistency(Consistency::Linearizable),
    );
    let mut out = Vec::new();
    let mut first = None;
    while let Some(page) = walk.next_page().await? {
        let rev = page.revision;
        first.get_or_insert(rev);
        out.extend(page.kvs.into_iter().map(|kv| (kv, rev)));
    }
    Ok((out, first.unwrap_or(0)))
}

/// Waits until `key` (created at `my_rev`) is the oldest key of `name`'s
/// queue. Fails with `LeaseNotFound` if `key` disappears while waiting.
async fn wait_turn<C: KvClient + ?Sized>(
    c: &C,
    name: &[u8],
    key: &[u8],
    my_rev: u64,
) -> Result<()> {
    loop {
        let q = queue(c, name).await?;
        if !q.iter().any(|(kv, _)| kv.key == key) {
            return Err(Error::LeaseNotFound(format!(
                "queue key {} is gone while waiting: its lease ended or it was deleted",
                String::from_utf8_lossy(key)
            )));
        }
        let before = q
            .iter()
            .filter(|(kv, _)| kv.create_revision < my_rev)
            .max_by_key(|(kv, _)| kv.create_revision);
        let Some((prev, seen_at)) = before else {
            return Ok(());
        };
        wait_deleted(c, &prev.key, seen_at + 1).await?;
    }
}

/// Returns once `key` is deleted at or after `from_revision` (or the watch
/// history no longer reaches back: the caller checks again).
async fn wait_deleted<C: KvClient + ?Sized>(c: &C, key: &[u8], from_revision: u64) -> Result<()> {
    let mut events = c.watch(key, from_revision).await?;
    while let Some(ev) = events.recv().await {
        match ev {
            Ok(ev) if ev.kind == EventType::Delete => return Ok(()),
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::Compacted => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The holder of `name`'s queue (the key with the smallest create
/// revision), and the revision from which a watch sees every later change.
async fn holder<C: KvClient + ?Sized>(c: &C, name: &[u8]) -> Result<(Option<KeyValue>, u64)> {
    let (q, first) = queue_read(c, name).await?;
    let h = q
        .into_iter()
        .map(|(kv, _)| kv)
        .min_by_key(|kv| kv.create_revision);
    Ok((h, first))
}
