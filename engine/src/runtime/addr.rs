//! How a member's two addresses travel inside the replicated membership.
//!
//! The core stores one opaque address string per member. The runtime puts
//! both addresses in it as `<peer_addr>` or `<peer_addr>|<client_addr>`, so
//! every node learns every member's client address (for NotLeader hints and
//! forwarding) from the replicated log. Only the peer part is handed to the
//! transport.

use std::fmt;

/// A member's peer (Raft) address and client API address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberAddr {
    pub peer: String,
    /// Empty if the member serves no client API.
    pub client: String,
}

impl MemberAddr {
    pub fn new(peer: impl Into<String>, client: impl Into<String>) -> Self {
        MemberAddr {
            peer: peer.into(),
            client: client.into(),
        }
    }

    /// Parses the core's address string (never fails: a string without `|`
    /// is a bare peer address).
    pub fn decode(s: &str) -> Self {
        match s.split_once('|') {
            Some((p, c)) => MemberAddr::new(p, c),
            None => MemberAddr::new(s, ""),
        }
    }

    /// The core's address string.
    pub fn encode(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for MemberAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.client.is_empty() {
            f.write_str(&self.peer)
        } else {
            write!(f, "{}|{}", self.peer, self.client)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for a in [
            MemberAddr::new("127.0.0.1:1", "127.0.0.1:2"),
            MemberAddr::new("h:1", ""),
        ] {
            assert_eq!(MemberAddr::decode(&a.encode()), a);
        }
        assert_eq!(MemberAddr::decode("x:1").client, "");
    }
}
