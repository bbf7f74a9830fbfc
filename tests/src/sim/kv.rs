//! The simulated application: a tiny key-value register store with leases.
//!
//! Commands are encoded to bytes (the core treats them as opaque) and carry
//! the id of the client operation that issued them, so the oracle can tie a
//! log entry back to the operation.
//!
//! Leases mirror the engine's (`engine/storage/src/command.rs`, `sm.rs`):
//! `LeaseGrant { id, ttl }` creates a lease (`LeaseExists` if the id is
//! taken), `LeaseRevoke { id }` deletes the lease and every key attached to
//! it in the same step (`LeaseNotFound` if it does not exist), and a `Put`
//! with `lease != 0` attaches its key (`LeaseNotFound`, nothing written, if
//! the lease does not exist); a put without a lease, or a successful cas,
//! detaches the key. Keepalives are not replicated: the leader keeps the
//! deadlines (`cluster/leases.rs`). The register workload (and its
//! linearizability checker) uses keys below [`LEASE_KEY_BASE`]; the lease
//! workload only keys at or above it, and always with a lease.

use bytes::{BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;

use super::rng::fnv1a;

pub type Key = u8;
pub type Value = u64;
/// Identifies one client operation across the whole run.
pub type OpId = u64;
/// A lease id (never 0: 0 means "no lease").
pub type LeaseId = u64;

/// Keys of the lease workload start here (register keys stay below).
pub const LEASE_KEY_BASE: Key = 128;

/// A write command (reads and keepalives never enter the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Sets `key`; `lease != 0` attaches it to that lease (which must exist).
    Put {
        op: OpId,
        key: Key,
        value: Value,
        lease: LeaseId,
    },
    /// Sets `key` to `new` iff its current value equals `expect`.
    Cas {
        op: OpId,
        key: Key,
        expect: Option<Value>,
        new: Value,
    },
    /// Creates lease `id` with a TTL of `ttl_us` simulated microseconds.
    LeaseGrant { op: OpId, id: LeaseId, ttl_us: u64 },
    /// Deletes lease `id` and every key attached to it. `op` is a client
    /// operation or, for a revoke a leader proposes because the lease
    /// expired, an expiry decision (`cluster::leases::EXPIRY_OP`).
    LeaseRevoke { op: OpId, id: LeaseId },
}

const TAG_PUT: u8 = 1;
const TAG_CAS: u8 = 2;
const TAG_GRANT: u8 = 3;
const TAG_REVOKE: u8 = 4;

impl Command {
    pub fn op(&self) -> OpId {
        match self {
            Command::Put { op, .. }
            | Command::Cas { op, .. }
            | Command::LeaseGrant { op, .. }
            | Command::LeaseRevoke { op, .. } => *op,
        }
    }

