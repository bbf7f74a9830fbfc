//! What a node keeps on disk and how: `[durability]` (when a write counts
//! as durable, WAL segments), `[storage]` (the quota), `[snapshot]` (when
//! snapshots are taken, how they travel) and `[state_machine]` (where
//! applied keys live).
//!
//! `[durability]` is translated into the WAL's form in one place,
//! [`DurabilityConfig::wal_options`] (the WAL thread's periodic sync,
//! [`DurabilityConfig::sync_interval`], is derived from the same
//! translation).

use std::time::Duration;

use d_engine_storage::wal::{SyncMode, WalOptions};
use serde::{Deserialize, Serialize};

use super::{range, Config, ConfigError};

/// When a write counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// fdatasync before an entry counts toward a commit (default; nothing
    /// acknowledged is lost whatever fails).
    Fsync,
    /// Count entries once written to the OS; fdatasync every `interval_ms`.
    /// A power loss on a majority within the window can lose acknowledged
    /// writes. See `docs/config.md`.
    Periodic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DurabilityConfig {
    /// "fsync" (default) or "periodic".
    pub mode: DurabilityMode,
    /// Sync interval in `periodic` mode. Default 10; 1..=60000.
    pub interval_ms: u64,
    /// WAL segment size in bytes. Default 64 MiB; 4 KiB..=1 GiB.
    pub segment_bytes: u64,
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        DurabilityConfig {
            mode: DurabilityMode::Fsync,
            interval_ms: 10,
            segment_bytes: 64 << 20,
        }
    }
}

impl DurabilityConfig {
    /// The WAL's sync mode for `mode` (and `interval_ms` when periodic).
    pub fn sync_mode(&self) -> SyncMode {
        match self.mode {
            DurabilityMode::Fsync => SyncMode::Always,
            DurabilityMode::Periodic => SyncMode::Periodic {
                interval_ms: self.interval_ms,
            },
        }
    }

    /// The WAL's options: `segment_bytes`, [`Self::sync_mode`], and the
    /// WAL's defaults for everything `[durability]` does not set.
    pub fn wal_options(&self) -> WalOptions {
        WalOptions {
            segment_size: self.segment_bytes,
            sync_mode: self.sync_mode(),
            ..WalOptions::default()
        }
    }

    /// How often the WAL thread syncs on its own: `Some(interval)` in
    /// `periodic` mode, `None` in `fsync` mode (it syncs before reporting
    /// entries persisted instead).
    pub fn sync_interval(&self) -> Option<Duration> {
        match self.sync_mode() {
            SyncMode::Always => None,
            SyncMode::Periodic { interval_ms } => Some(Duration::from_millis(interval_ms)),
        }
    }
}

/// The storage quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Most logical bytes of stored data (every key: key + value + 32 bytes
    /// of metadata, the same count on every backend and replica) a leader
    /// admits writes up to. A write that would take the data past it fails
    /// with `NoSpace` and raises the `NOSPACE` alarm in the node status;
    /// reads, deletes and snapshots keep working. A soft limit checked on
    /// the leader when a write is proposed: a committed write is always
    /// applied, on every replica. 0 disables the quota. Default 2 GiB (as
    /// etcd's default backend quota); 0 or 1 KiB..=8 EiB.
    pub quota_bytes: u64,
}

/// Default [`StorageConfig::quota_bytes`]: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            quota_bytes: DEFAULT_QUOTA_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Take a snapshot (and compact the WAL) after this many applied
    /// entries; 0 disables automatic snapshots. Default 100000.
    pub threshold_entries: u64,
    /// Also take a snapshot once the committed log entries since the last
    /// one hold more than this many payload bytes, whichever of the two
    /// thresholds comes first: bounds the in-memory log (and the log a
    /// restart replays) in bytes, not just entries. 0 disables the byte
    /// trigger. Default 256 MiB; 0 or 64 KiB..=64 GiB.
    pub threshold_bytes: u64,
    /// Snapshot transfer chunk size. Default 1 MiB; 4 KiB..=64 MiB.
    pub chunk_bytes: usize,
    /// Largest snapshot this node accepts from a peer, in bytes: a transfer
    /// announcing more is refused before anything is staged (and so is a
    /// transfer that would leave less than 1/20 of the data dir's
    /// filesystem, at least 64 MiB, free). Default 64 GiB; 1 MiB..=16 TiB.
    pub max_inbound_bytes: u64,
    /// An inbound snapshot transfer that sends nothing for this long is
    /// dropped: its slot is released and its staging file deleted (the
    /// sender starts over). Default 30000 (30 s); 100..=3600000.
    pub inbound_idle_timeout_ms: u64,
}

/// Default [`SnapshotConfig::threshold_bytes`]: 256 MiB. Large enough that
/// a node at its default 2 GiB quota rewrites its snapshot at most once per
/// 256 MiB of writes (8× write amplification at worst), small enough that
/// the in-memory log stays a bounded, modest share of a node's memory and a
/// restart replays seconds of log, not minutes.
pub const DEFAULT_SNAPSHOT_THRESHOLD_BYTES: u64 = 256 << 20;

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            threshold_entries: 100_000,
            threshold_bytes: DEFAULT_SNAPSHOT_THRESHOLD_BYTES,
            chunk_bytes: 1 << 20,
            max_inbound_bytes: 64 << 30,
            inbound_idle_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateMachineConfig {
    /// Where applied keys live. Default `memory`.
    pub backend: StateMachineBackend,
    /// sled's page cache, in MiB (the `sled` backend only). The largest
    /// single share of a node's memory; smaller saves memory at the cost of
    /// reads and writes that miss it. Default 256; 8..=65536.
    pub cache_mb: u64,
}

