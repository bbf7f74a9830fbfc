//! Simulated stable storage of one node and the host's view of its log.
//!
//! [`Durable`] is what survives a crash: the hard state (written
//! synchronously), the log entries whose write completed, and the latest
//! snapshot created or installed. Writes still queued on the simulated disk
//! live in the host and vanish on a crash.

use std::sync::Arc;

use d_engine_core::{Entry, EntryPayload, HardState, Index, NodeId, SnapshotMeta, Term};

use super::checkers::LogView;
use super::kv::Kv;
use super::rng::fnv1a;

/// A snapshot's data: the state machine at `meta.last_index`. It travels
/// beside `InstallSnapshot` messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotData {
    pub meta: SnapshotMeta,
    pub kv: Kv,
}

/// Digest of an entry's payload (index and term are compared separately).
pub fn entry_digest(e: &Entry) -> u64 {
    match &e.payload {
        EntryPayload::Noop => fnv1a(0, b"noop"),
        EntryPayload::Command(b) => fnv1a(fnv1a(0, b"cmd"), b),
        EntryPayload::Config(c) => fnv1a(fnv1a(0, b"conf"), format!("{c:?}").as_bytes()),
    }
}

/// A state machine flushed to disk at some applied index (like a sled tree
/// after `flush`), newer than the last snapshot.
#[derive(Clone, Debug)]
pub struct FlushedSm {
    pub applied: Index,
    pub applied_term: Term,
    pub kv: Kv,
    pub membership: d_engine_core::Membership,
}

/// What a node's disk holds.
#[derive(Clone, Debug, Default)]
pub struct Durable {
    pub hard_state: HardState,
    pub snapshot: Option<Arc<SnapshotData>>,
    /// The state machine as last flushed, if the host flushes it.
    pub sm: Option<FlushedSm>,
    /// Entries after the snapshot, contiguous from `snapshot_index() + 1`.
    pub log: Vec<Entry>,
}

impl Durable {
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.last_index)
    }

    pub fn snapshot_term(&self) -> Term {
        self.snapshot.as_ref().map_or(0, |s| s.meta.last_term)
    }

    pub fn last_index(&self) -> Index {
        self.snapshot_index() + self.log.len() as Index
    }

    pub fn term_at(&self, index: Index) -> Option<Term> {
        let base = self.snapshot_index();
        if index == base {
            return Some(self.snapshot_term());
        }
        if index < base {
            return None;
        }
        self.log.get((index - base - 1) as usize).map(|e| e.term)
    }

    /// True if the disk holds the entry `(index, term)` (or a snapshot that
    /// covers `index`).
    pub fn holds(&self, index: Index, term: Term) -> bool {
        index <= self.snapshot_index() || self.term_at(index) == Some(term)
    }

    /// Completes a queued write: the log from `entries[0].index` on is
    /// replaced by `entries`. Entries already covered by the snapshot are
    /// skipped. Returns an error if the write would leave a gap.
    pub fn write(&mut self, entries: &[Entry]) -> Result<(), String> {
        let base = self.snapshot_index();
        let entries: Vec<&Entry> = entries.iter().filter(|e| e.index > base).collect();
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index > self.last_index() + 1 {
            return Err(format!(
                "disk write starting at index {} would leave a gap after the durable last index \
                 {}",
                first.index,
                self.last_index()
            ));
        }
        self.log.truncate((first.index - base - 1) as usize);
        self.log.extend(entries.into_iter().cloned());
        Ok(())
    }

    /// A snapshot was created or installed: it becomes durable and the log up
    /// to it is dropped. The entries after it stay only if the disk holds the
    /// snapshot's last entry itself (same index and term); otherwise they
    /// belong to another history and go too.
    pub fn set_snapshot(&mut self, snap: Arc<SnapshotData>) {
        let (last, term) = (snap.meta.last_index, snap.meta.last_term);
        let base = self.snapshot_index();
        if last >= base && self.term_at(last) == Some(term) {
            self.log.drain(..(last - base) as usize);
        } else {
            self.log.clear();
        }
        if self.sm.as_ref().is_some_and(|sm| sm.applied <= last) {
            self.sm = None;
        }
        self.snapshot = Some(snap);
    }
}

