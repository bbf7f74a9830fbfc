//! The replicated key-value state machine.
//!
//! # Host contract
//!
//! - The Raft log is the source of truth. [`StateMachine::apply`] writes each
//!   batch atomically (keys, values, TTL deadlines, applied index, membership,
//!   dedup table) but does **not** make it durable: the sled implementation
//!   never calls `flush` per write, so a crash may lose recently applied
//!   batches, and the memory one keeps nothing at all. On restart the host
//!   opens the state machine (see [`open_or_rebuild`], or
//!   [`MemStateMachine::from_snapshot`]) and re-applies every committed log
//!   entry after [`StateMachine::applied_index`]. Entries at or below the applied index
//!   are skipped by `apply`, so replaying an overlapping range is harmless.
//! - The log may only be compacted up to the index of a snapshot that is
//!   durable on disk (a file written by [`crate::snapshot::SnapshotStore`]).
//!   If the state machine is behind that snapshot, missing or unreadable,
//!   [`open_or_rebuild`] restores it from the snapshot first.
//! - Entries must be applied in log order, each exactly once; a gap is an
//!   error ([`SmError::Gap`]).
//! - Reads (`get`, `scan_prefix`, `range_each`, the lease reads) may run
//!   concurrently with `apply` from other threads; they see whole batches,
//!   never part of one.

pub mod conformance;
pub mod dedup;
pub mod mem;
pub mod record;
pub mod sled_sm;
pub mod wire;

mod apply;
mod key_index;
mod sled_snapshot;

pub use mem::MemStateMachine;
pub use sled_sm::{
    open_or_rebuild, ApplyStats, OpenOutcome, Opened, SledOptions, SledStateMachine,
};

use bytes::Bytes;
use d_engine_core::{Index, Membership, SnapshotMeta, Term};
use std::fmt;
use std::path::Path;

use crate::snapshot::SnapshotError;

/// Bookkeeping bytes counted per stored key by [`StateMachine::data_bytes`]
/// on top of the key and the value: the revision metadata (create and mod
/// revision, version, deadline), 4 × 8 bytes. A fixed number, not what a
/// backend really spends, so that every backend and every replica counts
/// the same data the same way.
pub const KEY_OVERHEAD_BYTES: u64 = 32;

/// The logical size of one stored key (see [`StateMachine::data_bytes`]).
pub fn logical_kv_bytes(key_len: usize, value_len: usize) -> u64 {
    key_len as u64 + value_len as u64 + KEY_OVERHEAD_BYTES
}

/// Bytes counted per lease by [`StateMachine::data_bytes`] (id and TTL,
/// 2 × 8, rounded up to the key overhead): a fixed number, so that leases
/// count against the storage quota the same way on every replica.
pub const LEASE_OVERHEAD_BYTES: u64 = 32;

/// What one pair counts against [`crate::command::RESULT_BUDGET_BYTES`]:
/// key + value + 64.
pub fn result_pair_bytes(kv: &KeyValue) -> usize {
    kv.key.len() + kv.value.len() + 64
}

/// Collects one page of a range read, in key order: at most `limit` pairs
/// and at most [`crate::command::RESULT_BUDGET_BYTES`] (the first pair is
/// always taken, so a page is never empty while keys remain). Shared by
/// ranges inside transactions (apply) and the read path ([`range_page`]).
#[derive(Debug)]
pub struct PageBuilder {
    limit: usize,
    keys_only: bool,
    /// Budget bytes used, by this page and by earlier results of the same
    /// command (see [`PageBuilder::continuing`]).
    bytes: usize,
    /// Whether a pair may be taken whatever the budget (nothing of the
    /// command's result has been taken yet).
    first: bool,
    kvs: Vec<KeyValue>,
    more: bool,
}

