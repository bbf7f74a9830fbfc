//! What a leader knows about one follower's (or learner's) log.

use std::collections::VecDeque;

use crate::types::Index;

/// How the leader currently replicates to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// Match unknown: send one AppendEntries at a time and wait for the answer.
    Probe,
    /// Match known: stream AppendEntries optimistically, up to the in-flight window.
    Replicate,
    /// The peer needs the snapshot at `index`; the host is streaming it since tick `since`.
    Snapshot { index: Index, since: u64 },
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Highest index known to be replicated AND durable on the peer.
    pub(crate) match_index: Index,
    /// Next index to send.
    pub(crate) next_index: Index,
    pub(crate) state: ProgressState,
    /// Probe mode: a probe is outstanding; wait for any answer before the next one.
    pub(crate) probe_sent: bool,
    /// Replicate mode: last index of each AppendEntries in flight, oldest first.
    pub(crate) inflight: VecDeque<Index>,
    /// Heard from the peer since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// Highest heartbeat sequence the peer echoed in this term.
    pub(crate) acked_seq: u64,
    /// Tick of the last progress (match advanced, or window went from empty to busy).
    pub(crate) last_progress_tick: u64,
    /// Do not send to the peer before this tick (after a failed snapshot send).
    pub(crate) retry_at: u64,
    /// The peer cannot start from index 1 (it does not know the bootstrap
    /// membership): it must be sent a snapshot.
    pub(crate) needs_snapshot: bool,
}

impl Progress {
    pub(crate) fn new(next_index: Index, now: u64) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            acked_seq: 0,
            last_progress_tick: now,
            retry_at: 0,
            needs_snapshot: false,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }

    pub(crate) fn become_replicate(&mut self, now: u64) {
        self.state = ProgressState::Replicate;
        self.next_index = self.next_index.max(self.match_index + 1);
        self.probe_sent = false;
        self.inflight.clear();
        self.last_progress_tick = now;
    }

    pub(crate) fn inflight_full(&self, max: usize) -> bool {
        self.inflight.len() >= max
    }

    /// The peer acknowledged everything up to `index`: free those window slots.
    pub(crate) fn free_inflight_upto(&mut self, index: Index) {
        while self.inflight.front().is_some_and(|&i| i <= index) {
            self.inflight.pop_front();
        }
    }
}
