//! The key-value API every d-engine client implements.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::Result;
use crate::types::{
    CasOutcome, Consistency, DeleteRangeOutcome, KeyValue, LeaseGrant, LeaseStatus, LeaseTtl,
    RangeEnd, RangeOptions, RangePage, Txn, TxnOutcome, WatchEvent, WatchOptions,
};

/// A stream of watch events. It yields `Ok(event)` in revision order (and,
/// if asked for, [`crate::EventType::Progress`] notifications); a watch the
/// server ends (slow consumer, shutdown, compaction) yields one final
/// `Err(Error::WatchCanceled(..))` with the cancel code and the revision to
/// resume from, then `None`. Dropping it cancels the watch.
pub type WatchStream = mpsc::Receiver<Result<WatchEvent>>;

/// Key-value operations shared by the embedded client and the gRPC client.
///
/// Writes are acknowledged only once committed by a quorum (durable on a
/// majority per the configured durability mode) and applied. Keys must be
/// 1..=4096 bytes and values at most 1 MiB; violations return
/// `Error::InvalidArgument` naming the limit.
pub trait KvClient: Send + Sync {
    /// Stores `value` under `key`; returns the write's revision.
    fn put(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Like `put`, but the key expires `ttl` after the write is proposed.
    fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Linearizable read of one key.
    fn get(
        &self,
        key: impl AsRef<[u8]> + Send,
    ) -> impl Future<Output = Result<Option<KeyValue>>> + Send {
        self.get_with(key, Consistency::Linearizable)
    }

    /// Reads one key with an explicit consistency.
    fn get_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Option<KeyValue>>> + Send;

    /// Reads several keys at one point in time; one result per key, in order.
    fn get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Vec<Option<KeyValue>>>> + Send;

    /// Deletes `key`; returns whether it existed.
    fn delete(&self, key: impl AsRef<[u8]> + Send) -> impl Future<Output = Result<bool>> + Send;

    /// Atomically replaces the value if it equals `expected` (`None`: the
    /// key must not exist). `new_value: None` deletes the key on success.
    fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]> + Send,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<CasOutcome>> + Send;

    /// The pairs whose key starts with `prefix`, in key order: all of them
    /// (`limit` 0; read page by page with [`KvClient::range`], each page
    /// its own point in time) or the first `limit`. Never cut short
    /// silently.
    fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        limit: u32,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Vec<KeyValue>>> + Send {
        scan_prefix_pages(self, prefix.as_ref().to_vec(), limit, consistency)
    }

    /// One page of the keys in `[key, options.end)`, in key order; when
    /// `more`, read the next page from `next_key` (or use [`RangeWalk`]).
    /// A range that ends at or before `key` is `InvalidArgument`.
    fn range(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: RangeOptions,
    ) -> impl Future<Output = Result<RangePage>> + Send;

    /// Deletes every key in `[key, end)` in one replicated step.
    fn delete_range(
        &self,
        key: impl AsRef<[u8]> + Send,
        end: RangeEnd,
        prev_kv: bool,
    ) -> impl Future<Output = Result<DeleteRangeOutcome>> + Send;

    /// Runs a transaction atomically (one log entry). More than 128
    /// compares or ops per branch is `InvalidArgument`; a put naming a
    /// missing lease is `LeaseNotFound` and nothing is applied.
    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnOutcome>> + Send;