impl PageBuilder {
    /// `limit` 0 = [`crate::command::MAX_TXN_RANGE_LIMIT`]; `keys_only`
    /// drops the values (they then count 0 bytes).
    pub fn new(limit: u32, keys_only: bool) -> Self {
        let limit = if limit == 0 {
            crate::command::MAX_TXN_RANGE_LIMIT
        } else {
            limit
        };
        PageBuilder {
            limit: limit as usize,
            keys_only,
            bytes: 0,
            first: true,
            kvs: Vec::new(),
            more: false,
        }
    }

    /// A page of a command whose earlier results already used `used`
    /// budget bytes (the ranges of one transaction share one budget); when
    /// `used > 0` even the first pair must fit.
    pub fn continuing(limit: u32, keys_only: bool, used: usize) -> Self {
        PageBuilder {
            bytes: used,
            first: used == 0,
            ..Self::new(limit, keys_only)
        }
    }

    /// Budget bytes used so far (earlier results included).
    pub fn used(&self) -> usize {
        self.bytes
    }

    /// Whether the page holds `limit` pairs already (a further pair would
    /// be refused: callers may stop before reading its value).
    pub fn is_full(&self) -> bool {
        self.kvs.len() >= self.limit
    }

    /// Offers the next pair of the range. Returns false (and the page then
    /// has `more`) when the pair does not fit; the caller stops there.
    pub fn offer(&mut self, mut kv: KeyValue) -> bool {
        if self.keys_only {
            kv.value = Bytes::new();
        }
        let size = result_pair_bytes(&kv);
        if self.is_full()
            || (!self.first && self.bytes + size > crate::command::RESULT_BUDGET_BYTES)
        {
            self.more = true;
            return false;
        }
        self.bytes += size;
        self.first = false;
        self.kvs.push(kv);
        true
    }

    /// Marks the page as followed by further keys (a caller that stopped
    /// offering early because it knew the page was full).
    pub fn set_more(&mut self) {
        self.more = true;
    }

    /// The page, with `count` = the live keys of the whole range.
    pub fn finish(self, count: u64) -> RangeResult {
        RangeResult {
            kvs: self.kvs,
            more: self.more,
            count,
        }
    }
}

/// One page of `spec` read from `sm` at `now_ms` (keys whose deadline is
/// `<= now_ms` hidden), with `count` = live keys of the whole range.
/// `count_only`: no pairs, `more` false. The pairs and the count are two
/// reads: under concurrent writes the count may come from a later batch.
/// The next page starts at [`RangeResult::next_key`].
pub fn range_page(
    sm: &dyn KvStateMachine,
    spec: &crate::command::RangeSpec,
    now_ms: u64,
) -> Result<RangeResult, SmError> {
    if spec.count_only {
        return Ok(RangeResult {
            kvs: Vec::new(),
            more: false,
            count: sm.range_count(&spec.range, now_ms)?,
        });
    }
    let mut page = PageBuilder::new(spec.limit, spec.keys_only);
    sm.range_each(&spec.range, now_ms, &mut |kv| page.offer(kv))?;
    let count = sm.range_count(&spec.range, now_ms)?;
    let min = page.kvs.len() as u64 + page.more as u64;
    Ok(page.finish(count.max(min)))
}

impl RangeResult {
    /// Where the next page starts (the key right after the last one
    /// returned), if `more`.
    pub fn next_key(&self) -> Option<Bytes> {
        if !self.more {
            return None;
        }
        let last = self.kvs.last()?;
        let mut k = Vec::with_capacity(last.key.len() + 1);
        k.extend_from_slice(&last.key);
        k.push(0);
        Some(Bytes::from(k))
    }
}

/// A key and its current value with its revision metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    /// Log index of the entry that created this incarnation of the key.
    pub create_revision: Index,
    /// Log index of the entry that last changed it.
    pub mod_revision: Index,
    /// Number of writes since creation (1 after the creating write).
    pub version: u64,
    /// Absolute unix-ms deadline after which the key is expired, if any.
    pub expires_at_ms: Option<u64>,
    /// The lease the key is attached to (0 = none).
    pub lease: u64,
}

