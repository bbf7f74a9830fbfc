//! An in-memory state machine with the same semantics as the sled one, for
//! tests and the simulator. Snapshots copy the whole state under the lock.

use super::apply::{apply_entries, KvStore, MetaChanges, SmMeta};
use super::{Applied, KeyMeta, KeyValue, SmError, SnapshotRecord, SnapshotSource, StateMachine};
use crate::snapshot::SnapshotFileReader;
use bytes::Bytes;
use d_engine_core::{Entry, Index, Membership, SnapshotMeta, Term};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::RwLock;

#[derive(Clone, Default)]
struct MemKv {
    kv: BTreeMap<Bytes, KeyValue>,
    ttl: BTreeSet<(u64, Bytes)>,
}

impl KvStore for MemKv {
    fn meta(&mut self, key: &[u8]) -> Result<Option<KeyMeta>, SmError> {
        Ok(self.kv.get(key).map(KeyValue::meta))
    }
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, SmError> {
        Ok(self.kv.get(key).cloned())
    }
    fn put(&mut self, kv: KeyValue, old: Option<&KeyMeta>) -> Result<(), SmError> {
        if let Some(d) = old.and_then(|o| o.expires_at_ms) {
            self.ttl.remove(&(d, kv.key.clone()));
        }
        if let Some(d) = kv.expires_at_ms {
            self.ttl.insert((d, kv.key.clone()));
        }
        self.kv.insert(kv.key.clone(), kv);
        Ok(())
    }
    fn delete(&mut self, key: &Bytes, old: &KeyMeta) -> Result<(), SmError> {
        if let Some(d) = old.expires_at_ms {
            self.ttl.remove(&(d, key.clone()));
        }
        self.kv.remove(key);
        Ok(())
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

#[derive(Clone, Default)]
struct MemState {
    kv: MemKv,
    meta: SmMeta,
}

/// In-memory [`StateMachine`]; nothing survives the process.
#[derive(Default)]
pub struct MemStateMachine {
    state: RwLock<MemState>,
}

impl MemStateMachine {
    pub fn new() -> Self {
        Self::default()
    }
}

struct MemSnapshot {
    meta: SnapshotMeta,
    records: std::vec::IntoIter<SnapshotRecord>,
}

impl SnapshotSource for MemSnapshot {
    fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }
    fn next_record(&mut self) -> Result<Option<SnapshotRecord>, SmError> {
        Ok(self.records.next())
    }
}

impl StateMachine for MemStateMachine {
    fn apply(&self, entries: &[Entry]) -> Result<Vec<Applied>, SmError> {
        let mut st = self.state.write().expect("lock");
        // Work on a copy of the touched metadata so a failure changes nothing.
        let mut meta = st.meta.clone();
        let mut kv = std::mem::take(&mut st.kv);
        let res = apply_entries(&mut kv, &mut meta, entries, &mut MetaChanges::default());
        st.kv = kv;
        let out = res?;
        st.meta = meta;
        Ok(out)
    }

    fn get(&self, key: &[u8], now_ms: u64) -> Result<Option<KeyValue>, SmError> {
        Ok(self.get_raw(key)?.filter(|kv| !kv.is_expired(now_ms)))
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<KeyValue>, SmError> {
        Ok(self.state.read().expect("lock").kv.kv.get(key).cloned())
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<KeyValue>, SmError> {
        let st = self.state.read().expect("lock");
        Ok(st
            .kv
            .kv
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .filter(|v| !v.is_expired(now_ms))
            .take(limit)
            .cloned()
            .collect())
    }

    fn earliest_deadline(&self) -> Result<Option<u64>, SmError> {
        Ok(self
            .state
            .read()
            .expect("lock")
            .kv
            .ttl
            .first()
            .map(|(d, _)| *d))
    }

    fn applied_index(&self) -> Index {
        self.state.read().expect("lock").meta.applied_index
    }

    fn applied_term(&self) -> Term {
        self.state.read().expect("lock").meta.applied_term
    }

    fn membership(&self) -> Membership {
        self.state.read().expect("lock").meta.membership.clone()
    }

    fn begin_snapshot(&self) -> Result<Box<dyn SnapshotSource>, SmError> {
        let st = self.state.read().expect("lock");
        let mut records: Vec<SnapshotRecord> =
            st.kv.kv.values().cloned().map(SnapshotRecord::Kv).collect();
        records.extend(
            st.meta
                .dedup
                .clients
                .iter()
                .map(|(id, s)| SnapshotRecord::Client {
                    client_id: *id,
                    session: s.clone(),
                }),
        );
        Ok(Box::new(MemSnapshot {
            meta: SnapshotMeta {
                last_index: st.meta.applied_index,
                last_term: st.meta.applied_term,
                membership: st.meta.membership.clone(),
            },
            records: records.into_iter(),
        }))
    }

    fn install_snapshot(&self, path: &Path) -> Result<SnapshotMeta, SmError> {
        let mut r = SnapshotFileReader::open(path)?;
        let meta = r.meta().clone();
        let mut fresh = MemState::default();
        while let Some(rec) = r.next_record()? {
            match rec {
                SnapshotRecord::Kv(kv) => fresh.kv.put(kv, None)?,
                SnapshotRecord::Client { client_id, session } => {
                    fresh.meta.dedup.clients.insert(client_id, session);
                }
            }
        }
        fresh.meta.applied_index = meta.last_index;
        fresh.meta.applied_term = meta.last_term;
        fresh.meta.membership = meta.membership.clone();
        *self.state.write().expect("lock") = fresh;
        Ok(meta)
    }
}
