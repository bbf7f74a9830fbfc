//! The sled-backed state machine.
//!
//! # On-disk layout
//!
//! ```text
//! <dir>/CURRENT          names the live database directory ("db-<n>")
//! <dir>/db-<n>/          a sled database holding one tree with prefixed keys:
//!     'k' + key                     -> value record (value, revisions, version,
//!                                      deadline or lease; record version 1 or 2)
//!     't' + deadline(BE u64) + key  -> ()   TTL index for Expire
//!     'l' + lease id(BE u64)        -> lease record (TTL); its keys are the
//!                                      'k' records naming it (the in-memory
//!                                      lease index is rebuilt from them on open)
//!     'd' + client_id(BE u64) + user -> dedup session of (user, client_id);
//!                                      user = UTF-8, empty for anonymous
//!     'p' + key                     -> snapshot pre-image (only while a snapshot is built)
//!     "m/applied"                   -> applied index + term
//!     "m/membership"                -> membership
//!     "m/format"                    -> layout version
//! ```
//!
//! Layout 4 adds leases ('l' records, value records of version 2); layouts
//! 1 to 3 are upgraded in place on open (their sessions are rewritten, the
//! marker set to 4: a node that predates leases then refuses the database
//! instead of misreading it).
//!
//! Every applied batch is one sled `Batch` (atomic across all of the above).
//! sled is never flushed per write: the log is the source of truth and the
//! host replays entries after `applied_index()` on restart. sled is flushed
//! only when a snapshot is installed into a fresh database, before `CURRENT`
//! is switched to it (write temp, fsync, rename, fsync dir), so a crash at any
//! point of an install leaves either the old or the new database in use.

use super::apply::{apply_entries, KvStore, MetaChanges, SmMeta};
use super::dedup::{SessionChange, SessionKey};
use super::key_index::{KeyIndex, LeaseIndex};
use super::record::{
    lease_from_value_bytes, lease_value_bytes, membership_bytes, membership_from_bytes,
    session_bytes, session_from_bytes, value_bytes, value_from_bytes, SessionFormat,
};
use super::sled_snapshot::{SledSnapshotSource, SnapCtl, SnapShared};
use super::wire::{Reader, Writer};
use super::{
    Applied, KeyMeta, KeyValue, KvStateMachine, LeaseRecord, SmError, SnapshotRecord,
    SnapshotSource, StateMachine,
};
use crate::command::KeyRange;
use crate::snapshot::SnapshotFileReader;
use bytes::Bytes;
use d_engine_core::{Entry, Index, Membership, SnapshotMeta, Term};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

pub(crate) const P_KV: u8 = b'k';
pub(crate) const P_TTL: u8 = b't';
pub(crate) const P_DEDUP: u8 = b'd';
pub(crate) const P_PRE: u8 = b'p';
pub(crate) const P_LEASE: u8 = b'l';
const M_APPLIED: &[u8] = b"m/applied";
const M_MEMBERSHIP: &[u8] = b"m/membership";
const M_FORMAT: &[u8] = b"m/format";
/// The replicated auth state ([`crate::auth::AuthState::encode`]); absent
/// until the first auth change. Not under `P_KV`: no key read reaches it.
const M_AUTH: &[u8] = b"m/auth";
/// Layout written by this node. Layouts 1 and 2 differ only in the
/// encoding of dedup sessions (1: no result indexes, 2: no operation
/// fingerprints); layout 3 has no leases. All are upgraded in place on
/// open.
const LAYOUT_VERSION: u64 = 4;
const CURRENT: &str = "CURRENT";
/// Keys `range_count` counts per acquisition of the apply lock.
const COUNT_STEP: usize = 4096;

pub(crate) fn prefixed(p: u8, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 1);
    v.push(p);
    v.extend_from_slice(key);
    v
}

fn ttl_key(deadline: u64, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 9);
    v.push(P_TTL);
    v.extend_from_slice(&deadline.to_be_bytes());
    v.extend_from_slice(key);
    v
}

/// The deadline and the key of a TTL index key made by [`ttl_key`].
fn split_ttl_key(k: &[u8]) -> Result<(u64, &[u8]), SmError> {
    if k.len() < 9 {
        return Err(SmError::Corrupt("TTL index key too short".into()));
    }
    let deadline = u64::from_be_bytes(k[1..9].try_into().expect("8"));
    Ok((deadline, &k[9..]))
}

fn lease_key(id: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    v.push(P_LEASE);
    v.extend_from_slice(&id.to_be_bytes());
    v
}

/// Every lease record of `tree`.
fn load_leases(tree: &sled::Tree) -> Result<Vec<LeaseRecord>, SmError> {
    let mut v = Vec::new();
    for item in tree.scan_prefix([P_LEASE]) {
        let (k, val) = item?;
        if k.len() != 9 {
            return Err(SmError::Corrupt("lease key is not 9 bytes".into()));
        }
        let id = u64::from_be_bytes(k[1..9].try_into().expect("8"));
        v.push(
            lease_from_value_bytes(id, &val)
                .map_err(|e| SmError::Corrupt(format!("lease {id}: {e}")))?,
        );
    }
    Ok(v)
}

fn dedup_key(key: &SessionKey) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + key.user.len());
    v.push(P_DEDUP);
    v.extend_from_slice(&key.client_id.to_be_bytes());
    v.extend_from_slice(key.user.as_bytes());
    v
}

/// The session key of a sled key made by [`dedup_key`].
fn split_dedup_key(k: &[u8]) -> Result<SessionKey, SmError> {
    if k.len() < 9 {
        return Err(SmError::Corrupt("dedup key is too short".into()));
    }
    let client_id = u64::from_be_bytes(k[1..9].try_into().expect("8"));
    let user = std::str::from_utf8(&k[9..]).map_err(|_| {
        SmError::Corrupt(format!(
            "dedup key of client {client_id}: user is not UTF-8"
        ))
    })?;
    Ok(SessionKey::new(user, client_id))
}

/// Pre-image encoding: 0 = the key did not exist at the snapshot point,
/// 1 + value record otherwise.
pub(crate) fn encode_preimage(old: Option<&KeyValue>) -> Vec<u8> {
    match old {
        None => vec![0],
        Some(kv) => {
            let mut v = vec![1];
            v.extend_from_slice(&value_bytes(kv));
            v
        }
    }
}

