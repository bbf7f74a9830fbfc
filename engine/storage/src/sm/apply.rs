//! The apply logic shared by every state machine implementation. It runs a
//! batch of entries against a [`KvStore`] (an in-memory map, or a sled
//! overlay that becomes one atomic batch) and the replicated metadata.
//!
//! # Semantics of the multi-key operations
//!
//! - `DeleteRange` deletes every stored key of the range (expired keys not
//!   yet reaped included, like `Delete`), one `Delete` event per key in key
//!   order; `prev_kvs` (if asked for) stop at
//!   [`crate::command::RESULT_BUDGET_BYTES`] (`truncated`), the keys are
//!   all deleted anyway.
//! - `Txn` evaluates its compares against the state as of the batch so far;
//!   a missing key has version, revisions and lease 0, and a `Value`
//!   compare on it is false whatever the operator. `Less`/`Greater` on a
//!   value compare the bytes lexicographically. Then the ops of the chosen
//!   branch run in order, each seeing the writes of the ones before it.
//!   Applying never reads a clock, so a range inside a transaction returns
//!   **every stored key** of the range, expired keys not yet reaped
//!   included (their `expires_at_ms` tells the caller), and its `count`
//!   counts them too. The ranges and `prev_kvs` lists of one transaction
//!   share one [`crate::command::RESULT_BUDGET_BYTES`] budget (a range that
//!   finds it spent returns no pairs and `more`; its `count` stays exact),
//!   so a whole transaction result stays under it plus at most one pair.
//!   If any put of the chosen branch names a lease that does not exist,
//!   the whole transaction is refused ([`ApplyResult::LeaseNotFound`]) and
//!   nothing changes.
//! - A put with a lease needs the lease ([`ApplyResult::LeaseNotFound`]
//!   otherwise, nothing changes) and attaches the key to it; any put,
//!   compare-and-swap write or delete of a key detaches it from the lease
//!   it had (a compare-and-swap write leaves the key without a lease).
//! - `LeaseGrant` of a lease that exists is [`ApplyResult::LeaseExists`]
//!   (nothing changes); `LeaseRevoke` of one that does not is
//!   [`ApplyResult::LeaseNotFound`]; otherwise it deletes every key
//!   attached to the lease (one `Delete` event per key, key order), then
//!   the lease.

use super::dedup::{DedupTable, SessionChange, SessionKey};
use super::{
    Applied, ApplyResult, KeyMeta, KeyValue, LeaseRecord, PageBuilder, RangeResult, SmError,
    TxnOpResult, WatchEvent, WatchEventKind,
};
use crate::command::{
    Command, Compare, CompareOp, CompareTarget, KeyRange, Op, RangeSpec, Txn, TxnOp,
};
use bytes::Bytes;
use d_engine_core::{ConfChange, Entry, EntryPayload, Index, Member, MemberRole, Membership, Term};

/// Key storage as seen by the applier within one batch.
///
/// Lease attachments follow the key records: `put` and `delete` move a key
/// between the key sets of the leases its old and new metadata name.
pub(crate) trait KvStore {
    /// The metadata of the key's current incarnation; does not read values.
    fn meta(&mut self, key: &[u8]) -> Result<Option<KeyMeta>, SmError>;
    /// The key's current value (compare-and-swap needs it).
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, SmError>;
    /// Stores `kv`, replacing the incarnation described by `old` (which the
    /// caller read with `meta` or `get`). A non-zero `kv.lease` must exist.
    fn put(&mut self, kv: KeyValue, old: Option<&KeyMeta>) -> Result<(), SmError>;
    /// Removes `key`, whose current incarnation `old` describes.
    fn delete(&mut self, key: &Bytes, old: &KeyMeta) -> Result<(), SmError>;
    /// Keys whose deadline is `<= now_ms`, ordered by (deadline, key).
    fn expired(&mut self, now_ms: u64) -> Result<Vec<Bytes>, SmError>;
    /// Hands every stored key of `range` (expired ones included) with its
    /// metadata to `visit`, in key order, until it returns false. Reads no
    /// values.
    fn range_meta(
        &mut self,
        range: &KeyRange,
        visit: &mut dyn FnMut(&[u8], KeyMeta) -> bool,
    ) -> Result<(), SmError>;
    /// The lease `id`, if it exists.
    fn lease(&mut self, id: u64) -> Result<Option<LeaseRecord>, SmError>;
    /// Creates (or replaces) a lease.
    fn put_lease(&mut self, lease: LeaseRecord) -> Result<(), SmError>;
    /// Removes lease `id`; its keys must have been deleted first.
    fn delete_lease(&mut self, id: u64) -> Result<(), SmError>;
    /// The keys attached to lease `id`, in key order.
    fn lease_keys(&mut self, id: u64) -> Result<Vec<Bytes>, SmError>;
}