impl KeyValue {
    /// Whether the key is expired at `now_ms` (deadline `<= now_ms`).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.meta().is_expired(now_ms)
    }

    /// Everything about this incarnation of the key but its value.
    pub fn meta(&self) -> KeyMeta {
        KeyMeta {
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            expires_at_ms: self.expires_at_ms,
            lease: self.lease,
        }
    }
}

/// A key's revision metadata without its value (see [`KeyValue`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMeta {
    pub create_revision: Index,
    pub mod_revision: Index,
    pub version: u64,
    pub expires_at_ms: Option<u64>,
    /// The lease the key is attached to (0 = none).
    pub lease: u64,
}

impl KeyMeta {
    /// Whether the key is expired at `now_ms` (deadline `<= now_ms`).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        matches!(self.expires_at_ms, Some(d) if d <= now_ms)
    }
}

/// The outcome of applying one entry, returned to the proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyResult {
    /// A leader's no-op entry.
    Noop,
    /// A membership change was applied; the new membership is in `membership()`.
    MembershipChanged,
    /// `prev_revision`: mod revision of the value it replaced, if any.
    Put {
        prev_revision: Option<Index>,
    },
    /// Whether the key existed.
    Delete {
        existed: bool,
    },
    /// `current`: the key after the operation (on success) or the value that
    /// failed the comparison (on failure); `None` if absent.
    CompareAndSwap {
        succeeded: bool,
        current: Option<KeyValue>,
    },
    /// Number of keys removed.
    Expire {
        expired: u64,
    },
    /// `prev_kvs`: the removed pairs if asked for (cut at
    /// [`crate::command::RESULT_BUDGET_BYTES`], then `truncated`).
    DeleteRange {
        deleted: u64,
        prev_kvs: Vec<KeyValue>,
        truncated: bool,
    },
    /// Which branch ran and one result per op of it.
    Txn {
        succeeded: bool,
        results: Vec<TxnOpResult>,
    },
    LeaseGranted {
        id: u64,
        ttl_ms: u64,
    },
    /// `deleted`: keys removed with the lease.
    LeaseRevoked {
        id: u64,
        deleted: u64,
    },
    /// A put or grant/revoke named a lease that does not exist (or a grant
    /// named one that does); nothing changed.
    LeaseNotFound {
        id: u64,
    },
    LeaseExists {
        id: u64,
    },
    /// The command could not be decoded or broke a limit; nothing changed.
    Rejected {
        reason: String,
    },
    /// An auth change was applied; `revision` is the entry's index.
    AuthChanged {
        revision: Index,
    },
    /// An auth change was refused (the same on every replica); nothing changed.
    AuthRefused {
        reason: String,
    },
    /// A retry of a client write whose result is no longer remembered (older
    /// than the dedup window); it was NOT applied again.
    DuplicateExpired {
        client_id: u64,
        seq: u64,
    },
    /// The encoded output of an application command (a machine other than
    /// the key-value one; see `d_engine::app`).
    Output(Bytes),
}

/// The result of one op of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResult {
    Range(RangeResult),
    Put {
        prev_revision: Option<Index>,
    },
    DeleteRange {
        deleted: u64,
        prev_kvs: Vec<KeyValue>,
        truncated: bool,
    },
}

/// A page of a range read (inside a transaction, or by the read path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// Keys of the range follow the last one returned.
    pub more: bool,
    /// Live keys in the whole range.
    pub count: u64,
}

/// A lease as stored: its id and TTL (its keys are the keys whose
/// [`KeyValue::lease`] names it; see [`StateMachine::lease_keys_each`]).
/// The remaining time is not replicated state: the leader tracks it (see
/// the runtime).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: u64,
    pub ttl_ms: u64,
}

/// What a changed key looks like to a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEventKind {
    Put,
    Delete,
}

