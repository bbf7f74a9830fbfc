//! The memory-resident state machine: every key lives in RAM, in persistent
//! (copy-on-write) maps, so applying a write costs a few tree-node copies
//! instead of a database insert.
//!
//! # Durability
//!
//! The same contract as the sled state machine (see the [`super`] docs): the
//! log is the source of truth. Nothing here survives the process; on start
//! the host installs the latest snapshot file and replays the log after it.
//! The host keeps the log from the latest durable snapshot on, so no
//! acknowledged write depends on this memory.
//!
//! # Concurrency
//!
//! Each applied batch publishes a new immutable *version* (keys, TTL index,
//! applied index/term, membership). Readers look at the published version
//! and never wait for an apply in progress; they see whole batches. A
//! snapshot keeps a version of its own (an O(1) clone of the maps), so
//! building one never stops applies, whatever the data size.

use super::apply::{apply_entries, KvStore, MetaChanges, SmMeta};
use super::dedup::{ClientSession, SessionKey};
use super::{
    logical_kv_bytes, Applied, KeyMeta, KeyValue, KvStateMachine, LeaseRecord, SmError,
    SnapshotRecord, SnapshotSource, StateMachine, LEASE_OVERHEAD_BYTES,
};
use crate::command::KeyRange;
use crate::snapshot::SnapshotFileReader;
use bytes::Bytes;
use d_engine_core::{Entry, Index, Membership, SnapshotMeta, Term};
use imbl::{OrdMap, OrdSet};
use std::borrow::Borrow;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// One stored key: a pointer to its [`KeyValue`], ordered and looked up by
/// the key bytes the record holds.
///
/// The key tree is a set of these rather than a map from key to record, so
/// a tree slot is one pointer (8 bytes) instead of a key `Bytes` and a
/// pointer (40 bytes), and the key is not held twice (a second `Bytes`
/// handle on a `Vec`-backed buffer allocates its shared header). With
/// sequential keys the tree's leaves are about half full, so this is about
/// 110 bytes less per key (docs/performance.md, "Memory with 1 M keys").
/// A copied leaf still bumps one reference count per entry.
#[derive(Clone)]
struct Stored(Arc<KeyValue>);

impl Stored {
    fn new(kv: KeyValue) -> Self {
        Stored(Arc::new(kv))
    }
}

impl std::ops::Deref for Stored {
    type Target = KeyValue;
    fn deref(&self) -> &KeyValue {
        &self.0
    }
}

/// Lookups by `&[u8]`: the order and equality below are those of the key
/// bytes, as `Borrow` requires.
impl Borrow<[u8]> for Stored {
    fn borrow(&self) -> &[u8] {
        &self.0.key
    }
}

impl PartialEq for Stored {
    fn eq(&self, other: &Self) -> bool {
        self.0.key[..] == other.0.key[..]
    }
}

impl Eq for Stored {}

impl PartialOrd for Stored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Stored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.key[..].cmp(&other.0.key[..])
    }
}

/// The keys, the TTL index and the leases.
#[derive(Clone, Default)]
struct MemKv {
    /// Every key, in key order (see [`Stored`]).
    kv: OrdSet<Stored>,
    ttl: OrdSet<(u64, Bytes)>,
    /// Every lease with the keys attached to it (persistent maps too: a
    /// batch starts from an O(1) copy of the published version).
    leases: OrdMap<u64, MemLease>,
    /// [`StateMachine::data_bytes`] of `kv` and `leases`, kept exact on
    /// every change.
    bytes: u64,
}

#[derive(Clone, Default)]
struct MemLease {
    ttl_ms: u64,
    keys: OrdSet<Bytes>,
}

impl MemKv {
    fn detach(&mut self, lease: u64, key: &Bytes) {
        if lease != 0 {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.remove(key);
            }
        }
    }

    fn attach(&mut self, lease: u64, key: &Bytes) -> Result<(), SmError> {
        if lease == 0 {
            return Ok(());
        }
        match self.leases.get_mut(&lease) {
            Some(l) => {
                l.keys.insert(key.clone());
                Ok(())
            }
            None => Err(SmError::Corrupt(format!(
                "key {key:?} is attached to lease {lease} which does not exist"
            ))),
        }
    }

    fn range_iter<'a>(
        &'a self,
        range: &'a KeyRange,
    ) -> impl Iterator<Item = &'a Arc<KeyValue>> + 'a {
        range
            .bounds()
            .into_iter()
            .flat_map(move |b| self.kv.range::<_, [u8]>(b))
            .map(|s| &s.0)
    }
}

