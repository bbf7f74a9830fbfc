//! Application commands: what an `EntryPayload::Command` carries.
//!
//! # Encoding (version 1)
//!
//! All integers little-endian; `bytes` = `u32` length + data; `opt<T>` = one
//! byte 0 (absent) or 1 followed by `T`.
//!
//! ```text
//! u8  version            = COMMAND_VERSION (1)
//! u8  flags              bit 0: a client session follows;
//!                        bit 1: the session's user follows (needs bit 0);
//!                        other bits must be 0
//! [u64 client_id, u64 seq]   if flags bit 0
//! [bytes user]               if flags bit 1 (UTF-8, 1..=MAX_USER_BYTES)
//! u8  op                 1 Put | 2 Delete | 3 CompareAndSwap | 4 Expire
//!                        | 5 PutLeased | 6 DeleteRange | 7 Txn
//!                        | 8 LeaseGrant | 9 LeaseRevoke | 10 Auth
//! Put:            bytes key, bytes value, opt<u64> expires_at_ms
//! Delete:         bytes key
//! CompareAndSwap: bytes key, opt<bytes> expected, opt<bytes> new_value, opt<u64> expires_at_ms
//! Expire:         u64 now_ms
//! PutLeased:      bytes key, bytes value, u64 lease (non-zero; a put with
//!                 lease 0 is encoded as Put, so older commands keep their bytes)
//! DeleteRange:    range, u8 prev_kv (0|1)
//! Txn:            u32 n, n × compare; u32 n, n × txn_op (success); u32 n, n × txn_op (failure)
//! LeaseGrant:     u64 id, u64 ttl_ms
//! LeaseRevoke:    u64 id
//! Auth:           u8 auth op, fields ([`crate::auth::AuthOp::encode`];
//!                 a node that predates it refuses the command as malformed)
//!
//! range:    bytes start, bytes end
//! compare:  bytes key, u8 op (0 = | 1 != | 2 < | 3 >),
//!           u8 target (0 value: bytes | 1 version | 2 create | 3 mod | 4 lease: u64)
//! txn_op:   u8 kind 1 range: range, u32 limit, u8 keys_only, u8 count_only
//!                   2 put: bytes key, bytes value, opt<u64> expires_at_ms, u64 lease
//!                   3 delete_range: range, u8 prev_kv
//! ```
//!
//! Bit 1 was added in place (no version bump) so that every command written
//! before it, and every command without an authenticated user (auth off,
//! embedded writes), keeps exactly the same bytes and meaning: logs on
//! existing data directories replay unchanged. A node that predates bit 1
//! refuses a command carrying it as malformed (deterministically), so a
//! cluster must run one version when auth and write ids are used together.
//!
//! Decoding never panics: a malformed command becomes a [`CommandError`]. A
//! command that reaches the state machine and fails to decode or validate is
//! applied as a deterministic rejection on every replica (it still advances
//! the applied index), so a bad proposer cannot make replicas diverge.
//!
//! TTL deadlines are absolute unix milliseconds computed by the proposer
//! (`now + ttl`); replicas never read their own clock while applying. Keys
//! whose deadline is `<= now_ms` are removed by an `Expire { now_ms }` command
//! that the leader proposes periodically; reads hide them earlier by passing
//! their own `now_ms` to `StateMachine::get`.

use crate::sm::wire::{Reader, WireError, Writer};
use bytes::Bytes;
use std::fmt;
use std::ops::Bound;

/// Version byte written at the start of every encoded command.
pub const COMMAND_VERSION: u8 = 1;
/// Largest key accepted, in bytes. Keys must also be non-empty.
pub const MAX_KEY_BYTES: usize = 4096;
/// Largest value accepted, in bytes (1 MiB).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Longest user name a command may carry, in bytes.
pub const MAX_USER_BYTES: usize = 255;

const FLAG_CLIENT: u8 = 1;
const FLAG_USER: u8 = 2;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_CAS: u8 = 3;
const OP_EXPIRE: u8 = 4;
const OP_PUT_LEASED: u8 = 5;
const OP_DELETE_RANGE: u8 = 6;
const OP_TXN: u8 = 7;
const OP_LEASE_GRANT: u8 = 8;
const OP_LEASE_REVOKE: u8 = 9;
const OP_AUTH: u8 = 10;
const TXN_RANGE: u8 = 1;
const TXN_PUT: u8 = 2;
const TXN_DELETE_RANGE: u8 = 3;

/// Identifies a client write for exactly-once retries: a write re-proposed
/// by the same `user` with the same `(client_id, seq)` and the same
/// operation is applied once and the retry gets the original result (see
/// [`crate::sm::dedup`] for the checks and bounds).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientSeq {
    /// The authenticated user that owns the session; `""` when auth is off
    /// or the write did not come through the authenticated client API.
    pub user: String,
    pub client_id: u64,
    pub seq: u64,
}

/// One state-machine operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`. `expires_at_ms`: absolute unix ms deadline, or
    /// `None` for no TTL (a put without TTL clears an earlier deadline).
    Put {
        key: Bytes,
        value: Bytes,
        expires_at_ms: Option<u64>,
        /// Attach the key to this lease (0 = none; exclusive with
        /// `expires_at_ms`). The lease must exist when the put applies.
        lease: u64,
    },
    /// Remove `key` if present.
    Delete { key: Bytes },
    /// Remove every key in `range`; with `prev_kv`, return the removed pairs.
    DeleteRange { range: KeyRange, prev_kv: bool },
    /// Compare-then-act on several keys in one step.
    Txn(Box<Txn>),
    /// Create lease `id` (non-zero, not live) with `ttl_ms`. The id is
    /// chosen by the proposer (the runtime uses the client's id, or a
    /// fresh one).
    LeaseGrant { id: u64, ttl_ms: u64 },
    /// Delete lease `id` and every key attached to it (proposed by a client,
    /// or by the leader when the lease expires).
    LeaseRevoke { id: u64 },
    /// If the current value equals `expected` (`None`: the key must not
    /// exist), set it to `new_value` (`None`: delete it) with deadline
    /// `expires_at_ms`.
    CompareAndSwap {
        key: Bytes,
        expected: Option<Bytes>,
        new_value: Option<Bytes>,
        expires_at_ms: Option<u64>,
    },
    /// Remove every key whose deadline is `<= now_ms`. Proposed by the leader.
    Expire { now_ms: u64 },
    /// Change the replicated auth state (never a key; see [`crate::auth`]).
    Auth(Box<crate::auth::AuthOp>),
}

