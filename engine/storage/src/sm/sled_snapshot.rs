//! Point-in-time snapshots of the sled state machine, built while applies
//! continue (copy-on-write pre-images).
//!
//! At `begin_snapshot` the applied index `S` is fixed. The builder walks the
//! live keys in order and advances a shared cursor under the [`SnapCtl`]
//! lock; every apply batch holds the same lock from deciding to committing.
//! Before a batch first changes a key the builder has not passed yet (key >
//! cursor) and that has no pre-image yet, it saves the key's value as of `S`
//! (or "absent") under `'p' + key` in the same atomic sled batch, and records
//! the key in an in-memory set.
//!
//! The builder reads keys and values with a sled iterator outside the lock
//! (it may be stale, but it was created after `S`). Under the lock, for each
//! key: if the key is in the pre-imaged set, the pre-image holds its `S` value
//! (emitted unless "absent") and the key leaves the set; otherwise the key has
//! not changed since `S`, so the iterator's value is the `S` value. A key the
//! iterator missed was inserted after it looked, i.e. changed after `S` ahead
//! of the cursor, so it is in the set. After the walk the applier stops
//! making pre-images and the builder emits the pre-images still in the set
//! (keys deleted after `S`), then the dedup sessions captured at `S`. The
//! leases are captured at `S` too (from the in-memory lease index, under the
//! apply lock) and emitted first, before the keys naming them. Each key
//! is emitted once, with its value as of `S`. The builder holds the lock only
//! for set lookups, [`KEYS_PER_STEP`] keys at a time, and steps aside while an
//! apply is waiting.

use super::dedup::{ClientSession, SessionKey};
use super::sled_sm::{decode_kv_entry, decode_preimage, prefixed, SledDb, P_KV, P_PRE};
use super::{LeaseRecord, SmError, SnapshotRecord, SnapshotSource};
use bytes::Bytes;
use d_engine_core::{Index, SnapshotMeta};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Live keys the builder visits per lock acquisition.
pub const KEYS_PER_STEP: usize = 256;

/// The lock shared by the applier and the builder. `appliers_waiting` lets
/// the builder step aside: before each step it yields while an apply batch
/// is waiting for the lock, so a builder that re-locks in a tight loop
/// cannot starve applies (std mutexes are not fair).
#[derive(Default)]
pub(crate) struct SnapShared {
    ctl: Mutex<SnapCtl>,
    appliers_waiting: AtomicUsize,
}

impl SnapShared {
    /// For the applier: takes the lock, announcing itself first.
    pub fn lock_for_apply(&self) -> MutexGuard<'_, SnapCtl> {
        self.appliers_waiting.fetch_add(1, Ordering::AcqRel);
        let g = self.ctl.lock().expect("lock");
        self.appliers_waiting.fetch_sub(1, Ordering::AcqRel);
        g
    }

    pub fn lock(&self) -> MutexGuard<'_, SnapCtl> {
        self.ctl.lock().expect("lock")
    }

    /// For the builder: lets waiting appliers go first (bounded).
    fn lock_for_builder(&self) -> MutexGuard<'_, SnapCtl> {
        for _ in 0..10_000 {
            if self.appliers_waiting.load(Ordering::Acquire) == 0 {
                break;
            }
            std::thread::yield_now();
        }
        self.lock()
    }
}

#[derive(Default)]
pub(crate) struct SnapCtl {
    next_id: u64,
    active: Option<(u64, Phase)>,
    /// Keys (without prefix) that have a pre-image not yet consumed.
    preimaged: HashSet<Bytes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Walking live keys; `cursor` is the last visited full key.
    Live { cursor: Option<Vec<u8>> },
    /// Emitting remaining pre-images; no new pre-images are made.
    Preimages,
    /// The state was replaced; the builder must stop.
    Cancelled,
    /// The build ended; its pre-images are being deleted (no new build yet).
    Cleaning,
}

