//! Plain data types of the key-value API, shared by embedded and gRPC clients.

/// How a read is ordered against writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// ReadIndex on the leader: sees every write acknowledged before the read began.
    #[default]
    Linearizable,
    /// Served by the leader under its lease; linearizable while clock drift
    /// stays within the configured margin.
    Lease,
    /// Served from the local node's state; may be stale.
    Eventual,
}

/// A stored key with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Log index that created the key (since its last deletion).
    pub create_revision: u64,
    /// Log index that last modified the key.
    pub mod_revision: u64,
    /// Number of modifications since creation (1 after create).
    pub version: u64,
    /// Absolute expiry time in unix milliseconds; 0 = no TTL.
    pub expires_at_ms: u64,
}

/// Outcome of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    pub succeeded: bool,
    /// The key after the operation (None if it does not exist).
    pub current: Option<KeyValue>,
    /// Revision of the write (or of the store, if the comparison failed).
    pub revision: u64,
}

/// Kind of change a watch reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

/// One committed change, delivered in log (revision) order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventType,
    /// For `Delete`, `value` is empty and `mod_revision` is the deletion's revision.
    pub kv: KeyValue,
}

/// Role of a cluster member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    Voter,
    Learner,
}

/// A cluster member as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub peer_addr: String,
    pub client_addr: String,
    pub role: MemberRole,
}

/// Who leads right now, if anyone is known to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// 0 if unknown.
    pub id: u64,
    /// Client address of the leader; empty if unknown.
    pub client_addr: String,
    pub term: u64,
}

/// Identifies a client write for exactly-once retries (`client_id` 0 = none).
/// The session is `user`'s (`""` = anonymous: auth off, embedded writes);
/// the client service sets it to the authenticated user, so one user's client
/// ids never reach another user's session (`docs/auth.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct WriteId {
    pub client_id: u64,
    pub seq: u64,
    pub user: String,
}

impl WriteId {
    /// The same write id in `user`'s session (`None`: anonymous).
    pub fn owned_by(self, user: Option<&str>) -> WriteId {
        WriteId {
            user: user.unwrap_or_default().to_string(),
            ..self
        }
    }
}

/// One page of a prefix scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    pub kvs: Vec<KeyValue>,
    /// More keys match than were returned.
    pub more: bool,
    /// The store revision the page reflects.
    pub revision: u64,
}