pub(crate) fn decode_preimage(key: Bytes, buf: &[u8]) -> Result<Option<KeyValue>, SmError> {
    match buf.first() {
        Some(0) if buf.len() == 1 => Ok(None),
        Some(1) => value_from_bytes(key, &buf[1..])
            .map(Some)
            .map_err(|e| SmError::Corrupt(format!("snapshot pre-image: {e}"))),
        _ => Err(SmError::Corrupt("snapshot pre-image: bad tag".into())),
    }
}

pub(crate) fn decode_kv_entry(k: &[u8], v: &[u8]) -> Result<KeyValue, SmError> {
    value_from_bytes(Bytes::copy_from_slice(&k[1..]), v).map_err(|e| {
        SmError::Corrupt(format!(
            "value of key {:?}: {e}",
            Bytes::copy_from_slice(&k[1..])
        ))
    })
}

/// The committed value of `key` in `tree`.
fn read_kv(tree: &sled::Tree, key: &[u8]) -> Result<Option<KeyValue>, SmError> {
    let full = prefixed(P_KV, key);
    match tree.get(&full)? {
        None => Ok(None),
        Some(v) => Ok(Some(decode_kv_entry(&full, &v)?)),
    }
}

/// Worst-case timings of `apply` since the last [`SledStateMachine::take_apply_stats`]
/// (microseconds), for benchmarks and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Longest wait for the snapshot lock (a running snapshot build).
    pub max_snapshot_lock_wait_us: u64,
    /// Longest execution of the batch's commands (reads of current values,
    /// pre-images), before the commit.
    pub max_execute_us: u64,
    /// Longest sled `apply_batch` call.
    pub max_commit_us: u64,
    /// Longest whole `apply` call.
    pub max_apply_us: u64,
}

#[derive(Default)]
struct StatCells {
    lock_wait: AtomicU64,
    execute: AtomicU64,
    commit: AtomicU64,
    apply: AtomicU64,
}

/// Tuning for the sled database.
#[derive(Clone, Debug)]
pub struct SledOptions {
    /// sled page cache size in bytes (default 256 MiB).
    pub cache_bytes: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            cache_bytes: 256 << 20,
        }
    }
}

/// One open sled database (a `db-<n>` directory).
pub(crate) struct SledDb {
    pub db: sled::Db,
    pub name: String,
}

/// What `apply` works on, under one lock.
struct ApplyState {
    meta: SmMeta,
    keys: KeyIndex,
    leases: LeaseIndex,
}

/// The sled-backed [`StateMachine`]. See the module docs for durability.
pub struct SledStateMachine {
    dir: PathBuf,
    opts: SledOptions,
    db: RwLock<Arc<SledDb>>,
    /// The apply lock, the replicated metadata and the key index.
    state: Mutex<ApplyState>,
    applied: AtomicU64,
    applied_term: AtomicU64,
    membership: RwLock<Membership>,
    snap: Arc<SnapShared>,
    poisoned: AtomicBool,
    stats: StatCells,
}

/// How long [`open_sled`] waits for sled's file lock. sled releases it from
/// a background thread after the last handle in this process is dropped, so
/// a database closed a moment ago (an in-process restart) can still be
/// locked briefly. The data directory's own lock already keeps other
/// processes out, so a lock held longer than this is reported as an error.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `open` failed only because another handle holds sled's file
/// lock (sled reports it as an `Other` I/O error with this message).
fn is_lock_contention(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn open_sled(path: &Path, opts: &SledOptions) -> Result<sled::Db, SmError> {
    let cfg = sled::Config::new()
        .path(path)
        .cache_capacity(opts.cache_bytes)
        .mode(sled::Mode::HighThroughput);
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    let attempt = || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cfg.open()));
    let mut opened = attempt();
    while let Ok(Err(e)) = &opened {
        if !is_lock_contention(e) || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        opened = attempt();
    }
    match opened {
        Ok(Ok(db)) => {
            // sled creates its files with the process umask: make what it
            // wrote private (best effort; the parent `sm/` is 0700 anyway,
            // which also covers files sled creates later).
            let _ = crate::data_dir::restrict_tree(path);
            Ok(db)
        }
        // Busy, not broken: an I/O error, so `open_or_rebuild` refuses to
        // start instead of wiping a database another handle still uses.
        Ok(Err(e)) if is_lock_contention(&e) => Err(SmError::Io(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!(
                "sled database {} is still locked after {SLED_LOCK_WAIT:?} ({e}); another \
                     engine (or one still closing after a storage failure) holds it: stop it, \
                     or restart the process",
                path.display()
            ),
        ))),
        Ok(Err(e)) => Err(SmError::Unreadable(format!(
            "sled database {}: {e}",
            path.display()
        ))),
        Err(_) => Err(SmError::Unreadable(format!(
            "sled database {} panicked while opening",
            path.display()
        ))),
    }
}

fn db_dirs(dir: &Path) -> Result<Vec<String>, SmError> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with("db-") {
            v.push(name);
        }
    }
    Ok(v)
}