    /// The register key a put or cas writes (`None` for lease commands).
    pub fn key(&self) -> Option<Key> {
        match self {
            Command::Put { key, .. } | Command::Cas { key, .. } => Some(*key),
            Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } => None,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(28);
        match self {
            Command::Put {
                op,
                key,
                value,
                lease,
            } => {
                b.put_u8(TAG_PUT);
                b.put_u64(*op);
                b.put_u8(*key);
                b.put_u64(*value);
                b.put_u64(*lease);
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
            Command::LeaseGrant { op, id, ttl_us } => {
                b.put_u8(TAG_GRANT);
                b.put_u64(*op);
                b.put_u64(*id);
                b.put_u64(*ttl_us);
            }
            Command::LeaseRevoke { op, id } => {
                b.put_u8(TAG_REVOKE);
                b.put_u64(*op);
                b.put_u64(*id);
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
            Some(&TAG_PUT) if b.len() == 26 => Ok(Command::Put {
                op: u64_at(1)?,
                key: b[9],
                value: u64_at(10)?,
                lease: u64_at(18)?,
            }),
            Some(&TAG_CAS) if b.len() == 27 => Ok(Command::Cas {
                op: u64_at(1)?,
                key: b[9],
                expect: if b[10] == 1 { Some(u64_at(11)?) } else { None },
                new: u64_at(19)?,
            }),
            Some(&TAG_GRANT) if b.len() == 25 => Ok(Command::LeaseGrant {
                op: u64_at(1)?,
                id: u64_at(9)?,
                ttl_us: u64_at(17)?,
            }),
            Some(&TAG_REVOKE) if b.len() == 17 => Ok(Command::LeaseRevoke {
                op: u64_at(1)?,
                id: u64_at(9)?,
            }),
            _ => Err(format!("not a simulator command: {:02x?}", b)),
        }
    }
}

/// What applying a command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyResult {
    Put,
    Cas {
        ok: bool,
    },
    LeaseGranted {
        id: LeaseId,
        ttl_us: u64,
    },
    LeaseExists {
        id: LeaseId,
    },
    /// The lease and its keys (`deleted`, in key order) are gone.
    LeaseRevoked {
        id: LeaseId,
        deleted: Vec<Key>,
    },
    /// A revoke, or a put with a lease, named a lease that does not exist.
    LeaseNotFound {
        id: LeaseId,
    },
}

/// The state machine: a map of registers, the leases and which lease each
/// key is attached to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    map: BTreeMap<Key, Value>,
    /// Lease id -> TTL in simulated microseconds.
    leases: BTreeMap<LeaseId, u64>,
    attached: BTreeMap<Key, LeaseId>,
}

impl Kv {
    pub fn apply(&mut self, cmd: &Command) -> ApplyResult {
        match *cmd {
            Command::Put {
                key, value, lease, ..
            } => {
                if lease != 0 {
                    if !self.leases.contains_key(&lease) {
                        return ApplyResult::LeaseNotFound { id: lease };
                    }
                    self.attached.insert(key, lease);
                } else {
                    self.attached.remove(&key);
                }
                self.map.insert(key, value);
                ApplyResult::Put
            }
            Command::Cas {
                key, expect, new, ..
            } => {
                let ok = self.map.get(&key).copied() == expect;
                if ok {
                    self.map.insert(key, new);
                    self.attached.remove(&key);
                }
                ApplyResult::Cas { ok }
            }
            Command::LeaseGrant { id, ttl_us, .. } => {
                if self.leases.contains_key(&id) {
                    return ApplyResult::LeaseExists { id };
                }
                self.leases.insert(id, ttl_us);
                ApplyResult::LeaseGranted { id, ttl_us }
            }
            Command::LeaseRevoke { id, .. } => {
                if self.leases.remove(&id).is_none() {
                    return ApplyResult::LeaseNotFound { id };
                }
                let deleted: Vec<Key> = self
                    .attached
                    .iter()
                    .filter(|(_, l)| **l == id)
                    .map(|(k, _)| *k)
                    .collect();
                for k in &deleted {
                    self.attached.remove(k);
                    self.map.remove(k);
                }
                ApplyResult::LeaseRevoked { id, deleted }
            }
        }
    }

    pub fn get(&self, key: Key) -> Option<Value> {
        self.map.get(&key).copied()
    }

    /// The TTL of lease `id`, if it exists.
    pub fn lease(&self, id: LeaseId) -> Option<u64> {
        self.leases.get(&id).copied()
    }

