//! The simulated application: a tiny key-value register store.
//!
//! Commands are encoded to bytes (the core treats them as opaque) and carry
//! the id of the client operation that issued them, so the oracle can tie a
//! log entry back to the operation.

use bytes::{BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;

use super::rng::fnv1a;

pub type Key = u8;
pub type Value = u64;
/// Identifies one client operation across the whole run.
pub type OpId = u64;

/// A write command (reads never enter the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        op: OpId,
        key: Key,
        value: Value,
    },
    /// Sets `key` to `new` iff its current value equals `expect`.
    Cas {
        op: OpId,
        key: Key,
        expect: Option<Value>,
        new: Value,
    },
}

const TAG_PUT: u8 = 1;
const TAG_CAS: u8 = 2;

impl Command {
    pub fn op(&self) -> OpId {
        match self {
            Command::Put { op, .. } | Command::Cas { op, .. } => *op,
        }
    }

    pub fn key(&self) -> Key {
        match self {
            Command::Put { key, .. } | Command::Cas { key, .. } => *key,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(28);
        match self {
            Command::Put { op, key, value } => {
                b.put_u8(TAG_PUT);
                b.put_u64(*op);
                b.put_u8(*key);
                b.put_u64(*value);
            }
            Command::Cas {
                op,
                key,
                expect,
                new,
            } => {
                b.put_u8(TAG_CAS);
                b.put_u64(*op);
                b.put_u8(*key);
                b.put_u8(expect.is_some() as u8);
                b.put_u64(expect.unwrap_or(0));
                b.put_u64(*new);
            }
        }
        b.freeze()
    }

    /// Decodes a command; `Err` names what is wrong with the bytes.
    pub fn decode(b: &[u8]) -> Result<Command, String> {
        let u64_at = |at: usize| -> Result<u64, String> {
            b.get(at..at + 8)
                .map(|s| u64::from_be_bytes(s.try_into().unwrap()))
                .ok_or_else(|| format!("command truncated at byte {at} (len {})", b.len()))
        };
        match b.first() {
            Some(&TAG_PUT) if b.len() == 18 => Ok(Command::Put {
                op: u64_at(1)?,
                key: b[9],
                value: u64_at(10)?,
            }),
            Some(&TAG_CAS) if b.len() == 27 => Ok(Command::Cas {
                op: u64_at(1)?,
                key: b[9],
                expect: if b[10] == 1 { Some(u64_at(11)?) } else { None },
                new: u64_at(19)?,
            }),
            _ => Err(format!("not a simulator command: {:02x?}", b)),
        }
    }
}

/// What applying a command produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyResult {
    Put,
    Cas { ok: bool },
}

/// The state machine: a map of registers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    map: BTreeMap<Key, Value>,
}

impl Kv {
    pub fn apply(&mut self, cmd: &Command) -> ApplyResult {
        match *cmd {
            Command::Put { key, value, .. } => {
                self.map.insert(key, value);
                ApplyResult::Put
            }
            Command::Cas {
                key, expect, new, ..
            } => {
                let ok = self.map.get(&key).copied() == expect;
                if ok {
                    self.map.insert(key, new);
                }
                ApplyResult::Cas { ok }
            }
        }
    }

    pub fn get(&self, key: Key) -> Option<Value> {
        self.map.get(&key).copied()
    }

    /// Order-independent of nothing: BTreeMap iterates in key order, so equal
    /// maps have equal digests.
    pub fn digest(&self) -> u64 {
        let mut h = fnv1a(0, b"kv");
        for (k, v) in &self.map {
            h = fnv1a(h, &[*k]);
            h = fnv1a(h, &v.to_be_bytes());
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let cmds = [
            Command::Put {
                op: 9,
                key: 2,
                value: 77,
            },
            Command::Cas {
                op: 10,
                key: 1,
                expect: None,
                new: 5,
            },
            Command::Cas {
                op: 11,
                key: 1,
                expect: Some(5),
                new: 6,
            },
        ];
        for c in cmds {
            assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        }
        assert!(Command::decode(b"\x01short").is_err());
        assert!(Command::decode(b"").is_err());
    }

    #[test]
    fn cas_only_applies_on_match() {
        let mut kv = Kv::default();
        let cas = |expect, new| Command::Cas {
            op: 1,
            key: 0,
            expect,
            new,
        };
        assert_eq!(kv.apply(&cas(Some(1), 2)), ApplyResult::Cas { ok: false });
        assert_eq!(kv.apply(&cas(None, 2)), ApplyResult::Cas { ok: true });
        assert_eq!(kv.get(0), Some(2));
        assert_eq!(kv.apply(&cas(None, 3)), ApplyResult::Cas { ok: false });
        assert_eq!(kv.apply(&cas(Some(2), 3)), ApplyResult::Cas { ok: true });
        assert_eq!(kv.get(0), Some(3));
        let d = kv.digest();
        kv.apply(&Command::Put {
            op: 2,
            key: 0,
            value: 4,
        });
        assert_ne!(d, kv.digest());
    }
}