fn db_number(name: &str) -> u64 {
    name.strip_prefix("db-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Writes `CURRENT` atomically: temp file, fsync, rename, fsync dir.
fn write_current(dir: &Path, name: &str) -> Result<(), SmError> {
    let tmp = dir.join("CURRENT.tmp");
    {
        use std::io::Write;
        let mut f = crate::data_dir::create_private_file(&tmp)?;
        f.write_all(format!("{name}\n").as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(CURRENT))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Reads the replicated metadata of an open database, upgrading a layout 1
/// database to the current layout (one atomic batch) on the way.
fn load_meta(db: &sled::Db) -> Result<SmMeta, SmError> {
    let fmt = db
        .get(M_FORMAT)?
        .ok_or_else(|| SmError::Unreadable("layout marker m/format is missing".into()))?;
    let mut r = Reader::new(&fmt);
    let v = r
        .u64("layout version")
        .map_err(|e| SmError::Corrupt(format!("m/format: {e}")))?;
    let session_format = match v {
        1 => SessionFormat::V1,
        2 => SessionFormat::V2,
        3 | LAYOUT_VERSION => SessionFormat::V3,
        _ => {
            return Err(SmError::Corrupt(format!(
                "state machine layout version {v} is not supported (this node reads 1 to \
                 {LAYOUT_VERSION}); rebuild it from the snapshot and log by moving the \
                 state machine directory away"
            )))
        }
    };
    let mut meta = SmMeta::default();
    if let Some(a) = db.get(M_APPLIED)? {
        let mut r = Reader::new(&a);
        meta.applied_index = r
            .u64("applied index")
            .map_err(|e| SmError::Corrupt(format!("m/applied: {e}")))?;
        meta.applied_term = r
            .u64("applied term")
            .map_err(|e| SmError::Corrupt(format!("m/applied: {e}")))?;
    }
    if let Some(m) = db.get(M_MEMBERSHIP)? {
        meta.membership = membership_from_bytes(&m)
            .map_err(|e| SmError::Corrupt(format!("m/membership: {e}")))?;
    }
    if let Some(a) = db.get(M_AUTH)? {
        meta.auth = crate::auth::decode_record(&a)?;
    }
    for item in db.scan_prefix([P_DEDUP]) {
        let (k, v) = item?;
        let key = split_dedup_key(&k)?;
        let s = session_from_bytes(&v, session_format).map_err(|e| {
            SmError::Corrupt(format!(
                "dedup session of client {} (user {:?}): {e}",
                key.client_id, key.user
            ))
        })?;
        meta.dedup.insert(key, s);
    }
    if v != LAYOUT_VERSION {
        let mut b = sled::Batch::default();
        if session_format != SessionFormat::V3 {
            for (key, s) in meta.dedup.iter() {
                b.insert(dedup_key(key), session_bytes(s));
            }
        }
        b.insert(M_FORMAT, format_bytes());
        db.apply_batch(b)?;
        db.flush()?;
    }
    Ok(meta)
}

fn fetch_max_us(cell: &AtomicU64, since: Instant) {
    cell.fetch_max(since.elapsed().as_micros() as u64, Ordering::Relaxed);
}

fn applied_bytes(index: Index, term: Term) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(index).u64(term);
    w.into_vec()
}

fn format_bytes() -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(LAYOUT_VERSION);
    w.into_vec()
}

impl SledStateMachine {
    /// Opens the state machine in `dir`, creating an empty one if the
    /// directory holds none. Fails with [`SmError::Unreadable`] /
    /// [`SmError::Corrupt`] if the data is missing or damaged (use
    /// [`open_or_rebuild`] to recover from a snapshot).
    pub fn open(dir: &Path, opts: SledOptions) -> Result<Self, SmError> {
        crate::data_dir::create_private_dir_all(dir)?;
        // A database created just now stays open: dropping and reopening it
        // would race sled's background release of its file lock.
        let (current, created) = match fs::read_to_string(dir.join(CURRENT)) {
            Ok(s) => (s.trim().to_string(), None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !db_dirs(dir)?.is_empty() {
                    return Err(SmError::Unreadable(format!(
                        "{} is missing but database directories exist",
                        dir.join(CURRENT).display()
                    )));
                }
                let name = "db-000001".to_string();
                let db = open_sled(&dir.join(&name), &opts)?;
                db.insert(M_FORMAT, format_bytes())?;
                db.flush()?;
                write_current(dir, &name)?;
                (name, Some(db))
            }
            Err(e) => return Err(SmError::Unreadable(format!("CURRENT: {e}"))),
        };
        if !current.starts_with("db-") || current.contains('/') {
            return Err(SmError::Unreadable(format!(
                "CURRENT names {current:?}, not a database directory"
            )));
        }
        let path = dir.join(&current);
        if !path.is_dir() {
            return Err(SmError::Unreadable(format!(
                "database directory {} named by CURRENT is missing",
                path.display()
            )));
        }
        let db = match created {
            Some(db) => db,
            None => open_sled(&path, &opts)?,
        };
        let meta = load_meta(&db)?;
        let keys = KeyIndex::load(&db)?;
        let leases = LeaseIndex::build(load_leases(&db)?, &keys)?;
        // Abandoned snapshot pre-images and leftovers of an interrupted install.
        let mut b = sled::Batch::default();
        for item in db.scan_prefix([P_PRE]) {
            b.remove(item?.0);
        }
        db.apply_batch(b)?;
        for other in db_dirs(dir)? {
            if other != current {
                fs::remove_dir_all(dir.join(&other))?;
            }
        }
        Ok(SledStateMachine {
            dir: dir.to_path_buf(),
            opts,
            applied: AtomicU64::new(meta.applied_index),
            applied_term: AtomicU64::new(meta.applied_term),
            membership: RwLock::new(meta.membership.clone()),
            state: Mutex::new(ApplyState { meta, keys, leases }),
            db: RwLock::new(Arc::new(SledDb { db, name: current })),
            snap: Arc::new(SnapShared::default()),
            poisoned: AtomicBool::new(false),
            stats: StatCells::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn db(&self) -> Arc<SledDb> {
        self.db.read().expect("lock").clone()
    }

    fn check(&self) -> Result<(), SmError> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(SmError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Flushes sled. Not needed for correctness (the log is the source of
    /// truth); shortens replay after a clean shutdown.
    pub fn flush(&self) -> Result<(), SmError> {
        self.db().db.flush()?;
        Ok(())
    }

    /// Returns and resets the worst-case apply timings.
    pub fn take_apply_stats(&self) -> ApplyStats {
        ApplyStats {
            max_snapshot_lock_wait_us: self.stats.lock_wait.swap(0, Ordering::Relaxed),
            max_execute_us: self.stats.execute.swap(0, Ordering::Relaxed),
            max_commit_us: self.stats.commit.swap(0, Ordering::Relaxed),
            max_apply_us: self.stats.apply.swap(0, Ordering::Relaxed),
        }
    }

    /// Approximate bytes used on disk by sled.
    pub fn size_on_disk(&self) -> Result<u64, SmError> {
        Ok(self.db().db.size_on_disk()?)
    }
}

/// The keys of one batch, layered over sled and the key index; becomes one
/// atomic `Batch`.
struct SledView<'a> {
    tree: &'a sled::Tree,
    keys: &'a KeyIndex,
    leases: &'a LeaseIndex,
    /// Keys changed by the batch (ordered: ranges merge it with the index).
    overlay: BTreeMap<Bytes, Option<KeyValue>>,
    ttl: BTreeMap<(u64, Bytes), bool>,
    /// Leases created (`Some`) or removed (`None`) by the batch.
    lease_overlay: BTreeMap<u64, Option<LeaseRecord>>,
    /// Set while a snapshot is being built: which keys need a pre-image.
    snap: Option<&'a SnapCtl>,
    preimages: Vec<(Bytes, Option<KeyValue>)>,
}

/// What one committed batch changes in the key index.
type IndexChanges = Vec<(Bytes, Option<(KeyMeta, usize)>)>;
/// What one committed batch changes in the lease index.
type LeaseChanges = Vec<(u64, Option<LeaseRecord>)>;

impl SledView<'_> {
    /// Called before the batch first changes `key`: saves its committed
    /// value as a pre-image if a running snapshot build still needs it.
    fn touch(&mut self, key: &Bytes) -> Result<(), SmError> {
        if self.overlay.contains_key(key) {
            return Ok(());
        }
        if let Some(ctl) = self.snap {
            if ctl.needs_preimage(key) {
                let old = read_kv(self.tree, key)?;
                self.preimages.push((key.clone(), old));
            }
        }
        Ok(())
    }

    /// Moves the batch into `b`; returns the keys given a pre-image and the
    /// changes to make to the key and lease indexes once `b` is committed.
    fn into_batch(self, b: &mut sled::Batch) -> (Vec<Bytes>, IndexChanges, LeaseChanges) {
        let mut index_changes = Vec::with_capacity(self.overlay.len());
        for (k, v) in self.overlay {
            match &v {
                Some(kv) => b.insert(prefixed(P_KV, &k), value_bytes(kv)),
                None => b.remove(prefixed(P_KV, &k)),
            }
            index_changes.push((k, v.as_ref().map(|kv| (kv.meta(), kv.value.len()))));
        }
        for ((d, k), present) in self.ttl {
            if present {
                b.insert(ttl_key(d, &k), &[][..]);
            } else {
                b.remove(ttl_key(d, &k));
            }
        }
        let mut lease_changes = Vec::with_capacity(self.lease_overlay.len());
        for (id, l) in self.lease_overlay {
            match &l {
                Some(l) => b.insert(lease_key(id), lease_value_bytes(l)),
                None => b.remove(lease_key(id)),
            }
            lease_changes.push((id, l));
        }
        let mut keys = Vec::with_capacity(self.preimages.len());
        for (k, old) in self.preimages {
            b.insert(prefixed(P_PRE, &k), encode_preimage(old.as_ref()));
            keys.push(k);
        }
        (keys, index_changes, lease_changes)
    }
}

/// Applies a committed batch's changes to the in-memory indexes: new and
/// changed leases first (keys may attach to them), then the keys (moving
/// them between leases), then the removed leases (whose keys the batch
/// deleted).
fn update_indexes(
    keys: &mut KeyIndex,
    leases: &mut LeaseIndex,
    index_changes: IndexChanges,
    lease_changes: LeaseChanges,
) {
    for l in lease_changes.iter().filter_map(|(_, l)| l.as_ref()) {
        leases.upsert(l);
    }
    for (key, m) in index_changes {
        let old_lease = keys.get(&key).map_or(0, |m| m.lease);
        let new_lease = m.as_ref().map_or(0, |(m, _)| m.lease);
        if old_lease != new_lease {
            if old_lease != 0 {
                leases.detach(old_lease, &key);
            }
            if new_lease != 0 {
                let attached = leases.attach(new_lease, &key);
                debug_assert!(attached, "apply checked that lease {new_lease} exists");
            }
        }
        keys.set(&key, m);
    }
    for (id, _) in lease_changes.iter().filter(|(_, l)| l.is_none()) {
        leases.remove(*id);
    }
}

impl KvStore for SledView<'_> {
    fn meta(&mut self, key: &[u8]) -> Result<Option<KeyMeta>, SmError> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.as_ref().map(KeyValue::meta)),
            None => Ok(self.keys.get(key)),
        }
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, SmError> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => read_kv(self.tree, key),
        }
    }

    fn put(&mut self, kv: KeyValue, old: Option<&KeyMeta>) -> Result<(), SmError> {
        self.touch(&kv.key)?;
        if let Some(d) = old.and_then(|o| o.expires_at_ms) {
            self.ttl.insert((d, kv.key.clone()), false);
        }
        if let Some(d) = kv.expires_at_ms {
            self.ttl.insert((d, kv.key.clone()), true);
        }
        self.overlay.insert(kv.key.clone(), Some(kv));
        Ok(())
    }

    fn delete(&mut self, key: &Bytes, old: &KeyMeta) -> Result<(), SmError> {
        self.touch(key)?;
        if let Some(d) = old.expires_at_ms {
            self.ttl.insert((d, key.clone()), false);
        }
        self.overlay.insert(key.clone(), None);
        Ok(())
    }

    fn range_meta(
        &mut self,
        range: &KeyRange,
        visit: &mut dyn FnMut(&[u8], KeyMeta) -> bool,
    ) -> Result<(), SmError> {
        use std::cmp::Ordering;
        let Some(bounds) = range.bounds() else {
            return Ok(());
        };
        // Merge the committed keys (index) with the batch's changes.
        let mut committed = self.keys.range(range).peekable();
        let mut changed = self.overlay.range::<[u8], _>(bounds).peekable();
        loop {
            let take_changed = match (committed.peek(), changed.peek()) {
                (None, None) => return Ok(()),
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((a, _)), Some((b, _))) => match (*a).cmp(&b[..]) {
                    Ordering::Less => false,
                    Ordering::Equal => {
                        committed.next();
                        true
                    }
                    Ordering::Greater => true,
                },
            };
            let go_on = if take_changed {
                let (k, v) = changed.next().expect("peeked");
                match v {
                    Some(kv) => visit(k, kv.meta()),
                    None => true,
                }
            } else {
                let (k, m) = committed.next().expect("peeked");
                visit(k, m)
            };
            if !go_on {
                return Ok(());
            }
        }
    }

    fn lease(&mut self, id: u64) -> Result<Option<LeaseRecord>, SmError> {
        match self.lease_overlay.get(&id) {
            Some(l) => Ok(l.clone()),
            None => Ok(self.leases.get(id)),
        }
    }

    fn put_lease(&mut self, lease: LeaseRecord) -> Result<(), SmError> {
        self.lease_overlay.insert(lease.id, Some(lease));
        Ok(())
    }

    fn delete_lease(&mut self, id: u64) -> Result<(), SmError> {
        self.lease_overlay.insert(id, None);
        Ok(())
    }

    /// The committed keys of `id` that the batch has not moved away or
    /// deleted, and the keys the batch attached to it.
    fn lease_keys(&mut self, id: u64) -> Result<Vec<Bytes>, SmError> {
        let mut set = BTreeSet::new();
        for k in self.leases.keys_of(id) {
            if !self.overlay.contains_key(k) {
                set.insert(Bytes::copy_from_slice(k));
            }
        }
        for (k, v) in &self.overlay {
            if matches!(v, Some(kv) if kv.lease == id) {
                set.insert(k.clone());
            }
        }
        Ok(set.into_iter().collect())
    }

    fn expired(&mut self, now_ms: u64) -> Result<Vec<Bytes>, SmError> {
        let mut set = BTreeSet::new();
        let start = ttl_key(0, b"");
        let iter = match now_ms.checked_add(1) {
            Some(end) => self.tree.range(start..ttl_key(end, b"")),
            None => self.tree.range(start..vec![P_TTL + 1]),
        };
        for item in iter {
            let (k, _) = item?;
            let (d, key) = split_ttl_key(&k)?;
            let key = Bytes::copy_from_slice(key);
            if self.ttl.get(&(d, key.clone())) != Some(&false) {
                set.insert((d, key));
            }
        }
        for ((d, k), present) in &self.ttl {
            if *present && *d <= now_ms {
                set.insert((*d, k.clone()));
            }
        }
        Ok(set.into_iter().map(|(_, k)| k).collect())
    }
}

