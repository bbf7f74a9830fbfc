//! The key-value API every d-engine client implements.

use std::future::Future;

use tokio::sync::mpsc;

use crate::error::Result;
use crate::types::{CasOutcome, Consistency, KeyValue, WatchEvent};

/// A stream of watch events. It yields `Ok(event)` in revision order; a watch
/// the server ends (slow consumer, shutdown, compaction) yields one final
/// `Err` naming the reason, then `None`. Dropping it cancels the watch.
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

    /// Up to `limit` pairs whose key starts with `prefix`, in key order
    /// (`limit` 0 = server maximum of 10,000).
    fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        limit: u32,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Vec<KeyValue>>> + Send;

    /// Watches one key for changes committed after the watch starts, or
    /// from `start_revision` if it is still in the history (0 = now).
    fn watch(
        &self,
        key: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> impl Future<Output = Result<WatchStream>> + Send;

    /// Watches every key with the given prefix.
    fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> impl Future<Output = Result<WatchStream>> + Send;
}