/// The keys `[start, end)`. `end` empty: only `start`; `end == [0]`:
/// every key `>= start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Bytes,
    pub end: Bytes,
}

impl KeyRange {
    /// The single key `key`.
    pub fn key(key: impl Into<Bytes>) -> Self {
        KeyRange {
            start: key.into(),
            end: Bytes::new(),
        }
    }

    /// Every key starting with `prefix` (`[prefix, prefix_end(prefix))`;
    /// an empty prefix is every key).
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let start: Bytes = prefix.into();
        let end = prefix_end(&start);
        KeyRange { start, end }
    }

    /// Every key `>= start` (`end = "\0"`).
    pub fn from_key(start: impl Into<Bytes>) -> Self {
        KeyRange {
            start: start.into(),
            end: Bytes::from_static(b"\0"),
        }
    }

    /// Whether the range names one key (`end` empty).
    pub fn is_single_key(&self) -> bool {
        self.end.is_empty()
    }

    /// Whether the range is unbounded above (`end == "\0"`).
    pub fn is_unbounded(&self) -> bool {
        self.end[..] == [0]
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            return key == &self.start[..];
        }
        key >= &self.start[..] && (self.end[..] == [0] || key < &self.end[..])
    }

    /// The range as bounds for an ordered map lookup; `None` when it holds
    /// no key at all (an end at or before the start: such a range fails
    /// [`KeyRange::validate`], but reads never panic on one).
    pub fn bounds(&self) -> Option<KeyBounds<'_>> {
        let start = &self.start[..];
        if self.is_single_key() {
            return Some((Bound::Included(start), Bound::Included(start)));
        }
        if self.is_unbounded() {
            return Some((Bound::Included(start), Bound::Unbounded));
        }
        if self.end[..] <= *start {
            return None;
        }
        Some((Bound::Included(start), Bound::Excluded(&self.end[..])))
    }
}

/// A [`KeyRange`] as bounds of an ordered map lookup.
pub type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The end of the range of keys starting with `prefix`: the prefix with
/// its trailing `0xff` bytes dropped and its last byte incremented; `"\0"`
/// (no upper bound) when nothing is left (an empty or all-`0xff` prefix).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let keep = prefix.iter().rposition(|b| *b != 0xff);
    match keep {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            Bytes::from(end)
        }
        None => Bytes::from_static(b"\0"),
    }
}

/// A read inside a transaction (see [`KeyRange`]); `limit` 0 = [`MAX_TXN_RANGE_LIMIT`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSpec {
    pub range: KeyRange,
    pub limit: u32,
    pub keys_only: bool,
    pub count_only: bool,
}

/// Comparison operator of a [`Compare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// What a [`Compare`] looks at, with the operand. A missing key has
/// version, revisions and lease 0; a `Value` compare on a missing key is
/// false whatever the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Value(Bytes),
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
    Lease(u64),
}

/// One condition of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Bytes,
    pub op: CompareOp,
    pub target: CompareTarget,
}

/// One operation of a [`Txn`] branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Range(RangeSpec),
    Put {
        key: Bytes,
        value: Bytes,
        expires_at_ms: Option<u64>,
        lease: u64,
    },
    DeleteRange {
        range: KeyRange,
        prev_kv: bool,
    },
}

/// If every compare holds run `success`, else `failure`, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// Most compares, and most ops per branch, in one transaction.
pub const MAX_TXN_OPS: usize = 128;
/// Most pairs a range inside a transaction returns.
pub const MAX_TXN_RANGE_LIMIT: u32 = 10_000;
/// Response bytes (key + value + 64 per pair) at which a range page, or a
/// delete-range's `prev_kv` list, stops (a fixed number, so every replica
/// computes the same result). One budget per command: the ranges and
/// `prev_kv` lists of a transaction share it, so a whole transaction
/// result stays under it (plus at most one pair, so that a single large
/// pair is still returned).
pub const RESULT_BUDGET_BYTES: usize = 3 << 20;
/// Largest lease TTL (one year, in ms).
pub const MAX_LEASE_TTL_MS: u64 = 365 * 24 * 3600 * 1000;

/// A command with its optional client session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub client: Option<ClientSeq>,
    pub op: Op,
}

