//! Plain data types of the key-value API, shared by embedded and gRPC clients.

use bytes::Bytes;

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
///
/// `key` and `value` are [`Bytes`]: a read hands out the state machine's
/// (or the wire message's) own buffer, shared and never copied per read.
/// Compare with `kv.value == b"x"[..]`, `kv.value == "x"`, or
/// `kv.value.as_ref() == b"x"`; `kv.value.to_vec()` gives an owned `Vec<u8>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    /// Log index that created the key (since its last deletion).
    pub create_revision: u64,
    /// Log index that last modified the key.
    pub mod_revision: u64,
    /// Number of modifications since creation (1 after create).
    pub version: u64,
    /// Absolute expiry time in unix milliseconds; 0 = no TTL.
    pub expires_at_ms: u64,
    /// The lease the key is attached to; 0 = none.
    pub lease: u64,
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

/// Kind of item a watch stream yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
    /// A progress notification (only with [`WatchOptions::progress_notify`]):
    /// no key changed. `kv.key` is empty and `kv.mod_revision` is the
    /// revision the watch has caught up to: every matching change at or
    /// below it has been delivered, the next event has a higher revision.
    Progress,
}

/// One committed change, delivered in log (revision) order, or a progress
/// notification ([`EventType::Progress`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventType,
    /// For `Delete`, `value` is empty and `mod_revision` is the deletion's revision.
    pub kv: KeyValue,
    /// The key before this change; only with [`WatchOptions::prev_kv`], and
    /// only when the key existed before it.
    pub prev_kv: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision of the change (for a progress notification: the
    /// revision the watch has caught up to).
    pub fn revision(&self) -> u64 {
        self.kv.mod_revision
    }

    /// A progress notification at `revision`.
    pub fn progress(revision: u64) -> WatchEvent {
        WatchEvent {
            kind: EventType::Progress,
            kv: KeyValue {
                key: Bytes::new(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
                expires_at_ms: 0,
                lease: 0,
            },
            prev_kv: None,
        }
    }
}

/// What a watch covers and delivers (see `docs/guarantees.md`, "Watches").
///
/// The keys are `[key, end)` with the rules of [`RangeEnd`] (one key by
/// default, a prefix, every key from `key` on, or up to an exclusive end,
/// which must sort after `key`: `InvalidArgument` otherwise).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchOptions {
    pub end: RangeEnd,
    /// First revision to deliver, if still in the node's watch history
    /// (`Compacted` otherwise); 0 = only changes after the watch starts.
    pub start_revision: u64,
    /// Every event carries the key's previous value in
    /// [`WatchEvent::prev_kv`] (absent when the key did not exist).
    pub prev_kv: bool,
    /// Ask for [`EventType::Progress`] notifications when the watch is
    /// idle (every `watch.progress_interval_ms` of the serving node).
    pub progress_notify: bool,
    /// Do not deliver puts.
    pub no_put: bool,
    /// Do not deliver deletes.
    pub no_delete: bool,
}

impl WatchOptions {
    /// One key.
    pub fn key() -> Self {
        WatchOptions::default()
    }

    /// Every key starting with the watch's key.
    pub fn prefix() -> Self {
        WatchOptions {
            end: RangeEnd::Prefix,
            ..Default::default()
        }
    }

    /// The keys of `[key, end)`.
    pub fn with_end(mut self, end: RangeEnd) -> Self {
        self.end = end;
        self
    }

    pub fn with_start_revision(mut self, start_revision: u64) -> Self {
        self.start_revision = start_revision;
        self
    }

    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    pub fn with_progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }

    pub fn with_no_put(mut self) -> Self {
        self.no_put = true;
        self
    }

    pub fn with_no_delete(mut self) -> Self {
        self.no_delete = true;
        self
    }
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

/// The end of the range of keys starting with `prefix`: the smallest key
/// above every such key (`[0]`, "every key from here on", for an empty or
/// all-`0xff` prefix). Use as `range_end` with `key = prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Which keys a range covers, besides its first key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RangeEnd {
    /// Only the first key.
    #[default]
    Single,
    /// Every key starting with the first key (the first key is the prefix).
    Prefix,
    /// Every key from the first key on.
    FromKey,
    /// Keys below this one (exclusive); must sort after the first key.
    Before(Vec<u8>),
}

impl RangeEnd {
    /// The wire `range_end` for a range starting at `key`.
    pub fn to_wire(&self, key: &[u8]) -> Vec<u8> {
        match self {
            RangeEnd::Single => Vec::new(),
            RangeEnd::Prefix => prefix_end(key),
            RangeEnd::FromKey => vec![0],
            RangeEnd::Before(end) => end.clone(),
        }
    }
}

