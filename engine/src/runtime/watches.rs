//! The watch path: opening a watch on the node's [`super::watch_hub`].
//!
//! Contracts: the key (or prefix, or range `[key, end)`) is validated like
//! a range read's (`limits.max_key_bytes`; an end at or before the key is
//! `InvalidArgument` naming `range_end`); a stopped node refuses; events
//! arrive after apply, in log order, from `start_revision` if it is still
//! in the history (a `Compacted` [`d_engine_api::WatchCancel`] otherwise);
//! the hub's bounds (`watch.buffer`, `watch.max_buffer_bytes`,
//! `watch.max_watchers`) apply.

use bytes::Bytes;
use d_engine_api::{RangeEnd, WatchOptions};

use super::handle::NodeHandle;
use super::types::{Result, WatchStream};
use super::watch_hub::{HubStream, WatchSpec};

impl NodeHandle {
    /// Watches `key` (or every key starting with it if `prefix`), from
    /// `start_revision` if it is still in the in-memory history (0 = only new
    /// changes). Sugar for [`NodeHandle::watch_with`].
    pub fn watch(
        &self,
        key: impl Into<Bytes>,
        prefix: bool,
        start_revision: u64,
    ) -> Result<WatchStream> {
        let o = if prefix {
            WatchOptions::prefix()
        } else {
            WatchOptions::key()
        };
        self.watch_with(key, &o.with_start_revision(start_revision))
    }

    /// Watches the keys `options` describe, with its `prev_kv`, progress
    /// and filter options (see [`d_engine_api::KvClient::watch_with`]).
    ///
    /// Client types: see [`super::watch_hub::WatchHub::watch_client`].
    pub fn watch_with(&self, key: impl Into<Bytes>, options: &WatchOptions) -> Result<WatchStream> {
        let spec = self.watch_spec(key.into(), options)?;
        self.shared.hub.watch_client(spec)
    }

    /// A watch whose events share the hub's bytes (see [`super::watch_hub::WatchHub::watch`]).
    pub(crate) fn watch_shared(&self, key: Bytes, options: &WatchOptions) -> Result<HubStream> {
        let spec = self.watch_spec(key, options)?;
        self.shared.hub.watch(spec).inspect_err(|e| {
            if e.code() == d_engine_api::ErrorCode::Overloaded {
                let limit = if e.to_string().contains("watch.max_watchers") {
                    "watch.max_watchers"
                } else {
                    "watch.buffer"
                };
                self.shared.metrics.overloaded(limit);
            }
        })
    }

    /// `watch.progress_interval_ms`.
    pub(crate) fn watch_progress_interval(&self) -> std::time::Duration {
        self.shared.hub.progress_interval()
    }

    fn watch_spec(&self, key: Bytes, options: &WatchOptions) -> Result<WatchSpec> {
        self.shared.check_running()?;
        match &options.end {
            RangeEnd::Single => self.validate_key(&key)?,
            RangeEnd::Prefix => self.limits().prefix("prefix", &key)?,
            end => {
                let end = Bytes::from(end.to_wire(&key));
                self.key_range(key.clone(), end, "key", "range_end")?;
            }
        }
        Ok(WatchSpec::new(key, options))
    }
}