/// Why a command was refused (by validation) or could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    EmptyKey,
    KeyTooLarge {
        len: usize,
    },
    ValueTooLarge {
        len: usize,
    },
    UnsupportedVersion {
        version: u8,
    },
    UserTooLong {
        len: usize,
    },
    /// A range whose end is at or before its start (and not empty or `\0`).
    EmptyRange,
    /// More compares or ops than [`MAX_TXN_OPS`]; `what` names which list.
    TooManyTxnOps {
        what: &'static str,
        len: usize,
    },
    /// A range limit above [`MAX_TXN_RANGE_LIMIT`].
    RangeLimitTooLarge {
        limit: u32,
    },
    /// Lease id 0, a TTL of 0 or above [`MAX_LEASE_TTL_MS`], or a put with
    /// both a lease and a TTL.
    BadLease(String),
    /// An auth change with a bad name, hash or digest.
    BadAuth(String),
    Malformed(WireError),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::EmptyKey => write!(f, "key is empty; keys must be 1..={MAX_KEY_BYTES} bytes (limits.max_key_bytes)"),
            CommandError::KeyTooLarge { len } => write!(
                f,
                "key is {len} bytes; the limit is {MAX_KEY_BYTES} bytes (limits.max_key_bytes); use a shorter key"
            ),
            CommandError::ValueTooLarge { len } => write!(
                f,
                "value is {len} bytes; the limit is {MAX_VALUE_BYTES} bytes (limits.max_value_bytes); split the value across several keys"
            ),
            CommandError::UnsupportedVersion { version } => write!(
                f,
                "command encoding version {version} is not supported (this node understands version {COMMAND_VERSION}); upgrade the node"
            ),
            CommandError::UserTooLong { len } => write!(
                f,
                "the session's user name is {len} bytes; the limit is {MAX_USER_BYTES} bytes (MAX_USER_BYTES)"
            ),
            CommandError::EmptyRange => write!(
                f,
                "range_end is at or before key; use an empty range_end for one key, \"\\0\" for every key from key on, or an end above key"
            ),
            CommandError::TooManyTxnOps { what, len } => write!(
                f,
                "transaction has {len} {what}; the limit is {MAX_TXN_OPS}; split it into several transactions"
            ),
            CommandError::RangeLimitTooLarge { limit } => write!(
                f,
                "range limit is {limit}; the limit is {MAX_TXN_RANGE_LIMIT}; read further pages instead"
            ),
            CommandError::BadLease(m) => write!(f, "{m}"),
            CommandError::BadAuth(m) => write!(f, "{m}"),
            CommandError::Malformed(e) => write!(f, "malformed command {e}"),
        }
    }
}

impl std::error::Error for CommandError {}

impl From<WireError> for CommandError {
    fn from(e: WireError) -> Self {
        CommandError::Malformed(e)
    }
}

/// Checks a key against the limits.
pub fn validate_key(key: &[u8]) -> Result<(), CommandError> {
    if key.is_empty() {
        return Err(CommandError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(CommandError::KeyTooLarge { len: key.len() });
    }
    Ok(())
}

/// Checks a value against the limits.
pub fn validate_value(value: &[u8]) -> Result<(), CommandError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(CommandError::ValueTooLarge { len: value.len() });
    }
    Ok(())
}

impl KeyRange {
    /// Checks the start key and that the range is not empty by construction.
    /// The start may be empty when `end` is not (a range from the first
    /// key on, e.g. [`KeyRange::prefix`] of an empty prefix); a single key
    /// (`end` empty) must be a valid key.
    pub fn validate(&self) -> Result<(), CommandError> {
        if self.end.is_empty() {
            return validate_key(&self.start);
        }
        if self.start.len() > MAX_KEY_BYTES {
            return Err(CommandError::KeyTooLarge {
                len: self.start.len(),
            });
        }
        if self.end[..] == [0] {
            return Ok(());
        }
        if self.end.len() > MAX_KEY_BYTES + 1 {
            return Err(CommandError::KeyTooLarge {
                len: self.end.len(),
            });
        }
        if self.end <= self.start {
            return Err(CommandError::EmptyRange);
        }
        Ok(())
    }
}

fn validate_put(
    key: &[u8],
    value: &[u8],
    expires_at_ms: Option<u64>,
    lease: u64,
) -> Result<(), CommandError> {
    validate_key(key)?;
    validate_value(value)?;
    if lease != 0 && expires_at_ms.is_some() {
        return Err(CommandError::BadLease(
            "a put may carry a lease or a TTL, not both; attach the key to a lease with that TTL instead".into(),
        ));
    }
    Ok(())
}

impl Txn {
    /// Checks the list lengths and every compare and op.
    pub fn validate(&self) -> Result<(), CommandError> {
        for (what, len) in [
            ("compares", self.compares.len()),
            ("success ops", self.success.len()),
            ("failure ops", self.failure.len()),
        ] {
            if len > MAX_TXN_OPS {
                return Err(CommandError::TooManyTxnOps { what, len });
            }
        }
        for c in &self.compares {
            validate_key(&c.key)?;
            if let CompareTarget::Value(v) = &c.target {
                validate_value(v)?;
            }
        }
        for op in self.success.iter().chain(&self.failure) {
            match op {
                TxnOp::Range(r) => {
                    r.range.validate()?;
                    if r.limit > MAX_TXN_RANGE_LIMIT {
                        return Err(CommandError::RangeLimitTooLarge { limit: r.limit });
                    }
                }
                TxnOp::Put {
                    key,
                    value,
                    expires_at_ms,
                    lease,
                } => validate_put(key, value, *expires_at_ms, *lease)?,
                TxnOp::DeleteRange { range, .. } => range.validate()?,
            }
        }
        Ok(())
    }
}

impl Op {
    /// Checks every key and value against [`MAX_KEY_BYTES`] / [`MAX_VALUE_BYTES`],
    /// ranges, transaction sizes and lease parameters.
    pub fn validate(&self) -> Result<(), CommandError> {
        match self {
            Op::Put {
                key,
                value,
                expires_at_ms,
                lease,
            } => validate_put(key, value, *expires_at_ms, *lease),
            Op::Delete { key } => validate_key(key),
            Op::DeleteRange { range, .. } => range.validate(),
            Op::Txn(t) => t.validate(),
            Op::LeaseGrant { id, ttl_ms } => {
                if *id == 0 {
                    return Err(CommandError::BadLease(
                        "lease id 0 is reserved (it means \"no lease\")".into(),
                    ));
                }
                if *ttl_ms == 0 || *ttl_ms > MAX_LEASE_TTL_MS {
                    return Err(CommandError::BadLease(format!(
                        "lease ttl is {ttl_ms} ms; it must be 1..={MAX_LEASE_TTL_MS} ms (one year)"
                    )));
                }
                Ok(())
            }
            Op::LeaseRevoke { id } => {
                if *id == 0 {
                    return Err(CommandError::BadLease(
                        "lease id 0 is reserved (it means \"no lease\")".into(),
                    ));
                }
                Ok(())
            }
            Op::CompareAndSwap {
                key,
                expected,
                new_value,
                ..
            } => {
                validate_key(key)?;
                if let Some(v) = expected {
                    validate_value(v)?;
                }
                if let Some(v) = new_value {
                    validate_value(v)?;
                }
                Ok(())
            }
            Op::Expire { .. } => Ok(()),
            Op::Auth(a) => a.validate().map_err(CommandError::BadAuth),
        }
    }
}

