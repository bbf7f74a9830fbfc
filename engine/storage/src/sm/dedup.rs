//! Exactly-once retries: a bounded, deterministic table of recent client
//! write results, part of the replicated state (persisted with every batch
//! and carried in snapshots).
//!
//! Each client keeps the results of its last [`DEDUP_WINDOW_PER_CLIENT`]
//! sequence numbers. A write whose `(client_id, seq)` is in the window is not
//! applied again; the retry gets the stored result together with the log
//! index of the entry that produced it, so the retry reports the revision at
//! which its write really took effect (watchers saw it there), not the index
//! of the retry's own entry. A seq at or below the
//! window's floor that is not remembered gets
//! [`ApplyResult::DuplicateExpired`] (never re-applied). At most
//! [`MAX_DEDUP_CLIENTS`] clients are tracked; beyond that the client whose
//! last write is oldest (lowest log index) is forgotten, deterministically on
//! every replica. A forgotten client's very old retries may then be applied
//! again; clients should use a fresh `client_id` per process start and give
//! up retrying a write after a bounded time.

use super::ApplyResult;
use d_engine_core::Index;
use std::collections::BTreeMap;

/// Results remembered per client.
pub const DEDUP_WINDOW_PER_CLIENT: usize = 64;
/// Clients remembered.
pub const MAX_DEDUP_CLIENTS: usize = 4096;

/// One remembered write outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remembered {
    /// Log index of the entry that applied the write (its revision). `0`
    /// when unknown: sessions written by layout/snapshot version 1 did not
    /// record it, and a retry then reports its own entry's index.
    pub index: Index,
    pub result: ApplyResult,
}

/// One client's remembered results.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientSession {
    /// Log index of this client's last write (for eviction order).
    pub last_index: Index,
    /// Every seq `<= floor` has been forgotten.
    pub floor: u64,
    pub results: BTreeMap<u64, Remembered>,
}

/// The table of sessions; `BTreeMap` so iteration (and eviction) order is
/// the same on every replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DedupTable {
    pub clients: BTreeMap<u64, ClientSession>,
}

/// Change to persist for one client.
pub enum SessionChange {
    Upsert(u64),
    Remove(u64),
}

impl DedupTable {
    /// The stored outcome for a retry arriving in the entry at `index`, if
    /// this `(client, seq)` was seen: the original result and revision, or
    /// [`ApplyResult::DuplicateExpired`] at `index` when it fell out of the
    /// window.
    pub fn check(&self, client_id: u64, seq: u64, index: Index) -> Option<Remembered> {
        let s = self.clients.get(&client_id)?;
        if let Some(r) = s.results.get(&seq) {
            return Some(Remembered {
                index: if r.index == 0 { index } else { r.index },
                result: r.result.clone(),
            });
        }
        if seq <= s.floor {
            return Some(Remembered {
                index,
                result: ApplyResult::DuplicateExpired { client_id, seq },
            });
        }
        None
    }

    /// Remembers a result; returns what changed, for persistence.
    pub fn record(
        &mut self,
        client_id: u64,
        seq: u64,
        index: Index,
        result: ApplyResult,
        changes: &mut Vec<SessionChange>,
    ) {
        let s = self.clients.entry(client_id).or_default();
        s.last_index = index;
        s.results.insert(seq, Remembered { index, result });
        while s.results.len() > DEDUP_WINDOW_PER_CLIENT {
            let (old, _) = s.results.pop_first().expect("non-empty");
            s.floor = s.floor.max(old);
        }
        changes.push(SessionChange::Upsert(client_id));
        if self.clients.len() > MAX_DEDUP_CLIENTS {
            let victim = self
                .clients
                .iter()
                .min_by_key(|(id, s)| (s.last_index, **id))
                .map(|(id, _)| *id)
                .expect("non-empty");
            self.clients.remove(&victim);
            changes.push(SessionChange::Remove(victim));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_floor() {
        let mut t = DedupTable::default();
        let mut ch = Vec::new();
        for seq in 1..=(DEDUP_WINDOW_PER_CLIENT as u64 + 5) {
            assert_eq!(t.check(1, seq, 100 + seq), None);
            t.record(
                1,
                seq,
                100 + seq,
                ApplyResult::Delete {
                    existed: seq % 2 == 0,
                },
                &mut ch,
            );
        }
        assert_eq!(
            t.check(1, 3, 900),
            Some(Remembered {
                index: 900,
                result: ApplyResult::DuplicateExpired {
                    client_id: 1,
                    seq: 3
                }
            })
        );
        assert_eq!(
            t.check(1, 10, 900),
            Some(Remembered {
                index: 110,
                result: ApplyResult::Delete { existed: true }
            }),
            "a retry reports the revision of the entry that applied the write"
        );
        assert_eq!(t.check(1, 1000, 900), None);
        assert_eq!(t.check(2, 1, 900), None);
    }

    #[test]
    fn evicts_the_oldest_client() {
        let mut t = DedupTable::default();
        let mut ch = Vec::new();
        for c in 0..=(MAX_DEDUP_CLIENTS as u64) {
            t.record(c, 1, c + 1, ApplyResult::Noop, &mut ch);
        }
        assert_eq!(t.clients.len(), MAX_DEDUP_CLIENTS);
        assert_eq!(t.check(0, 1, 9999), None, "client 0 had the oldest write");
        assert_eq!(
            t.check(1, 1, 9999).map(|r| r.result),
            Some(ApplyResult::Noop)
        );
    }

    #[test]
    fn unknown_original_index_falls_back_to_the_retry() {
        let mut t = DedupTable::default();
        let mut ch = Vec::new();
        t.record(7, 1, 0, ApplyResult::Noop, &mut ch);
        assert_eq!(t.check(7, 1, 42).map(|r| r.index), Some(42));
    }
}