fn stored_size(kv: &KeyValue) -> u64 {
    logical_kv_bytes(kv.key.len(), kv.value.len())
}

/// A copy of `b` that owns exactly its bytes. A command's key and value may
/// be slices of a larger buffer (a replication message, a WAL read); keeping
/// the slice would keep the whole buffer alive for as long as the key lives.
fn compact(b: &Bytes) -> Bytes {
    Bytes::copy_from_slice(b)
}

/// A copy of a stored key for the snapshot writer, with its own buffers.
///
/// A clone would share the stored buffers, and the first clone of a buffer
/// that was made from a `Vec` gives it a shared header (a separate 32-byte
/// allocation that lives as long as the buffer): a snapshot, which visits
/// every key, would leave two of them behind per key (58 MiB with 1 M keys,
/// docs/performance.md, "Memory with 1 M keys"). The copies live only
/// until the record is written.
fn detached_copy(kv: &KeyValue) -> KeyValue {
    KeyValue {
        key: compact(&kv.key),
        value: compact(&kv.value),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        expires_at_ms: kv.expires_at_ms,
        lease: kv.lease,
    }
}

impl KvStore for MemKv {
    fn meta(&mut self, key: &[u8]) -> Result<Option<KeyMeta>, SmError> {
        Ok(self.kv.get(key).map(|v| v.meta()))
    }
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, SmError> {
        Ok(self.kv.get(key).map(|v| KeyValue::clone(v)))
    }
    fn put(&mut self, mut kv: KeyValue, old: Option<&KeyMeta>) -> Result<(), SmError> {
        kv.key = match self.kv.get(kv.key.as_ref()) {
            // Share the stored key's bytes instead of copying them again.
            Some(s) => s.key.clone(),
            None => compact(&kv.key),
        };
        kv.value = compact(&kv.value);
        if let Some(d) = old.and_then(|o| o.expires_at_ms) {
            self.ttl.remove(&(d, kv.key.clone()));
        }
        if let Some(d) = kv.expires_at_ms {
            self.ttl.insert((d, kv.key.clone()));
        }
        let old_lease = old.map_or(0, |o| o.lease);
        if old_lease != kv.lease {
            self.detach(old_lease, &kv.key);
            self.attach(kv.lease, &kv.key)?;
        }
        self.bytes += stored_size(&kv);
        if let Some(old) = self.kv.insert(Stored::new(kv)) {
            self.bytes -= stored_size(&old);
        }
        Ok(())
    }
    fn delete(&mut self, key: &Bytes, old: &KeyMeta) -> Result<(), SmError> {
        if let Some(d) = old.expires_at_ms {
            self.ttl.remove(&(d, key.clone()));
        }
        self.detach(old.lease, key);
        if let Some(old) = self.kv.remove(key.as_ref()) {
            self.bytes -= stored_size(&old);
        }
        Ok(())
    }
    fn range_meta(
        &mut self,
        range: &KeyRange,
        visit: &mut dyn FnMut(&[u8], KeyMeta) -> bool,
    ) -> Result<(), SmError> {
        for kv in self.range_iter(range) {
            if !visit(&kv.key, kv.meta()) {
                break;
            }
        }
        Ok(())
    }
    fn lease(&mut self, id: u64) -> Result<Option<LeaseRecord>, SmError> {
        Ok(self.leases.get(&id).map(|l| LeaseRecord {
            id,
            ttl_ms: l.ttl_ms,
        }))
    }
    fn put_lease(&mut self, lease: LeaseRecord) -> Result<(), SmError> {
        match self.leases.get_mut(&lease.id) {
            Some(l) => l.ttl_ms = lease.ttl_ms,
            None => {
                self.bytes += LEASE_OVERHEAD_BYTES;
                self.leases.insert(
                    lease.id,
                    MemLease {
                        ttl_ms: lease.ttl_ms,
                        keys: OrdSet::new(),
                    },
                );
            }
        }
        Ok(())
    }
    fn delete_lease(&mut self, id: u64) -> Result<(), SmError> {
        if let Some(l) = self.leases.remove(&id) {
            self.bytes -= LEASE_OVERHEAD_BYTES;
            if !l.keys.is_empty() {
                return Err(SmError::Corrupt(format!(
                    "lease {id} removed while {} keys are still attached",
                    l.keys.len()
                )));
            }
        }
        Ok(())
    }
    fn lease_keys(&mut self, id: u64) -> Result<Vec<Bytes>, SmError> {
        Ok(self
            .leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default())
    }
    fn expired(&mut self, now_ms: u64) -> Result<Vec<Bytes>, SmError> {
        Ok(self
            .ttl
            .iter()
            .take_while(|(d, _)| *d <= now_ms)
            .map(|(_, k)| k.clone())
            .collect())
    }
}