/// One key change, in log order. `revision` is the log index of the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: WatchEventKind,
    pub key: Bytes,
    pub revision: Index,
    /// The new key-value (for `Put`), `None` for `Delete`.
    pub kv: Option<KeyValue>,
    /// The key's metadata before the change, if it existed.
    pub prev: Option<KeyMeta>,
    /// The key's value before the change (with `prev`), read from the
    /// state machine at apply time for watches that ask for `prev_kv`.
    /// Shares the stored bytes where the backend keeps values in memory.
    pub prev_value: Option<Bytes>,
}

/// One applied entry: its result and the key changes it made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub index: Index,
    pub term: Term,
    /// The revision the write took effect at: `index`, except for a
    /// deduplicated retry, where it is the index of the entry that applied
    /// the original write (the revision its watch events carry).
    pub revision: Index,
    pub result: ApplyResult,
    /// Key changes for watchers, in the order they happened (empty for a
    /// deduplicated retry).
    pub events: Vec<WatchEvent>,
}

/// A record inside a snapshot image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotRecord {
    Kv(KeyValue),
    /// A lease (its keys are the `Kv` records naming it).
    Lease(LeaseRecord),
    /// The dedup session of one (user, client).
    Client {
        key: dedup::SessionKey,
        session: dedup::ClientSession,
    },
    /// The whole replicated auth state ([`crate::auth::AuthState::encode`]).
    Auth(Vec<u8>),
    /// Opaque bytes of a machine other than the key-value one (see
    /// `d_engine::app`); the key-value machines refuse a snapshot holding
    /// one.
    App(Bytes),
}

/// The refusal of a key-value machine given an application machine's
/// snapshot (a data directory or a leader of another kind of machine).
pub(crate) fn not_kv_snapshot(path: &Path) -> SmError {
    SmError::Corrupt(format!(
        "snapshot {} holds an application state machine's records, not key-value data: \
         this node runs the key-value machine; start it with the same state machine as \
         the rest of the cluster",
        path.display()
    ))
}

/// A point-in-time image of a state machine, produced while applies go on.
pub trait SnapshotSource: Send {
    /// Describes the image: applied index/term and membership at that point.
    fn meta(&self) -> &SnapshotMeta;
    /// The next record, or `None` when the image is complete.
    fn next_record(&mut self) -> Result<Option<SnapshotRecord>, SmError>;
}

/// Errors from the state machine. All are "stop and look" errors for the
/// host except where noted.
#[derive(Debug)]
pub enum SmError {
    /// `apply` was given entries that do not follow `applied_index()`.
    Gap {
        applied: Index,
        got: Index,
    },
    /// The sled database failed.
    Sled(String),
    /// Stored state could not be decoded (names what and where).
    Corrupt(String),
    /// The data directory is missing or unreadable; rebuild from a snapshot.
    Unreadable(String),
    /// A snapshot build is already running (only one at a time).
    SnapshotInProgress,
    /// A running snapshot build was cancelled (e.g. a snapshot was installed).
    SnapshotCancelled,
    /// A snapshot file problem.
    Snapshot(SnapshotError),
    /// A previous failure left the in-memory state uncertain; reopen.
    Poisoned,
    Io(std::io::Error),
    /// An application state machine failed (an error or a panic in its
    /// apply, or its snapshot reader refused an image); the message names
    /// the entry or the snapshot file.
    Application(String),
}

impl fmt::Display for SmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmError::Gap { applied, got } => write!(
                f,
                "apply out of order: applied index is {applied}, next entry has index {got} (expected {})",
                applied + 1
            ),
            SmError::Sled(e) => write!(f, "state machine database error: {e}"),
            SmError::Corrupt(e) => write!(f, "state machine data is corrupt: {e}"),
            SmError::Unreadable(e) => write!(
                f,
                "state machine directory is missing or unreadable ({e}); it must be rebuilt from the latest snapshot plus the log"
            ),
            SmError::SnapshotInProgress => write!(f, "a snapshot build is already in progress"),
            SmError::SnapshotCancelled => write!(f, "snapshot build cancelled: the state machine was replaced"),
            SmError::Snapshot(e) => write!(f, "{e}"),
            SmError::Poisoned => write!(
                f,
                "state machine stopped after an earlier storage failure; restart the node"
            ),
            SmError::Io(e) => write!(f, "state machine I/O error: {e}"),
            SmError::Application(e) => write!(f, "application state machine: {e}"),
        }
    }
}

