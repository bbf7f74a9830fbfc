//! `[watch]`: per-watcher buffers (in events and bytes), the history kept
//! for `start_revision`, the progress notification interval, and how many watchers a node, a user and a
//! connection may hold.

use serde::{Deserialize, Serialize};

use super::{range, Config, ConfigError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// Events buffered per watcher; a watcher that falls this far behind is
    /// cancelled with a reason. Default 1024; 1..=1,048,576.
    pub buffer: usize,
    /// Recent events kept in memory for `start_revision`. Default 10000; 0..=10,000,000.
    pub history: usize,
    /// Most concurrent watchers per node. Default 10000; 1..=1,000,000.
    pub max_watchers: usize,
    /// Most concurrent client-API watches of one authenticated user (all
    /// its connections together), so one user cannot take every watch
    /// slot. Not applied when auth is off. Default 1000; 1..=1,000,000.
    pub max_watchers_per_user: usize,
    /// Most concurrent client-API watches on one connection. Default 256;
    /// 1..=1,000,000.
    pub max_watchers_per_connection: usize,
    /// Bytes of events (keys and values) queued for one watcher: delivered
    /// by the node, not yet taken by the watcher's consumer (a gRPC stream's
    /// events count until the transport takes the message). A watcher whose
    /// next event would pass it is cancelled like one that falls `buffer`
    /// events behind (`Overloaded`, naming this key). A single event larger
    /// than the limit is still delivered to a watcher with nothing queued.
    /// A replay from `start_revision` is charged but never refused for its
    /// size (it shares the history's bytes). Default
    /// 4 MiB; 64 KiB..=1 GiB.
    pub max_buffer_bytes: usize,
    /// Bytes of events (keys and values) kept in memory for
    /// `start_revision`; the oldest events leave when either this or
    /// `history` is exceeded, and a watch from a revision that left fails
    /// with `Compacted`. Default 64 MiB; 0..=16 GiB.
    pub history_bytes: u64,
    /// A watch that asked for progress notifications (`progress_notify`)
    /// gets one after this long without a message: no events, the revision
    /// it has caught up to. Default 10000 (10 s); 10..=3,600,000.
    pub progress_interval_ms: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            buffer: 1024,
            history: 10_000,
            max_watchers: 10_000,
            max_watchers_per_user: 1000,
            max_watchers_per_connection: 256,
            max_buffer_bytes: 4 << 20,
            history_bytes: 64 << 20,
            progress_interval_ms: 10_000,
        }
    }
}

impl Config {
    /// `[watch]`.
    pub(super) fn validate_watch(&self) -> Result<(), ConfigError> {
        range("watch.buffer", self.watch.buffer, 1, 1 << 20)?;
        range("watch.history", self.watch.history, 0, 10_000_000)?;
        range("watch.max_watchers", self.watch.max_watchers, 1, 1_000_000)?;
        range(
            "watch.max_watchers_per_user",
            self.watch.max_watchers_per_user,
            1,
            1_000_000,
        )?;
        range(
            "watch.max_watchers_per_connection",
            self.watch.max_watchers_per_connection,
            1,
            1_000_000,
        )?;
        range(
            "watch.max_buffer_bytes",
            self.watch.max_buffer_bytes,
            64 << 10,
            1 << 30,
        )?;
        range("watch.history_bytes", self.watch.history_bytes, 0, 16 << 30)?;
        range(
            "watch.progress_interval_ms",
            self.watch.progress_interval_ms,
            10,
            3_600_000,
        )?;
        Ok(())
    }
}
