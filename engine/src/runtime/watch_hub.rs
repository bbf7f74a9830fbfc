//! The watch hub: fans applied key changes out to watchers.
//!
//! - Events are published by the apply thread after each applied batch, so
//!   every watcher sees changes after commit, in log (revision) order.
//! - A bounded in-memory history of the latest `watch.history` events lets a
//!   watcher start from an earlier revision; asking for a revision older than
//!   the history yields `Error::Compacted`.
//! - Every watcher has a bounded queue of `watch.buffer` events (plus one slot
//!   reserved for the final error). A watcher that falls that far behind is
//!   cancelled with a final `Err` naming the reason, never silently skipped.
//! - A watcher whose receiver was dropped is removed on the next publish.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use d_engine_client::{Error, EventType, KeyValue, Result, WatchEvent};
use d_engine_storage::sm::{WatchEvent as SmEvent, WatchEventKind};
use tokio::sync::mpsc;

use super::handle::WatchStream;

struct Watcher {
    key: Bytes,
    prefix: bool,
    /// Events below this revision are never delivered (the watch asked to
    /// start later; on a lagging node they may still be published after
    /// registration).
    min_revision: u64,
    tx: mpsc::Sender<Result<WatchEvent>>,
}

impl Watcher {
    fn wants(&self, ev: &SmEvent) -> bool {
        ev.revision >= self.min_revision && self.matches(&ev.key)
    }

    fn matches(&self, key: &[u8]) -> bool {
        if self.prefix {
            key.starts_with(&self.key)
        } else {
            key == &self.key[..]
        }
    }

    /// Delivers `ev`; false if the watcher is gone (dropped or cancelled).
    fn deliver(&self, ev: &SmEvent, buffer: usize) -> bool {
        // One slot stays free for the cancellation notice.
        if self.tx.capacity() <= 1 {
            let _ = self.tx.try_send(Err(Error::Overloaded(format!(
                "watch cancelled: the watcher fell {buffer} events behind (watch.buffer); \
                 re-watch from revision {} to resume",
                ev.revision
            ))));
            return false;
        }
        self.tx.try_send(Ok(to_client_event(ev))).is_ok()
    }
}

/// Converts a state-machine event to the client type.
pub(crate) fn to_client_event(ev: &SmEvent) -> WatchEvent {
    match ev.kind {
        WatchEventKind::Put => WatchEvent {
            kind: EventType::Put,
            kv: ev
                .kv
                .as_ref()
                .map(super::shared::to_client_kv)
                .unwrap_or_else(|| deleted_kv(&ev.key, ev.revision)),
        },
        WatchEventKind::Delete => WatchEvent {
            kind: EventType::Delete,
            kv: deleted_kv(&ev.key, ev.revision),
        },
    }
}

fn deleted_kv(key: &Bytes, revision: u64) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: Vec::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
        expires_at_ms: 0,
    }
}

struct Inner {
    watchers: Vec<Watcher>,
    history: VecDeque<SmEvent>,
    /// Every event with revision >= `floor` is in `history` (or not yet
    /// applied).
    floor: u64,
}

/// See the module docs.
pub(crate) struct WatchHub {
    inner: Mutex<Inner>,
    buffer: usize,
    history_cap: usize,
    max_watchers: usize,
}

impl WatchHub {
    /// `applied`: the state machine's applied index at start (history begins after it).
    pub(crate) fn new(buffer: usize, history: usize, max_watchers: usize, applied: u64) -> Self {
        WatchHub {
            inner: Mutex::new(Inner {
                watchers: Vec::new(),
                history: VecDeque::with_capacity(history.min(4096)),
                floor: applied + 1,
            }),
            buffer,
            history_cap: history,
            max_watchers,
        }
    }

    /// Registers a watcher. `start_revision` 0 = only future events.
    pub(crate) fn watch(
        &self,
        key: Bytes,
        prefix: bool,
        start_revision: u64,
    ) -> Result<WatchStream> {
        let mut g = self.inner.lock().expect("watch hub poisoned");
        g.watchers.retain(|w| !w.tx.is_closed());
        if g.watchers.len() >= self.max_watchers {
            return Err(Error::Overloaded(format!(
                "{} watchers are open, the limit is watch.max_watchers = {}",
                g.watchers.len(),
                self.max_watchers
            )));
        }
        let (tx, rx) = mpsc::channel(self.buffer + 1);
        let w = Watcher {
            key,
            prefix,
            min_revision: start_revision,
            tx,
        };
        if start_revision > 0 {
            if start_revision < g.floor {
                return Err(Error::Compacted(format!(
                    "start_revision {start_revision} is older than the watch history, which \
                     begins at revision {} on this node; read the current state and watch \
                     from revision 0 (or a later revision)",
                    g.floor
                )));
            }
            let replay: Vec<&SmEvent> = g.history.iter().filter(|e| w.wants(e)).collect();
            if replay.len() > self.buffer {
                return Err(Error::Overloaded(format!(
                    "{} events since revision {start_revision} exceed watch.buffer = {}; \
                     watch from a later revision",
                    replay.len(),
                    self.buffer
                )));
            }
            for e in replay {
                let _ = w.tx.try_send(Ok(to_client_event(e)));
            }
        }
        g.watchers.push(w);
        Ok(rx)
    }