impl SnapCtl {
    /// For the applier: whether a build is walking live keys.
    pub fn building(&self) -> bool {
        matches!(self.active, Some((_, Phase::Live { .. })))
    }

    /// For the applier: whether changing `key` now needs a pre-image first.
    pub fn needs_preimage(&self, key: &Bytes) -> bool {
        let Some((_, Phase::Live { cursor })) = &self.active else {
            return false;
        };
        let ahead = match cursor {
            None => true,
            Some(c) => key.as_ref() > &c[1..],
        };
        ahead && !self.preimaged.contains(key)
    }

    /// For the applier, after committing: these keys now have pre-images.
    pub fn add_preimaged(&mut self, keys: Vec<Bytes>) {
        self.preimaged.extend(keys);
    }

    pub fn start(&mut self) -> Result<u64, SmError> {
        match &self.active {
            Some((_, Phase::Cancelled)) | None => {
                self.next_id += 1;
                self.active = Some((self.next_id, Phase::Live { cursor: None }));
                self.preimaged.clear();
                Ok(self.next_id)
            }
            Some(_) => Err(SmError::SnapshotInProgress),
        }
    }

    pub fn cancel(&mut self) {
        if let Some((_, p)) = &mut self.active {
            *p = Phase::Cancelled;
        }
    }

    fn phase_of(&mut self, id: u64) -> Option<&mut Phase> {
        match &mut self.active {
            Some((i, p)) if *i == id => Some(p),
            _ => None,
        }
    }
}

enum Stage {
    Live(Box<sled::Iter>),
    Preimages(std::vec::IntoIter<Bytes>),
    Sessions,
    Done,
}

pub(crate) struct SledSnapshotSource {
    meta: SnapshotMeta,
    s: Index,
    db: Arc<SledDb>,
    ctl: Arc<SnapShared>,
    id: u64,
    leases: std::vec::IntoIter<LeaseRecord>,
    sessions: std::vec::IntoIter<(SessionKey, ClientSession)>,
    stage: Stage,
    pending: VecDeque<SnapshotRecord>,
}

impl SledSnapshotSource {
    pub fn new(
        meta: SnapshotMeta,
        db: Arc<SledDb>,
        ctl: Arc<SnapShared>,
        id: u64,
        leases: Vec<LeaseRecord>,
        sessions: Vec<(SessionKey, ClientSession)>,
    ) -> Self {
        let iter = db.db.scan_prefix([P_KV]);
        SledSnapshotSource {
            s: meta.last_index,
            meta,
            db,
            ctl,
            id,
            leases: leases.into_iter(),
            sessions: sessions.into_iter(),
            stage: Stage::Live(Box::new(iter)),
            pending: VecDeque::new(),
        }
    }

    /// Adds the auth state record (emitted before the keys).
    pub fn with_auth(mut self, auth: Option<Vec<u8>>) -> Self {
        if let Some(a) = auth {
            self.pending.push_back(SnapshotRecord::Auth(a));
        }
        self
    }

    fn live_step(&mut self) -> Result<(), SmError> {
        let Stage::Live(iter) = &mut self.stage else {
            return Ok(());
        };
        let mut items = Vec::with_capacity(KEYS_PER_STEP);
        let mut exhausted = false;
        while items.len() < KEYS_PER_STEP {
            match iter.next() {
                Some(item) => items.push(item?),
                None => {
                    exhausted = true;
                    break;
                }
            }
        }
        let db = self.db.clone();
        let tree = &db.db;
        let mut preimaged_now = Vec::with_capacity(items.len());
        {
            let mut ctl = self.ctl.lock_for_builder();
            let SnapCtl {
                active, preimaged, ..
            } = &mut *ctl;
            let phase = match active {
                Some((id, p @ Phase::Live { .. })) if *id == self.id => p,
                _ => return Err(SmError::SnapshotCancelled),
            };
            for (k, _) in &items {
                preimaged_now.push(preimaged.remove(&k[1..]));
            }
            if let Some((last, _)) = items.last() {
                *phase = Phase::Live {
                    cursor: Some(last.to_vec()),
                };
            }
            if exhausted {
                *phase = Phase::Preimages;
                let mut rest: Vec<Bytes> = preimaged.drain().collect();
                rest.sort();
                self.stage = Stage::Preimages(rest.into_iter());
            }
        }
        // Outside the lock: keys without a pre-image are unchanged since S,
        // so the iterator's value is the S value; the others' S value is
        // their pre-image (never overwritten while this build runs).
        for ((k, v), pre) in items.iter().zip(preimaged_now) {
            if pre {
                self.emit_preimage(tree, Bytes::copy_from_slice(&k[1..]))?;
            } else {
                self.pending
                    .push_back(SnapshotRecord::Kv(decode_kv_entry(k, v)?));
            }
        }
        Ok(())
    }

