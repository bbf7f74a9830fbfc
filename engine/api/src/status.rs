//! A node's view of itself ([`NodeStatus`]): one type for the runtime
//! (`NodeHandle::status`, the embedded engine), the Admin.NodeStatus RPC
//! and the gRPC client's `node_status`.

use crate::types::MemberInfo;

/// Role of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeRole {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    Learner,
}

impl NodeRole {
    /// The lowercase name the admin API uses ("leader", "follower", ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeRole::Follower => "follower",
            NodeRole::PreCandidate => "pre_candidate",
            NodeRole::Candidate => "candidate",
            NodeRole::Leader => "leader",
            NodeRole::Learner => "learner",
        }
    }

    /// The role named `s` (as [`NodeRole::as_str`] spells it), if known.
    pub fn parse(s: &str) -> Option<NodeRole> {
        [
            NodeRole::Follower,
            NodeRole::PreCandidate,
            NodeRole::Candidate,
            NodeRole::Leader,
            NodeRole::Learner,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alarm a node raises in its [`NodeStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Alarm {
    /// A write was refused with `Error::NoSpace` because it did not fit in
    /// the storage quota (`storage.quota_bytes`), and no space has been
    /// freed (nor a write admitted) since; or the applied data exceeds the
    /// quota.
    NoSpace,
    /// An alarm this build does not know (reported by a newer node), by
    /// its wire name. Never raised by this build.
    Other(String),
}

impl Alarm {
    /// The name the admin API reports (`"NOSPACE"`).
    pub fn as_str(&self) -> &str {
        match self {
            Alarm::NoSpace => "NOSPACE",
            Alarm::Other(name) => name,
        }
    }

    /// The alarm named `s` on the wire.
    pub fn parse(s: &str) -> Alarm {
        match s {
            "NOSPACE" => Alarm::NoSpace,
            other => Alarm::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one node's state, as the node itself sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u64,
    pub role: NodeRole,
    pub term: u64,
    /// 0 if the node knows no leader.
    pub leader_id: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: u64,
    pub members: Vec<MemberInfo>,
    /// This node is the only voter of its configuration. As leader it then
    /// confirms linearizable reads alone, with no ReadIndex round through
    /// the consensus loop. (Not on the wire: false from the gRPC client.)
    pub sole_voter: bool,
    /// Raised alarms (empty when none), e.g. [`Alarm::NoSpace`]: the
    /// node's stored data reached its storage quota and writes that store
    /// data fail with `Error::NoSpace`.
    pub alarms: Vec<Alarm>,
    /// Logical size of the stored data: every key's key + value + 32 bytes
    /// of metadata (what `storage.quota_bytes` counts).
    pub data_bytes: u64,
    /// `storage.quota_bytes`; 0 = no quota.
    pub quota_bytes: u64,
    /// Payload bytes of the committed log since the latest snapshot (a
    /// snapshot is taken once it passes `snapshot.threshold_bytes`).
    pub log_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_alarms_round_trip_their_wire_names() {
        for r in [
            NodeRole::Follower,
            NodeRole::PreCandidate,
            NodeRole::Candidate,
            NodeRole::Leader,
            NodeRole::Learner,
        ] {
            assert_eq!(NodeRole::parse(r.as_str()), Some(r));
        }
        assert_eq!(NodeRole::parse("observer"), None);
        assert_eq!(Alarm::parse("NOSPACE"), Alarm::NoSpace);
        assert_eq!(Alarm::parse("CORRUPT").as_str(), "CORRUPT");
    }
}
