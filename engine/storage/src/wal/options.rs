//! WAL configuration: segment size and durability mode.

use std::time::{Duration, Instant};

use super::error::{Result, WalError};

/// When appended entries become durable, and so when the host may report
/// them to the core with `log_persisted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Default. The host calls [`super::Wal::sync`] (one `fdatasync` for
    /// every entry appended since the previous sync: group commit) and only
    /// then reports the entries as persisted. Nothing acknowledged is ever
    /// lost, whatever fails.
    #[default]
    Always,
    /// Opt-in relaxed mode. The host reports entries as persisted once
    /// [`super::Wal::flush`] has handed them to the operating system, and
    /// calls [`super::Wal::sync`] whenever [`SyncMode::needs_sync`] says so
    /// (at least every `interval_ms`).
    ///
    /// Exact risk:
    /// - A crash of the process (panic, SIGKILL, OOM kill) loses nothing:
    ///   flushed data lives in the kernel's page cache and reaches the disk.
    /// - A power loss, kernel panic or VM/host crash can lose every entry
    ///   flushed since the last completed `fdatasync`: up to `interval_ms`
    ///   (plus the duration of one `fdatasync`) of acknowledged writes.
    /// - Because a node counts such entries toward a commit quorum, if a
    ///   majority of voters lose power within that window, writes that were
    ///   acknowledged to clients as committed can disappear, and the cluster
    ///   may later commit different entries at the same indexes. Use it only
    ///   where the nodes do not share a power or failure domain, or where
    ///   losing the last `interval_ms` of writes is acceptable.
    Periodic { interval_ms: u64 },
}

impl SyncMode {
    /// True if, with `unsynced` data pending and the last sync having
    /// completed at `last_sync`, the host must sync now.
    pub fn needs_sync(&self, unsynced: bool, last_sync: Instant, now: Instant) -> bool {
        if !unsynced {
            return false;
        }
        match self {
            SyncMode::Always => true,
            SyncMode::Periodic { interval_ms } => {
                now.saturating_duration_since(last_sync) >= Duration::from_millis(*interval_ms)
            }
        }
    }
}

/// Options for [`super::Wal::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is closed (synced) and a new one started once it reaches
    /// this many bytes. Default 64 MiB; allowed 4 KiB ..= 1 GiB.
    pub segment_size: u64,
    /// Appended bytes are buffered in memory and written to the OS once the
    /// buffer reaches this size or at the next `sync`/`flush`. Default 1 MiB.
    pub write_buffer: usize,
    /// Durability mode; see [`SyncMode`].
    pub sync_mode: SyncMode,
    /// When a write reaches the end of the active segment file, this many
    /// bytes of zeros (capped at `segment_size`) are written after it in the
    /// same call. Later appends then overwrite allocated space, so their
    /// `fdatasync` flushes only data, not a file-size change through the
    /// filesystem journal (about half the latency on ext4). Recovery treats
    /// an all-zero tail as free space. Default 4 MiB; 0 disables.
    pub preallocate: u64,
}

pub const MIN_SEGMENT_SIZE: u64 = 4 * 1024;
pub const MAX_SEGMENT_SIZE: u64 = 1024 * 1024 * 1024;

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 * 1024 * 1024,
            write_buffer: 1024 * 1024,
            sync_mode: SyncMode::Always,
            preallocate: 4 * 1024 * 1024,
        }
    }
}

impl WalOptions {
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(WalError::InvalidOptions(format!(
                "segment_size is {} bytes; it must be between {MIN_SEGMENT_SIZE} and \
                 {MAX_SEGMENT_SIZE}",
                self.segment_size
            )));
        }
        if self.preallocate > MAX_SEGMENT_SIZE {
            return Err(WalError::InvalidOptions(format!(
                "preallocate is {} bytes; at most {MAX_SEGMENT_SIZE}",
                self.preallocate
            )));
        }
        if let SyncMode::Periodic { interval_ms } = self.sync_mode {
            if interval_ms == 0 || interval_ms > 60_000 {
                return Err(WalError::InvalidOptions(format!(
                    "sync_mode Periodic interval_ms is {interval_ms}; it must be 1..=60000 \
                     (use SyncMode::Always for fsync before every acknowledgement)"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_sync_follows_mode() {
        let t0 = Instant::now();
        let t5 = t0 + Duration::from_millis(5);
        let t20 = t0 + Duration::from_millis(20);
        assert!(!SyncMode::Always.needs_sync(false, t0, t20));
        assert!(SyncMode::Always.needs_sync(true, t0, t0));
        let p = SyncMode::Periodic { interval_ms: 10 };
        assert!(!p.needs_sync(true, t0, t5));
        assert!(p.needs_sync(true, t0, t20));
        assert!(!p.needs_sync(false, t0, t20));
    }

    #[test]
    fn options_are_validated() {
        assert!(WalOptions::default().validate().is_ok());
        let o = WalOptions {
            segment_size: 10,
            ..Default::default()
        };
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("segment_size"));
        let o = WalOptions {
            sync_mode: SyncMode::Periodic { interval_ms: 0 },
            ..Default::default()
        };
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("interval_ms"));
    }
}