/// Options of a range read. `limit` 0 = the server maximum (10,000).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    pub end: RangeEnd,
    pub limit: u32,
    /// Omit values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    pub consistency: Consistency,
}

impl RangeOptions {
    /// Every key starting with the range's first key.
    pub fn prefix() -> Self {
        RangeOptions {
            end: RangeEnd::Prefix,
            ..Default::default()
        }
    }

    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }
}

/// One page of a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangePage {
    pub kvs: Vec<KeyValue>,
    /// Keys of the range follow the last one returned.
    pub more: bool,
    /// Live keys in the whole requested range.
    pub count: u64,
    /// When `more`: the first key of the next page.
    pub next_key: Option<Vec<u8>>,
    /// The store revision the page was read at.
    pub revision: u64,
}

/// Outcome of a delete-range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeOutcome {
    pub deleted: u64,
    /// The deleted pairs, when asked for (cut at the response budget, then
    /// `prev_kvs_truncated`: every key was deleted all the same).
    pub prev_kvs: Vec<KeyValue>,
    pub prev_kvs_truncated: bool,
    pub revision: u64,
}

/// Comparison operator of a transaction [`Compare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// What a [`Compare`] looks at, with the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Value(Vec<u8>),
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
    Lease(u64),
}

/// One condition of a transaction. A missing key has version, revisions
/// and lease 0; a value compare on a missing key is false whatever the
/// operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    pub fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Self {
        Compare {
            key: key.into(),
            op,
            target,
        }
    }

    /// The key's value equals `value` (false if the key is missing).
    pub fn value_equals(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::Value(value.into()))
    }

    /// The key does not exist (its create revision is 0).
    pub fn missing(key: impl Into<Vec<u8>>) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::CreateRevision(0))
    }

    /// The key was last modified at `revision` (0: it is missing).
    pub fn mod_revision_is(key: impl Into<Vec<u8>>, revision: u64) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::ModRevision(revision))
    }
}

/// One operation of a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// A range read at the transaction's revision (its `consistency` is
    /// ignored).
    Range { key: Vec<u8>, options: RangeOptions },
    /// A put, attached to `lease` unless 0.
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
    },
    DeleteRange {
        key: Vec<u8>,
        end: RangeEnd,
        prev_kv: bool,
    },
}

impl TxnOp {
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        TxnOp::Range {
            key: key.into(),
            options: RangeOptions::default(),
        }
    }

    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        TxnOp::DeleteRange {
            key: key.into(),
            end: RangeEnd::Single,
            prev_kv: false,
        }
    }
}

/// A transaction: if every compare holds run `success`, else `failure`;
/// atomically, in one log entry, in order. At most 128 compares and 128
/// ops per branch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// The result of one transaction op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResult {
    Range(RangePage),
    /// `revision`: the transaction's revision.
    Put {
        revision: u64,
    },
    DeleteRange(DeleteRangeOutcome),
}

/// Outcome of a transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every compare held (success ran).
    pub succeeded: bool,
    /// One result per op of the branch that ran.
    pub results: Vec<TxnOpResult>,
    pub revision: u64,
    /// This answers a retry of a transaction already applied: its writes
    /// happened once, at `revision`; range results are empty.
    pub replayed: bool,
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub id: u64,
    pub ttl: std::time::Duration,
    pub revision: u64,
}

/// A lease's time to live, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTtl {
    pub id: u64,
    pub granted_ttl: std::time::Duration,
    pub remaining: std::time::Duration,
    /// Attached keys, when asked for (may be cut at the response budget).
    pub keys: Vec<Vec<u8>>,
    /// All attached keys.
    pub key_count: u64,
}

/// A lease in a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    pub id: u64,
    pub granted_ttl: std::time::Duration,
}

/// A held lock: the key to unlock with and the fencing token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockKey {
    /// `name/<lease id as 16 hex digits>`.
    pub key: Vec<u8>,
    /// The key's create revision: it grows with every new holder of the
    /// lock, so a protected resource can refuse a stale holder.
    pub revision: u64,
}

/// An election leadership: what proclaim and resign need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderKey {
    pub name: Vec<u8>,
    /// `name/<lease id as 16 hex digits>`.
    pub key: Vec<u8>,
    /// The key's create revision (fencing token of this leadership).
    pub revision: u64,
    pub lease: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
        assert_eq!(RangeEnd::Single.to_wire(b"k"), Vec::<u8>::new());
        assert_eq!(RangeEnd::FromKey.to_wire(b"k"), vec![0]);
    }
}