/// One published state: what readers and snapshots see.
#[derive(Clone, Default)]
struct Version {
    kv: MemKv,
    applied_index: Index,
    applied_term: Term,
    membership: Membership,
}

/// Memory-resident [`StateMachine`]; see the module docs for durability.
pub struct MemStateMachine {
    /// The latest applied version; swapped whole after each batch.
    published: RwLock<Arc<Version>>,
    /// The apply lock, and the replicated metadata only applies read
    /// (the dedup table).
    apply: Mutex<SmMeta>,
    /// Set when an apply failed after it had started changing the metadata.
    poisoned: AtomicBool,
}

impl Default for MemStateMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStateMachine {
    /// An empty state machine (applied index 0).
    pub fn new() -> Self {
        MemStateMachine {
            published: RwLock::new(Arc::new(Version::default())),
            apply: Mutex::new(SmMeta::default()),
            poisoned: AtomicBool::new(false),
        }
    }

    /// A state machine holding the snapshot at `path` (verified while read);
    /// the host then replays the log after the snapshot's last index.
    pub fn from_snapshot(path: &Path) -> Result<Self, SmError> {
        let sm = Self::new();
        sm.install_snapshot(path)?;
        Ok(sm)
    }

    fn current(&self) -> Arc<Version> {
        self.published.read().expect("lock").clone()
    }

    /// Makes `kv` with the applied position and membership of `meta` the
    /// version readers see.
    fn publish(&self, kv: MemKv, meta: &SmMeta) {
        let v = Version {
            kv,
            applied_index: meta.applied_index,
            applied_term: meta.applied_term,
            membership: meta.membership.clone(),
        };
        *self.published.write().expect("lock") = Arc::new(v);
    }

    fn lock_apply(&self) -> Result<std::sync::MutexGuard<'_, SmMeta>, SmError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(SmError::Poisoned);
        }
        Ok(self.apply.lock().expect("lock"))
    }
}

/// A point-in-time image: a private version of the maps: the leases, then
/// the keys in key order, then the client sessions.
struct MemSnapshot {
    meta: SnapshotMeta,
    leases: std::vec::IntoIter<LeaseRecord>,
    kv: OrdSet<Stored>,
    /// The last key returned; `None` before the first.
    cursor: Option<Bytes>,
    keys_done: bool,
    clients: std::vec::IntoIter<(SessionKey, ClientSession)>,
    /// The auth state, taken by the first `next_record`.
    auth: Option<Vec<u8>>,
}

impl SnapshotSource for MemSnapshot {
    fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }
    fn next_record(&mut self) -> Result<Option<SnapshotRecord>, SmError> {
        if let Some(a) = self.auth.take() {
            return Ok(Some(SnapshotRecord::Auth(a)));
        }
        if let Some(l) = self.leases.next() {
            return Ok(Some(SnapshotRecord::Lease(l)));
        }
        if !self.keys_done {
            let cursor = self.cursor.take();
            let lower = match &cursor {
                Some(k) => Bound::Excluded(&k[..]),
                None => Bound::Unbounded,
            };
            let next = self
                .kv
                .range::<_, [u8]>((lower, Bound::Unbounded))
                .next()
                .map(|s| detached_copy(s));
            match next {
                Some(kv) => {
                    self.cursor = Some(kv.key.clone());
                    return Ok(Some(SnapshotRecord::Kv(kv)));
                }
                None => self.keys_done = true,
            }
        }
        Ok(self
            .clients
            .next()
            .map(|(key, session)| SnapshotRecord::Client { key, session }))
    }
}

impl KvStateMachine for MemStateMachine {
    fn range_each(
        &self,
        range: &KeyRange,
        now_ms: u64,
        visit: &mut dyn FnMut(KeyValue) -> bool,
    ) -> Result<Index, SmError> {
        let v = self.current();
        for kv in v.kv.range_iter(range).filter(|v| !v.is_expired(now_ms)) {
            // A clone shares the stored key and value bytes.
            if !visit(KeyValue::clone(kv)) {
                break;
            }
        }
        Ok(v.applied_index)
    }

