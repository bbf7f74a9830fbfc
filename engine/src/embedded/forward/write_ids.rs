//! Write ids of forwarded writes (see [`WriteIds`]).

use std::collections::BTreeSet;
use std::sync::Mutex;

use d_engine_proto::v1 as pb;
use d_engine_storage::sm::dedup::DEDUP_WINDOW_PER_CLIENT;
use tokio::sync::Notify;
use tokio::time::Instant;

use d_engine_api::{Error, Result};

/// Client ids of one engine's forwarded writes.
const WRITE_SESSIONS: usize = 4;
/// Writes in flight per client id: half the leader's dedup window.
const WRITE_WINDOW: u64 = DEDUP_WINDOW_PER_CLIENT as u64 / 2;

/// Write ids of forwarded writes.
///
/// The leader remembers the results of the last `DEDUP_WINDOW_PER_CLIENT`
/// seqs of a client id and never applies a seq below them, so a seq must
/// reach the leader before that many larger seqs of its client id are
/// applied. A seq is therefore handed out only while every seq at least
/// [`WRITE_WINDOW`] (half the window) below it has finished; when all
/// [`WRITE_SESSIONS`] client ids are full, a write waits within its
/// deadline. Client ids are random (fresh per engine start), never 0.
#[derive(Default)]
pub(super) struct WriteIds {
    /// Created on the first forwarded write.
    sessions: Mutex<Vec<Session>>,
    freed: Notify,
}

struct Session {
    client_id: u64,
    /// Next seq to hand out (from 1).
    next_seq: u64,
    /// Seqs handed out and not finished.
    in_flight: BTreeSet<u64>,
}

/// One write's id; dropping it (the write finished) frees its seq.
pub(super) struct WriteSlot<'a> {
    ids: &'a WriteIds,
    session: usize,
    pub(super) id: pb::WriteId,
}

impl Drop for WriteSlot<'_> {
    fn drop(&mut self) {
        let mut sessions = self.ids.sessions.lock().expect("poisoned");
        sessions[self.session].in_flight.remove(&self.id.seq);
        drop(sessions);
        self.ids.freed.notify_waiters();
    }
}

impl WriteIds {
    fn try_take(&self) -> Result<Option<WriteSlot<'_>>> {
        let mut sessions = self.sessions.lock().expect("poisoned");
        while sessions.len() < WRITE_SESSIONS {
            let client_id = getrandom::u64()
                .map_err(|e| Error::Internal(format!("OS random number generator failed: {e}")))?;
            if client_id != 0 && sessions.iter().all(|s| s.client_id != client_id) {
                sessions.push(Session {
                    client_id,
                    next_seq: 1,
                    in_flight: BTreeSet::new(),
                });
            }
        }
        for (i, s) in sessions.iter_mut().enumerate() {
            let oldest = s.in_flight.first().copied().unwrap_or(s.next_seq);
            if s.next_seq < oldest + WRITE_WINDOW {
                let seq = s.next_seq;
                s.next_seq += 1;
                s.in_flight.insert(seq);
                return Ok(Some(WriteSlot {
                    ids: self,
                    session: i,
                    id: pb::WriteId {
                        client_id: s.client_id,
                        seq,
                    },
                }));
            }
        }
        Ok(None)
    }

    /// A write id, waiting (until `deadline`) while every client id's
    /// window is full.
    pub(super) async fn acquire(&self, deadline: Instant) -> Result<WriteSlot<'_>> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_take()? {
                return Ok(slot);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(Error::Timeout(format!(
                    "no forwarded write finished before the request timeout: {} writes are \
                     already in flight to the leader",
                    WRITE_SESSIONS as u64 * WRITE_WINDOW
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
    async fn write_ids_are_nonzero_and_a_full_window_waits_for_the_oldest() {
        let ids = WriteIds::default();
        let far = Instant::now() + Duration::from_secs(5);
        let mut held = Vec::new();
        for _ in 0..WRITE_SESSIONS as u64 * WRITE_WINDOW {
            held.push(ids.acquire(far).await.unwrap());
        }
        let clients: BTreeSet<u64> = held.iter().map(|s| s.id.client_id).collect();
        assert_eq!(clients.len(), WRITE_SESSIONS);
        assert!(!clients.contains(&0));
        assert!(ids.try_take().unwrap().is_none(), "every window is full");
        // The first client id's seqs 1..=WRITE_WINDOW come first. Finishing
        // its newest does not open its window: seq 1 is still in flight.
        let (client, newest) = (held[0].id.client_id, WRITE_WINDOW as usize - 1);
        assert_eq!((held[0].id.seq, held[newest].id.seq), (1, WRITE_WINDOW));
        held.remove(newest);
        assert!(ids.try_take().unwrap().is_none());
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(matches!(ids.acquire(soon).await, Err(Error::Timeout(_))));
        // Finishing seq 1 lets the next seq of that client id out.
        held.remove(0);
        let next = ids.acquire(far).await.unwrap();
        assert_eq!((next.id.client_id, next.id.seq), (client, WRITE_WINDOW + 1));
    }
}