impl Command {
    /// A command without a client session (no retry deduplication).
    pub fn new(op: Op) -> Self {
        Command { client: None, op }
    }

    /// A command tagged for exactly-once retries, in the anonymous
    /// session of `client_id`.
    pub fn with_client(op: Op, client_id: u64, seq: u64) -> Self {
        Self::with_user_client(op, "", client_id, seq)
    }

    /// A command tagged for exactly-once retries in `user`'s session of
    /// `client_id` (`""` = anonymous).
    pub fn with_user_client(op: Op, user: &str, client_id: u64, seq: u64) -> Self {
        Command {
            client: Some(ClientSeq {
                user: user.to_string(),
                client_id,
                seq,
            }),
            op,
        }
    }

    pub fn validate(&self) -> Result<(), CommandError> {
        if let Some(c) = &self.client {
            if c.user.len() > MAX_USER_BYTES {
                return Err(CommandError::UserTooLong { len: c.user.len() });
            }
        }
        self.op.validate()
    }

    /// A 64-bit fingerprint of the operation (not of the session), used to
    /// check that a retry is the same operation as the write it repeats:
    /// CRC-32C of the encoded operation in the high half, its length in the
    /// low half. Never 0. It detects a client reusing a write id for another
    /// operation; it is not a cryptographic commitment and needs not be,
    /// since only the session's owner can present a retry in that session.
    pub fn op_fingerprint(&self) -> u64 {
        let mut w = Writer::with_capacity(16 + self.payload_len());
        encode_op(&self.op, &mut w);
        fingerprint_of(&w.into_vec())
    }

    /// Encodes the command (does not validate; call [`Command::validate`]
    /// first on the proposing side).
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::with_capacity(32 + self.payload_len());
        w.u8(COMMAND_VERSION);
        match &self.client {
            Some(c) if c.user.is_empty() => {
                w.u8(FLAG_CLIENT).u64(c.client_id).u64(c.seq);
            }
            Some(c) => {
                w.u8(FLAG_CLIENT | FLAG_USER)
                    .u64(c.client_id)
                    .u64(c.seq)
                    .bytes(c.user.as_bytes());
            }
            None => {
                w.u8(0);
            }
        }
        encode_op(&self.op, &mut w);
        Bytes::from(w.into_vec())
    }
}

fn fingerprint_of(encoded_op: &[u8]) -> u64 {
    ((crc32c::crc32c(encoded_op) as u64) << 32) | (encoded_op.len() as u64 & 0xFFFF_FFFF).max(1)
}

fn encode_op(op: &Op, w: &mut Writer) {
    {
        match op {
            Op::Put {
                key,
                value,
                expires_at_ms,
                lease: 0,
            } => {
                w.u8(OP_PUT).bytes(key).bytes(value).opt_u64(*expires_at_ms);
            }
            Op::Put {
                key,
                value,
                expires_at_ms,
                lease,
            } => {
                // validate() refuses a lease together with a TTL, and the
                // encoding has no room for both: such a put (proposed
                // without validation) is written with lease 0, which every
                // decoder refuses, rather than silently losing its TTL.
                let lease = if expires_at_ms.is_some() { 0 } else { *lease };
                w.u8(OP_PUT_LEASED).bytes(key).bytes(value).u64(lease);
            }
            Op::DeleteRange { range, prev_kv } => {
                w.u8(OP_DELETE_RANGE);
                encode_range(range, w);
                w.u8(*prev_kv as u8);
            }
            Op::Txn(t) => {
                w.u8(OP_TXN).u32(t.compares.len() as u32);
                for c in &t.compares {
                    encode_compare(c, w);
                }
                for branch in [&t.success, &t.failure] {
                    w.u32(branch.len() as u32);
                    for op in branch {
                        encode_txn_op(op, w);
                    }
                }
            }
            Op::LeaseGrant { id, ttl_ms } => {
                w.u8(OP_LEASE_GRANT).u64(*id).u64(*ttl_ms);
            }
            Op::LeaseRevoke { id } => {
                w.u8(OP_LEASE_REVOKE).u64(*id);
            }
            Op::Delete { key } => {
                w.u8(OP_DELETE).bytes(key);
            }
            Op::CompareAndSwap {
                key,
                expected,
                new_value,
                expires_at_ms,
            } => {
                w.u8(OP_CAS)
                    .bytes(key)
                    .opt_bytes(expected.as_deref())
                    .opt_bytes(new_value.as_deref())
                    .opt_u64(*expires_at_ms);
            }
            Op::Expire { now_ms } => {
                w.u8(OP_EXPIRE).u64(*now_ms);
            }
            Op::Auth(a) => {
                w.u8(OP_AUTH);
                a.encode(w);
            }
        }
    }
}

fn encode_range(r: &KeyRange, w: &mut Writer) {
    w.bytes(&r.start).bytes(&r.end);
}

fn decode_range(r: &mut Reader<'_>) -> Result<KeyRange, WireError> {
    Ok(KeyRange {
        start: r.bytes_owned("range start")?,
        end: r.bytes_owned("range end")?,
    })
}

fn decode_flag(r: &mut Reader<'_>, field: &str) -> Result<bool, WireError> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        x => Err(r.err(format!("{field} is {x}; expected 0 or 1"))),
    }
}

fn encode_compare(c: &Compare, w: &mut Writer) {
    w.bytes(&c.key).u8(match c.op {
        CompareOp::Equal => 0,
        CompareOp::NotEqual => 1,
        CompareOp::Less => 2,
        CompareOp::Greater => 3,
    });
    match &c.target {
        CompareTarget::Value(v) => w.u8(0).bytes(v),
        CompareTarget::Version(x) => w.u8(1).u64(*x),
        CompareTarget::CreateRevision(x) => w.u8(2).u64(*x),
        CompareTarget::ModRevision(x) => w.u8(3).u64(*x),
        CompareTarget::Lease(x) => w.u8(4).u64(*x),
    };
}

