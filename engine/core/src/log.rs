//! The in-memory Raft log since the last snapshot, with the indices that
//! track how far it is durable, committed and handed out for applying.
//!
//! Invariants (asserted): `snap_index <= applied <= min(commit, durable)`,
//! `commit <= last_index`, `durable <= last_index`, and a committed entry is
//! never truncated.

use crate::types::*;

/// Approximate per-entry framing overhead counted against `max_bytes_per_msg`.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 24;

pub(crate) struct RaftLog {
    snap_index: Index,
    snap_term: Term,
    /// `entries[i].index == snap_index + 1 + i`.
    entries: Vec<Entry>,
    /// Highest index the host reported durable (a prefix of the current log).
    pub(crate) durable: Index,
    /// Highest index known committed.
    pub(crate) commit: Index,
    /// Highest index handed to the host in `Ready::committed` (or restored).
    pub(crate) applied: Index,
    /// First index changed since the last `Ready` (to be persisted by the host).
    unstable_from: Option<Index>,
}

/// Size of one entry for batching purposes.
pub(crate) fn entry_size(e: &Entry) -> usize {
    ENTRY_OVERHEAD_BYTES
        + match &e.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(b) => b.len(),
            EntryPayload::Config(ConfChange::AddLearner { addr, .. }) => 8 + addr.len(),
            EntryPayload::Config(_) => 8,
        }
}

