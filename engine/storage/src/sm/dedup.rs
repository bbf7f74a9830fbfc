//! Exactly-once retries: a bounded, deterministic table of recent client
//! write results, part of the replicated state (persisted with every batch
//! and carried in snapshots).
//!
//! # Sessions belong to a caller
//!
//! A session is keyed by [`SessionKey`] = (user, client id): the user is the
//! authenticated name the service attached to the command (`""` when auth
//! is off, for embedded writes, and for entries written before sessions were
//! scoped). It travels inside the replicated command, so every replica keys
//! the same write the same way. A writer who knows another user's client id
//! therefore only ever reaches its *own* session of that id: it cannot read
//! the other user's remembered results, nor get the victim's next write
//! acknowledged without being applied, nor make it fail.
//!
//! # What is remembered
//!
//! Each session keeps the results of its last [`DEDUP_WINDOW_PER_CLIENT`]
//! sequence numbers, each with a 64-bit fingerprint of the operation
//! ([`crate::command::Command::op_fingerprint`]). A write whose
//! `(user, client_id, seq)` is in the window is not applied again:
//! - same fingerprint: the retry gets the stored result together with the
//!   log index of the entry that produced it, so it reports the revision at
//!   which its write really took effect (watchers saw it there);
//! - different fingerprint: the retry is refused
//!   ([`ApplyResult::Rejected`], surfaced as INVALID_ARGUMENT) and nothing is
//!   applied or recorded; a caller never gets another operation's result.
//!   Sessions written before fingerprints existed (fingerprint `0`) are
//!   answered without the check.
//!
//! A successful compare-and-swap is remembered without its value: the value
//! it wrote is the retry's own `new_value`, which the fingerprint proves is
//! the same, so the applier fills it back in (see
//! [`crate::sm::apply`]). A failed compare-and-swap keeps the value it
//! observed (the caller needed read-write access to the key to send it,
//! and the result is only ever returned to the same user).
//!
//! A seq at or below the window's floor that is not remembered gets
//! [`ApplyResult::DuplicateExpired`] (never re-applied).
//!
//! # Bounds
//!
//! At most [`MAX_DEDUP_CLIENTS`] sessions in all, and at most
//! [`MAX_SESSIONS_PER_USER`] per authenticated user (the anonymous user
//! `""` is bounded by the total only, as before). When a user exceeds its
//! cap, *that user's* least recently written session is forgotten; when the
//! table exceeds the total, the least recently written session of the user
//! holding the most sessions is forgotten (ties: the older session). So
//! fresh client ids from one user evict only that user's sessions while any
//! other user holds fewer. Both bounds are constants, not configuration: the
//! table is replicated state, and every replica must evict the same
//! sessions. A forgotten client's very old retries may then be applied
//! again; clients should use a fresh `client_id` per process start and give
//! up retrying a write after a bounded time.

use super::ApplyResult;
use d_engine_core::Index;
use std::collections::BTreeMap;

/// Results remembered per client.
pub const DEDUP_WINDOW_PER_CLIENT: usize = 64;
/// Sessions remembered in all.
pub const MAX_DEDUP_CLIENTS: usize = 4096;
/// Sessions remembered per authenticated user (not for the anonymous user
/// `""`, which only the total bounds).
pub const MAX_SESSIONS_PER_USER: usize = 1024;

/// Who owns a session: the authenticated user (`""` = anonymous) and the
/// client id the caller chose. Ordered by user, then client id.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey {
    pub user: String,
    pub client_id: u64,
}

impl SessionKey {
    pub fn new(user: impl Into<String>, client_id: u64) -> Self {
        SessionKey {
            user: user.into(),
            client_id,
        }
    }

    /// The anonymous session of `client_id`.
    pub fn anonymous(client_id: u64) -> Self {
        SessionKey::new(String::new(), client_id)
    }
}

/// One remembered write outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remembered {
    /// Log index of the entry that applied the write (its revision). `0`
    /// when unknown: sessions written by layout/snapshot version 1 did not
    /// record it, and a retry then reports its own entry's index.
    pub index: Index,
    /// Fingerprint of the operation that produced `result`; `0` when
    /// unknown (sessions written before fingerprints), and then not checked.
    pub fingerprint: u64,
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
    clients: BTreeMap<SessionKey, ClientSession>,
    /// Sessions per user (derived from `clients`).
    per_user: BTreeMap<String, usize>,
}

/// Counts a session just added to the table for its user (`per_user` is
/// derived from the table's keys).
fn count_new_session(per_user: &mut BTreeMap<String, usize>, user: String) {
    *per_user.entry(user).or_default() += 1;
}

/// Change to persist for one session.
pub enum SessionChange {
    Upsert(SessionKey),
    Remove(SessionKey),
}

impl DedupTable {
    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Number of sessions owned by `user`.
    pub fn sessions_of(&self, user: &str) -> usize {
        self.per_user.get(user).copied().unwrap_or(0)
    }