fn decode_compare(r: &mut Reader<'_>) -> Result<Compare, WireError> {
    let key = r.bytes_owned("compare key")?;
    let op = match r.u8("compare op")? {
        0 => CompareOp::Equal,
        1 => CompareOp::NotEqual,
        2 => CompareOp::Less,
        3 => CompareOp::Greater,
        x => return Err(r.err(format!("unknown compare op {x}"))),
    };
    let target = match r.u8("compare target")? {
        0 => CompareTarget::Value(r.bytes_owned("compare value")?),
        1 => CompareTarget::Version(r.u64("compare version")?),
        2 => CompareTarget::CreateRevision(r.u64("compare create_revision")?),
        3 => CompareTarget::ModRevision(r.u64("compare mod_revision")?),
        4 => CompareTarget::Lease(r.u64("compare lease")?),
        x => return Err(r.err(format!("unknown compare target {x}"))),
    };
    Ok(Compare { key, op, target })
}

fn encode_txn_op(op: &TxnOp, w: &mut Writer) {
    match op {
        TxnOp::Range(s) => {
            w.u8(TXN_RANGE);
            encode_range(&s.range, w);
            w.u32(s.limit).u8(s.keys_only as u8).u8(s.count_only as u8);
        }
        TxnOp::Put {
            key,
            value,
            expires_at_ms,
            lease,
        } => {
            w.u8(TXN_PUT)
                .bytes(key)
                .bytes(value)
                .opt_u64(*expires_at_ms)
                .u64(*lease);
        }
        TxnOp::DeleteRange { range, prev_kv } => {
            w.u8(TXN_DELETE_RANGE);
            encode_range(range, w);
            w.u8(*prev_kv as u8);
        }
    }
}

fn decode_txn_op(r: &mut Reader<'_>) -> Result<TxnOp, WireError> {
    Ok(match r.u8("txn op kind")? {
        TXN_RANGE => TxnOp::Range(RangeSpec {
            range: decode_range(r)?,
            limit: r.u32("range limit")?,
            keys_only: decode_flag(r, "keys_only")?,
            count_only: decode_flag(r, "count_only")?,
        }),
        TXN_PUT => TxnOp::Put {
            key: r.bytes_owned("key")?,
            value: r.bytes_owned("value")?,
            expires_at_ms: r.opt_u64("expires_at_ms")?,
            lease: r.u64("lease")?,
        },
        TXN_DELETE_RANGE => TxnOp::DeleteRange {
            range: decode_range(r)?,
            prev_kv: decode_flag(r, "prev_kv")?,
        },
        x => return Err(r.err(format!("unknown txn op kind {x}"))),
    })
}

/// Reads a list count and checks it against the remaining bytes (each item
/// takes at least `min_item` bytes), so a hostile count cannot make the
/// decoder reserve memory it will never fill.
fn decode_count(r: &mut Reader<'_>, field: &str, min_item: usize) -> Result<usize, WireError> {
    let n = r.u32(field)? as usize;
    if n.saturating_mul(min_item) > r.remaining() {
        return Err(r.err(format!(
            "{field} is {n} but only {} bytes follow",
            r.remaining()
        )));
    }
    Ok(n)
}

fn decode_txn(r: &mut Reader<'_>) -> Result<Txn, WireError> {
    // Capacities are capped at the limit: a count above it decodes (from
    // bytes that really are there) and is then refused by `validate`.
    let n = decode_count(r, "compare count", 10)?;
    let mut compares = Vec::with_capacity(n.min(MAX_TXN_OPS + 1));
    for _ in 0..n {
        compares.push(decode_compare(r)?);
    }
    let mut branches = [Vec::new(), Vec::new()];
    for (b, field) in branches.iter_mut().zip(["success count", "failure count"]) {
        let n = decode_count(r, field, 10)?;
        b.reserve(n.min(MAX_TXN_OPS + 1));
        for _ in 0..n {
            b.push(decode_txn_op(r)?);
        }
    }
    let [success, failure] = branches;
    Ok(Txn {
        compares,
        success,
        failure,
    })
}

fn range_len(r: &KeyRange) -> usize {
    r.start.len() + r.end.len()
}

impl Command {
    fn payload_len(&self) -> usize {
        match &self.op {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::DeleteRange { range, .. } => range_len(range),
            Op::Txn(t) => {
                let ops = t.success.iter().chain(&t.failure).map(|op| match op {
                    TxnOp::Range(s) => range_len(&s.range) + 16,
                    TxnOp::Put { key, value, .. } => key.len() + value.len() + 32,
                    TxnOp::DeleteRange { range, .. } => range_len(range) + 16,
                });
                let compares = t.compares.iter().map(|c| {
                    c.key.len()
                        + 16
                        + match &c.target {
                            CompareTarget::Value(v) => v.len(),
                            _ => 8,
                        }
                });
                ops.chain(compares).sum()
            }
            Op::LeaseGrant { .. } | Op::LeaseRevoke { .. } => 16,
            Op::Delete { key } => key.len(),
            Op::CompareAndSwap {
                key,
                expected,
                new_value,
                ..
            } => {
                key.len()
                    + expected.as_ref().map_or(0, |v| v.len())
                    + new_value.as_ref().map_or(0, |v| v.len())
            }
            Op::Expire { .. } => 0,
            Op::Auth(a) => a.payload_len(),
        }
    }

    /// Decodes and validates a command. Never panics.
    pub fn decode(buf: &[u8]) -> Result<Command, CommandError> {
        Self::decode_with_fingerprint(buf).map(|(c, _)| c)
    }