/// Replicated metadata besides the keys.
#[derive(Clone, Debug, Default)]
pub(crate) struct SmMeta {
    pub applied_index: Index,
    pub applied_term: Term,
    pub membership: Membership,
    pub dedup: DedupTable,
    /// Users, roles and tokens ([`crate::auth`]).
    pub auth: std::sync::Arc<crate::auth::AuthState>,
}

/// What a batch changed besides the keys (for persistence).
#[derive(Default)]
pub(crate) struct MetaChanges {
    pub membership: bool,
    pub sessions: Vec<SessionChange>,
    /// The auth state changed.
    pub auth: bool,
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
                Ok((
                    Command {
                        op: Op::Auth(a), ..
                    },
                    _,
                )) => crate::auth::apply_to_meta(&mut meta.auth, &a, e.index, &mut changes.auth),
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
/// [`restore_cas_value`]); a delete-range without its `prev_kvs` and a
/// transaction without the pairs its ranges read (a retry reports what the
/// writes did, not a second read: its ranges come back empty, and a
/// dropped `prev_kvs` list is marked `truncated`); everything else as is.
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
        ApplyResult::DeleteRange {
            deleted,
            prev_kvs,
            truncated,
        } => ApplyResult::DeleteRange {
            deleted: *deleted,
            prev_kvs: Vec::new(),
            truncated: *truncated || !prev_kvs.is_empty(),
        },
        ApplyResult::Txn { succeeded, results } => ApplyResult::Txn {
            succeeded: *succeeded,
            results: results
                .iter()
                .map(|r| match r {
                    TxnOpResult::Range(_) => TxnOpResult::Range(RangeResult::default()),
                    TxnOpResult::Put { prev_revision } => TxnOpResult::Put {
                        prev_revision: *prev_revision,
                    },
                    TxnOpResult::DeleteRange {
                        deleted,
                        prev_kvs,
                        truncated,
                    } => TxnOpResult::DeleteRange {
                        deleted: *deleted,
                        prev_kvs: Vec::new(),
                        truncated: *truncated || !prev_kvs.is_empty(),
                    },
                })
                .collect(),
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

#[allow(clippy::too_many_arguments)]
fn write_value<S: KvStore>(
    store: &mut S,
    index: Index,
    key: &Bytes,
    value: &Bytes,
    expires_at_ms: Option<u64>,
    lease: u64,
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
        lease,
    };
    let prev_value = prev_value(store, key, old.as_ref())?;
    store.put(kv.clone(), old.as_ref())?;
    events.push(WatchEvent {
        kind: WatchEventKind::Put,
        key: key.clone(),
        revision: index,
        kv: Some(kv.clone()),
        prev: old,
        prev_value,
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
    let prev_value = prev_value(store, key, Some(&old))?;
    store.delete(key, &old)?;
    events.push(WatchEvent {
        kind: WatchEventKind::Delete,
        key: key.clone(),
        revision: index,
        kv: None,
        prev: Some(old),
        prev_value,
    });
    Ok(())
}

/// The value a change replaces (for watches with `prev_kv`): read before
/// the change, only if the key existed.
fn prev_value<S: KvStore>(
    store: &mut S,
    key: &[u8],
    old: Option<&KeyMeta>,
) -> Result<Option<Bytes>, SmError> {
    if old.is_none() {
        return Ok(None);
    }
    Ok(store.get(key)?.map(|kv| kv.value))
}

/// A put (plain or inside a transaction) whose lease, if any, exists.
#[allow(clippy::too_many_arguments)]
fn put_value<S: KvStore>(
    store: &mut S,
    index: Index,
    key: &Bytes,
    value: &Bytes,
    expires_at_ms: Option<u64>,
    lease: u64,
    events: &mut Vec<WatchEvent>,
) -> Result<Option<Index>, SmError> {
    let old = store.meta(key)?;
    let prev_revision = old.map(|o| o.mod_revision);
    write_value(store, index, key, value, expires_at_ms, lease, old, events)?;
    Ok(prev_revision)
}

/// Every stored key of `range` with its metadata, in key order.
fn keys_in<S: KvStore>(store: &mut S, range: &KeyRange) -> Result<Vec<(Bytes, KeyMeta)>, SmError> {
    let mut keys = Vec::new();
    store.range_meta(range, &mut |k, m| {
        keys.push((Bytes::copy_from_slice(k), m));
        true
    })?;
    Ok(keys)
}

fn missing(key: &[u8], what: &str) -> SmError {
    SmError::Corrupt(format!(
        "{what} names key {:?} but it is absent",
        Bytes::copy_from_slice(key)
    ))
}

/// Deletes every key of `range`; returns (deleted, prev_kvs, truncated).
/// `used`: result budget bytes the command has used so far (updated).
fn delete_range<S: KvStore>(
    store: &mut S,
    index: Index,
    range: &KeyRange,
    prev_kv: bool,
    used: &mut usize,
    events: &mut Vec<WatchEvent>,
) -> Result<(u64, Vec<KeyValue>, bool), SmError> {
    let keys = keys_in(store, range)?;
    let mut page = PageBuilder::continuing(u32::MAX, false, *used);
    let mut truncated = false;
    for (key, old) in &keys {
        if prev_kv && !truncated {
            let kv = store
                .get(key)?
                .ok_or_else(|| missing(key, "the key index"))?;
            truncated = !page.offer(kv);
        }
        delete_value(store, index, key, *old, events)?;
    }
    *used = page.used();
    let prev_kvs = page.finish(0).kvs;
    Ok((keys.len() as u64, prev_kvs, truncated))
}

/// A range inside a transaction: every stored key (no clock while applying).
/// `used`: result budget bytes the transaction has used so far (updated).
fn txn_range<S: KvStore>(
    store: &mut S,
    spec: &RangeSpec,
    used: &mut usize,
) -> Result<RangeResult, SmError> {
    let mut page = PageBuilder::continuing(spec.limit, spec.keys_only, *used);
    if spec.count_only {
        let mut count = 0u64;
        store.range_meta(&spec.range, &mut |_, _| {
            count += 1;
            true
        })?;
        return Ok(RangeResult {
            kvs: Vec::new(),
            more: false,
            count,
        });
    }
    // Names and metadata first (no values), up to the limit; the values of
    // those only, until the byte budget.
    let limit = if spec.limit == 0 {
        crate::command::MAX_TXN_RANGE_LIMIT
    } else {
        spec.limit
    } as usize;
    let mut count = 0u64;
    let mut first = Vec::new();
    store.range_meta(&spec.range, &mut |k, m| {
        if first.len() < limit {
            first.push((Bytes::copy_from_slice(k), m));
        }
        count += 1;
        true
    })?;
    if count > first.len() as u64 {
        page.set_more();
    }
    for (key, meta) in first {
        let kv = if spec.keys_only {
            KeyValue {
                key,
                value: Bytes::new(),
                create_revision: meta.create_revision,
                mod_revision: meta.mod_revision,
                version: meta.version,
                expires_at_ms: meta.expires_at_ms,
                lease: meta.lease,
            }
        } else {
            store
                .get(&key)?
                .ok_or_else(|| missing(&key, "the key index"))?
        };
        if !page.offer(kv) {
            break;
        }
    }
    *used = page.used();
    Ok(page.finish(count))
}

fn compare_holds<S: KvStore>(store: &mut S, c: &Compare) -> Result<bool, SmError> {
    use std::cmp::Ordering;
    let ord = match &c.target {
        CompareTarget::Value(v) => match store.get(&c.key)? {
            None => return Ok(false),
            Some(kv) => kv.value[..].cmp(&v[..]),
        },
        target => {
            let m = store.meta(&c.key)?;
            let (have, want) = match target {
                CompareTarget::Version(x) => (m.map_or(0, |m| m.version), *x),
                CompareTarget::CreateRevision(x) => (m.map_or(0, |m| m.create_revision), *x),
                CompareTarget::ModRevision(x) => (m.map_or(0, |m| m.mod_revision), *x),
                CompareTarget::Lease(x) => (m.map_or(0, |m| m.lease), *x),
                CompareTarget::Value(_) => unreachable!("handled above"),
            };
            have.cmp(&want)
        }
    };
    Ok(match c.op {
        CompareOp::Equal => ord == Ordering::Equal,
        CompareOp::NotEqual => ord != Ordering::Equal,
        CompareOp::Less => ord == Ordering::Less,
        CompareOp::Greater => ord == Ordering::Greater,
    })
}

/// The first lease named by a put of `ops` that does not exist.
fn missing_lease<S: KvStore>(store: &mut S, ops: &[TxnOp]) -> Result<Option<u64>, SmError> {
    for op in ops {
        if let TxnOp::Put { lease, .. } = op {
            if *lease != 0 && store.lease(*lease)?.is_none() {
                return Ok(Some(*lease));
            }
        }
    }
    Ok(None)
}

fn apply_txn<S: KvStore>(
    store: &mut S,
    index: Index,
    t: &Txn,
    events: &mut Vec<WatchEvent>,
) -> Result<ApplyResult, SmError> {
    let mut succeeded = true;
    for c in &t.compares {
        if !compare_holds(store, c)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded { &t.success } else { &t.failure };
    if let Some(id) = missing_lease(store, ops)? {
        return Ok(ApplyResult::LeaseNotFound { id });
    }
    let mut results = Vec::with_capacity(ops.len());
    let mut used = 0;
    for op in ops {
        results.push(match op {
            TxnOp::Range(spec) => TxnOpResult::Range(txn_range(store, spec, &mut used)?),
            TxnOp::Put {
                key,
                value,
                expires_at_ms,
                lease,
            } => TxnOpResult::Put {
                prev_revision: put_value(store, index, key, value, *expires_at_ms, *lease, events)?,
            },
            TxnOp::DeleteRange { range, prev_kv } => {
                let (deleted, prev_kvs, truncated) =
                    delete_range(store, index, range, *prev_kv, &mut used, events)?;
                TxnOpResult::DeleteRange {
                    deleted,
                    prev_kvs,
                    truncated,
                }
            }
        });
    }
    Ok(ApplyResult::Txn { succeeded, results })
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
            lease,
        } => {
            if *lease != 0 && store.lease(*lease)?.is_none() {
                return Ok(ApplyResult::LeaseNotFound { id: *lease });
            }
            let prev_revision =
                put_value(store, index, key, value, *expires_at_ms, *lease, events)?;
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
                        0,
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
        Op::DeleteRange { range, prev_kv } => {
            let (deleted, prev_kvs, truncated) =
                delete_range(store, index, range, *prev_kv, &mut 0, events)?;
            ApplyResult::DeleteRange {
                deleted,
                prev_kvs,
                truncated,
            }
        }
        Op::Txn(t) => apply_txn(store, index, t, events)?,
        Op::LeaseGrant { id, ttl_ms } => {
            if store.lease(*id)?.is_some() {
                ApplyResult::LeaseExists { id: *id }
            } else {
                store.put_lease(LeaseRecord {
                    id: *id,
                    ttl_ms: *ttl_ms,
                })?;
                ApplyResult::LeaseGranted {
                    id: *id,
                    ttl_ms: *ttl_ms,
                }
            }
        }
        Op::LeaseRevoke { id } => {
            if store.lease(*id)?.is_none() {
                return Ok(ApplyResult::LeaseNotFound { id: *id });
            }
            let keys = store.lease_keys(*id)?;
            for key in &keys {
                match store.meta(key)? {
                    Some(old) if old.lease == *id => {
                        delete_value(store, index, key, old, events)?;
                    }
                    _ => {
                        return Err(SmError::Corrupt(format!(
                        "lease {id} names key {key:?} but the key is absent or not attached to it"
                    )))
                    }
                }
            }
            store.delete_lease(*id)?;
            ApplyResult::LeaseRevoked {
                id: *id,
                deleted: keys.len() as u64,
            }
        }
        // Applied by `apply_entries` (never reaches the keys).
        Op::Auth(_) => ApplyResult::Rejected {
            reason: "an auth change cannot run inside a key operation".into(),
        },
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