impl KvStateMachine for SledStateMachine {
    /// Reads the tree (like `scan_prefix_each`); no apply lock.
    /// Walks under the apply lock, so the walk sees whole batches (a sled
    /// iterator alone may observe a batch half applied) and the returned
    /// applied index is exactly the state walked. Applies wait meanwhile:
    /// callers bound the walk (a page's limit and byte budget).
    fn range_each(
        &self,
        range: &KeyRange,
        now_ms: u64,
        visit: &mut dyn FnMut(KeyValue) -> bool,
    ) -> Result<Index, SmError> {
        self.check()?;
        let db = self.db();
        let state = self.state.lock().expect("lock");
        let applied = state.meta.applied_index;
        if range.bounds().is_none() {
            return Ok(applied);
        }
        if range.is_single_key() {
            if let Some(kv) = read_kv(&db.db, &range.start)? {
                if !kv.is_expired(now_ms) {
                    visit(kv);
                }
            }
            return Ok(applied);
        }
        let start = prefixed(P_KV, &range.start);
        let iter = if range.is_unbounded() {
            db.db.range(start..vec![P_KV + 1])
        } else {
            db.db.range(start..prefixed(P_KV, &range.end))
        };
        for item in iter {
            let (k, v) = item?;
            let kv = decode_kv_entry(&k, &v)?;
            if !kv.is_expired(now_ms) && !visit(kv) {
                break;
            }
        }
        drop(state);
        Ok(applied)
    }