    /// [`Command::decode`], also returning [`Command::op_fingerprint`]
    /// (computed over the operation's bytes in `buf`, without re-encoding).
    pub fn decode_with_fingerprint(buf: &[u8]) -> Result<(Command, u64), CommandError> {
        let mut r = Reader::new(buf);
        let version = r.u8("version")?;
        if version != COMMAND_VERSION {
            return Err(CommandError::UnsupportedVersion { version });
        }
        let flags = r.u8("flags")?;
        if flags & !(FLAG_CLIENT | FLAG_USER) != 0 {
            return Err(r.err(format!("unknown flag bits {flags:#04x}")).into());
        }
        if flags & FLAG_USER != 0 && flags & FLAG_CLIENT == 0 {
            return Err(r.err("flag bit 1 (user) needs bit 0 (client)").into());
        }
        let client = if flags & FLAG_CLIENT != 0 {
            let client_id = r.u64("client_id")?;
            let seq = r.u64("seq")?;
            let user = if flags & FLAG_USER != 0 {
                let user = r.string("user")?;
                if user.is_empty() {
                    return Err(r
                        .err("flag bit 1 (user) is set but the user is empty")
                        .into());
                }
                user
            } else {
                String::new()
            };
            Some(ClientSeq {
                user,
                client_id,
                seq,
            })
        } else {
            None
        };
        let op_at = r.pos();
        let op = match r.u8("op")? {
            OP_PUT => Op::Put {
                key: r.bytes_owned("key")?,
                value: r.bytes_owned("value")?,
                expires_at_ms: r.opt_u64("expires_at_ms")?,
                lease: 0,
            },
            OP_PUT_LEASED => {
                let key = r.bytes_owned("key")?;
                let value = r.bytes_owned("value")?;
                let lease = r.u64("lease")?;
                if lease == 0 {
                    return Err(r
                        .err("PutLeased with lease 0 (a put without a lease is encoded as Put; a put with both a lease and a TTL is invalid)")
                        .into());
                }
                Op::Put {
                    key,
                    value,
                    expires_at_ms: None,
                    lease,
                }
            }
            OP_DELETE_RANGE => Op::DeleteRange {
                range: decode_range(&mut r)?,
                prev_kv: decode_flag(&mut r, "prev_kv")?,
            },
            OP_TXN => Op::Txn(Box::new(decode_txn(&mut r)?)),
            OP_LEASE_GRANT => Op::LeaseGrant {
                id: r.u64("lease id")?,
                ttl_ms: r.u64("ttl_ms")?,
            },
            OP_LEASE_REVOKE => Op::LeaseRevoke {
                id: r.u64("lease id")?,
            },
            OP_DELETE => Op::Delete {
                key: r.bytes_owned("key")?,
            },
            OP_CAS => Op::CompareAndSwap {
                key: r.bytes_owned("key")?,
                expected: r.opt_bytes("expected")?,
                new_value: r.opt_bytes("new_value")?,
                expires_at_ms: r.opt_u64("expires_at_ms")?,
            },
            OP_EXPIRE => Op::Expire {
                now_ms: r.u64("now_ms")?,
            },
            OP_AUTH => Op::Auth(Box::new(crate::auth::AuthOp::decode(&mut r)?)),
            other => return Err(r.err(format!("unknown op code {other}")).into()),
        };
        r.finish("command")?;
        let fingerprint = fingerprint_of(&buf[op_at..]);
        let cmd = Command { client, op };
        cmd.validate()?;
        Ok((cmd, fingerprint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Command> {
        vec![
            Command::new(Op::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                expires_at_ms: None,
                lease: 0,
            }),
            Command::with_client(
                Op::Put {
                    key: Bytes::from_static(b"key"),
                    value: Bytes::new(),
                    expires_at_ms: Some(1_700_000_000_000),
                    lease: 0,
                },
                7,
                42,
            ),
            Command::new(Op::Delete {
                key: Bytes::from_static(b"gone"),
            }),
            Command::with_client(
                Op::CompareAndSwap {
                    key: Bytes::from_static(b"c"),
                    expected: None,
                    new_value: Some(Bytes::from_static(b"n")),
                    expires_at_ms: Some(5),
                },
                1,
                2,
            ),
            Command::new(Op::CompareAndSwap {
                key: Bytes::from_static(b"c"),
                expected: Some(Bytes::from_static(b"o")),
                new_value: None,
                expires_at_ms: None,
            }),
            Command::new(Op::Expire { now_ms: 99 }),
            Command::with_user_client(
                Op::Delete {
                    key: Bytes::from_static(b"d"),
                },
                "alice",
                3,
                4,
            ),
            Command::new(Op::Put {
                key: Bytes::from_static(b"leased"),
                value: Bytes::from_static(b"v"),
                expires_at_ms: None,
                lease: 77,
            }),
            Command::with_client(
                Op::DeleteRange {
                    range: KeyRange::prefix("p/"),
                    prev_kv: true,
                },
                1,
                9,
            ),
            Command::new(Op::DeleteRange {
                range: KeyRange::key("one"),
                prev_kv: false,
            }),
            Command::new(Op::DeleteRange {
                range: KeyRange::from_key("x"),
                prev_kv: false,
            }),
            Command::new(Op::Txn(Box::new(sample_txn()))),
            Command::new(Op::Txn(Box::new(Txn {
                compares: vec![],
                success: vec![],
                failure: vec![],
            }))),
            Command::with_user_client(
                Op::LeaseGrant {
                    id: 5,
                    ttl_ms: 10_000,
                },
                "bob",
                2,
                3,
            ),
            Command::new(Op::LeaseRevoke { id: u64::MAX }),
            Command::new(Op::Auth(Box::new(
                crate::auth::AuthOp::RoleGrantPermission {
                    role: "r".into(),
                    grant: crate::auth::Grant {
                        prefix: b"app/".to_vec(),
                        access: crate::auth::GrantAccess::Read,
                    },
                },
            ))),
            Command::new(Op::Auth(Box::new(crate::auth::AuthOp::TokenAdd {
                digest: "f".repeat(64),
                user: "alice".into(),
                expires_at_ms: Some(7),
                configured_user: false,
            }))),
        ]
    }

    fn sample_txn() -> Txn {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        Txn {
            compares: vec![
                Compare {
                    key: b("a"),
                    op: CompareOp::Equal,
                    target: CompareTarget::Value(b("v")),
                },
                Compare {
                    key: b("b"),
                    op: CompareOp::NotEqual,
                    target: CompareTarget::Version(3),
                },
                Compare {
                    key: b("c"),
                    op: CompareOp::Less,
                    target: CompareTarget::CreateRevision(4),
                },
                Compare {
                    key: b("d"),
                    op: CompareOp::Greater,
                    target: CompareTarget::ModRevision(5),
                },
                Compare {
                    key: b("e"),
                    op: CompareOp::Equal,
                    target: CompareTarget::Lease(6),
                },
            ],
            success: vec![
                TxnOp::Range(RangeSpec {
                    range: KeyRange::prefix("r/"),
                    limit: 10,
                    keys_only: true,
                    count_only: false,
                }),
                TxnOp::Put {
                    key: b("p"),
                    value: b("q"),
                    expires_at_ms: Some(9),
                    lease: 0,
                },
                TxnOp::Put {
                    key: b("p2"),
                    value: b(""),
                    expires_at_ms: None,
                    lease: 8,
                },
            ],
            failure: vec![
                TxnOp::DeleteRange {
                    range: KeyRange::key("z"),
                    prev_kv: true,
                },
                TxnOp::Range(RangeSpec {
                    range: KeyRange::from_key("m"),
                    limit: 0,
                    keys_only: false,
                    count_only: true,
                }),
            ],
        }
    }

    #[test]
    fn prefix_end_and_ranges() {
        assert_eq!(prefix_end(b"abc").as_ref(), b"abd");
        assert_eq!(prefix_end(b"a\xff").as_ref(), b"b");
        assert_eq!(prefix_end(b"a\xfe\xff\xff").as_ref(), b"a\xff");
        assert_eq!(prefix_end(b"\xff\xff").as_ref(), b"\0");
        assert_eq!(prefix_end(b"").as_ref(), b"\0");
        let p = KeyRange::prefix("a\u{7f}");
        assert!(p.contains(b"a\x7f") && p.contains(b"a\x7f\xff") && !p.contains(b"a\x80"));
        assert!(KeyRange::prefix("").contains(b"\xff\xff\xff"));
        KeyRange::prefix("").validate().unwrap();
        KeyRange::from_key("k").validate().unwrap();
        assert_eq!(
            KeyRange::key("").validate().unwrap_err(),
            CommandError::EmptyKey,
            "a single key must be a key"
        );
        let inverted = KeyRange {
            start: Bytes::from_static(b"b"),
            end: Bytes::from_static(b"a"),
        };
        assert_eq!(inverted.validate().unwrap_err(), CommandError::EmptyRange);
        assert!(inverted.bounds().is_none());
        let same = KeyRange {
            start: Bytes::from_static(b"b"),
            end: Bytes::from_static(b"b"),
        };
        assert_eq!(same.validate().unwrap_err(), CommandError::EmptyRange);
        let long = KeyRange::from_key(vec![b'k'; MAX_KEY_BYTES + 1]);
        assert!(matches!(
            long.validate(),
            Err(CommandError::KeyTooLarge { .. })
        ));
        let e = Command::decode(
            &Command::new(Op::DeleteRange {
                range: inverted,
                prev_kv: false,
            })
            .encode(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("range_end"), "{e}");
    }

    #[test]
    fn txn_and_lease_limits() {
        let put = |lease, expires_at_ms| TxnOp::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::new(),
            expires_at_ms,
            lease,
        };
        let mut t = sample_txn();
        t.success = vec![put(0, None); MAX_TXN_OPS];
        Op::Txn(Box::new(t.clone())).validate().unwrap();
        t.success.push(put(0, None));
        let e = Command::decode(&Command::new(Op::Txn(Box::new(t.clone()))).encode()).unwrap_err();
        assert_eq!(
            e,
            CommandError::TooManyTxnOps {
                what: "success ops",
                len: MAX_TXN_OPS + 1
            }
        );
        assert!(e.to_string().contains("128"), "{e}");
        t.success = vec![put(3, Some(1))];
        assert!(matches!(
            Op::Txn(Box::new(t.clone())).validate(),
            Err(CommandError::BadLease(_))
        ));
        t.success = vec![TxnOp::Range(RangeSpec {
            range: KeyRange::key("k"),
            limit: MAX_TXN_RANGE_LIMIT + 1,
            keys_only: false,
            count_only: false,
        })];
        assert_eq!(
            Op::Txn(Box::new(t)).validate().unwrap_err(),
            CommandError::RangeLimitTooLarge {
                limit: MAX_TXN_RANGE_LIMIT + 1
            }
        );
        for bad in [
            Op::LeaseGrant { id: 0, ttl_ms: 1 },
            Op::LeaseGrant { id: 1, ttl_ms: 0 },
            Op::LeaseGrant {
                id: 1,
                ttl_ms: MAX_LEASE_TTL_MS + 1,
            },
            Op::LeaseRevoke { id: 0 },
            Op::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::new(),
                expires_at_ms: Some(1),
                lease: 1,
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(CommandError::BadLease(_))),
                "{bad:?}"
            );
            assert!(Command::decode(&Command::new(bad).encode()).is_err());
        }
        Op::LeaseGrant {
            id: 1,
            ttl_ms: MAX_LEASE_TTL_MS,
        }
        .validate()
        .unwrap();
    }

