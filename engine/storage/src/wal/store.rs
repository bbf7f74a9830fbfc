//! The log-store contract: the public seam for the Raft log, implemented
//! by the durable [`super::Wal`] (the default), the in-memory
//! [`super::MemLog`], and any store an embedder plugs in
//! (`EngineBuilder::log_store`, `docs/embedding.md`).

use d_engine_core::{Entry, Index, Term};

use super::error::Result;

/// A Raft log: a contiguous run of entries `[first_index, last_index]`.
///
/// The node runtime drives a log store only through this trait, from one
/// dedicated thread (hence `Send`, never `Sync`): at start it reads every
/// entry back (`first_index`, `last_index`, `read`) and may `reset` it when
/// the log does not continue the latest snapshot; afterwards, per wake-up
/// of its log thread, it calls `append` for every batch that arrived, then
/// ONE `sync` for all of them (group commit), and only then reports the
/// entries as persisted to the consensus core, which may count them toward
/// a commit quorum and acknowledge writes. `set_committed` follows the
/// commit index, `compact` follows snapshots, `reset` installs a snapshot
/// received from a leader. `sync` is called once more at shutdown.
///
/// # Contract (checked by [`super::conformance`])
///
/// - **Shape.** An empty log has `last_index == first_index - 1` (a fresh
///   store: first index 1, last index 0). Entries are contiguous; terms
///   never decrease along the log.
/// - **Durability.** After `sync` returns `Ok`, every entry appended
///   before it survives a crash of the process and of the machine, and so
///   do the effects of every earlier `truncate_suffix`, `compact` and
///   `reset` (those three are durable when they return). A store that
///   cannot promise this (e.g. a store kept in memory) must say so to its
///   users: the engine acknowledges writes on the strength of `sync`.
/// - **Recovery.** A store opened again (by the factory the engine calls
///   at start) holds at least every entry that was synced and not removed
///   since, in the same places: the same `first_index` or a lower one
///   (a store may keep compacted entries), and a `last_index` at least the
///   last synced one. It may also hold unsynced entries, whole and in
///   order (never a partial or damaged one: a store that finds damage in
///   data it synced must refuse to open with an error, see below).
/// - **Validation.** Every method that mutates refuses, changing nothing,
///   invalid arguments: a batch that does not start within
///   `[first_index, last_index + 1]` or is not consecutive
///   ([`super::WalError::NotContiguous`]), decreasing terms
///   ([`super::WalError::TermRegression`]), removing an entry at or below
///   the committed floor ([`super::WalError::TruncateCommitted`]), reading
///   outside the log ([`super::WalError::OutOfRange`]).
/// - **Errors.** Any `Err` from `append`, `sync`, `flush`,
///   `truncate_suffix`, `compact` or `reset` stops the node: it accepts
///   nothing more and every waiting request fails. A store must therefore
///   never report success for data it did not keep, and must not "retry"
///   a failed `fsync` and report success (the failed one may have dropped
///   data): after an I/O failure, fail every later call
///   ([`super::WalError::Poisoned`] in the WAL). Errors of an embedder's
///   store are [`super::WalError::Store`].
/// - **Threads.** Every call comes from the same thread, one at a time;
///   calls may block (disk, network) — the writes behind them wait.
pub trait LogStore: Send {
    /// Appends `entries` (consecutive indexes, non-decreasing terms). The
    /// first may have any index in `[first_index, last_index + 1]`; if it is
    /// at most `last_index`, the log from that index on is replaced (the
    /// conflicting suffix is removed first). Refuses
    /// ([`super::WalError::TruncateCommitted`]) to remove an entry at or
    /// below the committed floor. An empty batch is a no-op. The entries
    /// are readable at once, but durable only after the next `sync`
    /// returns (or, for the runtime's `periodic` mode, a `flush`).
    fn append(&mut self, entries: &[Entry]) -> Result<()>;

    /// Makes everything appended so far durable: when it returns `Ok`,
    /// every entry appended before the call survives a crash, process or
    /// machine. One call covers every batch appended since the previous
    /// one (group commit: the WAL issues one `fdatasync`). Cheap when
    /// nothing is pending.
    fn sync(&mut self) -> Result<()>;