    fn range_count(&self, range: &KeyRange, now_ms: u64) -> Result<u64, SmError> {
        let v = self.current();
        let n =
            v.kv.range_iter(range)
                .filter(|v| !v.is_expired(now_ms))
                .count();
        Ok(n as u64)
    }

    fn lease(&self, id: u64) -> Result<Option<LeaseRecord>, SmError> {
        Ok(self.current().kv.leases.get(&id).map(|l| LeaseRecord {
            id,
            ttl_ms: l.ttl_ms,
        }))
    }

    fn leases(&self) -> Result<Vec<LeaseRecord>, SmError> {
        Ok(lease_records(&self.current().kv))
    }

    fn lease_keys_each(
        &self,
        id: u64,
        visit: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), SmError> {
        let v = self.current();
        if let Some(l) = v.kv.leases.get(&id) {
            for k in l.keys.iter() {
                if !visit(k) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn get(&self, key: &[u8], now_ms: u64) -> Result<Option<KeyValue>, SmError> {
        Ok(self.get_raw(key)?.filter(|kv| !kv.is_expired(now_ms)))
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<KeyValue>, SmError> {
        Ok(self
            .published
            .read()
            .expect("lock")
            .kv
            .kv
            .get(key)
            .map(|s| KeyValue::clone(s)))
    }

    fn scan_prefix_each(
        &self,
        prefix: &[u8],
        now_ms: u64,
        visit: &mut dyn FnMut(KeyValue) -> bool,
    ) -> Result<(), SmError> {
        let v = self.current();
        let live =
            v.kv.kv
                .range::<_, [u8]>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|s| s.key.starts_with(prefix))
                .filter(|v| !v.is_expired(now_ms));
        for kv in live {
            // A clone shares the stored key and value bytes.
            if !visit(KeyValue::clone(kv)) {
                break;
            }
        }
        Ok(())
    }

    fn earliest_deadline(&self) -> Result<Option<u64>, SmError> {
        Ok(self.current().kv.ttl.get_min().map(|(d, _)| *d))
    }
}

impl StateMachine for MemStateMachine {
    fn into_kv(self: Arc<Self>) -> Option<Arc<dyn KvStateMachine>> {
        Some(self)
    }

    fn apply(&self, entries: &[Entry]) -> Result<Vec<Applied>, SmError> {
        let mut meta = self.lock_apply()?;
        let base = self.current();
        let mut kv = base.kv.clone();
        let res = apply_entries(&mut kv, &mut meta, entries, &mut MetaChanges::default());
        match res {
            Ok(out) => {
                self.publish(kv, &meta);
                Ok(out)
            }
            // Refused before anything changed.
            Err(e @ SmError::Gap { .. }) => Err(e),
            Err(e) => {
                self.poisoned.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    fn data_bytes(&self) -> u64 {
        self.current().kv.bytes
    }

    fn applied_index(&self) -> Index {
        self.current().applied_index
    }

    fn applied_term(&self) -> Term {
        self.current().applied_term
    }

    fn membership(&self) -> Membership {
        self.current().membership.clone()
    }

    /// O(1) in the number of keys (plus a copy of the dedup table): the
    /// snapshot owns a version of the maps that later applies do not touch.
    fn begin_snapshot(&self) -> Result<Box<dyn SnapshotSource>, SmError> {
        let meta = self.lock_apply()?;
        let v = self.current();
        let clients: Vec<(SessionKey, ClientSession)> = meta
            .dedup
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        Ok(Box::new(MemSnapshot {
            meta: SnapshotMeta {
                last_index: v.applied_index,
                last_term: v.applied_term,
                membership: v.membership.clone(),
            },
            leases: lease_records(&v.kv).into_iter(),
            kv: v.kv.kv.clone(),
            cursor: None,
            keys_done: false,
            clients: clients.into_iter(),
            auth: (meta.auth.revision != 0).then(|| meta.auth.encode()),
        }))
    }

    fn auth_state(&self) -> Arc<crate::auth::AuthState> {
        match self.apply.lock() {
            Ok(m) => m.auth.clone(),
            Err(p) => p.into_inner().auth.clone(),
        }
    }

    /// Reads (and so verifies) the whole file before anything changes: a bad
    /// file leaves the current state in place.
    fn install_snapshot(&self, path: &Path) -> Result<SnapshotMeta, SmError> {
        let mut r = SnapshotFileReader::open(path)?;
        let snap = r.meta().clone();
        let mut kv = MemKv::default();
        let mut meta = SmMeta::default();
        while let Some(rec) = r.next_record()? {
            match rec {
                // A key's lease precedes it in the file (every writer emits
                // the leases first); `put` refuses a key naming an unknown one.
                SnapshotRecord::Kv(item) => kv.put(item, None)?,
                SnapshotRecord::Client { key, session } => {
                    meta.dedup.insert(key, session);
                }
                SnapshotRecord::Lease(l) => kv.put_lease(l)?,
                SnapshotRecord::Auth(a) => meta.auth = crate::auth::decode_record(&a)?,
                SnapshotRecord::App(_) => return Err(super::not_kv_snapshot(path)),
            }
        }
        meta.applied_index = snap.last_index;
        meta.applied_term = snap.last_term;
        meta.membership = snap.membership.clone();
        let mut guard = self.apply.lock().expect("lock");
        self.publish(kv, &meta);
        *guard = meta;
        self.poisoned.store(false, Ordering::Release);
        Ok(snap)
    }
}

fn lease_records(kv: &MemKv) -> Vec<LeaseRecord> {
    kv.leases
        .iter()
        .map(|(id, l)| LeaseRecord {
            id: *id,
            ttl_ms: l.ttl_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Op};
    use crate::sm::conformance::{apply1, cmd, put};

    #[test]
    fn stored_values_do_not_keep_the_command_buffer_alive() {
        let sm = MemStateMachine::new();
        let big = Bytes::from(vec![7u8; 64 << 10]);
        let c = Command::new(Op::Put {
            key: Bytes::from_static(b"k"),
            value: big.slice(100..356),
            expires_at_ms: None,
            lease: 0,
        });
        apply1(&sm, cmd(1, 1, c));
        let v = sm.get(b"k", 0).unwrap().unwrap().value;
        assert_eq!(v.len(), 256);
        let big_range = big.as_ptr() as usize..big.as_ptr() as usize + big.len();
        assert!(
            !big_range.contains(&(v.as_ptr() as usize)),
            "the stored value points into the command's buffer"
        );
    }

    #[test]
    fn stored_keys_order_and_look_up_like_their_bytes() {
        let keys: [&[u8]; 7] = [b"b", b"a\0", b"a", b"ab", b"\xff", b"\x00", b"aa"];
        let mut set = OrdSet::new();
        for k in keys {
            let kv = KeyValue {
                key: Bytes::copy_from_slice(k),
                value: Bytes::from_static(b"v"),
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                expires_at_ms: None,
                lease: 0,
            };
            assert!(
                set.insert(Stored::new(kv)).is_none(),
                "{k:?} inserted twice"
            );
        }
        let mut sorted: Vec<&[u8]> = keys.to_vec();
        sorted.sort();
        let order: Vec<&[u8]> = set.iter().map(|s| &s.key[..]).collect();
        assert_eq!(order, sorted, "the set's order is the key bytes' order");
        for k in keys {
            assert_eq!(&set.get(k).expect("found by its bytes").key[..], k);
        }
        assert!(set.get(&b"a\0\0"[..]).is_none());
        let from_a: Vec<&[u8]> = set
            .range::<_, [u8]>((Bound::Excluded(&b"a"[..]), Bound::Excluded(&b"b"[..])))
            .map(|s| &s.key[..])
            .collect();
        assert_eq!(from_a, [&b"a\0"[..], b"aa", b"ab"]);
    }

    #[test]
    fn a_gap_is_refused_without_poisoning() {
        let sm = MemStateMachine::new();
        apply1(&sm, cmd(1, 1, put("a", "1", None)));
        let e = sm.apply(&[cmd(3, 1, put("b", "2", None))]).unwrap_err();
        assert!(matches!(e, SmError::Gap { applied: 1, got: 3 }), "{e}");
        apply1(&sm, cmd(2, 1, put("b", "2", None)));
        assert_eq!(sm.applied_index(), 2);
        assert_eq!(sm.get(b"b", 0).unwrap().unwrap().value, "2");
    }

    #[test]
    fn a_reader_keeps_its_version_while_applies_go_on() {
        let sm = MemStateMachine::new();
        apply1(&sm, cmd(1, 1, put("a", "1", None)));
        let before = sm.current();
        apply1(&sm, cmd(2, 1, put("a", "2", None)));
        assert_eq!(before.kv.kv.get(&b"a"[..]).unwrap().value, "1");
        assert_eq!(before.applied_index, 1);
        assert_eq!(sm.get(b"a", 0).unwrap().unwrap().value, "2");
    }
}
