//! The watch path: opening a watch on the node's [`super::watch_hub`].
//!
//! Contracts: the key (or prefix) is validated against
//! `limits.max_key_bytes`; a stopped node refuses; events arrive after
//! apply, in log order, from `start_revision` if it is still in the history
//! (`Compacted` otherwise); the hub's bounds (`watch.buffer`,
//! `watch.max_buffer_bytes`, `watch.max_watchers`) apply.

use bytes::Bytes;

use super::handle::NodeHandle;
use super::types::{Result, WatchStream};
use super::watch_hub::HubStream;

impl NodeHandle {
    /// Watches `key` (or every key starting with it if `prefix`), from
    /// `start_revision` if it is still in the in-memory history (0 = only new
    /// changes). `Error::Compacted` if it is not.
    ///
    /// Client types: see [`super::watch_hub::WatchHub::watch_client`].
    pub fn watch(
        &self,
        key: impl Into<Bytes>,
        prefix: bool,
        start_revision: u64,
    ) -> Result<WatchStream> {
        let key = key.into();
        self.check_watch(&key, prefix)?;
        self.shared.hub.watch_client(key, prefix, start_revision)
    }

    /// A watch whose events share the hub's bytes (see [`super::watch_hub::WatchHub::watch`]).
    pub(crate) fn watch_shared(
        &self,
        key: Bytes,
        prefix: bool,
        start_revision: u64,
    ) -> Result<HubStream> {
        self.check_watch(&key, prefix)?;
        self.shared.hub.watch(key, prefix, start_revision)
    }

    fn check_watch(&self, key: &Bytes, prefix: bool) -> Result<()> {
        self.shared.check_running()?;
        if !prefix {
            self.validate_key(key)?;
        } else {
            self.limits().prefix("prefix", key)?;
        }
        Ok(())
    }
}
