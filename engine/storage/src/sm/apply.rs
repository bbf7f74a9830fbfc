//! The apply logic shared by every state machine implementation. It runs a
//! batch of entries against a [`KvStore`] (an in-memory map, or a sled
//! overlay that becomes one atomic batch) and the replicated metadata.

use super::dedup::{DedupTable, SessionChange, SessionKey};
use super::{Applied, ApplyResult, KeyMeta, KeyValue, SmError, WatchEvent, WatchEventKind};
use crate::command::{Command, Op};
use bytes::Bytes;
use d_engine_core::{ConfChange, Entry, EntryPayload, Index, Member, MemberRole, Membership, Term};

/// Key storage as seen by the applier within one batch.
pub(crate) trait KvStore {
    /// The metadata of the key's current incarnation; does not read values.
    fn meta(&mut self, key: &[u8]) -> Result<Option<KeyMeta>, SmError>;
    /// The key's current value (compare-and-swap needs it).
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, SmError>;
    /// Stores `kv`, replacing the incarnation described by `old` (which the
    /// caller read with `meta` or `get`).
    fn put(&mut self, kv: KeyValue, old: Option<&KeyMeta>) -> Result<(), SmError>;
    /// Removes `key`, whose current incarnation `old` describes.
    fn delete(&mut self, key: &Bytes, old: &KeyMeta) -> Result<(), SmError>;
    /// Keys whose deadline is `<= now_ms`, ordered by (deadline, key).
    fn expired(&mut self, now_ms: u64) -> Result<Vec<Bytes>, SmError>;
}

/// Replicated metadata besides the keys.
#[derive(Clone, Debug, Default)]
pub(crate) struct SmMeta {
    pub applied_index: Index,
    pub applied_term: Term,
    pub membership: Membership,
    pub dedup: DedupTable,
}

/// What a batch changed besides the keys (for persistence).
#[derive(Default)]
pub(crate) struct MetaChanges {
    pub membership: bool,
    pub sessions: Vec<SessionChange>,
}