    /// A transaction claiming 2^32 - 1 compares or ops is refused from its
    /// count (the bytes are not there), without reserving memory for it.
    #[test]
    fn hostile_txn_counts_are_refused_without_allocating() {
        for which in 0..3 {
            let mut w = Writer::new();
            w.u8(COMMAND_VERSION).u8(0).u8(OP_TXN);
            for i in 0..3 {
                w.u32(if i == which { u32::MAX } else { 0 });
                if i == which {
                    break;
                }
            }
            let buf = w.into_vec();
            let e = Command::decode(&buf).unwrap_err();
            assert!(e.to_string().contains("bytes follow"), "{e}");
        }
        // A count above the limit backed by real bytes decodes item by item
        // (capacity capped) and is refused by validation.
        let mut w = Writer::new();
        w.u8(COMMAND_VERSION)
            .u8(0)
            .u8(OP_TXN)
            .u32(0)
            .u32(0)
            .u32(1000);
        for _ in 0..1000 {
            w.u8(TXN_DELETE_RANGE).bytes(b"k").bytes(b"").u8(0);
        }
        assert_eq!(
            Command::decode(&w.into_vec()).unwrap_err(),
            CommandError::TooManyTxnOps {
                what: "failure ops",
                len: 1000
            }
        );
        // A PutLeased with lease 0 is not the canonical encoding.
        let mut w = Writer::new();
        w.u8(COMMAND_VERSION)
            .u8(0)
            .u8(OP_PUT_LEASED)
            .bytes(b"k")
            .bytes(b"v")
            .u64(0);
        assert!(Command::decode(&w.into_vec()).is_err());
        // A put with lease 0 keeps the old encoding.
        let plain = Command::new(Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            expires_at_ms: None,
            lease: 0,
        });
        assert_eq!(plain.encode()[2], OP_PUT);
    }

    /// Commands without a user encode exactly as before users existed, so
    /// logs on existing data directories replay unchanged.
    #[test]
    fn anonymous_sessions_keep_the_old_encoding() {
        let c = Command::with_client(
            Op::Delete {
                key: Bytes::from_static(b"k"),
            },
            7,
            9,
        );
        let mut old = vec![COMMAND_VERSION, FLAG_CLIENT];
        old.extend_from_slice(&7u64.to_le_bytes());
        old.extend_from_slice(&9u64.to_le_bytes());
        old.push(OP_DELETE);
        old.extend_from_slice(&1u32.to_le_bytes());
        old.push(b'k');
        assert_eq!(c.encode().to_vec(), old);
        let user = Command::with_user_client(c.op.clone(), "bob", 7, 9);
        let (back, fp) = Command::decode_with_fingerprint(&user.encode()).unwrap();
        assert_eq!(back, user);
        assert_eq!(back.client.unwrap().user, "bob");
        assert_eq!(
            fp,
            c.op_fingerprint(),
            "the fingerprint ignores the session"
        );
        assert_ne!(fp, 0);
    }

    #[test]
    fn fingerprints_tell_operations_apart() {
        let s = samples();
        for (i, a) in s.iter().enumerate() {
            for b in &s[i + 1..] {
                if a.op != b.op {
                    assert_ne!(a.op_fingerprint(), b.op_fingerprint(), "{a:?} {b:?}");
                }
            }
        }
    }

    #[test]
    fn user_flag_is_checked() {
        let mut no_client = Command::new(Op::Expire { now_ms: 1 }).encode().to_vec();
        no_client[1] = FLAG_USER;
        assert!(Command::decode(&no_client).is_err());
        let long = Command::with_user_client(Op::Expire { now_ms: 1 }, &"u".repeat(256), 1, 1);
        assert_eq!(
            long.validate().unwrap_err(),
            CommandError::UserTooLong { len: 256 }
        );
        assert!(Command::decode(&long.encode())
            .unwrap_err()
            .to_string()
            .contains("MAX_USER_BYTES"));
    }

    #[test]
    fn roundtrip() {
        for c in samples() {
            assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        }
    }

    #[test]
    fn every_truncation_and_bitflip_is_an_error_or_a_valid_command() {
        for c in samples() {
            let buf = c.encode();
            for cut in 0..buf.len() {
                assert!(Command::decode(&buf[..cut]).is_err(), "cut {cut} of {c:?}");
            }
            for i in 0..buf.len() {
                for bit in 0..8 {
                    let mut b = buf.to_vec();
                    b[i] ^= 1 << bit;
                    let _ = Command::decode(&b); // must not panic
                }
            }
            let mut longer = buf.to_vec();
            longer.push(0);
            assert!(Command::decode(&longer).is_err());
        }
    }

    #[test]
    fn limits_are_named_in_errors() {
        let big_key = Command::new(Op::Delete {
            key: Bytes::from(vec![b'k'; MAX_KEY_BYTES + 1]),
        });
        let e = Command::decode(&big_key.encode()).unwrap_err();
        assert_eq!(
            e,
            CommandError::KeyTooLarge {
                len: MAX_KEY_BYTES + 1
            }
        );
        assert!(
            e.to_string()
                .contains("the limit is 4096 bytes (limits.max_key_bytes)"),
            "{e}"
        );
        let big_val = Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0; MAX_VALUE_BYTES + 1]),
            expires_at_ms: None,
            lease: 0,
        };
        let e = big_val.validate().unwrap_err();
        assert!(
            e.to_string()
                .contains("the limit is 1048576 bytes (limits.max_value_bytes)"),
            "{e}"
        );
        let ok_val = Op::Put {
            key: Bytes::from(vec![b'k'; MAX_KEY_BYTES]),
            value: Bytes::from(vec![0; MAX_VALUE_BYTES]),
            expires_at_ms: None,
            lease: 0,
        };
        ok_val.validate().unwrap();
        let e = Op::Delete { key: Bytes::new() }.validate().unwrap_err();
        assert_eq!(e, CommandError::EmptyKey);
    }

    #[test]
    fn unknown_version_and_op() {
        let mut b = samples()[0].encode().to_vec();
        b[0] = 9;
        assert_eq!(
            Command::decode(&b).unwrap_err(),
            CommandError::UnsupportedVersion { version: 9 }
        );
        let mut b = samples()[0].encode().to_vec();
        b[2] = 77;
        assert!(Command::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("unknown op code 77"));
    }
}
