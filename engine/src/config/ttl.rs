//! `[ttl]`: how often the leader expires keys whose time to live ran out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{range, Config, ConfigError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtlConfig {
    /// How often the leader proposes an Expire command. Default 1000; 10..=3,600,000.
    pub expire_interval_ms: u64,
}

impl Default for TtlConfig {
    fn default() -> Self {
        TtlConfig {
            expire_interval_ms: 1000,
        }
    }
}

impl TtlConfig {
    /// `expire_interval_ms` as a duration.
    pub fn expire_interval(&self) -> Duration {
        Duration::from_millis(self.expire_interval_ms)
    }
}

impl Config {
    /// `[ttl]`.
    pub(super) fn validate_ttl(&self) -> Result<(), ConfigError> {
        range(
            "ttl.expire_interval_ms",
            self.ttl.expire_interval_ms,
            10,
            3_600_000,
        )?;
        Ok(())
    }
}
