//! Tunables of the consensus core, all counted in ticks or entries.

use crate::types::NodeId;

/// Core configuration. Every duration is a number of [`crate::RaftNode::tick`] calls.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// Base election timeout; each election draws a timeout in
    /// `[election_ticks, 2 * election_ticks)`.
    pub election_ticks: u64,
    /// A leader sends heartbeats every `heartbeat_ticks`.
    pub heartbeat_ticks: u64,
    /// The lease lasts `election_ticks - lease_drift_margin_ticks` from the
    /// moment the confirming heartbeat round was sent. Must cover the worst
    /// clock-rate drift between nodes over an election timeout, plus one tick
    /// of quantization (a follower's first tick may come right after it heard
    /// the leader): with relative drift `d`, safe when
    /// `(E - m)(1 + d) <= (E - 1)(1 - d)`. At least 1.
    pub lease_drift_margin_ticks: u64,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// AppendEntries messages in flight per follower in replicate mode.
    pub max_inflight_msgs: usize,
    /// Maximum entries in one AppendEntries.
    pub max_entries_per_msg: usize,
    /// Maximum payload bytes in one AppendEntries (at least one entry is always sent).
    pub max_bytes_per_msg: usize,
    /// Ask the host for a snapshot once this many entries have been applied
    /// since the last one. 0 disables automatic snapshots.
    pub snapshot_threshold: u64,
    /// Heartbeat rounds started for waiting ReadIndex requests that may be
    /// unconfirmed at once (at least 1). With 1, reads that arrive while a
    /// round is out wait for it to return before the next one starts (up to
    /// two round trips); with more, the next round starts at once, so a
    /// read waits about one round trip, at the cost of more heartbeats.
    pub max_read_rounds_in_flight: usize,
    /// Seed of the core's internal PRNG (election timeout jitter).
    pub seed: u64,
}

/// A configuration the core refuses, naming the field and the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Defaults sized for a 10 ms tick: 150–300 ms elections, 30 ms heartbeats.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_ticks: 15,
            heartbeat_ticks: 3,
            lease_drift_margin_ticks: 3,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 64,
            max_entries_per_msg: 4096,
            max_bytes_per_msg: 4 << 20,
            snapshot_threshold: 100_000,
            max_read_rounds_in_flight: 1,
            seed: id,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError("node id must be >= 1 (0 is reserved)".into()));
        }
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError("heartbeat_ticks must be >= 1".into()));
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError(format!(
                "election_ticks ({}) must be greater than heartbeat_ticks ({})",
                self.election_ticks, self.heartbeat_ticks
            )));
        }
        if self.lease_drift_margin_ticks == 0 {
            return Err(ConfigError(
                "lease_drift_margin_ticks must be >= 1: one tick covers tick quantization \
                 (a follower's stickiness window may be one tick short), more covers clock \
                 drift: (election_ticks - margin) * (1 + drift) <= (election_ticks - 1) * (1 - drift)"
                    .into(),
            ));
        }
        if self.lease_drift_margin_ticks >= self.election_ticks {
            return Err(ConfigError(format!(
                "lease_drift_margin_ticks ({}) must be less than election_ticks ({})",
                self.lease_drift_margin_ticks, self.election_ticks
            )));
        }
        if self.max_read_rounds_in_flight == 0 {
            return Err(ConfigError("max_read_rounds_in_flight must be >= 1".into()));
        }
        if self.max_inflight_msgs == 0 || self.max_entries_per_msg == 0 {
            return Err(ConfigError(
                "max_inflight_msgs and max_entries_per_msg must be >= 1".into(),
            ));
        }
        Ok(())
    }
}
