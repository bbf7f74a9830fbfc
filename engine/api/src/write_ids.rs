//! Write identities for exactly-once retries, handed out by the Rust
//! client and by an embedded node forwarding writes to its leader.
//!
//! Every write carries a `WriteId { client_id, seq }`; all retries of one
//! logical write reuse the same pair, so the server applies it once and
//! answers the retry with the original result.
//!
//! The server remembers the last [`SERVER_DEDUP_WINDOW`] results per
//! `client_id` (by seq) and
//! treats a seq below that window as an expired duplicate that is never
//! applied. A seq must therefore reach the server before 64 larger seqs of
//! the same client_id have been applied. Each session enforces this with a
//! sliding window: seq `n` is handed out only while every seq
//! `<= n - WRITE_WINDOW` has finished (success, error or give-up), so at
//! most `WRITE_WINDOW - 1 < 64` larger seqs can overtake an in-flight one.
//! A client with several sessions (distinct random client ids) can have
//! `sessions * WRITE_WINDOW` writes in flight.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use d_engine_proto::v1::WriteId;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Results the server remembers per client id (the storage crate's
/// `DEDUP_WINDOW_PER_CLIENT`; the node's tests check they agree).
pub const SERVER_DEDUP_WINDOW: u64 = 64;

/// Writes one session may have in flight (half the server's window).
pub const WRITE_WINDOW: u64 = SERVER_DEDUP_WINDOW / 2;

struct Session {
    client_id: u64,
    state: Mutex<SessionState>,
}

struct SessionState {
    /// Next seq to hand out; starts at 1 (0 is never used).
    next_seq: u64,
    /// Seqs handed out and not yet finished.
    outstanding: BTreeSet<u64>,
}

/// The write sessions of one client (or one node's forwarder).
pub struct WriteSessions {
    sessions: Vec<Session>,
    rr: AtomicUsize,
    freed: Notify,
    /// What to do when every window is full, for the timeout message.
    full_hint: &'static str,
}

/// One in-flight write's identity; finishing (dropping) it frees its slot.
pub struct WriteTicket<'a> {
    owner: &'a WriteSessions,
    index: usize,
    id: WriteId,
}

impl WriteTicket<'_> {
    pub fn id(&self) -> WriteId {
        self.id
    }
}

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        let s = &self.owner.sessions[self.index];
        s.state
            .lock()
            .expect("session lock")
            .outstanding
            .remove(&self.id.seq);
        self.owner.freed.notify_waiters();
    }
}

/// A random non-zero client id from the OS RNG (0 disables deduplication).
fn random_client_id() -> Result<u64> {
    for _ in 0..8 {
        let id = getrandom::u64()
            .map_err(|e| Error::Internal(format!("OS random number generator failed: {e}")))?;
        if id != 0 {
            return Ok(id);
        }
    }
    Err(Error::Internal(
        "OS random number generator returned only zeros".into(),
    ))
}

impl WriteSessions {
    /// `count` sessions (at least one), each with a fresh random client
    /// id. `full_hint` ends the timeout message when every window stays
    /// full (e.g. "raise write_sessions or use more clients").
    pub fn new(count: usize, full_hint: &'static str) -> Result<Self> {
        let mut sessions: Vec<Session> = Vec::with_capacity(count);
        while sessions.len() < count.max(1) {
            let client_id = random_client_id()?;
            if sessions.iter().any(|s| s.client_id == client_id) {
                continue;
            }
            sessions.push(Session {
                client_id,
                state: Mutex::new(SessionState {
                    next_seq: 1,
                    outstanding: BTreeSet::new(),
                }),
            });
        }
        Ok(WriteSessions {
            sessions,
            rr: AtomicUsize::new(0),
            freed: Notify::new(),
            full_hint,
        })
    }

    pub fn client_ids(&self) -> Vec<u64> {
        self.sessions.iter().map(|s| s.client_id).collect()
    }