    /// Publishes the events of one applied batch (in log order); they move
    /// into the history.
    pub(crate) fn publish(&self, events: Vec<SmEvent>) {
        if events.is_empty() {
            return;
        }
        let mut g = self.inner.lock().expect("watch hub poisoned");
        if !g.watchers.is_empty() {
            let buffer = self.buffer;
            g.watchers.retain(|w| {
                for ev in &events {
                    if w.wants(ev) && !w.deliver(ev, buffer) {
                        return false;
                    }
                }
                !w.tx.is_closed()
            });
        }
        if self.history_cap == 0 {
            g.floor = events.last().map(|e| e.revision + 1).unwrap_or(g.floor);
            return;
        }
        for ev in events {
            if g.history.len() == self.history_cap {
                if let Some(old) = g.history.pop_front() {
                    // Events of one revision leave together only if the cap
                    // allows; the floor moves past the evicted revision.
                    g.floor = g.floor.max(old.revision + 1);
                }
            }
            g.history.push_back(ev);
        }
    }

    /// The state was replaced by a snapshot at `index`: history before it is gone.
    pub(crate) fn reset(&self, index: u64) {
        let mut g = self.inner.lock().expect("watch hub poisoned");
        g.history.clear();
        g.floor = index + 1;
        for w in g.watchers.drain(..) {
            let _ = w.tx.try_send(Err(Error::Compacted(format!(
                "watch cancelled: this node installed a snapshot at revision {index}; \
                 re-read and watch again"
            ))));
        }
    }

    /// Ends every watch with `reason` (shutdown).
    pub(crate) fn close_all(&self, reason: &str) {
        let mut g = self.inner.lock().expect("watch hub poisoned");
        for w in g.watchers.drain(..) {
            let _ = w.tx.try_send(Err(Error::ShuttingDown(format!(
                "watch cancelled: {reason}"
            ))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_engine_storage::sm::KeyValue as SmKv;

    fn put(key: &str, rev: u64) -> SmEvent {
        SmEvent {
            kind: WatchEventKind::Put,
            key: Bytes::copy_from_slice(key.as_bytes()),
            revision: rev,
            kv: Some(SmKv {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from_static(b"v"),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                expires_at_ms: None,
            }),
            prev: None,
        }
    }

    #[test]
    fn key_and_prefix_matching_in_order() {
        let hub = WatchHub::new(16, 100, 10, 0);
        let mut k = hub.watch(Bytes::from_static(b"a"), false, 0).unwrap();
        let mut p = hub.watch(Bytes::from_static(b"a"), true, 0).unwrap();
        hub.publish(vec![put("a", 1), put("ab", 2), put("b", 3), put("a", 4)]);
        let revs = |rx: &mut WatchStream| {
            let mut v = vec![];
            while let Ok(e) = rx.try_recv() {
                v.push(e.unwrap().kv.mod_revision);
            }
            v
        };
        assert_eq!(revs(&mut k), vec![1, 4]);
        assert_eq!(revs(&mut p), vec![1, 2, 4]);
    }

    #[test]
    fn slow_watcher_is_cancelled_with_reason() {
        let hub = WatchHub::new(2, 100, 10, 0);
        let mut w = hub.watch(Bytes::from_static(b"k"), false, 0).unwrap();
        hub.publish(vec![put("k", 1), put("k", 2), put("k", 3), put("k", 4)]);
        assert!(w.try_recv().unwrap().is_ok());
        assert!(w.try_recv().unwrap().is_ok());
        let e = w.try_recv().unwrap().unwrap_err();
        assert!(e.to_string().contains("watch.buffer"), "{e}");
        assert!(w.try_recv().is_err()); // closed after the notice
    }

    #[test]
    fn start_revision_replays_history_or_reports_compaction() {
        let hub = WatchHub::new(16, 3, 10, 0);
        hub.publish(vec![put("k", 1), put("k", 2), put("k", 3), put("k", 4)]);
        let mut w = hub.watch(Bytes::from_static(b"k"), false, 3).unwrap();
        assert_eq!(w.try_recv().unwrap().unwrap().kv.mod_revision, 3);
        assert_eq!(w.try_recv().unwrap().unwrap().kv.mod_revision, 4);
        let e = hub.watch(Bytes::from_static(b"k"), false, 1).unwrap_err();
        assert!(matches!(e, Error::Compacted(_)), "{e}");
    }

    #[test]
    fn start_revision_ahead_of_applied_skips_older_events() {
        // A lagging node: the watch starts at 5 but the node has applied 2.
        let hub = WatchHub::new(16, 100, 10, 0);
        hub.publish(vec![put("k", 1), put("k", 2)]);
        let mut w = hub.watch(Bytes::from_static(b"k"), false, 5).unwrap();
        hub.publish(vec![put("k", 3), put("k", 4), put("k", 5), put("k", 6)]);
        assert_eq!(w.try_recv().unwrap().unwrap().kv.mod_revision, 5);
        assert_eq!(w.try_recv().unwrap().unwrap().kv.mod_revision, 6);
        assert!(w.try_recv().is_err());
    }

    #[test]
    fn watcher_limit() {
        let hub = WatchHub::new(4, 0, 1, 0);
        let _a = hub.watch(Bytes::from_static(b"k"), false, 0).unwrap();
        assert!(matches!(
            hub.watch(Bytes::from_static(b"k"), false, 0),
            Err(Error::Overloaded(_))
        ));
    }
}