    /// Stores `value` under `key`, attached to lease `lease` (the key is
    /// deleted when the lease ends); `LeaseNotFound` if the lease does not
    /// exist.
    fn put_with_lease(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        lease: u64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Grants a lease of `ttl` (1 ms ..= 1 year); the server picks its id.
    fn lease_grant(&self, ttl: Duration) -> impl Future<Output = Result<LeaseGrant>> + Send;

    /// Revokes a lease and deletes its keys (in one step); returns how
    /// many keys were deleted. `LeaseNotFound` if it does not exist.
    fn lease_revoke(&self, id: u64) -> impl Future<Output = Result<u64>> + Send;

    /// Restarts the lease's TTL on the leader; returns the TTL.
    /// `LeaseNotFound` if it has expired or was revoked.
    fn lease_renew(&self, id: u64) -> impl Future<Output = Result<Duration>> + Send;

    /// The lease's granted and remaining TTL, and its keys if `keys`.
    fn lease_time_to_live(
        &self,
        id: u64,
        keys: bool,
    ) -> impl Future<Output = Result<LeaseTtl>> + Send;

    /// Every live lease.
    fn lease_list(&self) -> impl Future<Output = Result<Vec<LeaseStatus>>> + Send;

    /// Watches the keys `options` describe (one key, a prefix, or
    /// `[key, end)`), with `prev_kv`, progress notifications and filters as
    /// asked. Events arrive in revision order; a watch the server ends
    /// yields one final `Err(Error::WatchCanceled(..))` whose code says why
    /// and whose `resume_revision` says where to watch again from (see
    /// `docs/guarantees.md`). An end at or before `key` is `InvalidArgument`.
    fn watch_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: WatchOptions,
    ) -> impl Future<Output = Result<WatchStream>> + Send;

    /// Watches one key for changes committed after the watch starts, or
    /// from `start_revision` if it is still in the history (0 = now).
    fn watch(
        &self,
        key: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        self.watch_with(key, WatchOptions::key().with_start_revision(start_revision))
    }

    /// Watches every key with the given prefix.
    fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        self.watch_with(
            prefix,
            WatchOptions::prefix().with_start_revision(start_revision),
        )
    }
}

/// Walks every page of a range: `next_page` reads the next page until the
/// range is exhausted (`None`). Each page is its own point in time (its
/// `revision`); a key is returned at most once per walk.
pub struct RangeWalk<'a, C: ?Sized> {
    client: &'a C,
    next: Option<Vec<u8>>,
    end: Vec<u8>,
    options: RangeOptions,
}

impl<'a, C: KvClient + ?Sized> RangeWalk<'a, C> {
    pub fn new(client: &'a C, key: Vec<u8>, options: RangeOptions) -> Self {
        // Fix the end once, from the first key: later pages start elsewhere.
        let end = options.end.to_wire(&key);
        RangeWalk {
            client,
            next: Some(key),
            end,
            options,
        }
    }

    /// The next page, or `None` after the last one.
    pub async fn next_page(&mut self) -> Result<Option<RangePage>> {
        let Some(key) = self.next.take() else {
            return Ok(None);
        };
        let mut options = self.options.clone();
        options.end = match self.end.as_slice() {
            [] => RangeEnd::Single,
            [0] => RangeEnd::FromKey,
            end => RangeEnd::Before(end.to_vec()),
        };
        let page = self.client.range(key, options).await?;
        if page.more {
            match &page.next_key {
                Some(k) => self.next = Some(k.clone()),
                None => {
                    return Err(crate::Error::Internal(
                        "range page has more set but no next_key".into(),
                    ))
                }
            }
        }
        Ok(Some(page))
    }

    /// Every remaining pair of the range.
    pub async fn collect_all(mut self) -> Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        while let Some(page) = self.next_page().await? {
            out.extend(page.kvs);
        }
        Ok(out)
    }
}

/// [`KvClient::scan_prefix`] over any client: walks the pages of the
/// prefix range until `limit` pairs (0 = all) are read.
pub async fn scan_prefix_pages<C: KvClient + ?Sized>(
    client: &C,
    prefix: Vec<u8>,
    limit: u32,
    consistency: Consistency,
) -> Result<Vec<KeyValue>> {
    let mut options = RangeOptions::prefix().with_consistency(consistency);
    if limit != 0 {
        options.limit = limit;
    }
    let mut walk = RangeWalk::new(client, prefix, options);
    let mut out = Vec::new();
    while let Some(page) = walk.next_page().await? {
        out.extend(page.kvs);
        if limit != 0 && out.len() >= limit as usize {
            out.truncate(limit as usize);
            break;
        }
    }
    Ok(out)
}
