//! The ReadIndex watermark: how linearizable reads wait for the consensus
//! loop without a message, a waiter or a slot in the loop per read.
//!
//! The loop hands the core one ReadIndex request (a *batch*, numbered
//! 1, 2, ...) per iteration in which some reader asked for one. Before it
//! calls `RaftNode::read(b)` it stores `b` in [`ReadProgress::registered`];
//! when the core confirms batch `b` at read index `i` (a quorum answered a
//! heartbeat round that started after `read(b)`), the loop publishes
//! `confirmed = b, index = i` on a watch channel; a refused batch (the node
//! lost leadership) raises `refused`.
//!
//! A reader:
//! 1. loads `registered` = `v`;
//! 2. raises [`ReadProgress::wanted`]; the reader that raises it from
//!    `false` wakes the loop with one `Input::ReadRound` (all others ride
//!    along: at most one wake-up per loop iteration, whatever the readers);
//! 3. waits until `confirmed > v` (then waits for `applied >= index` and
//!    reads) or `refused > v` (then fails with `NotLeader`).
//!
//! Why that is linearizable: every batch `b > v` was stored after the
//! reader's load saw `v` (all four accesses are `SeqCst`), and the loop
//! calls `read(b)` after storing `b`. So `read(b)` comes after the reader
//! arrived, and after the core's commit of every write acknowledged before
//! the reader arrived (a write is acknowledged after the loop handed its
//! commit to the apply thread; had `read(b)` preceded that on the loop
//! thread, the store of `b` would have happened before the acknowledgement
//! and the reader would have seen it). The core releases `b` only once a
//! quorum of voters acknowledged a round sent after `read(b)`, at the
//! commit index of `read(b)`, and only if this leader had committed an
//! entry of its term (`docs/raft-core.md`, Reads). Indexes of later batches
//! are never lower (the commit index only grows), so the published `index`
//! covers every batch up to `confirmed`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::watch;

/// What the loop published about ReadIndex batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReadWatermark {
    /// The highest batch the core confirmed.
    pub(crate) confirmed: u64,
    /// The read index of `confirmed` (the commit index when it was
    /// registered); never lower than that of an earlier batch.
    pub(crate) index: u64,
    /// The highest batch the core refused (or `u64::MAX` once the loop
    /// stopped).
    pub(crate) refused: u64,
}

/// Shared between the consensus loop and the read path (see the module
/// docs for the protocol).
pub(crate) struct ReadProgress {
    /// The latest batch handed to the core (stored before the hand-over).
    pub(crate) registered: AtomicU64,
    /// A reader waits for a batch not registered yet.
    pub(crate) wanted: AtomicBool,
    tx: watch::Sender<ReadWatermark>,
}

impl Default for ReadProgress {
    fn default() -> Self {
        ReadProgress {
            registered: AtomicU64::new(0),
            wanted: AtomicBool::new(false),
            tx: watch::Sender::new(ReadWatermark::default()),
        }
    }
}

impl ReadProgress {
    /// Reader, step 1: the batch every later one must exceed.
    pub(crate) fn arrive(&self) -> u64 {
        self.registered.load(Ordering::SeqCst)
    }

    /// Reader, step 2: asks for a new batch; true if the caller must wake
    /// the loop (it raised the flag).
    pub(crate) fn want(&self) -> bool {
        !self.wanted.swap(true, Ordering::SeqCst)
    }

    /// Reader, step 3: a receiver to wait on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<ReadWatermark> {
        self.tx.subscribe()
    }

    /// Loop: if a reader asked, takes the request and registers batch `id`
    /// (the caller then hands it to the core). False if nobody asked.
    pub(crate) fn take_wanted(&self, id: u64) -> bool {
        if !self.wanted.swap(false, Ordering::SeqCst) {
            return false;
        }
        self.registered.store(id, Ordering::SeqCst);
        true
    }

    /// Loop: the core answered batches up to these (0 = none of that kind).
    /// Wakes the waiting readers once, only if something changed.
    pub(crate) fn publish(&self, confirmed: Option<(u64, u64)>, refused: u64) {
        self.tx.send_if_modified(|w| {
            let mut changed = false;
            if let Some((id, index)) = confirmed {
                if id > w.confirmed {
                    w.confirmed = id;
                    w.index = w.index.max(index);
                    changed = true;
                }
            }
            if refused > w.refused {
                w.refused = refused;
                changed = true;
            }
            changed
        });
    }
}

/// The loop's copy of what it last published on [`ReadProgress`].
#[derive(Debug, Default)]
pub(crate) struct ReadBatches {
    pub(crate) confirmed: u64,
    pub(crate) refused: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_reader_wakes_the_loop_and_a_batch_is_registered_once() {
        let p = ReadProgress::default();
        assert!(!p.take_wanted(1), "nobody asked");
        let v = p.arrive();
        assert!(p.want());
        assert!(!p.want(), "the second reader rides along");
        assert!(p.take_wanted(1));
        assert!(p.arrive() > v);
        assert!(!p.take_wanted(2), "the request was taken");
    }

    #[test]
    fn the_watermark_only_moves_forward_and_wakes_on_change() {
        let p = ReadProgress::default();
        let mut rx = p.subscribe();
        p.publish(Some((3, 10)), 0);
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            *rx.borrow_and_update(),
            ReadWatermark {
                confirmed: 3,
                index: 10,
                refused: 0
            }
        );
        p.publish(Some((2, 5)), 0);
        assert!(!rx.has_changed().unwrap(), "an older batch changes nothing");
        p.publish(None, 4);
        assert_eq!(rx.borrow_and_update().refused, 4);
        assert_eq!(rx.borrow().index, 10);
    }
}