/// Applies `entries` in order. Entries at or below the applied index are
/// skipped; a gap is an error (nothing is applied in that case).
pub(crate) fn apply_entries<S: KvStore>(
    store: &mut S,
    meta: &mut SmMeta,
    entries: &[Entry],
    changes: &mut MetaChanges,
) -> Result<Vec<Applied>, SmError> {
    let mut expect = meta.applied_index + 1;
    for e in entries {
        if e.index >= expect {
            if e.index != expect {
                return Err(SmError::Gap {
                    applied: expect - 1,
                    got: e.index,
                });
            }
            expect += 1;
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        if e.index <= meta.applied_index {
            continue;
        }
        let mut events = Vec::new();
        let mut revision = e.index;
        let result = match &e.payload {
            EntryPayload::Noop => ApplyResult::Noop,
            EntryPayload::Config(cc) => {
                apply_conf_change(&mut meta.membership, cc);
                changes.membership = true;
                ApplyResult::MembershipChanged
            }
            EntryPayload::Command(bytes) => match Command::decode_with_fingerprint(bytes) {
                Err(err) => ApplyResult::Rejected {
                    reason: err.to_string(),
                },
                Ok((cmd, fingerprint)) => match cmd.client {
                    Some(c) => {
                        let key = SessionKey::new(c.user, c.client_id);
                        match meta.dedup.check(&key, c.seq, fingerprint, e.index) {
                            Some(prev) => {
                                revision = prev.index;
                                if prev.fingerprint != 0 {
                                    restore_cas_value(prev.result, &cmd.op)
                                } else {
                                    prev.result
                                }
                            }
                            None => {
                                let r = apply_op(store, e.index, &cmd.op, &mut events)?;
                                meta.dedup.record(
                                    &key,
                                    c.seq,
                                    e.index,
                                    fingerprint,
                                    remembered_form(&r),
                                    &mut changes.sessions,
                                );
                                r
                            }
                        }
                    }
                    None => apply_op(store, e.index, &cmd.op, &mut events)?,
                },
            },
        };
        meta.applied_index = e.index;
        meta.applied_term = e.term;
        out.push(Applied {
            index: e.index,
            term: e.term,
            revision,
            result,
            events,
        });
    }
    Ok(out)
}

/// What the dedup table keeps of a result: a successful compare-and-swap
/// without the value it wrote (the retry carries it; see
/// [`restore_cas_value`]), everything else as is.
fn remembered_form(r: &ApplyResult) -> ApplyResult {
    match r {
        ApplyResult::CompareAndSwap {
            succeeded: true,
            current: Some(kv),
        } => ApplyResult::CompareAndSwap {
            succeeded: true,
            current: Some(KeyValue {
                value: Bytes::new(),
                ..kv.clone()
            }),
        },
        other => other.clone(),
    }
}

/// The answer to a retry: a remembered successful compare-and-swap gets
/// back the value it wrote, which is the retry's own `new_value` (the
/// fingerprint check proved the retry is the same operation).
fn restore_cas_value(r: ApplyResult, op: &Op) -> ApplyResult {
    match (r, op) {
        (
            ApplyResult::CompareAndSwap {
                succeeded: true,
                current: Some(kv),
            },
            Op::CompareAndSwap {
                new_value: Some(v), ..
            },
        ) => ApplyResult::CompareAndSwap {
            succeeded: true,
            current: Some(KeyValue {
                value: v.clone(),
                ..kv
            }),
        },
        (r, _) => r,
    }
}

/// Applies a membership change (same rules as the core; the core has already
/// validated it, so an impossible change is ignored rather than failing).
pub(crate) fn apply_conf_change(m: &mut Membership, cc: &ConfChange) {
    match cc {
        ConfChange::AddLearner { id, addr } => {
            let role = m
                .members
                .get(id)
                .map(|x| x.role)
                .unwrap_or(MemberRole::Learner);
            m.members.insert(
                *id,
                Member {
                    role,
                    addr: addr.clone(),
                },
            );
        }
        ConfChange::Promote { id } => {
            if let Some(x) = m.members.get_mut(id) {
                x.role = MemberRole::Voter;
            }
        }
        ConfChange::Remove { id } => {
            m.members.remove(id);
        }
    }
}

fn write_value<S: KvStore>(
    store: &mut S,
    index: Index,
    key: &Bytes,
    value: &Bytes,
    expires_at_ms: Option<u64>,
    old: Option<KeyMeta>,
    events: &mut Vec<WatchEvent>,
) -> Result<KeyValue, SmError> {
    let kv = KeyValue {
        key: key.clone(),
        value: value.clone(),
        create_revision: old.map_or(index, |o| o.create_revision),
        mod_revision: index,
        version: old.map_or(1, |o| o.version + 1),
        expires_at_ms,
        lease: 0, // STORAGE-HELPER
    };
    store.put(kv.clone(), old.as_ref())?;
    events.push(WatchEvent {
        kind: WatchEventKind::Put,
        key: key.clone(),
        revision: index,
        kv: Some(kv.clone()),
        prev: old,
    });
    Ok(kv)
}

fn delete_value<S: KvStore>(
    store: &mut S,
    index: Index,
    key: &Bytes,
    old: KeyMeta,
    events: &mut Vec<WatchEvent>,
) -> Result<(), SmError> {
    store.delete(key, &old)?;
    events.push(WatchEvent {
        kind: WatchEventKind::Delete,
        key: key.clone(),
        revision: index,
        kv: None,
        prev: Some(old),
    });
    Ok(())
}

fn apply_op<S: KvStore>(
    store: &mut S,
    index: Index,
    op: &Op,
    events: &mut Vec<WatchEvent>,
) -> Result<ApplyResult, SmError> {
    Ok(match op {
        Op::Put {
            key,
            value,
            expires_at_ms,
            lease: _,
        } => {
            let old = store.meta(key)?;
            let prev_revision = old.map(|o| o.mod_revision);
            write_value(store, index, key, value, *expires_at_ms, old, events)?;
            ApplyResult::Put { prev_revision }
        }
        Op::Delete { key } => match store.meta(key)? {
            Some(old) => {
                delete_value(store, index, key, old, events)?;
                ApplyResult::Delete { existed: true }
            }
            None => ApplyResult::Delete { existed: false },
        },
        Op::CompareAndSwap {
            key,
            expected,
            new_value,
            expires_at_ms,
        } => {
            let old = store.get(key)?;
            let matches = match (&old, expected) {
                (None, None) => true,
                (Some(o), Some(e)) => o.value == *e,
                _ => false,
            };
            if !matches {
                ApplyResult::CompareAndSwap {
                    succeeded: false,
                    current: old,
                }
            } else {
                let old = old.as_ref().map(KeyValue::meta);
                let current = match (new_value, old) {
                    (Some(v), old) => Some(write_value(
                        store,
                        index,
                        key,
                        v,
                        *expires_at_ms,
                        old,
                        events,
                    )?),
                    (None, Some(old)) => {
                        delete_value(store, index, key, old, events)?;
                        None
                    }
                    (None, None) => None,
                };
                ApplyResult::CompareAndSwap {
                    succeeded: true,
                    current,
                }
            }
        }
        // STORAGE-HELPER: apply these.
        Op::DeleteRange { .. } | Op::Txn(_) | Op::LeaseGrant { .. } | Op::LeaseRevoke { .. } => {
            ApplyResult::Rejected {
                reason: "not yet implemented".into(),
            }
        }
        Op::Expire { now_ms } => {
            let keys = store.expired(*now_ms)?;
            let mut n = 0;
            for key in keys {
                match store.meta(&key)? {
                    Some(old) if old.is_expired(*now_ms) => {
                        delete_value(store, index, &key, old, events)?;
                        n += 1;
                    }
                    _ => {
                        return Err(SmError::Corrupt(format!(
                            "TTL index names key {key:?} as expired at {now_ms} but the key is absent or not expired"
                        )))
                    }
                }
            }
            ApplyResult::Expire { expired: n }
        }
    })
}
