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
//! Put:            bytes key, bytes value, opt<u64> expires_at_ms
//! Delete:         bytes key
//! CompareAndSwap: bytes key, opt<bytes> expected, opt<bytes> new_value, opt<u64> expires_at_ms
//! Expire:         u64 now_ms
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
    },
    /// Remove `key` if present.
    Delete { key: Bytes },
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
}

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
    KeyTooLarge { len: usize },
    ValueTooLarge { len: usize },
    UnsupportedVersion { version: u8 },
    UserTooLong { len: usize },
    Malformed(WireError),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::EmptyKey => write!(f, "key is empty; keys must be 1..={MAX_KEY_BYTES} bytes"),
            CommandError::KeyTooLarge { len } => write!(
                f,
                "key is {len} bytes; the limit is MAX_KEY_BYTES = {MAX_KEY_BYTES}; use a shorter key"
            ),
            CommandError::ValueTooLarge { len } => write!(
                f,
                "value is {len} bytes; the limit is MAX_VALUE_BYTES = {MAX_VALUE_BYTES} (1 MiB); split the value across several keys"
            ),
            CommandError::UnsupportedVersion { version } => write!(
                f,
                "command encoding version {version} is not supported (this node understands version {COMMAND_VERSION}); upgrade the node"
            ),
            CommandError::UserTooLong { len } => write!(
                f,
                "the session's user name is {len} bytes; the limit is MAX_USER_BYTES = {MAX_USER_BYTES}"
            ),
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

impl Op {
    /// Checks every key and value against [`MAX_KEY_BYTES`] / [`MAX_VALUE_BYTES`].
    pub fn validate(&self) -> Result<(), CommandError> {
        match self {
            Op::Put { key, value, .. } => {
                validate_key(key)?;
                validate_value(value)
            }
            Op::Delete { key } => validate_key(key),
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
            } => {
                w.u8(OP_PUT).bytes(key).bytes(value).opt_u64(*expires_at_ms);
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
        }
    }
}

impl Command {
    fn payload_len(&self) -> usize {
        match &self.op {
            Op::Put { key, value, .. } => key.len() + value.len(),
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
            }),
            Command::with_client(
                Op::Put {
                    key: Bytes::from_static(b"key"),
                    value: Bytes::new(),
                    expires_at_ms: Some(1_700_000_000_000),
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
        ]
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
        assert!(e.to_string().contains("MAX_KEY_BYTES = 4096"), "{e}");
        let big_val = Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0; MAX_VALUE_BYTES + 1]),
            expires_at_ms: None,
        };
        let e = big_val.validate().unwrap_err();
        assert!(e.to_string().contains("MAX_VALUE_BYTES = 1048576"), "{e}");
        let ok_val = Op::Put {
            key: Bytes::from(vec![b'k'; MAX_KEY_BYTES]),
            value: Bytes::from(vec![0; MAX_VALUE_BYTES]),
            expires_at_ms: None,
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