    fn emit_preimage(&mut self, tree: &sled::Tree, key: Bytes) -> Result<(), SmError> {
        let pre = tree.get(prefixed(P_PRE, &key))?.ok_or_else(|| {
            SmError::Corrupt(format!(
                "snapshot at {}: pre-image of key {key:?} is missing",
                self.s
            ))
        })?;
        if let Some(old) = decode_preimage(key, &pre)? {
            self.pending.push_back(SnapshotRecord::Kv(old));
        }
        Ok(())
    }

    fn preimage_step(&mut self) -> Result<(), SmError> {
        let Stage::Preimages(iter) = &mut self.stage else {
            return Ok(());
        };
        let keys: Vec<Bytes> = iter.by_ref().take(KEYS_PER_STEP).collect();
        if keys.is_empty() {
            self.stage = Stage::Sessions;
            return Ok(());
        }
        if self.ctl.lock().phase_of(self.id) != Some(&mut Phase::Preimages) {
            return Err(SmError::SnapshotCancelled);
        }
        let db = self.db.clone();
        for key in keys {
            self.emit_preimage(&db.db, key)?;
        }
        Ok(())
    }

    /// Ends this build: stops pre-images, then deletes them in small
    /// batches without holding the lock (applies are not held up by the
    /// cleanup), then frees the slot for the next build.
    fn release(&mut self) {
        let mine = {
            let mut ctl = self.ctl.lock();
            match ctl.phase_of(self.id) {
                Some(p) if *p != Phase::Cancelled => {
                    *p = Phase::Cleaning;
                    ctl.preimaged.clear();
                    true
                }
                _ => false, // cancelled: the slot may already be reused
            }
        };
        let mut b = sled::Batch::default();
        let mut n = 0;
        for k in self.db.db.scan_prefix([P_PRE]).keys().map_while(Result::ok) {
            b.remove(k);
            n += 1;
            if n % 1024 == 0 {
                let _ = self.db.db.apply_batch(std::mem::take(&mut b));
            }
        }
        let _ = self.db.db.apply_batch(b);
        if mine {
            let mut ctl = self.ctl.lock();
            if ctl.phase_of(self.id).is_some() {
                ctl.active = None;
            }
        }
    }
}

impl SnapshotSource for SledSnapshotSource {
    fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    fn next_record(&mut self) -> Result<Option<SnapshotRecord>, SmError> {
        if let Some(l) = self.leases.next() {
            return Ok(Some(SnapshotRecord::Lease(l)));
        }
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Ok(Some(r));
            }
            match self.stage {
                Stage::Live(_) => self.live_step()?,
                Stage::Preimages(_) => self.preimage_step()?,
                Stage::Sessions => match self.sessions.next() {
                    Some((key, session)) => {
                        return Ok(Some(SnapshotRecord::Client { key, session }))
                    }
                    None => {
                        self.release();
                        self.stage = Stage::Done;
                    }
                },
                Stage::Done => return Ok(None),
            }
        }
    }
}

impl Drop for SledSnapshotSource {
    fn drop(&mut self) {
        if !matches!(self.stage, Stage::Done) {
            self.release();
        }
    }
}