impl RaftLog {
    /// Builds a log from restored state. `entries` are durable.
    pub(crate) fn restore(
        snap_index: Index,
        snap_term: Term,
        entries: Vec<Entry>,
        commit: Index,
        applied: Index,
    ) -> Self {
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                snap_index + 1 + i as u64,
                "restored entries must be contiguous and start right after the snapshot (index {})",
                snap_index + 1
            );
            assert!(
                e.term
                    >= if i == 0 {
                        snap_term
                    } else {
                        entries[i - 1].term
                    },
                "restored entry {} has a term lower than its predecessor",
                e.index
            );
        }
        let last = snap_index + entries.len() as u64;
        let applied = applied.max(snap_index);
        assert!(
            applied <= last,
            "restored applied index {applied} is beyond the last durable log index {last}: \
             the log lost entries the state machine already applied"
        );
        let commit = commit.max(applied).min(last);
        RaftLog {
            snap_index,
            snap_term,
            entries,
            durable: last,
            commit,
            applied,
            unstable_from: None,
        }
    }

    pub(crate) fn snap_index(&self) -> Index {
        self.snap_index
    }

    pub(crate) fn last_index(&self) -> Index {
        self.snap_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries
            .last()
            .map(|e| e.term)
            .unwrap_or(self.snap_term)
    }

    /// Term of the entry at `i`; `None` if compacted (below the snapshot) or beyond the end.
    pub(crate) fn term_at(&self, i: Index) -> Option<Term> {
        if i == self.snap_index {
            return Some(self.snap_term);
        }
        self.entry(i).map(|e| e.term)
    }

    pub(crate) fn entry(&self, i: Index) -> Option<&Entry> {
        if i <= self.snap_index || i > self.last_index() {
            return None;
        }
        self.entries.get((i - self.snap_index - 1) as usize)
    }

    /// Entries in `[lo, hi)` that are held in memory.
    pub(crate) fn slice(&self, lo: Index, hi: Index) -> &[Entry] {
        let lo = lo.max(self.snap_index + 1);
        let hi = hi.min(self.last_index() + 1);
        if lo >= hi {
            return &[];
        }
        let a = (lo - self.snap_index - 1) as usize;
        let b = (hi - self.snap_index - 1) as usize;
        &self.entries[a..b]
    }

    /// Up to `max_entries` entries from `from`, at most `max_bytes` (but at least one).
    pub(crate) fn batch(&self, from: Index, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        let all = self.slice(from, self.last_index() + 1);
        let mut bytes = 0usize;
        let mut out = Vec::new();
        for e in all.iter().take(max_entries) {
            let sz = entry_size(e);
            if !out.is_empty() && bytes + sz > max_bytes {
                break;
            }
            bytes += sz;
            out.push(e.clone());
        }
        out
    }

    /// Candidate's log `(last_index, last_term)` is at least as up to date as ours.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Appends entries that directly follow the last one.
    pub(crate) fn append(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let first = entries[0].index;
        assert_eq!(
            first,
            self.last_index() + 1,
            "appended entries must follow the last index {}",
            self.last_index()
        );
        let mut prev_term = self.last_term();
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                first + i as u64,
                "appended entries must be contiguous"
            );
            assert!(
                e.term >= prev_term,
                "entry {} has term {} lower than its predecessor's {}",
                e.index,
                e.term,
                prev_term
            );
            prev_term = e.term;
        }
        self.unstable_from = Some(self.unstable_from.map_or(first, |u| u.min(first)));
        self.entries.extend(entries);
    }

    /// Removes every entry from `i` on. Panics if that would remove a committed
    /// entry: an invariant of the node's own state, since `RaftNode::step`
    /// refuses any message that would cause it (`Refusal::ConflictsWithCommitted`).
    pub(crate) fn truncate_from(&mut self, i: Index) {
        assert!(
            i > self.commit,
            "invariant broken: truncating the log from index {i} would remove committed \
             entries (commit index {})",
            self.commit
        );
        assert!(i > self.snap_index, "cannot truncate into the snapshot");
        if i > self.last_index() {
            return;
        }
        self.entries.truncate((i - self.snap_index - 1) as usize);
        self.durable = self.durable.min(i - 1);
        if let Some(u) = self.unstable_from {
            if u >= i {
                // Entries that were never handed out disappear; nothing to persist for them.
                self.unstable_from = if u > self.last_index() { None } else { Some(u) };
            }
        }
    }

    /// Entries to hand to the host for persisting (and forget that they are pending).
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        match self.unstable_from.take() {
            Some(u) => self.slice(u, self.last_index() + 1).to_vec(),
            None => Vec::new(),
        }
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.unstable_from.is_some_and(|u| u <= self.last_index())
    }

    /// Forgets that there are entries to persist (used when a snapshot install
    /// will replace the whole log).
    pub(crate) fn drop_unstable(&mut self) {
        self.unstable_from = None;
    }

    /// Records that the host made the log durable up to `index` (whose entry has
    /// `term`). Returns true if the durable index advanced.
    pub(crate) fn persisted(&mut self, index: Index, term: Term) -> bool {
        if index <= self.durable || self.term_at(index) != Some(term) {
            return false;
        }
        if let Some(u) = self.unstable_from {
            if index >= u {
                // The host cannot have persisted entries it was never handed.
                return false;
            }
        }
        self.durable = index;
        true
    }

    pub(crate) fn commit_to(&mut self, i: Index) -> bool {
        if i <= self.commit {
            return false;
        }
        assert!(
            i <= self.last_index(),
            "invariant broken: commit index {i} beyond last log index {}",
            self.last_index()
        );
        self.commit = i;
        true
    }

    /// Highest index that may be handed out for applying: committed and durable here.
    pub(crate) fn applicable(&self) -> Index {
        self.commit.min(self.durable)
    }

    pub(crate) fn has_committed_to_hand_out(&self) -> bool {
        self.applicable() > self.applied
    }

    pub(crate) fn take_committed(&mut self) -> Vec<Entry> {
        let hi = self.applicable();
        if hi <= self.applied {
            return Vec::new();
        }
        let out = self.slice(self.applied + 1, hi + 1).to_vec();
        assert_eq!(
            out.len() as u64,
            hi - self.applied,
            "committed entries {}..={} are no longer in memory",
            self.applied + 1,
            hi
        );
        self.applied = hi;
        out
    }

    /// First index of the run of entries with term `term_at(i)` that contains `i`.
    pub(crate) fn first_index_of_term_run(&self, i: Index) -> Index {
        let t = match self.term_at(i) {
            Some(t) => t,
            None => return i,
        };
        let mut j = i;
        while j > self.snap_index + 1 && self.term_at(j - 1) == Some(t) {
            j -= 1;
        }
        j
    }

    /// Last index `<= upto` whose entry has term `term`, if held in memory.
    pub(crate) fn last_index_of_term(&self, term: Term, upto: Index) -> Option<Index> {
        let mut j = upto.min(self.last_index());
        while j > self.snap_index {
            let t = self.term_at(j).expect("index within the log");
            if t == term {
                return Some(j);
            }
            if t < term {
                return None;
            }
            j -= 1;
        }
        if j == self.snap_index && self.snap_term == term && j > 0 {
            return Some(j);
        }
        None
    }

    /// Drops entries up to and including `index` (covered by a snapshot).
    pub(crate) fn compact(&mut self, index: Index, term: Term) {
        if index <= self.snap_index {
            return;
        }
        assert!(
            index <= self.applied,
            "cannot compact past the applied index ({index} > {})",
            self.applied
        );
        assert_eq!(
            self.term_at(index),
            Some(term),
            "snapshot term does not match the log at index {index}"
        );
        let n = (index - self.snap_index) as usize;
        self.entries.drain(..n);
        self.snap_index = index;
        self.snap_term = term;
    }

    /// Replaces the whole log by a snapshot at `(index, term)`.
    pub(crate) fn reset_to_snapshot(&mut self, index: Index, term: Term) {
        self.entries.clear();
        self.snap_index = index;
        self.snap_term = term;
        self.durable = index;
        self.commit = index;
        self.applied = index;
        self.unstable_from = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Noop,
        }
    }

    #[test]
    fn term_lookup_and_truncation() {
        let mut log = RaftLog::restore(0, 0, vec![e(1, 1), e(2, 1), e(3, 2)], 1, 0);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(4), None);
        assert_eq!(log.first_index_of_term_run(2), 1);
        assert_eq!(log.last_index_of_term(1, 3), Some(2));
        log.truncate_from(3);
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.durable, 2);
    }

    #[test]
    #[should_panic(expected = "would remove committed")]
    fn truncating_committed_entry_panics() {
        let mut log = RaftLog::restore(0, 0, vec![e(1, 1), e(2, 1)], 2, 0);
        log.truncate_from(2);
    }

    #[test]
    fn applicable_is_bounded_by_durable() {
        let mut log = RaftLog::restore(0, 0, vec![e(1, 1)], 0, 0);
        log.append(vec![e(2, 1), e(3, 1)]);
        log.commit_to(3);
        assert_eq!(log.take_committed().len(), 1);
        assert!(!log.persisted(3, 1), "not handed out yet");
        assert_eq!(log.take_unstable().len(), 2);
        assert!(log.persisted(3, 1));
        assert_eq!(log.take_committed().len(), 2);
    }

    #[test]
    fn compaction_keeps_term_of_snapshot() {
        let mut log = RaftLog::restore(0, 0, vec![e(1, 1), e(2, 2), e(3, 2)], 3, 3);
        log.compact(2, 2);
        assert_eq!(log.term_at(2), Some(2));
        assert_eq!(log.term_at(1), None);
        assert_eq!(log.slice(1, 10).len(), 1);
    }
}
