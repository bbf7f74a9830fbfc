//! Who this node is and where the cluster is: `node_id`, `cluster_id`,
//! `data_dir`, `peer_addr`, `client_addr`, `[[members]]`, `join` and
//! `[peer_dial_overrides]`.
//!
//! Addresses are checked for shape (`host:port`, port a number) only; a
//! host name is resolved when the node binds or dials it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// Default client API port.
pub const DEFAULT_CLIENT_PORT: u16 = 9083;
/// Default peer (Raft) port.
pub const DEFAULT_PEER_PORT: u16 = 9081;

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Node id, >= 1, unique.
    pub id: u64,
    /// Address peers reach this node's Raft service on (`host:port`).
    pub peer_addr: String,
    /// Address clients reach this node's client API on (`host:port`); may be empty.
    #[serde(default)]
    pub client_addr: String,
}

impl Config {
    /// The initial members, defaulting to this node alone.
    pub fn initial_members(&self) -> Vec<MemberConfig> {
        if self.join {
            // A joining node starts with no membership; it learns it from
            // the leader once added (`members` then only says where the
            // existing cluster is).
            return Vec::new();
        }
        if self.members.is_empty() {
            return vec![MemberConfig {
                id: self.node_id,
                peer_addr: self.peer_addr.clone(),
                client_addr: self.client_addr.clone(),
            }];
        }
        self.members.clone()
    }

    /// `peer_dial_overrides` by node id. Errors name the key: an id that is
    /// not a number, 0, this node's own id, not one of `members` (when
    /// members are listed), or an address that is not `host:port`.
    pub fn dial_overrides(&self) -> Result<BTreeMap<u64, String>, ConfigError> {
        let mut out = BTreeMap::new();
        for (k, addr) in &self.peer_dial_overrides {
            let key = format!("peer_dial_overrides.{k}");
            let id: u64 = k
                .trim()
                .parse()
                .map_err(|_| ConfigError::new(&key, format!("`{k}` is not a node id")))?;
            if id == 0 || id == self.node_id {
                return Err(ConfigError::new(
                    &key,
                    format!(
                        "node id {id} is 0 or this node's own id; only peers can be overridden"
                    ),
                ));
            }
            if !self.members.is_empty() && !self.members.iter().any(|m| m.id == id) {
                return Err(ConfigError::new(
                    &key,
                    format!("node id {id} is not one of the members"),
                ));
            }
            check_addr(&key, addr)?;
            out.insert(id, addr.clone());
        }
        Ok(out)
    }

    /// True when this configuration describes more than one node (several
    /// members, or a node joining an existing cluster).
    pub fn multi_node(&self) -> bool {
        self.join || self.members.iter().any(|m| m.id != self.node_id)
    }

    /// Identity, addresses, members and dial overrides.
    pub(super) fn validate_cluster(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::new(
                "node_id",
                "must be >= 1 (0 is reserved); allowed 1..=18446744073709551615",
            ));
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > 128 {
            return Err(ConfigError::new("cluster_id", "must be 1..=128 bytes long"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "must not be empty"));
        }
        check_addr("peer_addr", &self.peer_addr)?;
        if !self.client_addr.is_empty() {
            check_addr("client_addr", &self.client_addr)?;
        }
        let mut seen = BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.id == 0 {
                return Err(ConfigError::new(
                    format!("members[{i}].id"),
                    "must be >= 1 (0 is reserved)",
                ));
            }
            if !seen.insert(m.id) {
                return Err(ConfigError::new(
                    format!("members[{i}].id"),
                    format!("node id {} is listed twice", m.id),
                ));
            }
            check_addr(&format!("members[{i}].peer_addr"), &m.peer_addr)?;
            if !m.client_addr.is_empty() {
                check_addr(&format!("members[{i}].client_addr"), &m.client_addr)?;
            }
        }
        if !self.members.is_empty() && !self.join && !seen.contains(&self.node_id) {
            return Err(ConfigError::new(
                "members",
                format!(
                    "node_id {} is not one of the members {:?}; add it, or set join = true to \
                     join an existing cluster as a learner",
                    self.node_id,
                    seen.iter().collect::<Vec<_>>()
                ),
            ));
        }
        self.dial_overrides()?;
        Ok(())
    }
}

fn check_addr(key: &str, addr: &str) -> Result<(), ConfigError> {
    // host:port where host may be a name; the port must parse.
    let ok = match addr.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    };
    if !ok {
        return Err(ConfigError::new(
            key,
            format!("`{addr}` is not a host:port address (e.g. 127.0.0.1:9083)"),
        ));
    }
    Ok(())
}

/// True when `addr` can only be reached from this machine: a socket
/// address with a loopback IP (`127.0.0.0/8`, `[::1]:port`) or
/// `localhost:port`. Unspecified addresses (0.0.0.0, ::), other host names
/// and unbracketed IPv6 text are not. The one check for peer exposure and
/// for serving auth without TLS.
pub fn is_loopback_addr(addr: &str) -> bool {
    if let Ok(a) = addr.parse::<std::net::SocketAddr>() {
        return a.ip().is_loopback();
    }
    // Not an IP socket address: only `localhost:<port>` is loopback. An
    // unbracketed IPv6 text such as `::1:9083` is the address
    // 0:0:0:0:0:0:1:9083 (not loopback), never `[::1]` port 9083.
    addr.rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_member_errors_name_the_key() {
        let e = Config::from_toml_str("node_id = 0").unwrap_err();
        assert_eq!(e.key, "node_id");

        let e =
            Config::from_toml_str("node_id = 3\n[[members]]\nid = 1\npeer_addr = \"127.0.0.1:1\"")
                .unwrap_err();
        assert_eq!(e.key, "members");

        let e = Config::from_toml_str("peer_addr = \"nope\"").unwrap_err();
        assert_eq!(e.key, "peer_addr");
    }

    #[test]
    fn dial_overrides_are_checked() {
        let e = Config::from_toml_str(
            "[peer_dial_overrides]\n\"9\" = \"127.0.0.1:1\"\n[[members]]\nid = 1\npeer_addr = \"127.0.0.1:2\"",
        )
        .unwrap_err();
        assert_eq!(e.key, "peer_dial_overrides.9");
        let e = Config::from_toml_str("[peer_dial_overrides]\n\"2\" = \"nowhere\"").unwrap_err();
        assert_eq!(e.key, "peer_dial_overrides.2");
        let c = Config::from_toml_str("[peer_dial_overrides]\n2 = \"127.0.0.1:7\"").unwrap();
        assert_eq!(c.dial_overrides().unwrap()[&2], "127.0.0.1:7");
    }

    #[test]
    fn loopback_addresses() {
        for a in ["127.0.0.1:9083", "[::1]:1", "localhost:9083", "127.1.2.3:5"] {
            assert!(is_loopback_addr(a), "{a}");
        }
        // `::1:9083` is an IPv6 address without a port, not [::1]:9083.
        for a in [
            "0.0.0.0:9083",
            "[::]:1",
            "10.0.0.1:9083",
            "db.example:9083",
            "::1:9083",
            "localhost",
            "notlocalhost:1",
        ] {
            assert!(!is_loopback_addr(a), "{a}");
        }
    }
}
