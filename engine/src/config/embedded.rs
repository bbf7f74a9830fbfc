//! `[embedded]`: behaviour of the in-process client.

use serde::{Deserialize, Serialize};

/// Behaviour of the embedded client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// When the local node is not the leader, forward writes,
    /// linearizable/lease reads and application commands
    /// (`AppEngine::propose`) to the leader's client API over gRPC
    /// (otherwise return NotLeader). Default true.
    pub forward_to_leader: bool,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            forward_to_leader: true,
        }
    }
}
