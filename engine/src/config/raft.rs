//! `[raft]`: the length of a tick, election and heartbeat timing, the
//! lease margin and replication windows, and their translation into the
//! consensus core's tick-based [`d_engine_core::Config`]
//! ([`Config::core_config`], the only place that translation happens).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{range, Config, ConfigError};

/// Timing of elections and heartbeats and replication windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Length of one logical tick. Default 10; 1..=1000.
    pub tick_ms: u64,
    /// Base election timeout; each election waits a random time in
    /// `[t, 2t)`. Default 150; at least 3 ticks and > heartbeat_interval_ms.
    pub election_timeout_ms: u64,
    /// Leader heartbeat interval. Default 30; at least one tick.
    pub heartbeat_interval_ms: u64,
    /// Lease = election timeout minus this margin (covers clock-rate drift
    /// between nodes and tick quantization). Default 30; at least one tick,
    /// at most election_timeout_ms - tick_ms.
    pub lease_drift_margin_ms: u64,
    /// Pre-vote before elections (prevents a rejoining node from disrupting
    /// a healthy leader). Default true.
    pub pre_vote: bool,
    /// A leader that cannot hear a quorum within an election timeout steps
    /// down. Default true. Required for lease reads to be safe.
    pub check_quorum: bool,
    /// AppendEntries in flight per follower. Default 64; 1..=4096.
    pub max_inflight_msgs: usize,
    /// Entries per AppendEntries. Default 4096; 1..=1,000,000.
    pub max_entries_per_msg: usize,
    /// Payload bytes per AppendEntries. Default 4 MiB; 4 KiB..=64 MiB.
    pub max_bytes_per_msg: usize,
    /// Heartbeat rounds for linearizable reads that may be out at once.
    /// 1: reads arriving while a round is out wait for its answer before
    /// the next round starts; more: the next round starts at once (a read
    /// waits about one round trip instead of up to two, for more
    /// heartbeats). Default 2; 1..=16.
    pub max_read_rounds_in_flight: usize,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            tick_ms: 10,
            election_timeout_ms: 150,
            heartbeat_interval_ms: 30,
            lease_drift_margin_ms: 30,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 64,
            max_entries_per_msg: 4096,
            max_bytes_per_msg: 4 << 20,
            max_read_rounds_in_flight: 2,
        }
    }
}

impl Config {
    /// One tick.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.raft.tick_ms)
    }

    fn ticks(&self, ms: u64) -> u64 {
        ms.div_ceil(self.raft.tick_ms).max(1)
    }

    /// The consensus core's configuration derived from this one.
    pub fn core_config(&self) -> d_engine_core::Config {
        let mut c = d_engine_core::Config::new(self.node_id);
        c.election_ticks = self.ticks(self.raft.election_timeout_ms);
        c.heartbeat_ticks = self.ticks(self.raft.heartbeat_interval_ms);
        c.lease_drift_margin_ticks = self.raft.lease_drift_margin_ms.div_ceil(self.raft.tick_ms);
        c.pre_vote = self.raft.pre_vote;
        c.check_quorum = self.raft.check_quorum;
        c.max_inflight_msgs = self.raft.max_inflight_msgs;
        c.max_entries_per_msg = self.raft.max_entries_per_msg;
        c.max_bytes_per_msg = self.raft.max_bytes_per_msg;
        c.max_read_rounds_in_flight = self.raft.max_read_rounds_in_flight;
        c.snapshot_threshold = self.snapshot.threshold_entries;
        c
    }

    /// `[raft]`: ranges, and an election timeout spanning more ticks than
    /// the heartbeat interval.
    pub(super) fn validate_raft(&self) -> Result<(), ConfigError> {
        let r = &self.raft;
        range("raft.tick_ms", r.tick_ms, 1, 1000)?;
        range(
            "raft.heartbeat_interval_ms",
            r.heartbeat_interval_ms,
            r.tick_ms,
            600_000,
        )?;
        range(
            "raft.election_timeout_ms",
            r.election_timeout_ms,
            (3 * r.tick_ms).max(r.heartbeat_interval_ms + 1),
            600_000,
        )?;
        if self.ticks(r.election_timeout_ms) <= self.ticks(r.heartbeat_interval_ms) {
            return Err(ConfigError::new(
                "raft.election_timeout_ms",
                format!(
                    "must span more ticks than raft.heartbeat_interval_ms ({} ms) at tick_ms = {}",
                    r.heartbeat_interval_ms, r.tick_ms
                ),
            ));
        }
        range(
            "raft.lease_drift_margin_ms",
            r.lease_drift_margin_ms,
            r.tick_ms,
            r.election_timeout_ms.saturating_sub(r.tick_ms),
        )?;
        range("raft.max_inflight_msgs", r.max_inflight_msgs, 1, 4096)?;
        range(
            "raft.max_read_rounds_in_flight",
            r.max_read_rounds_in_flight,
            1,
            16,
        )?;
        range(
            "raft.max_entries_per_msg",
            r.max_entries_per_msg,
            1,
            1_000_000,
        )?;
        range(
            "raft.max_bytes_per_msg",
            r.max_bytes_per_msg,
            4096,
            64 << 20,
        )?;

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_key_and_range() {
        let e = Config::from_toml_str("[raft]\ntick_ms = 0").unwrap_err();
        assert_eq!(e.key, "raft.tick_ms");
        assert!(e.to_string().contains("1..=1000"), "{e}");

        let e =
            Config::from_toml_str("[raft]\nelection_timeout_ms = 20\nheartbeat_interval_ms = 30")
                .unwrap_err();
        assert_eq!(e.key, "raft.election_timeout_ms");
    }
}