/// The state machine's storage. Either way the log is the source of truth
/// and every write is fsynced to it before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateMachineBackend {
    /// Every key in RAM, in copy-on-write maps; a restart loads the latest
    /// snapshot and replays the log after it (default). The cheapest per
    /// write and the smallest per key; the data set must fit in memory, and
    /// a restart takes longer the further the log runs past the latest
    /// snapshot (`snapshot.threshold_entries`).
    Memory,
    /// A sled database on disk with a page cache (`cache_mb`), flushed in
    /// the background; a restart replays the log after sled's applied index.
    /// For data sets larger than memory.
    Sled,
}

impl Default for StateMachineConfig {
    fn default() -> Self {
        StateMachineConfig {
            backend: StateMachineBackend::Memory,
            cache_mb: 256,
        }
    }
}

impl Config {
    /// `[durability]` (`interval_ms` only matters, and is only checked, in
    /// `periodic` mode).
    pub(super) fn validate_durability(&self) -> Result<(), ConfigError> {
        let d = &self.durability;
        if d.mode == DurabilityMode::Periodic {
            range("durability.interval_ms", d.interval_ms, 1, 60_000)?;
        }
        range("durability.segment_bytes", d.segment_bytes, 4096, 1 << 30)?;
        Ok(())
    }

    /// `[snapshot]`, `[storage]` and `[state_machine]`.
    pub(super) fn validate_storage(&self) -> Result<(), ConfigError> {
        if self.snapshot.threshold_bytes != 0 {
            range(
                "snapshot.threshold_bytes",
                self.snapshot.threshold_bytes,
                64 << 10,
                64 << 30,
            )?;
        }
        if self.storage.quota_bytes != 0 && self.storage.quota_bytes < 1024 {
            return Err(ConfigError::new(
                "storage.quota_bytes",
                format!(
                    "value {} is out of range; allowed 0 (no quota) or 1024..={}",
                    self.storage.quota_bytes,
                    u64::MAX
                ),
            ));
        }
        range(
            "snapshot.chunk_bytes",
            self.snapshot.chunk_bytes,
            4096,
            64 << 20,
        )?;
        range(
            "snapshot.max_inbound_bytes",
            self.snapshot.max_inbound_bytes,
            1 << 20,
            16 << 40,
        )?;
        range(
            "snapshot.inbound_idle_timeout_ms",
            self.snapshot.inbound_idle_timeout_ms,
            100,
            3_600_000,
        )?;
        range(
            "state_machine.cache_mb",
            self.state_machine.cache_mb,
            8,
            65_536,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_and_snapshot_byte_threshold_parse_and_are_checked() {
        let c = Config::default();
        assert_eq!(c.storage.quota_bytes, 2 << 30);
        assert_eq!(c.snapshot.threshold_bytes, 256 << 20);
        let c = Config::from_toml_str(
            "[storage]\nquota_bytes = 4096\n[snapshot]\nthreshold_bytes = 1048576",
        )
        .unwrap();
        assert_eq!(c.storage.quota_bytes, 4096);
        assert_eq!(c.snapshot.threshold_bytes, 1 << 20);
        let c =
            Config::from_toml_str("[storage]\nquota_bytes = 0\n[snapshot]\nthreshold_bytes = 0")
                .unwrap();
        assert_eq!((c.storage.quota_bytes, c.snapshot.threshold_bytes), (0, 0));
        let e = Config::from_toml_str("[storage]\nquota_bytes = 10").unwrap_err();
        assert_eq!(e.key, "storage.quota_bytes");
        let e = Config::from_toml_str("[snapshot]\nthreshold_bytes = 10").unwrap_err();
        assert_eq!(e.key, "snapshot.threshold_bytes");
    }

    #[test]
    fn state_machine_backend_and_cache() {
        let e = Config::from_toml_str("[state_machine]\ncache_mb = 4").unwrap_err();
        assert_eq!(e.key, "state_machine.cache_mb");
        assert!(e.to_string().contains("8..=65536"), "{e}");
        let c = Config::from_toml_str("[state_machine]\ncache_mb = 64").unwrap();
        assert_eq!(c.state_machine.cache_mb, 64);
        assert_eq!(c.state_machine.backend, StateMachineBackend::Memory);
        let c = Config::from_toml_str("[state_machine]\nbackend = \"sled\"").unwrap();
        assert_eq!(c.state_machine.backend, StateMachineBackend::Sled);
        let e = Config::from_toml_str("[state_machine]\nbackend = \"rocks\"").unwrap_err();
        assert!(e.to_string().contains("backend"), "{e}");
    }

    #[test]
    fn durability_mode_is_checked_and_translated_once() {
        let e = Config::from_toml_str("[durability]\nmode = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");

        let d = Config::default().durability;
        assert_eq!(d.sync_mode(), SyncMode::Always);
        assert_eq!(d.sync_interval(), None);
        let w = d.wal_options();
        assert_eq!(w.segment_size, 64 << 20);
        assert_eq!(w.sync_mode, SyncMode::Always);
        assert_eq!(w.write_buffer, WalOptions::default().write_buffer);

        let c = Config::from_toml_str(
            "[durability]\nmode = \"periodic\"\ninterval_ms = 25\nsegment_bytes = 8192",
        )
        .unwrap();
        let d = c.durability;
        assert_eq!(d.sync_mode(), SyncMode::Periodic { interval_ms: 25 });
        assert_eq!(d.sync_interval(), Some(Duration::from_millis(25)));
        assert_eq!(d.wal_options().segment_size, 8192);
        d.wal_options().validate().unwrap();
    }
}