/// The host's copy of the core's log, as the core instructed it (entries
/// appended via `Ready::entries`, compacted at snapshots). Checkers read it.
#[derive(Clone, Debug, Default)]
pub struct LogMirror {
    pub node: NodeId,
    pub snap_index: Index,
    pub snap_term: Term,
    /// `(entry, payload digest)` for `snap_index + 1 ..`.
    pub entries: Vec<(Entry, u64)>,
}

impl LogMirror {
    pub fn from_durable(node: NodeId, d: &Durable) -> Self {
        LogMirror {
            node,
            snap_index: d.snapshot_index(),
            snap_term: d.snapshot_term(),
            entries: d.log.iter().map(|e| (e.clone(), entry_digest(e))).collect(),
        }
    }

    pub fn last(&self) -> Index {
        self.snap_index + self.entries.len() as Index
    }

    pub fn get(&self, index: Index) -> Option<&(Entry, u64)> {
        if index <= self.snap_index {
            return None;
        }
        self.entries.get((index - self.snap_index - 1) as usize)
    }

    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.snap_index {
            Some(self.snap_term)
        } else {
            self.get(index).map(|e| e.0.term)
        }
    }

    /// Drops entries up to `index` (which has `term`).
    pub fn compact(&mut self, index: Index, term: Term) {
        if index <= self.snap_index {
            return;
        }
        let n = ((index - self.snap_index) as usize).min(self.entries.len());
        self.entries.drain(..n);
        self.snap_index = index;
        self.snap_term = term;
    }
}

impl LogView for LogMirror {
    fn node(&self) -> NodeId {
        self.node
    }
    fn snapshot_index(&self) -> Index {
        self.snap_index
    }
    fn last_index(&self) -> Index {
        self.last()
    }
    fn entry_at(&self, index: Index) -> Option<(Term, u64)> {
        self.get(index).map(|(e, d)| (e.term, *d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn e(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Command(Bytes::from(vec![index as u8])),
        }
    }

    #[test]
    fn writes_replace_suffix_and_refuse_gaps() {
        let mut d = Durable::default();
        d.write(&[e(1, 1), e(2, 1), e(3, 1)]).unwrap();
        d.write(&[e(2, 2)]).unwrap();
        assert_eq!(d.last_index(), 2);
        assert_eq!(d.term_at(2), Some(2));
        assert!(d.write(&[e(5, 2)]).is_err());
        assert!(d.holds(1, 1) && !d.holds(2, 1));
    }

    #[test]
    fn snapshots_compact_and_cover() {
        let mut d = Durable::default();
        d.write(&[e(1, 1), e(2, 1), e(3, 1)]).unwrap();
        let snap = |i, t| {
            Arc::new(SnapshotData {
                meta: SnapshotMeta {
                    last_index: i,
                    last_term: t,
                    membership: Default::default(),
                },
                kv: Kv::default(),
            })
        };
        d.set_snapshot(snap(2, 1));
        assert_eq!((d.snapshot_index(), d.last_index()), (2, 3));
        assert!(d.holds(1, 9) && d.holds(3, 1));
        // A late write below the snapshot is skipped, the rest lands.
        d.write(&[e(2, 1), e(3, 1), e(4, 1)]).unwrap();
        assert_eq!(d.last_index(), 4);
        // A snapshot whose last entry the disk holds with another term drops
        // the whole suffix.
        d.set_snapshot(snap(3, 7));
        assert_eq!((d.snapshot_index(), d.last_index()), (3, 3));
        d.set_snapshot(snap(10, 3));
        assert_eq!((d.snapshot_index(), d.last_index()), (10, 10));
        let mut m = LogMirror::from_durable(1, &d);
        assert_eq!(m.term_at(10), Some(3));
        m.compact(10, 3);
        assert_eq!(m.last(), 10);
    }
}