    /// Every lease, `(id, ttl_us)` in id order.
    pub fn leases(&self) -> impl Iterator<Item = (LeaseId, u64)> + '_ {
        self.leases.iter().map(|(i, t)| (*i, *t))
    }

    /// Every key present, in order.
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.map.keys().copied()
    }

    /// Every attachment `(key, lease)`, in key order.
    pub fn attachments(&self) -> impl Iterator<Item = (Key, LeaseId)> + '_ {
        self.attached.iter().map(|(k, l)| (*k, *l))
    }

    /// The lease `key` is attached to, if any.
    pub fn attached_to(&self, key: Key) -> Option<LeaseId> {
        self.attached.get(&key).copied()
    }

    /// Test support: forces a state the commands can never produce.
    #[cfg(test)]
    pub(crate) fn corrupt(&mut self, key: Key, value: Option<Value>, lease: Option<LeaseId>) {
        match value {
            Some(v) => self.map.insert(key, v),
            None => self.map.remove(&key),
        };
        match lease {
            Some(l) => self.attached.insert(key, l),
            None => self.attached.remove(&key),
        };
    }

    /// BTreeMaps iterate in key order, so equal states have equal digests.
    pub fn digest(&self) -> u64 {
        let mut h = fnv1a(0, b"kv");
        for (k, v) in &self.map {
            h = fnv1a(h, &[*k]);
            h = fnv1a(h, &v.to_be_bytes());
        }
        for (id, ttl) in &self.leases {
            h = fnv1a(h, b"lease");
            h = fnv1a(h, &id.to_be_bytes());
            h = fnv1a(h, &ttl.to_be_bytes());
        }
        for (k, l) in &self.attached {
            h = fnv1a(h, b"attached");
            h = fnv1a(h, &[*k]);
            h = fnv1a(h, &l.to_be_bytes());
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
                lease: 0,
            },
            Command::Put {
                op: 9,
                key: 130,
                value: 78,
                lease: 5,
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
            Command::LeaseGrant {
                op: 12,
                id: 3,
                ttl_us: 250_000,
            },
            Command::LeaseRevoke { op: 13, id: 3 },
        ];
        for c in cmds {
            assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        }
        assert!(Command::decode(b"\x01short").is_err());
        assert!(Command::decode(b"\x04short").is_err());
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
            lease: 0,
        });
        assert_ne!(d, kv.digest());
    }

    #[test]
    fn leases_attach_keys_and_revoke_deletes_exactly_them() {
        let mut kv = Kv::default();
        let put = |key, value, lease| Command::Put {
            op: 1,
            key,
            value,
            lease,
        };
        // A put naming a missing lease fails and writes nothing.
        assert_eq!(
            kv.apply(&put(130, 1, 7)),
            ApplyResult::LeaseNotFound { id: 7 }
        );
        assert_eq!(kv.get(130), None);
        let grant = |id| Command::LeaseGrant {
            op: 2,
            id,
            ttl_us: 100,
        };
        assert_eq!(
            kv.apply(&grant(7)),
            ApplyResult::LeaseGranted { id: 7, ttl_us: 100 }
        );
        assert_eq!(kv.apply(&grant(7)), ApplyResult::LeaseExists { id: 7 });
        kv.apply(&grant(8));
        let d0 = kv.digest();
        assert_eq!(kv.apply(&put(130, 1, 7)), ApplyResult::Put);
        assert_ne!(d0, kv.digest(), "attachments are part of the state");
        kv.apply(&put(131, 2, 7));
        kv.apply(&put(132, 3, 8));
        // Re-attaching moves the key: revoking 7 must not delete it.
        kv.apply(&put(131, 4, 8));
        assert_eq!(kv.attached_to(131), Some(8));
        assert_eq!(
            kv.apply(&Command::LeaseRevoke { op: 3, id: 7 }),
            ApplyResult::LeaseRevoked {
                id: 7,
                deleted: vec![130]
            }
        );
        assert_eq!(
            (kv.get(130), kv.get(131), kv.get(132)),
            (None, Some(4), Some(3))
        );
        assert_eq!(kv.lease(7), None);
        assert_eq!(
            kv.apply(&Command::LeaseRevoke { op: 4, id: 7 }),
            ApplyResult::LeaseNotFound { id: 7 }
        );
        assert_eq!(
            kv.apply(&Command::LeaseRevoke { op: 5, id: 8 }),
            ApplyResult::LeaseRevoked {
                id: 8,
                deleted: vec![131, 132]
            }
        );
        assert_eq!(kv.leases().count(), 0);
        assert_eq!(kv.attached_to(132), None);
    }
}