    /// Counts in the key index (no value read), [`COUNT_STEP`] keys per
    /// acquisition of the apply lock, so that counting a huge range never
    /// holds up applies for long (the count may then span several batches).
    fn range_count(&self, range: &KeyRange, now_ms: u64) -> Result<u64, SmError> {
        self.check()?;
        let mut count = 0u64;
        let mut after: Option<Box<[u8]>> = None;
        loop {
            let state = self.state.lock().expect("lock");
            let mut seen = 0;
            let mut last = None;
            for (k, m) in state.keys.range_after(range, after.as_deref()) {
                if !m.is_expired(now_ms) {
                    count += 1;
                }
                seen += 1;
                if seen == COUNT_STEP {
                    last = Some(Box::from(k));
                    break;
                }
            }
            drop(state);
            match last {
                Some(k) => after = Some(k),
                None => return Ok(count),
            }
        }
    }

    fn lease(&self, id: u64) -> Result<Option<LeaseRecord>, SmError> {
        self.check()?;
        Ok(self.state.lock().expect("lock").leases.get(id))
    }

    fn leases(&self) -> Result<Vec<LeaseRecord>, SmError> {
        self.check()?;
        Ok(self.state.lock().expect("lock").leases.records())
    }

    /// Visits under the apply lock (applies wait while `visit` runs).
    fn lease_keys_each(
        &self,
        id: u64,
        visit: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), SmError> {
        self.check()?;
        let state = self.state.lock().expect("lock");
        for k in state.leases.keys_of(id) {
            if !visit(k) {
                break;
            }
        }
        Ok(())
    }

    fn get(&self, key: &[u8], now_ms: u64) -> Result<Option<KeyValue>, SmError> {
        Ok(self.get_raw(key)?.filter(|kv| !kv.is_expired(now_ms)))
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<KeyValue>, SmError> {
        self.check()?;
        read_kv(&self.db().db, key)
    }

    fn scan_prefix_each(
        &self,
        prefix: &[u8],
        now_ms: u64,
        visit: &mut dyn FnMut(KeyValue) -> bool,
    ) -> Result<(), SmError> {
        self.check()?;
        let db = self.db();
        // Under the apply lock: whole batches only (see `range_each`).
        let _state = self.state.lock().expect("lock");
        for item in db.db.scan_prefix(prefixed(P_KV, prefix)) {
            let (k, v) = item?;
            let kv = decode_kv_entry(&k, &v)?;
            if !kv.is_expired(now_ms) && !visit(kv) {
                break;
            }
        }
        Ok(())
    }

    fn earliest_deadline(&self) -> Result<Option<u64>, SmError> {
        self.check()?;
        match self.db().db.scan_prefix([P_TTL]).next() {
            None => Ok(None),
            Some(item) => Ok(Some(split_ttl_key(&item?.0)?.0)),
        }
    }
}

impl StateMachine for SledStateMachine {
    fn into_kv(self: Arc<Self>) -> Option<Arc<dyn KvStateMachine>> {
        Some(self)
    }

