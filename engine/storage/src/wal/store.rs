//! The log-store contract shared by the durable [`super::Wal`] and the
//! in-memory [`super::MemLog`].

use d_engine_core::{Entry, Index, Term};

use super::error::Result;

/// A Raft log: a contiguous run of entries `[first_index, last_index]`.
///
/// An empty log has `last_index == first_index - 1`. Every method returns
/// an error, and changes nothing, when its arguments are invalid; after an
/// I/O failure a durable store is poisoned and every call fails.
pub trait LogStore {
    /// Appends `entries` (consecutive indexes, non-decreasing terms). The
    /// first may have any index in `[first_index, last_index + 1]`; if it is
    /// at most `last_index`, the log from that index on is replaced (the
    /// conflicting suffix is removed first). Refuses
    /// ([`super::WalError::TruncateCommitted`]) to remove an entry at or
    /// below the committed floor. Entries are durable only after `sync`.
    fn append(&mut self, entries: &[Entry]) -> Result<()>;

    /// Makes everything appended so far durable (one `fdatasync` for all of
    /// it: group commit). No-op when nothing is pending.
    fn sync(&mut self) -> Result<()>;

    /// Removes entries `from..`; no-op if `from > last_index`. Refuses to
    /// remove an entry at or below the committed floor. Durable on return.
    fn truncate_suffix(&mut self, from: Index) -> Result<()>;

    /// Allows the store to drop entries `..= upto` (they are in a snapshot).
    /// It may keep some of them (the WAL drops whole segments only):
    /// afterwards `first_index() <= upto + 1` unless the log was already
    /// shorter, and every entry after `upto` is kept.
    fn compact(&mut self, upto: Index) -> Result<()>;

    /// Discards the whole log; the next entry appended must have index
    /// `next_index` (used when a snapshot replaces the log). Durable on return.
    fn reset(&mut self, next_index: Index) -> Result<()>;

    /// Entries `[lo, hi)`; `first_index <= lo <= hi <= last_index + 1`.
    fn read(&self, lo: Index, hi: Index) -> Result<Vec<Entry>>;

    /// Sets the committed floor: entries at or below `index` can never be
    /// truncated by `append` or `truncate_suffix`. The floor only rises.
    fn set_committed(&mut self, index: Index);

    fn first_index(&self) -> Index;
    fn last_index(&self) -> Index;
    /// Term of the last entry; `None` when the log is empty.
    fn last_term(&self) -> Option<Term>;
}