impl std::error::Error for SmError {}

impl From<sled::Error> for SmError {
    /// sled's I/O failures (including "could not acquire lock": the database
    /// is open elsewhere) stay I/O errors, so `open_or_rebuild` refuses to
    /// start instead of wiping a database that is merely busy.
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => SmError::Io(io),
            other => SmError::Sled(other.to_string()),
        }
    }
}
impl From<std::io::Error> for SmError {
    fn from(e: std::io::Error) -> Self {
        SmError::Io(e)
    }
}
impl From<SnapshotError> for SmError {
    fn from(e: SnapshotError) -> Self {
        SmError::Snapshot(e)
    }
}

/// The state machine the runtime drives: the public seam between the
/// engine and whatever it replicates (see `docs/embedding.md`).
///
/// The engine keeps ordering, batching, the log, snapshots (scheduling,
/// files, transfer, compaction) and restart; an implementation keeps the
/// applied state. Built-in implementations: the key-value machines
/// [`MemStateMachine`] (memory-resident, rebuilt from the latest snapshot
/// and the log on start; the default backend, also the simulator's and
/// the fuzz tests' model) and [`SledStateMachine`] (on disk; see the
/// module docs), which also implement [`KvStateMachine`] for the key-value
/// API; and `d_engine::app::AppStateMachine`, which runs an application's
/// own machine (`d_engine::app::Application`).
///
/// # Contract
///
/// - `apply` is called from one thread (the apply thread), in log order,
///   each committed entry once; it must be deterministic: replicas given
///   the same entries must reach the same state and return the same
///   results, whatever their clock, thread timing or hash seeds. It may
///   block (it runs on its own thread), but every apply delays the
///   acknowledgement of the writes behind it.
/// - An `Err` from `apply` (or `install_snapshot`) stops the node: it stops
///   applying, reports failed in its status and health, and logs the
///   error, which must name the entry (or file). The engine never skips an
///   entry and never applies out of order after an error.
/// - `begin_snapshot` captures the applied state at the current applied
///   index; the returned source is drained on another thread while applies
///   go on, so it must not see later applies.
/// - `install_snapshot` replaces the whole state atomically: on an error
///   the previous state must still be in place.
/// - Durability: the Raft log is the source of truth; an implementation
///   needs not make applies durable (on restart the engine replays the log
///   after [`StateMachine::applied_index`]).
pub trait StateMachine: Send + Sync {
    /// Applies committed entries in order, atomically as one batch. Entries at
    /// or below `applied_index()` are skipped. `Noop` and `Config` entries
    /// advance the applied index; `Config` entries update the membership.
    fn apply(&self, entries: &[d_engine_core::Entry]) -> Result<Vec<Applied>, SmError>;

    /// The logical size of the stored data: the sum over every stored key
    /// (expired keys not yet removed included) of
    /// [`logical_kv_bytes`]`(key, value)`, plus [`LEASE_OVERHEAD_BYTES`]
    /// per lease. One definition for every
    /// backend, a function of the applied state only, so replicas at the
    /// same applied index agree. The storage quota (`storage.quota_bytes`)
    /// counts this. O(1): implementations keep a running total.
    fn data_bytes(&self) -> u64;

    /// Index of the last applied entry (0 if none).
    fn applied_index(&self) -> Index;

    /// Term of the last applied entry (0 if none).
    fn applied_term(&self) -> Term;

    /// Membership as of the last applied `Config` entry or installed snapshot
    /// (empty if none: the host then uses its initial membership).
    fn membership(&self) -> Membership;

    /// Starts a point-in-time image at the current applied index. Applies may
    /// continue while the returned source is drained (on another thread).
    fn begin_snapshot(&self) -> Result<Box<dyn SnapshotSource>, SmError>;

