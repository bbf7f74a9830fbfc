//! `[metrics]`: the HTTP listener serving Prometheus metrics (`/metrics`),
//! liveness (`/health`) and readiness (`/ready`).
//!
//! Off by default (`listen_addr = ""`). Why not on loopback by default:
//! - it is one more open port that an operator did not ask for, and a
//!   fixed default port would collide when several nodes (or embedded
//!   engines) run on one host, as every local test cluster does;
//! - the endpoint is unauthenticated and says a lot about the cluster
//!   (members, indexes, load), so exposing it is a decision to write down.
//!
//! Set it to a loopback address (`127.0.0.1:9090`) for a scraper on the
//! same host, or to an interface address the monitoring network reaches.

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// The metrics/health HTTP listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` of the HTTP listener serving `/metrics`, `/health` and
    /// `/ready`; port 0 picks a free port. Empty (the default) serves none.
    pub listen_addr: String,
    /// How long a follower may go without a message from its leader and
    /// still count as ready (`/ready`, gRPC health), in milliseconds.
    /// 0 (the default) = twice `raft.election_timeout_ms`. Otherwise
    /// 1..=3,600,000.
    pub leader_silence_ms: u64,
}

impl Config {
    /// `[metrics]`: the listen address must be a literal `ip:port` (the
    /// listener binds it as given; a host name is refused rather than
    /// resolved to an unexpected interface).
    pub(super) fn validate_metrics(&self) -> Result<(), ConfigError> {
        let m = &self.metrics;
        if !m.listen_addr.is_empty() && m.listen_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::new(
                "metrics.listen_addr",
                format!(
                    "`{}` is not an ip:port address (e.g. 127.0.0.1:9090, [::1]:9090, or \
                     0.0.0.0:9090 for every interface); leave it empty to serve no metrics",
                    m.listen_addr
                ),
            ));
        }
        if m.leader_silence_ms > 3_600_000 {
            return Err(ConfigError::new(
                "metrics.leader_silence_ms",
                format!(
                    "value {} is out of range; allowed 0 (twice raft.election_timeout_ms) or \
                     1..=3600000",
                    m.leader_silence_ms
                ),
            ));
        }
        Ok(())
    }

    /// How long a follower may hear nothing from its leader and still be
    /// ready (`metrics.leader_silence_ms`, or twice the election timeout).
    pub fn leader_silence(&self) -> std::time::Duration {
        let ms = match self.metrics.leader_silence_ms {
            0 => self.raft.election_timeout_ms.saturating_mul(2),
            ms => ms,
        };
        std::time::Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default() {
        let c = Config::default();
        assert_eq!(c.metrics.listen_addr, "");
        c.validate().unwrap();
    }

    #[test]
    fn a_bad_listen_address_names_the_key() {
        for bad in [
            "nope",
            "127.0.0.1",
            "localhost:9090",
            "127.0.0.1:99999",
            ":9090",
        ] {
            let e =
                Config::from_toml_str(&format!("[metrics]\nlisten_addr = \"{bad}\"")).unwrap_err();
            assert_eq!(e.key, "metrics.listen_addr", "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{e}");
            assert!(e.to_string().contains("ip:port"), "{e}");
        }
    }

    #[test]
    fn good_listen_addresses_pass() {
        for ok in ["127.0.0.1:9090", "0.0.0.0:0", "[::1]:9090"] {
            let c = Config::from_toml_str(&format!("[metrics]\nlisten_addr = \"{ok}\"")).unwrap();
            assert_eq!(c.metrics.listen_addr, ok);
        }
    }

    #[test]
    fn leader_silence_defaults_to_two_election_timeouts() {
        let c = Config::from_toml_str("[raft]\nelection_timeout_ms = 300").unwrap();
        assert_eq!(c.leader_silence(), std::time::Duration::from_millis(600));
        let c = Config::from_toml_str("[metrics]\nleader_silence_ms = 50").unwrap();
        assert_eq!(c.leader_silence(), std::time::Duration::from_millis(50));
        let e = Config::from_toml_str("[metrics]\nleader_silence_ms = 3600001").unwrap_err();
        assert_eq!(e.key, "metrics.leader_silence_ms");
    }
}
