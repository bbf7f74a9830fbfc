//! An in-memory [`LogStore`] for simulations and tests: same contract as
//! the WAL, no durability (`sync` is a no-op), exact compaction.

use std::collections::VecDeque;

use d_engine_core::{Entry, Index, Term};

use super::error::{Result, WalError};
use super::store::LogStore;

#[derive(Clone, Debug)]
pub struct MemLog {
    /// Index of `entries[0]` (or of the next entry if empty).
    first: Index,
    entries: VecDeque<Entry>,
    committed: Index,
}

impl Default for MemLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MemLog {
    /// An empty log whose first entry will have index 1.
    pub fn new() -> Self {
        MemLog {
            first: 1,
            entries: VecDeque::new(),
            committed: 0,
        }
    }

    fn last(&self) -> Index {
        self.first + self.entries.len() as Index - 1
    }

    fn term_of(&self, index: Index) -> Option<Term> {
        if index < self.first || index > self.last() {
            return None;
        }
        Some(self.entries[(index - self.first) as usize].term)
    }
}

/// Checks a batch against a log with `first..=last` (shared with the WAL).
pub(crate) fn validate_batch(
    entries: &[Entry],
    first: Index,
    last: Index,
    committed: Index,
    term_before: impl FnOnce(Index) -> Result<Option<Term>>,
) -> Result<()> {
    let Some(head) = entries.first() else {
        return Ok(());
    };
    if head.index < first || head.index > last + 1 {
        return Err(WalError::NotContiguous {
            expected: last + 1,
            got: head.index,
        });
    }
    for w in entries.windows(2) {
        if w[1].index != w[0].index + 1 {
            return Err(WalError::NotContiguous {
                expected: w[0].index + 1,
                got: w[1].index,
            });
        }
        if w[1].term < w[0].term {
            return Err(WalError::TermRegression {
                index: w[1].index,
                term: w[1].term,
                prev_term: w[0].term,
            });
        }
    }
    if head.index <= last && head.index <= committed {
        return Err(WalError::TruncateCommitted {
            from: head.index,
            committed,
        });
    }
    if head.index > first {
        if let Some(prev_term) = term_before(head.index - 1)? {
            if head.term < prev_term {
                return Err(WalError::TermRegression {
                    index: head.index,
                    term: head.term,
                    prev_term,
                });
            }
        }
    }
    Ok(())
}

impl LogStore for MemLog {
    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        validate_batch(entries, self.first, self.last(), self.committed, |i| {
            Ok(self.term_of(i))
        })?;
        let Some(head) = entries.first() else {
            return Ok(());
        };
        self.entries.truncate((head.index - self.first) as usize);
        self.entries.extend(entries.iter().cloned());
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    fn truncate_suffix(&mut self, from: Index) -> Result<()> {
        if from > self.last() {
            return Ok(());
        }
        if from <= self.committed {
            return Err(WalError::TruncateCommitted {
                from,
                committed: self.committed,
            });
        }
        if from < self.first {
            return Err(WalError::OutOfRange {
                index: from,
                first: self.first,
                last: self.last(),
            });
        }
        self.entries.truncate((from - self.first) as usize);
        Ok(())
    }

    fn compact(&mut self, upto: Index) -> Result<()> {
        let upto = upto.min(self.last());
        while self.first <= upto {
            self.entries.pop_front();
            self.first += 1;
        }
        Ok(())
    }

    fn reset(&mut self, next_index: Index) -> Result<()> {
        if next_index == 0 {
            return Err(WalError::OutOfRange {
                index: 0,
                first: self.first,
                last: self.last(),
            });
        }
        self.entries.clear();
        self.first = next_index;
        self.committed = self.committed.max(next_index - 1);
        Ok(())
    }

    fn read(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
        check_range(lo, hi, self.first, self.last())?;
        let a = (lo - self.first) as usize;
        let b = (hi - self.first) as usize;
        Ok(self.entries.range(a..b).cloned().collect())
    }

    fn set_committed(&mut self, index: Index) {
        self.committed = self.committed.max(index);
    }

    fn first_index(&self) -> Index {
        self.first
    }

    fn last_index(&self) -> Index {
        self.last()
    }

    fn last_term(&self) -> Option<Term> {
        self.entries.back().map(|e| e.term)
    }
}

/// Checks `first <= lo <= hi <= last + 1`.
pub(crate) fn check_range(lo: Index, hi: Index, first: Index, last: Index) -> Result<()> {
    for i in [lo, hi] {
        if i < first || i > last + 1 {
            return Err(WalError::OutOfRange {
                index: i,
                first,
                last,
            });
        }
    }
    if lo > hi {
        return Err(WalError::OutOfRange {
            index: lo,
            first,
            last: hi.saturating_sub(1),
        });
    }
    Ok(())
}