    fn apply(&self, entries: &[Entry]) -> Result<Vec<Applied>, SmError> {
        self.check()?;
        let started = Instant::now();
        let mut state = self.state.lock().expect("lock");
        let ApplyState { meta, keys, leases } = &mut *state;
        let db = self.db();
        let t = Instant::now();
        let mut ctl = self.snap.lock_for_apply();
        fetch_max_us(&self.stats.lock_wait, t);
        let building = ctl.building();
        let mut view = SledView {
            tree: &db.db,
            keys,
            leases,
            overlay: BTreeMap::new(),
            ttl: BTreeMap::new(),
            lease_overlay: BTreeMap::new(),
            snap: if building { Some(&*ctl) } else { None },
            preimages: Vec::new(),
        };
        let before = meta.applied_index;
        let mut changes = MetaChanges::default();
        let t = Instant::now();
        let res = apply_entries(&mut view, meta, entries, &mut changes);
        fetch_max_us(&self.stats.execute, t);
        let out = match res {
            Ok(out) => out,
            Err(e) => {
                if !matches!(e, SmError::Gap { .. }) {
                    self.poisoned.store(true, Ordering::Release);
                }
                return Err(e);
            }
        };
        if meta.applied_index == before {
            return Ok(out);
        }
        let mut b = sled::Batch::default();
        let (preimaged, index_changes, lease_changes) = view.into_batch(&mut b);
        b.insert(
            M_APPLIED,
            applied_bytes(meta.applied_index, meta.applied_term),
        );
        if changes.membership {
            b.insert(M_MEMBERSHIP, membership_bytes(&meta.membership));
        }
        if changes.auth {
            b.insert(M_AUTH, meta.auth.encode());
        }
        for ch in &changes.sessions {
            let key = match ch {
                SessionChange::Upsert(k) | SessionChange::Remove(k) => k,
            };
            match meta.dedup.get(key) {
                Some(s) => b.insert(dedup_key(key), session_bytes(s)),
                None => b.remove(dedup_key(key)),
            }
        }
        let t = Instant::now();
        if let Err(e) = db.db.apply_batch(b) {
            self.poisoned.store(true, Ordering::Release);
            return Err(e.into());
        }
        fetch_max_us(&self.stats.commit, t);
        update_indexes(keys, leases, index_changes, lease_changes);
        ctl.add_preimaged(preimaged);
        drop(ctl);
        self.applied.store(meta.applied_index, Ordering::Release);
        self.applied_term
            .store(meta.applied_term, Ordering::Release);
        if changes.membership {
            *self.membership.write().expect("lock") = meta.membership.clone();
        }
        fetch_max_us(&self.stats.apply, started);
        Ok(out)
    }

    /// Kept by the key index (which knows every live key's value length),
    /// so it costs no database read. Waits for an apply in progress.
    fn data_bytes(&self) -> u64 {
        let state = self.state.lock().expect("lock");
        state.keys.data_bytes() + state.leases.data_bytes()
    }

    fn applied_index(&self) -> Index {
        self.applied.load(Ordering::Acquire)
    }

    fn applied_term(&self) -> Term {
        self.applied_term.load(Ordering::Acquire)
    }

    fn membership(&self) -> Membership {
        self.membership.read().expect("lock").clone()
    }

    fn begin_snapshot(&self) -> Result<Box<dyn SnapshotSource>, SmError> {
        self.check()?;
        let state = self.state.lock().expect("lock");
        let meta = &state.meta;
        let db = self.db();
        let mut ctl = self.snap.lock();
        let id = ctl.start()?;
        let snap_meta = SnapshotMeta {
            last_index: meta.applied_index,
            last_term: meta.applied_term,
            membership: meta.membership.clone(),
        };
        let sessions: Vec<_> = meta
            .dedup
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        let leases = state.leases.records();
        drop(ctl);
        Ok(Box::new(
            SledSnapshotSource::new(snap_meta, db, self.snap.clone(), id, leases, sessions)
                .with_auth((meta.auth.revision != 0).then(|| meta.auth.encode())),
        ))
    }

    fn auth_state(&self) -> Arc<crate::auth::AuthState> {
        match self.state.lock() {
            Ok(s) => s.meta.auth.clone(),
            Err(p) => p.into_inner().meta.auth.clone(),
        }
    }

    fn install_snapshot(&self, path: &Path) -> Result<SnapshotMeta, SmError> {
        let mut state = self.state.lock().expect("lock");
        self.snap.lock().cancel();
        let old = self.db();
        let name = format!("db-{:06}", db_number(&old.name) + 1);
        let new_path = self.dir.join(&name);
        if new_path.exists() {
            fs::remove_dir_all(&new_path)?;
        }
        let (db, new_meta, new_keys, new_leases) =
            match build_from_snapshot(&new_path, &self.opts, path) {
                Ok(x) => x,
                Err(e) => {
                    let _ = fs::remove_dir_all(&new_path);
                    return Err(e);
                }
            };
        // The new database is durable; switch CURRENT to it. Before the
        // rename the old state is in force, after it the new one.
        write_current(&self.dir, &name)?;
        *self.db.write().expect("lock") = Arc::new(SledDb { db, name });
        let old_name = old.name.clone();
        drop(old);
        self.applied
            .store(new_meta.applied_index, Ordering::Release);
        self.applied_term
            .store(new_meta.applied_term, Ordering::Release);
        *self.membership.write().expect("lock") = new_meta.membership.clone();
        let snap_meta = SnapshotMeta {
            last_index: new_meta.applied_index,
            last_term: new_meta.applied_term,
            membership: new_meta.membership.clone(),
        };
        *state = ApplyState {
            meta: new_meta,
            keys: new_keys,
            leases: new_leases,
        };
        self.poisoned.store(false, Ordering::Release);
        // Best effort: a leftover directory is removed on the next open.
        let _ = fs::remove_dir_all(self.dir.join(old_name));
        Ok(snap_meta)
    }
}

/// Loads a snapshot file into a fresh sled database at `path` and flushes it.
fn build_from_snapshot(
    path: &Path,
    opts: &SledOptions,
    snapshot: &Path,
) -> Result<(sled::Db, SmMeta, KeyIndex, LeaseIndex), SmError> {
    let mut r = SnapshotFileReader::open(snapshot)?;
    let db = open_sled(path, opts)?;
    let mut meta = SmMeta {
        applied_index: r.meta().last_index,
        applied_term: r.meta().last_term,
        membership: r.meta().membership.clone(),
        ..Default::default()
    };
    let mut keys = KeyIndex::default();
    let mut leases = Vec::new();
    let mut seen_leases = BTreeSet::new();
    let mut b = sled::Batch::default();
    let mut n = 0;
    while let Some(rec) = r.next_record()? {
        match rec {
            SnapshotRecord::Lease(l) => {
                b.insert(lease_key(l.id), lease_value_bytes(&l));
                seen_leases.insert(l.id);
                leases.push(l);
            }
            SnapshotRecord::Kv(kv) => {
                // A key's lease precedes it in the file (as for the memory
                // state machine, which installs while it reads).
                if kv.lease != 0 && !seen_leases.contains(&kv.lease) {
                    return Err(SmError::Corrupt(format!(
                        "snapshot key {:?} is attached to lease {} which no earlier record defines",
                        kv.key, kv.lease
                    )));
                }
                keys.set(&kv.key, Some((kv.meta(), kv.value.len())));
                if let Some(d) = kv.expires_at_ms {
                    b.insert(ttl_key(d, &kv.key), &[][..]);
                }
                b.insert(prefixed(P_KV, &kv.key), value_bytes(&kv));
            }
            SnapshotRecord::Client { key, session } => {
                b.insert(dedup_key(&key), session_bytes(&session));
                meta.dedup.insert(key, session);
            }
            SnapshotRecord::Auth(a) => {
                meta.auth = crate::auth::decode_record(&a)?;
                b.insert(M_AUTH, a);
            }
            SnapshotRecord::App(_) => return Err(super::not_kv_snapshot(r.path())),
        }
        n += 1;
        if n % 1024 == 0 {
            db.apply_batch(std::mem::take(&mut b))?;
        }
    }
    // The trailer (checksum) has been verified: commit the metadata.
    b.insert(
        M_APPLIED,
        applied_bytes(meta.applied_index, meta.applied_term),
    );
    b.insert(M_MEMBERSHIP, membership_bytes(&meta.membership));
    b.insert(M_FORMAT, format_bytes());
    // Every key's lease is in the file, or the file is refused.
    let leases = LeaseIndex::build(leases, &keys)?;
    db.apply_batch(b)?;
    db.flush()?;
    Ok((db, meta, keys, leases))
}

/// How [`open_or_rebuild`] found the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenOutcome {
    /// Opened as it was.
    Opened,
    /// Restored from the snapshot; `reason` says why.
    RestoredFromSnapshot { reason: String },
    /// The state was missing or unreadable and no snapshot was given: it
    /// starts empty and the host must replay the log from index 1.
    CreatedEmpty { reason: Option<String> },
}