    /// Atomically replaces the whole state with the snapshot file at `path`
    /// (verified first). A crash at any point leaves either the old or the new
    /// state. Returns the snapshot's meta.
    fn install_snapshot(&self, path: &Path) -> Result<SnapshotMeta, SmError>;

    /// The key-value view of this machine, for the key-value API (reads,
    /// leases, TTL expiry); `None` (the default) for a machine that does
    /// not store keys: the key-value calls then fail with a clear error.
    fn into_kv(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn KvStateMachine>> {
        None
    }

    /// The replicated auth state as of the last applied batch (empty for a
    /// machine that keeps none, e.g. an application machine: only the
    /// configured users exist there).
    fn auth_state(&self) -> std::sync::Arc<crate::auth::AuthState> {
        Default::default()
    }
}

/// The key-value extension of [`StateMachine`]: what the key-value reads,
/// ranges, leases, watches and TTL expiry need beyond applying entries.
/// Implemented by the built-in key-value machines only.
pub trait KvStateMachine: StateMachine {
    /// The live value of `key`, hiding keys whose deadline is `<= now_ms`.
    fn get(&self, key: &[u8], now_ms: u64) -> Result<Option<KeyValue>, SmError>;

    /// Like `get` but also returns expired, not yet reaped keys.
    fn get_raw(&self, key: &[u8]) -> Result<Option<KeyValue>, SmError>;

    /// Up to `limit` live keys starting with `prefix`, in key order
    /// (built on [`StateMachine::scan_prefix_each`]).
    fn scan_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<KeyValue>, SmError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.scan_prefix_each(prefix, now_ms, &mut |kv| {
            out.push(kv);
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Hands the live keys starting with `prefix` to `visit` one at a time,
    /// in key order, until `visit` returns false or the keys run out.
    ///
    /// Lazy: a pair is read (and, for an on-disk backend, copied out) only
    /// when it is visited, so a caller that stops at a byte budget reads no
    /// further. The values handed out share the stored bytes where the
    /// backend keeps them in memory (the memory state machine); they are
    /// never copies per call there. All visited pairs belong to one point
    /// in time (whole applied batches).
    fn scan_prefix_each(
        &self,
        prefix: &[u8],
        now_ms: u64,
        visit: &mut dyn FnMut(KeyValue) -> bool,
    ) -> Result<(), SmError>;

    /// Hands the live keys of `range` to `visit` one at a time, in key
    /// order, until `visit` returns false or the keys run out. Every
    /// visited pair belongs to one point in time (whole applied batches);
    /// returns the applied index of that point (the page's revision: every
    /// entry at or below it is reflected, none above). `visit` may run
    /// while applies wait: keep it cheap.
    fn range_each(
        &self,
        range: &crate::command::KeyRange,
        now_ms: u64,
        visit: &mut dyn FnMut(KeyValue) -> bool,
    ) -> Result<Index, SmError>;

    /// The number of live keys in `range` (no values read). O(keys in the
    /// range). Under concurrent applies it is a count over whole batches
    /// but, on an on-disk backend counting a large range in steps, not
    /// necessarily over one batch.
    fn range_count(&self, range: &crate::command::KeyRange, now_ms: u64) -> Result<u64, SmError>;

    /// The lease `id`, if it exists.
    fn lease(&self, id: u64) -> Result<Option<LeaseRecord>, SmError>;

    /// Every lease, in id order.
    fn leases(&self) -> Result<Vec<LeaseRecord>, SmError>;

    /// The keys attached to lease `id`, in key order, until `visit` returns false.
    fn lease_keys_each(&self, id: u64, visit: &mut dyn FnMut(&[u8]) -> bool)
        -> Result<(), SmError>;

    /// The earliest TTL deadline (unix ms) of any stored key, expired or
    /// not; `None` when no key has a TTL. The leader uses it to skip
    /// `Expire` proposals that would remove nothing.
    fn earliest_deadline(&self) -> Result<Option<u64>, SmError>;
}
