//! `[peer]`: how nodes prove to each other that they belong to the
//! cluster, and the rule that a node reachable beyond loopback must
//! authenticate its peers unless the operator opts out.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::cluster::is_loopback_addr;
use super::{Config, ConfigError};

/// How nodes prove to each other that they belong to the cluster
/// (`[peer]`; `docs/tls.md`). Either a shared cluster secret
/// (`secret_file`), or peer mutual TLS (`[tls] peer = true`), or both.
///
/// Without either, [`Config::validate`] refuses a node whose peer port
/// listens on a non-loopback address, and a multi-node configuration with a
/// member on a non-loopback address, unless `allow_unauthenticated = true`.
/// A cluster entirely on loopback addresses may run unauthenticated (every
/// local process is then trusted as a peer); the node warns at every start.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerConfig {
    /// File holding the cluster secret: at least 32 random bytes written as
    /// hex (`d-engine-server gen-secret --out FILE` writes one, mode 0600).
    /// Every node of the cluster uses the same file. Each peer stream is
    /// opened with an HMAC-SHA256 over the cluster id, sender id, target id,
    /// a timestamp and a nonce; a call without a valid one is refused
    /// (UNAUTHENTICATED). The file must not be readable by group or others.
    /// Default empty (no secret).
    pub secret_file: PathBuf,
    /// Run without peer authentication even though the peer port or a
    /// member listens on a non-loopback address: anyone who can reach the
    /// peer port can then act as a member. A warning is logged at every
    /// start. Default false.
    pub allow_unauthenticated: bool,
}

impl Config {
    /// True when peers authenticate (`peer.secret_file` or `tls.peer`).
    pub fn peer_authenticated(&self) -> bool {
        !self.peer.secret_file.as_os_str().is_empty() || self.tls.peer
    }

    /// `[peer]`: a peer port reachable from other machines, or a cluster
    /// with members on other machines, needs peer authentication unless the
    /// operator opts out (`peer.allow_unauthenticated`). Loopback-only
    /// configurations (the single-node default, local test clusters) may
    /// run without it; the node then warns at start.
    pub(super) fn validate_peer_auth(&self) -> Result<(), ConfigError> {
        if self.peer_authenticated() || self.peer.allow_unauthenticated {
            return Ok(());
        }
        const FIX: &str = "set peer.secret_file (create one with `d-engine-server gen-secret \
                           --out FILE`, the same file on every node) or tls.peer = true, or set \
                           peer.allow_unauthenticated = true to accept unauthenticated peers \
                           (anyone who reaches the peer port can then act as a member)";
        if !is_loopback_addr(&self.peer_addr) {
            return Err(ConfigError::new(
                "peer.secret_file",
                format!(
                    "peer_addr {} is not a loopback address and peers are not \
                     authenticated: {FIX}",
                    self.peer_addr
                ),
            ));
        }
        if self.multi_node() {
            if let Some(m) = self
                .members
                .iter()
                .find(|m| !is_loopback_addr(&m.peer_addr))
            {
                return Err(ConfigError::new(
                    "peer.secret_file",
                    format!(
                        "this multi-node configuration has member {} at {}, which is not a \
                         loopback address, and peers are not authenticated: {FIX}",
                        m.id, m.peer_addr
                    ),
                ));
            }
        }
        Ok(())
    }
}