/// A state machine ready for log replay.
pub struct Opened {
    pub sm: SledStateMachine,
    pub outcome: OpenOutcome,
    /// The host must re-apply committed log entries from this index on
    /// (`applied_index() + 1`). If its log starts after this index it needs a
    /// snapshot from the leader.
    pub replay_from: Index,
}

/// Opens the state machine in `dir`; if it is missing, unreadable, corrupt or
/// behind `latest_snapshot`, wipes it and restores it from that snapshot file.
pub fn open_or_rebuild(
    dir: &Path,
    opts: SledOptions,
    latest_snapshot: Option<&Path>,
) -> Result<Opened, SmError> {
    let fresh_dir = !dir.join(CURRENT).exists();
    let (sm, broken) = match SledStateMachine::open(dir, opts.clone()) {
        Ok(sm) => (sm, None),
        Err(e @ (SmError::Unreadable(_) | SmError::Corrupt(_) | SmError::Sled(_))) => {
            let reason = e.to_string();
            for entry in fs::read_dir(dir)? {
                let p = entry?.path();
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                match name.as_deref() {
                    Some(n) if n.starts_with("db-") => fs::remove_dir_all(&p)?,
                    Some(CURRENT) | Some("CURRENT.tmp") => fs::remove_file(&p)?,
                    _ => {}
                }
            }
            (SledStateMachine::open(dir, opts)?, Some(reason))
        }
        Err(e) => return Err(e),
    };
    let outcome = match latest_snapshot {
        Some(snap) => {
            let snap_index = SnapshotFileReader::open(snap)?.meta().last_index;
            if let Some(reason) = broken {
                sm.install_snapshot(snap)?;
                OpenOutcome::RestoredFromSnapshot { reason }
            } else if sm.applied_index() < snap_index {
                let reason = format!(
                    "state machine applied index {} is behind snapshot index {snap_index}",
                    sm.applied_index()
                );
                sm.install_snapshot(snap)?;
                OpenOutcome::RestoredFromSnapshot { reason }
            } else if fresh_dir {
                OpenOutcome::CreatedEmpty { reason: None }
            } else {
                OpenOutcome::Opened
            }
        }
        None if broken.is_some() => OpenOutcome::CreatedEmpty { reason: broken },
        None if fresh_dir => OpenOutcome::CreatedEmpty { reason: None },
        None => OpenOutcome::Opened,
    };
    let replay_from = sm.applied_index() + 1;
    Ok(Opened {
        sm,
        outcome,
        replay_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Op};
    use crate::sm::conformance::{apply1, cmd};
    use crate::sm::record::encode_result;
    use crate::sm::ApplyResult;
    use bytes::Bytes;

    /// Asserts that the in-memory key and lease indexes equal ones read
    /// afresh from the database.
    fn assert_index_matches_db(sm: &SledStateMachine) {
        let db = sm.db().db.clone();
        let fresh = KeyIndex::load(&db).unwrap();
        let fresh_leases = LeaseIndex::build(load_leases(&db).unwrap(), &fresh).unwrap();
        let state = sm.state.lock().unwrap();
        assert_eq!(state.keys, fresh);
        assert_eq!(state.leases, fresh_leases);
    }

    /// The key index follows puts, TTL puts, compare-and-swaps, deletes,
    /// retries, expiry and multi-entry batches, and is rebuilt on snapshot
    /// install.
    #[test]
    fn key_index_mirrors_the_database() {
        use crate::sm::conformance::{put, varied_history};
        let dir = tempfile::tempdir().unwrap();
        let sm = SledStateMachine::open(&dir.path().join("a"), SledOptions::default()).unwrap();
        varied_history(&sm, 1, 300);
        assert_index_matches_db(&sm);
        assert!(!sm.leases().unwrap().is_empty());
        // Several changes to one key inside one batch, then expiry.
        let batch: Vec<_> = (301..311)
            .map(|i| cmd(i, 4, put("key/001", &format!("b{i}"), Some(i))))
            .collect();
        sm.apply(&batch).unwrap();
        assert_index_matches_db(&sm);
        let expire = Command::new(Op::Expire { now_ms: 1_310 });
        let r = apply1(&sm, cmd(311, 4, expire));
        assert!(matches!(r.result, ApplyResult::Expire { expired } if expired > 0));
        assert_index_matches_db(&sm);
        assert_eq!(sm.get_raw(b"key/001").unwrap(), None);

        let store = crate::snapshot::SnapshotStore::open(&dir.path().join("snaps")).unwrap();
        let info = store.create(&mut *sm.begin_snapshot().unwrap()).unwrap();
        let other = SledStateMachine::open(&dir.path().join("b"), SledOptions::default()).unwrap();
        apply1(&other, cmd(1, 1, put("junk", "x", None)));
        other.install_snapshot(&info.path).unwrap();
        assert_index_matches_db(&other);
        varied_history(&other, 312, 100);
        assert_index_matches_db(&other);
        drop(other);
        let reopened =
            SledStateMachine::open(&dir.path().join("b"), SledOptions::default()).unwrap();
        varied_history(&reopened, 412, 20);
        assert_index_matches_db(&reopened);
    }

    /// Leases and attachments come back after a restart, and a database
    /// of layout 3 (before leases: value records of version 1) opens, reads
    /// its keys as unleased and is marked layout 4.
    #[test]
    fn leases_survive_restart_and_layout_3_is_upgraded() {
        use crate::sm::conformance::{dump, dump_leases, grant, put, put_leased, revoke};
        let dir = tempfile::tempdir().unwrap();
        {
            let sm = SledStateMachine::open(dir.path(), SledOptions::default()).unwrap();
            apply1(&sm, cmd(1, 1, grant(3, 500)));
            apply1(&sm, cmd(2, 1, put_leased("a", "1", 3)));
            apply1(&sm, cmd(3, 1, put_leased("b", "2", 3)));
            apply1(&sm, cmd(4, 1, put("c", "3", None)));
            sm.flush().unwrap();
        }
        let sm = SledStateMachine::open(dir.path(), SledOptions::default()).unwrap();
        assert_eq!(
            dump_leases(&sm),
            vec![(
                LeaseRecord { id: 3, ttl_ms: 500 },
                vec!["a".to_string(), "b".to_string()]
            )]
        );
        let r = apply1(&sm, cmd(5, 1, revoke(3)));
        assert_eq!(r.result, ApplyResult::LeaseRevoked { id: 3, deleted: 2 });
        assert_eq!(dump(&sm).len(), 1);
        // Rewrite "c" as a version-1 record and mark the database layout 3.
        let db = sm.db.read().unwrap().db.clone();
        let mut v1 = Writer::new();
        v1.u8(1)
            .u64(4)
            .u64(4)
            .u64(1)
            .opt_u64(Some(77))
            .bytes(b"old");
        db.insert(prefixed(P_KV, b"c"), v1.into_vec()).unwrap();
        let mut marker = Writer::new();
        marker.u64(3);
        db.insert(M_FORMAT, marker.into_vec()).unwrap();
        db.flush().unwrap();
        drop(db);
        drop(sm);
        let sm = SledStateMachine::open(dir.path(), SledOptions::default()).unwrap();
        let c = sm.get_raw(b"c").unwrap().unwrap();
        assert_eq!(
            (c.value.as_ref(), c.lease, c.expires_at_ms),
            (&b"old"[..], 0, Some(77))
        );
        let db = sm.db.read().unwrap().db.clone();
        assert_eq!(db.get(M_FORMAT).unwrap().unwrap().to_vec(), format_bytes());
        // Rewritten by a put: a version-2 record.
        apply1(&sm, cmd(6, 1, put("c", "new", None)));
        let raw = db.get(prefixed(P_KV, b"c")).unwrap().unwrap();
        assert_eq!(raw[0], 2);
    }

    /// A key record naming a lease that does not exist makes the database
    /// corrupt (rebuilt from a snapshot by `open_or_rebuild`).
    #[test]
    fn a_key_naming_a_missing_lease_is_corrupt() {
        use crate::sm::conformance::{grant, put_leased};
        let dir = tempfile::tempdir().unwrap();
        {
            let sm = SledStateMachine::open(dir.path(), SledOptions::default()).unwrap();
            apply1(&sm, cmd(1, 1, grant(3, 500)));
            apply1(&sm, cmd(2, 1, put_leased("a", "1", 3)));
            let db = sm.db.read().unwrap().db.clone();
            db.remove(lease_key(3)).unwrap();
            db.flush().unwrap();
        }
        match SledStateMachine::open(dir.path(), SledOptions::default()) {
            Err(SmError::Corrupt(e)) => assert!(e.contains("lease 3"), "{e}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened"),
        }
    }

    /// A database still held by another handle (e.g. one closing after a
    /// storage failure) is reported busy, never wiped and rebuilt.
    #[test]
    fn a_locked_database_is_refused_not_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let held = SledStateMachine::open(dir.path(), SledOptions::default()).unwrap();
        apply1(
            &held,
            cmd(1, 1, crate::sm::conformance::put("k", "v", None)),
        );
        match open_or_rebuild(dir.path(), SledOptions::default(), None) {
            Err(SmError::Io(e)) => assert!(e.to_string().contains("still locked"), "{e}"),
            Err(e) => panic!("expected a busy error, got {e}"),
            Ok(_) => panic!("a locked database was opened"),
        }
        assert!(
            held.get_raw(b"k").unwrap().is_some(),
            "the held database was wiped"
        );
        assert!(dir.path().join(CURRENT).exists());
    }

    /// A database written by layout 1 (sessions without result indexes)
    /// opens, answers retries from its sessions, and is rewritten in the
    /// current layout.
    #[test]
    fn layout_1_sessions_are_upgraded_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let delete = Command::with_client(
            Op::Delete {
                key: Bytes::from_static(b"k"),
            },
            9,
            1,
        );
        {
            let sm = SledStateMachine::open(dir.path(), SledOptions::default()).unwrap();
            apply1(&sm, cmd(1, 1, delete.clone()));
            let db = sm.db.read().unwrap().db.clone();
            let mut v1 = Writer::new();
            v1.u64(1).u64(0).u32(1).u64(1);
            encode_result(&ApplyResult::Delete { existed: false }, &mut v1);
            db.insert(dedup_key(&SessionKey::anonymous(9)), v1.into_vec())
                .unwrap();
            let mut marker = Writer::new();
            marker.u64(1);
            db.insert(M_FORMAT, marker.into_vec()).unwrap();
            db.flush().unwrap();
        }
        let sm = SledStateMachine::open(dir.path(), SledOptions::default()).unwrap();
        let retry = apply1(&sm, cmd(2, 1, delete));
        assert_eq!(retry.result, ApplyResult::Delete { existed: false });
        assert_eq!(
            retry.revision, 2,
            "layout 1 kept no original index, so the retry reports its own"
        );
        let db = sm.db.read().unwrap().db.clone();
        assert_eq!(db.get(M_FORMAT).unwrap().unwrap().to_vec(), format_bytes());
    }
}