    /// Hands everything appended so far to a place where it survives a
    /// crash of this process, but not necessarily of the machine (the WAL:
    /// `write` to the page cache, no `fdatasync`). Called only in the
    /// relaxed `durability.mode = "periodic"`, where entries are reported
    /// persisted after `flush` and `sync` runs at least every interval.
    /// The default calls [`LogStore::sync`]: always safe, and a store with
    /// no cheaper step needs nothing else.
    fn flush(&mut self) -> Result<()> {
        self.sync()
    }

    /// Removes entries `from..`; no-op if `from > last_index`. Refuses to
    /// remove an entry at or below the committed floor, or below
    /// `first_index`. Durable on return.
    fn truncate_suffix(&mut self, from: Index) -> Result<()>;

    /// Allows the store to drop entries `..= upto` (they are in a snapshot).
    /// It may keep some of them (the WAL drops whole segments only):
    /// afterwards `first_index() <= upto + 1` unless the log was already
    /// shorter, `last_index` is unchanged, and every entry after `upto` is
    /// kept. A crash during it must leave a contiguous log (dropping
    /// oldest first). `upto` may exceed `last_index`.
    fn compact(&mut self, upto: Index) -> Result<()>;

    /// Discards the whole log; afterwards `first_index() == next_index`,
    /// `last_index() == next_index - 1`, and the next entry appended must
    /// have index `next_index` (used when a snapshot from a leader replaces
    /// the log). The committed floor rises to at least `next_index - 1`.
    /// Durable on return; a crash during it may leave a prefix of the old
    /// log (the engine compares the log with its snapshot at start and
    /// resets again). `next_index == 0` is refused.
    fn reset(&mut self, next_index: Index) -> Result<()>;

    /// Entries `[lo, hi)`; refused unless
    /// `first_index <= lo <= hi <= last_index + 1`. Sees unsynced appends.
    fn read(&self, lo: Index, hi: Index) -> Result<Vec<Entry>>;

    /// Sets the committed floor: entries at or below `index` can never be
    /// truncated by `append` or `truncate_suffix`. The floor only rises; it
    /// needs not be durable (the engine sets it again after a restart).
    fn set_committed(&mut self, index: Index);

    /// Index of the first entry kept (of the next entry if the log is empty).
    fn first_index(&self) -> Index;
    /// Index of the last entry (`first_index - 1` if the log is empty).
    fn last_index(&self) -> Index;
    /// Term of the last entry; `None` when the log is empty.
    fn last_term(&self) -> Option<Term>;
}

/// A boxed store is a store: the runtime runs an embedder's
/// `Box<dyn LogStore>` on the same generic log thread as the built-in
/// [`super::Wal`] (which it runs unboxed).
impl<L: LogStore + ?Sized> LogStore for Box<L> {
    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        (**self).append(entries)
    }
    fn sync(&mut self) -> Result<()> {
        (**self).sync()
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
    fn truncate_suffix(&mut self, from: Index) -> Result<()> {
        (**self).truncate_suffix(from)
    }
    fn compact(&mut self, upto: Index) -> Result<()> {
        (**self).compact(upto)
    }
    fn reset(&mut self, next_index: Index) -> Result<()> {
        (**self).reset(next_index)
    }
    fn read(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
        (**self).read(lo, hi)
    }
    fn set_committed(&mut self, index: Index) {
        (**self).set_committed(index)
    }
    fn first_index(&self) -> Index {
        (**self).first_index()
    }
    fn last_index(&self) -> Index {
        (**self).last_index()
    }
    fn last_term(&self) -> Option<Term> {
        (**self).last_term()
    }
}

/// Every entry of `store`, `[first_index, last_index]`: what the engine
/// reads back from a store at start.
pub fn read_all<L: LogStore + ?Sized>(store: &L) -> Result<Vec<Entry>> {
    store.read(store.first_index(), store.last_index() + 1)
}

/// What the engine tells a log-store factory when a node starts.
#[derive(Clone, Debug)]
pub struct LogStoreContext {
    /// The node the log belongs to.
    pub node_id: u64,
    /// `<data_dir>/log-store`: a directory for the store's own files,
    /// created `0700` by the engine before the factory runs (a store that
    /// keeps its data elsewhere may ignore it). The engine writes nothing
    /// there; the built-in WAL uses `<data_dir>/wal` instead.
    pub dir: std::path::PathBuf,
    /// The configured durability mode (`[durability]`). The engine drives
    /// it (one `sync` per batch, or `flush` per batch and `sync` per
    /// interval); a store needs it only to tune itself.
    pub sync_mode: super::SyncMode,
}