    /// Every session, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&SessionKey, &ClientSession)> {
        self.clients.iter()
    }

    pub fn get(&self, key: &SessionKey) -> Option<&ClientSession> {
        self.clients.get(key)
    }

    /// Inserts a session read from storage or a snapshot (no eviction: the
    /// table it came from was already bounded).
    pub fn insert(&mut self, key: SessionKey, session: ClientSession) {
        let user = key.user.clone();
        if self.clients.insert(key, session).is_none() {
            count_new_session(&mut self.per_user, user);
        }
    }

    fn remove(&mut self, key: &SessionKey) {
        if self.clients.remove(key).is_some() {
            if let Some(n) = self.per_user.get_mut(&key.user) {
                *n -= 1;
                if *n == 0 {
                    self.per_user.remove(&key.user);
                }
            }
        }
    }

    /// The stored outcome for a retry of the operation with `fingerprint`
    /// arriving in the entry at `index`, if this `(user, client, seq)` was
    /// seen: the original result and revision; [`ApplyResult::Rejected`]
    /// when the remembered operation differs from the retry; or
    /// [`ApplyResult::DuplicateExpired`] at `index` when it fell out of the
    /// window. `None`: a new write, to apply and [`record`](Self::record).
    pub fn check(
        &self,
        key: &SessionKey,
        seq: u64,
        fingerprint: u64,
        index: Index,
    ) -> Option<Remembered> {
        let s = self.clients.get(key)?;
        if let Some(r) = s.results.get(&seq) {
            if r.fingerprint != 0 && fingerprint != 0 && r.fingerprint != fingerprint {
                return Some(Remembered {
                    index,
                    fingerprint,
                    result: ApplyResult::Rejected {
                        reason: format!(
                            "write id (client_id {}, seq {seq}) was already used for a different \
                             operation; a retry must resend exactly the same operation, and a new \
                             write needs a new seq",
                            key.client_id
                        ),
                    },
                });
            }
            return Some(Remembered {
                index: if r.index == 0 { index } else { r.index },
                fingerprint: r.fingerprint,
                result: r.result.clone(),
            });
        }
        if seq <= s.floor {
            return Some(Remembered {
                index,
                fingerprint,
                result: ApplyResult::DuplicateExpired {
                    client_id: key.client_id,
                    seq,
                },
            });
        }
        None
    }

    /// Remembers a result; pushes what changed, for persistence.
    pub fn record(
        &mut self,
        key: &SessionKey,
        seq: u64,
        index: Index,
        fingerprint: u64,
        result: ApplyResult,
        changes: &mut Vec<SessionChange>,
    ) {
        // One lookup (the entry API) instead of a check and a second
        // lookup. The key clone allocates only for an authenticated user's
        // name; the change list below clones it on every write anyway.
        let s = match self.clients.entry(key.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                count_new_session(&mut self.per_user, key.user.clone());
                e.insert(ClientSession::default())
            }
        };
        s.last_index = index;
        s.results.insert(
            seq,
            Remembered {
                index,
                fingerprint,
                result,
            },
        );
        while s.results.len() > DEDUP_WINDOW_PER_CLIENT {
            let (old, _) = s.results.pop_first().expect("non-empty");
            s.floor = s.floor.max(old);
        }
        changes.push(SessionChange::Upsert(key.clone()));
        if !key.user.is_empty() && self.sessions_of(&key.user) > MAX_SESSIONS_PER_USER {
            let victim = self.oldest_of(&key.user).expect("the user has sessions");
            self.remove(&victim);
            changes.push(SessionChange::Remove(victim));
        }
        if self.clients.len() > MAX_DEDUP_CLIENTS {
            let most = self.per_user.values().copied().max().expect("non-empty");
            let victim = self
                .per_user
                .iter()
                .filter(|(_, n)| **n == most)
                .filter_map(|(u, _)| self.oldest_of(u))
                .min_by_key(|k| (self.clients[k].last_index, k.clone()))
                .expect("non-empty");
            self.remove(&victim);
            changes.push(SessionChange::Remove(victim));
        }
    }

    /// The least recently written session of `user` (ties: lowest client id).
    fn oldest_of(&self, user: &str) -> Option<SessionKey> {
        let from = SessionKey::new(user, 0);
        self.clients
            .range(from..)
            .take_while(|(k, _)| k.user == user)
            .min_by_key(|(k, s)| (s.last_index, k.client_id))
            .map(|(k, _)| k.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(c: u64) -> SessionKey {
        SessionKey::anonymous(c)
    }

    #[test]
    fn window_and_floor() {
        let mut t = DedupTable::default();
        let mut ch = Vec::new();
        for seq in 1..=(DEDUP_WINDOW_PER_CLIENT as u64 + 5) {
            assert_eq!(t.check(&anon(1), seq, 5, 100 + seq), None);
            t.record(
                &anon(1),
                seq,
                100 + seq,
                5,
                ApplyResult::Delete {
                    existed: seq % 2 == 0,
                },
                &mut ch,
            );
        }
        assert_eq!(
            t.check(&anon(1), 3, 5, 900),
            Some(Remembered {
                index: 900,
                fingerprint: 5,
                result: ApplyResult::DuplicateExpired {
                    client_id: 1,
                    seq: 3
                }
            })
        );
        assert_eq!(
            t.check(&anon(1), 10, 5, 900),
            Some(Remembered {
                index: 110,
                fingerprint: 5,
                result: ApplyResult::Delete { existed: true }
            }),
            "a retry reports the revision of the entry that applied the write"
        );
        assert_eq!(t.check(&anon(1), 1000, 5, 900), None);
        assert_eq!(t.check(&anon(2), 1, 5, 900), None);
    }

    #[test]
    fn evicts_the_oldest_client() {
        let mut t = DedupTable::default();
        let mut ch = Vec::new();
        for c in 0..=(MAX_DEDUP_CLIENTS as u64) {
            t.record(&anon(c), 1, c + 1, 1, ApplyResult::Noop, &mut ch);
        }
        assert_eq!(t.len(), MAX_DEDUP_CLIENTS);
        assert_eq!(
            t.check(&anon(0), 1, 1, 9999),
            None,
            "client 0 had the oldest write"
        );
        assert_eq!(
            t.check(&anon(1), 1, 1, 9999).map(|r| r.result),
            Some(ApplyResult::Noop)
        );
    }

    #[test]
    fn unknown_original_index_falls_back_to_the_retry() {
        let mut t = DedupTable::default();
        let mut ch = Vec::new();
        t.record(&anon(7), 1, 0, 1, ApplyResult::Noop, &mut ch);
        assert_eq!(t.check(&anon(7), 1, 1, 42).map(|r| r.index), Some(42));
    }

    #[test]
    fn sessions_are_scoped_to_the_user() {
        let mut t = DedupTable::default();
        let mut ch = Vec::new();
        let alice = SessionKey::new("alice", 7);
        let mallory = SessionKey::new("mallory", 7);
        t.record(
            &alice,
            1,
            10,
            3,
            ApplyResult::Delete { existed: true },
            &mut ch,
        );
        assert!(t.check(&alice, 1, 3, 11).is_some());
        assert_eq!(
            t.check(&mallory, 1, 3, 11),
            None,
            "another user's session of the same client id is not visible"
        );
        assert_eq!(t.check(&anon(7), 1, 3, 11), None);
    }

    #[test]
    fn a_retry_with_another_operation_is_refused() {
        let mut t = DedupTable::default();
        let mut ch = Vec::new();
        let k = SessionKey::new("alice", 7);
        t.record(&k, 1, 10, 3, ApplyResult::Delete { existed: true }, &mut ch);
        let r = t.check(&k, 1, 4, 11).unwrap();
        match r.result {
            ApplyResult::Rejected { reason } => {
                assert!(reason.contains("different operation"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Legacy sessions (fingerprint 0) are answered without the check.
        t.record(&k, 2, 12, 0, ApplyResult::Noop, &mut ch);
        assert_eq!(
            t.check(&k, 2, 99, 13).map(|r| r.result),
            Some(ApplyResult::Noop)
        );
    }

    #[test]
    fn one_user_evicts_only_its_own_sessions() {
        let mut t = DedupTable::default();
        let mut ch = Vec::new();
        let victim = SessionKey::new("alice", 1);
        t.record(&victim, 1, 1, 1, ApplyResult::Noop, &mut ch);
        let anon_victim = anon(1);
        t.record(&anon_victim, 1, 2, 1, ApplyResult::Noop, &mut ch);
        for c in 0..=(MAX_DEDUP_CLIENTS as u64) {
            t.record(
                &SessionKey::new("mallory", c),
                1,
                10 + c,
                1,
                ApplyResult::Noop,
                &mut ch,
            );
        }
        assert!(t.check(&victim, 1, 1, 99_999).is_some(), "alice kept hers");
        assert!(t.check(&anon_victim, 1, 1, 99_999).is_some());
        assert_eq!(t.sessions_of("mallory"), MAX_SESSIONS_PER_USER);
        // Mallory's most recent sessions are the ones kept.
        let last = MAX_DEDUP_CLIENTS as u64;
        assert!(t
            .check(&SessionKey::new("mallory", last), 1, 1, 99_999)
            .is_some());
        assert!(t
            .check(&SessionKey::new("mallory", 0), 1, 1, 99_999)
            .is_none());
    }

    #[test]
    fn a_full_table_evicts_from_the_largest_holder() {
        let mut t = DedupTable::default();
        let mut ch = Vec::new();
        // The anonymous user fills the table, then a named user arrives.
        for c in 0..(MAX_DEDUP_CLIENTS as u64) {
            t.record(&anon(c), 1, 10 + c, 1, ApplyResult::Noop, &mut ch);
        }
        let bob = SessionKey::new("bob", 1);
        t.record(&bob, 1, 100_000, 1, ApplyResult::Noop, &mut ch);
        assert_eq!(t.len(), MAX_DEDUP_CLIENTS);
        assert!(t.check(&bob, 1, 1, 100_001).is_some());
        assert!(t.check(&anon(0), 1, 1, 100_001).is_none());
        assert_eq!(t.sessions_of(""), MAX_DEDUP_CLIENTS - 1);
    }
}