    fn try_acquire(&self) -> Option<WriteTicket<'_>> {
        let n = self.sessions.len();
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let index = (start + k) % n;
            let s = &self.sessions[index];
            let mut st = s.state.lock().expect("session lock");
            let lowest = st.outstanding.first().copied().unwrap_or(st.next_seq);
            if st.next_seq < lowest + WRITE_WINDOW {
                let seq = st.next_seq;
                st.next_seq += 1;
                st.outstanding.insert(seq);
                return Some(WriteTicket {
                    owner: self,
                    index,
                    id: WriteId {
                        client_id: s.client_id,
                        seq,
                    },
                });
            }
        }
        None
    }

    /// A write identity, waiting (until `deadline`) while every session's
    /// window is full.
    pub async fn acquire(&self, deadline: Instant) -> Result<WriteTicket<'_>> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(t) = self.try_acquire() {
                return Ok(t);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(Error::Timeout(format!(
                    "no write slot freed before the request timeout: {} writes already in \
                     flight ({} sessions x {WRITE_WINDOW}); {}",
                    self.sessions.len() as u64 * WRITE_WINDOW,
                    self.sessions.len(),
                    self.full_hint
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn ids_are_distinct_nonzero_and_seqs_increase() {
        let s = WriteSessions::new(3, "hint").unwrap();
        let ids = s.client_ids();
        assert_eq!(ids.len(), 3);
        assert!(ids.iter().all(|i| *i != 0));
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        let far = Instant::now() + Duration::from_secs(5);
        let mut last = std::collections::HashMap::new();
        for _ in 0..30 {
            let t = s.acquire(far).await.unwrap();
            let prev = last.insert(t.id().client_id, t.id().seq).unwrap_or(0);
            assert_eq!(t.id().seq, prev + 1, "seqs start at 1 and increase by 1");
        }
        // Two fresh clients never share an id (64 random bits).
        assert_ne!(
            WriteSessions::new(1, "hint").unwrap().client_ids(),
            ids[..1]
        );
    }

    #[tokio::test]
    async fn window_blocks_until_the_oldest_write_finishes() {
        let s = WriteSessions::new(1, "hint").unwrap();
        let far = Instant::now() + Duration::from_secs(5);
        let mut held = Vec::new();
        for _ in 0..WRITE_WINDOW {
            held.push(s.acquire(far).await.unwrap());
        }
        assert_eq!(held.first().unwrap().id().seq, 1);
        assert!(
            s.try_acquire().is_none(),
            "window of {WRITE_WINDOW} is full"
        );
        // Finishing a newer write does not open the window: seq 1 is still out.
        let last = held.pop().unwrap();
        drop(last);
        assert!(s.try_acquire().is_none());
        // A waiter times out with a clear message.
        let soon = Instant::now() + Duration::from_millis(30);
        match s.acquire(soon).await {
            Err(Error::Timeout(m)) => assert!(m.contains("hint"), "{m}"),
            other => panic!("{:?}", other.map(|t| t.id())),
        }
        // Finishing seq 1 wakes a waiter, who gets seq 33.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let first = held.remove(0);
        let waiter = async {
            let t = s.acquire(far).await.unwrap();
            tx.send(t.id().seq).unwrap();
        };
        let release = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(first);
        };
        tokio::join!(waiter, release);
        assert_eq!(rx.await.unwrap(), WRITE_WINDOW + 1);
    }

    #[tokio::test]
    async fn sessions_multiply_the_window() {
        let s = WriteSessions::new(2, "hint").unwrap();
        let far = Instant::now() + Duration::from_secs(5);
        let mut held = Vec::new();
        for _ in 0..2 * WRITE_WINDOW {
            held.push(s.acquire(far).await.unwrap());
        }
        assert!(s.try_acquire().is_none());
        let per_client = held
            .iter()
            .filter(|t| t.id().client_id == s.client_ids()[0])
            .count();
        assert_eq!(per_client as u64, WRITE_WINDOW);
    }
}
