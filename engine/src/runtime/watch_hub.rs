//! The watch hub: fans applied key changes out to watchers.
//!
//! - Events are published by the apply thread after each applied batch, so
//!   every watcher sees changes after commit, in log (revision) order.
//! - **One copy per event.** On publish each event's key and value are
//!   copied once into buffers of exactly their size (an applied command's
//!   bytes may be a slice of a much larger replication or WAL buffer, which
//!   must not stay alive with the event). That copy is shared, by reference
//!   count, by the history and by every watcher it goes to, up to the gRPC
//!   response: no watcher gets a copy of its own. (The embedded watch API
//!   hands out `Vec<u8>` values, so an embedded watcher's consumer gets one
//!   copy as it receives each event.)
//! - A bounded in-memory history of the latest events, at most
//!   `watch.history` events and `watch.history_bytes` bytes, lets a watcher
//!   start from an earlier revision; asking for a revision older than the
//!   history yields `Error::Compacted`.
//! - Every watcher has a queue bounded at `watch.buffer` events (plus one
//!   slot reserved for the final error) **and** at `watch.max_buffer_bytes`
//!   bytes: an event stays charged to the watcher until its consumer drops
//!   the [`Delivery`] (for gRPC, when the transport takes the message). A
//!   watcher whose next event would pass either bound is cancelled with a
//!   final `Err(Overloaded)` naming the limit, never silently skipped.
//! - A watcher whose receiver was dropped is removed on the next publish.
//!
//! (Over 500 lines only because of its unit tests, which follow the code.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use d_engine_api::{Error, EventType, KeyValue, Result, WatchEvent};
use d_engine_storage::sm::{WatchEvent as SmEvent, WatchEventKind};
use tokio::sync::mpsc;

use super::types::{to_client_kv, WatchStream};
use crate::config::WatchConfig;

/// Bytes charged per event beyond its key and value (the event's fixed
/// fields and its share of the queue), so that many empty values still
/// count.
pub(crate) const EVENT_OVERHEAD: usize = 64;

/// Bytes an event holds in memory (keys and value plus [`EVENT_OVERHEAD`]).
/// The key is counted once: after [`own`] the event's key and its
/// key-value's key are one buffer.
pub(crate) fn event_bytes(ev: &SmEvent) -> usize {
    ev.key.len() + ev.kv.as_ref().map_or(0, |kv| kv.value.len()) + EVENT_OVERHEAD
}

/// `ev` with its key and value in buffers of exactly their size, the key
/// shared by the event and its key-value.
fn own(mut ev: SmEvent) -> SmEvent {
    ev.key = Bytes::copy_from_slice(&ev.key);
    if let Some(kv) = ev.kv.as_mut() {
        kv.key = ev.key.clone();
        kv.value = Bytes::copy_from_slice(&kv.value);
    }
    ev
}

/// One event handed to one watcher. The event's bytes are shared with the
/// history and every other watcher; they stay charged to this watcher's
/// `watch.max_buffer_bytes` until the `Delivery` is dropped.
pub(crate) struct Delivery {
    event: SmEvent,
    bytes: usize,
    queued: Arc<Queued>,
}

/// What a watcher's consumer has not received yet: delivered events not
/// yet dropped, and their bytes.
#[derive(Default)]
struct Queued {
    events: AtomicUsize,
    bytes: AtomicUsize,
}

impl Queued {
    fn charge(self: &Arc<Self>, event: &SmEvent, bytes: usize) -> Delivery {
        self.events.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        Delivery {
            event: event.clone(),
            bytes,
            queued: self.clone(),
        }
    }
}

impl Delivery {
    /// The event (its key and value are shared bytes).
    pub(crate) fn event(&self) -> &SmEvent {
        &self.event
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.queued.events.fetch_sub(1, Ordering::AcqRel);
        self.queued.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("revision", &self.event.revision)
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// The node side of a watch: events as shared [`Delivery`]s, ending with a
/// final `Err` when the node cancels the watch. Dropping it cancels the
/// watch.
pub(crate) type HubStream = mpsc::Receiver<Result<Delivery>>;

struct Watcher {
    key: Bytes,
    prefix: bool,
    /// Events below this revision are never delivered (the watch asked to
    /// start later; on a lagging node they may still be published after
    /// registration).
    min_revision: u64,
    tx: mpsc::Sender<Result<Delivery>>,
    /// Events delivered and not yet dropped by the consumer.
    queued: Arc<Queued>,
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

    /// Delivers `ev` (of `bytes` bytes); false if the watcher is gone
    /// (dropped, or cancelled now because it fell too far behind).
    fn deliver(&self, ev: &SmEvent, bytes: usize, limits: &Limits) -> bool {
        // The channel holds `buffer` events plus the cancellation notice;
        // events the consumer holds but has not dropped count too.
        if self.queued.events.load(Ordering::Acquire) >= limits.buffer {
            let _ = self.tx.try_send(Err(Error::Overloaded(format!(
                "watch cancelled: the watcher fell {} events behind (watch.buffer); \
                 re-watch from revision {} to resume",
                limits.buffer, ev.revision
            ))));
            return false;
        }
        let queued = self.queued.bytes.load(Ordering::Acquire);
        if queued > 0 && queued + bytes > limits.max_buffer_bytes {
            let _ = self.tx.try_send(Err(Error::Overloaded(format!(
                "watch cancelled: the watcher has {queued} bytes of events it has not \
                 received, and the next one ({bytes} bytes) would pass watch.max_buffer_bytes \
                 = {}; read events faster, then re-watch from revision {} to resume",
                limits.max_buffer_bytes, ev.revision
            ))));
            return false;
        }
        let d = self.queued.charge(ev, bytes);
        // On failure the delivery is dropped, which uncharges it.
        self.tx.try_send(Ok(d)).is_ok()
    }
}

/// Converts a state-machine event to the client type (copies the key and
/// value into the client's `Vec`s).
pub(crate) fn to_client_event(ev: &SmEvent) -> WatchEvent {
    match ev.kind {
        WatchEventKind::Put => WatchEvent {
            kind: EventType::Put,
            kv: ev
                .kv
                .as_ref()
                .map(to_client_kv)
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
        lease: 0,
    }
}

/// The bounds of [`WatchConfig`] the hub enforces.
struct Limits {
    buffer: usize,
    max_buffer_bytes: usize,
    history: usize,
    history_bytes: u64,
    max_watchers: usize,
}

struct Inner {
    watchers: Vec<Watcher>,
    /// Events with their [`event_bytes`].
    history: VecDeque<(SmEvent, usize)>,
    /// Sum of the history's event bytes.
    history_bytes: u64,
    /// Every event with revision >= `floor` is in `history` (or not yet
    /// applied).
    floor: u64,
}

/// See the module docs.
pub(crate) struct WatchHub {
    inner: Mutex<Inner>,
    limits: Limits,
    /// Where embedded watches run their forwarding task (the runtime the
    /// node was started on), so `watch` works from any thread.
    rt: Option<tokio::runtime::Handle>,
}

impl WatchHub {
    /// `applied`: the state machine's applied index at start (history
    /// begins after it). Captures the current tokio runtime, if any, for
    /// [`WatchHub::watch_client`].
    pub(crate) fn new(config: &WatchConfig, applied: u64) -> Self {
        WatchHub {
            inner: Mutex::new(Inner {
                watchers: Vec::new(),
                history: VecDeque::with_capacity(config.history.min(4096)),
                history_bytes: 0,
                floor: applied + 1,
            }),
            limits: Limits {
                buffer: config.buffer,
                max_buffer_bytes: config.max_buffer_bytes,
                history: config.history,
                history_bytes: config.history_bytes,
                max_watchers: config.max_watchers,
            },
            rt: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Registers a watcher. `start_revision` 0 = only future events.
    /// Events arrive as shared [`Delivery`]s.
    pub(crate) fn watch(&self, key: Bytes, prefix: bool, start_revision: u64) -> Result<HubStream> {
        let l = &self.limits;
        let mut g = self.inner.lock().expect("watch hub poisoned");
        g.watchers.retain(|w| !w.tx.is_closed());
        if g.watchers.len() >= l.max_watchers {
            return Err(Error::Overloaded(format!(
                "{} watchers are open, the limit is watch.max_watchers = {}",
                g.watchers.len(),
                l.max_watchers
            )));
        }
        let (tx, rx) = mpsc::channel(l.buffer + 1);
        let w = Watcher {
            key,
            prefix,
            min_revision: start_revision,
            tx,
            queued: Arc::new(Queued::default()),
        };
        if start_revision > 0 {
            if start_revision < g.floor {
                return Err(Error::Compacted(format!(
                    "start_revision {start_revision} is older than the watch history, which \
                     begins at revision {} on this node (watch.history, watch.history_bytes); \
                     read the current state and watch from revision 0 (or a later revision)",
                    g.floor
                )));
            }
            let replay: Vec<&(SmEvent, usize)> =
                g.history.iter().filter(|(e, _)| w.wants(e)).collect();
            if replay.len() > l.buffer {
                return Err(Error::Overloaded(format!(
                    "{} events since revision {start_revision} exceed watch.buffer = {}; \
                     watch from a later revision",
                    replay.len(),
                    l.buffer
                )));
            }
            // A replay shares the history's bytes (it costs no memory of
            // its own) and is not refused for its size; it is charged like
            // live events, so a consumer that does not drain it is
            // cancelled at the next event past watch.max_buffer_bytes.
            for (e, n) in replay {
                let _ = w.tx.try_send(Ok(w.queued.charge(e, *n)));
            }
        }
        g.watchers.push(w);
        Ok(rx)
    }

    /// Like [`WatchHub::watch`], for the embedded API: a task on the node's
    /// runtime converts each event to the client type for the consumer.
    /// The consumer's channel holds one event, which stays charged to the
    /// watcher (`watch.buffer`, `watch.max_buffer_bytes`) until the consumer
    /// takes it, so the bounds mean the same as over gRPC.
    pub(crate) fn watch_client(
        &self,
        key: Bytes,
        prefix: bool,
        start_revision: u64,
    ) -> Result<WatchStream> {
        let rt = match &self.rt {
            Some(rt) => rt.clone(),
            None => tokio::runtime::Handle::try_current().map_err(|_| {
                Error::Internal("watch needs a tokio runtime: start the node inside one".into())
            })?,
        };
        let mut from = self.watch(key, prefix, start_revision)?;
        let (tx, rx) = mpsc::channel(1);
        rt.spawn(async move {
            // The event last handed over, charged until the consumer takes it.
            let mut handed: Option<Delivery> = None;
            loop {
                // Room in a one-slot channel: the consumer took the last one.
                let Ok(permit) = tx.reserve().await else {
                    return;
                };
                drop(handed.take());
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = from.recv() => next,
                };
                match next {
                    None => return,
                    Some(Ok(d)) => {
                        permit.send(Ok(to_client_event(d.event())));
                        handed = Some(d);
                    }
                    Some(Err(e)) => {
                        permit.send(Err(e));
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Publishes the events of one applied batch (in log order); they move
    /// into the history.
    pub(crate) fn publish(&self, events: Vec<SmEvent>) {
        if events.is_empty() {
            return;
        }
        let l = &self.limits;
        let keep = l.history > 0 && l.history_bytes > 0;
        // Copied before the lock: the apply thread is the only publisher.
        let events: Vec<(SmEvent, usize)> = events
            .into_iter()
            .map(|e| {
                let e = own(e);
                let n = event_bytes(&e);
                (e, n)
            })
            .collect();
        let mut g = self.inner.lock().expect("watch hub poisoned");
        if !g.watchers.is_empty() {
            g.watchers.retain(|w| {
                for (ev, n) in &events {
                    if w.wants(ev) && !w.deliver(ev, *n, l) {
                        return false;
                    }
                }
                !w.tx.is_closed()
            });
        }
        if !keep {
            g.floor = events
                .last()
                .map(|(e, _)| e.revision + 1)
                .unwrap_or(g.floor);
            return;
        }
        for (ev, n) in events {
            g.history_bytes += n as u64;
            g.history.push_back((ev, n));
            // Oldest first until both bounds hold. The floor moves past
            // every evicted revision (events of one revision leave
            // together only if the bounds allow).
            while g.history.len() > l.history || g.history_bytes > l.history_bytes {
                let Some((old, n)) = g.history.pop_front() else {
                    break;
                };
                g.history_bytes -= n as u64;
                g.floor = g.floor.max(old.revision + 1);
            }
        }
    }

    /// The state was replaced by a snapshot at `index`: history before it is gone.
    pub(crate) fn reset(&self, index: u64) {
        let mut g = self.inner.lock().expect("watch hub poisoned");
        g.history.clear();
        g.history_bytes = 0;
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

impl WatchHub {
    /// Open watchers (for `dengine_watchers`).
    pub(crate) fn watcher_count(&self) -> usize {
        let g = self.inner.lock().expect("watch hub poisoned");
        g.watchers.iter().filter(|w| !w.tx.is_closed()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_engine_storage::sm::KeyValue as SmKv;

    fn hub_with(buffer: usize, history: usize, max_watchers: usize) -> WatchHub {
        WatchHub::new(
            &WatchConfig {
                buffer,
                history,
                max_watchers,
                ..WatchConfig::default()
            },
            0,
        )
    }

    fn put_value(key: &str, rev: u64, value: Bytes) -> SmEvent {
        SmEvent {
            kind: WatchEventKind::Put,
            key: Bytes::copy_from_slice(key.as_bytes()),
            revision: rev,
            kv: Some(SmKv {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value,
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                expires_at_ms: None,
                lease: 0,
            }),
            prev: None,
        }
    }

    fn put(key: &str, rev: u64) -> SmEvent {
        put_value(key, rev, Bytes::from_static(b"v"))
    }

    fn revs(rx: &mut HubStream) -> Vec<u64> {
        let mut v = vec![];
        while let Ok(e) = rx.try_recv() {
            v.push(e.unwrap().event().revision);
        }
        v
    }

    #[test]
    fn key_and_prefix_matching_in_order() {
        let hub = hub_with(16, 100, 10);
        let mut k = hub.watch(Bytes::from_static(b"a"), false, 0).unwrap();
        let mut p = hub.watch(Bytes::from_static(b"a"), true, 0).unwrap();
        hub.publish(vec![put("a", 1), put("ab", 2), put("b", 3), put("a", 4)]);
        assert_eq!(revs(&mut k), vec![1, 4]);
        assert_eq!(revs(&mut p), vec![1, 2, 4]);
    }

    #[test]
    fn slow_watcher_is_cancelled_with_reason() {
        let hub = hub_with(2, 100, 10);
        let mut w = hub.watch(Bytes::from_static(b"k"), false, 0).unwrap();
        hub.publish(vec![put("k", 1), put("k", 2), put("k", 3), put("k", 4)]);
        assert!(w.try_recv().unwrap().is_ok());
        assert!(w.try_recv().unwrap().is_ok());
        let e = w.try_recv().unwrap().unwrap_err();
        assert!(e.to_string().contains("watch.buffer"), "{e}");
        assert!(w.try_recv().is_err()); // closed after the notice
    }

    #[test]
    fn a_watcher_is_cancelled_when_its_unreceived_bytes_pass_the_budget() {
        let cfg = WatchConfig {
            max_buffer_bytes: 1 << 20,
            ..WatchConfig::default()
        };
        let hub = WatchHub::new(&cfg, 0);
        let mut slow = hub.watch(Bytes::from_static(b"k"), false, 0).unwrap();
        let mut fast = hub.watch(Bytes::from_static(b"k"), false, 0).unwrap();
        let mut fast_got = 0;
        // 16 events of 256 KiB: 4 MiB against a 1 MiB budget, well under
        // watch.buffer (1024 events).
        for rev in 1..=16u64 {
            hub.publish(vec![put_value("k", rev, Bytes::from(vec![0u8; 256 << 10]))]);
            // The fast watcher takes (and drops) each event at once.
            fast_got += revs(&mut fast).len();
        }
        assert_eq!(fast_got, 16, "a watcher that keeps up is never cancelled");
        let mut got = 0;
        let err = loop {
            match slow.try_recv().expect("the watcher ends with an error") {
                Ok(d) => {
                    got += 1;
                    drop(d);
                }
                Err(e) => break e,
            }
        };
        assert_eq!(got, 3, "3 events of 256 KiB + overhead fit in 1 MiB");
        assert!(matches!(err, Error::Overloaded(_)), "{err:?}");
        assert!(err.to_string().contains("watch.max_buffer_bytes"), "{err}");
        assert!(slow.try_recv().is_err(), "closed after the notice");
    }

    #[test]
    fn received_events_are_uncharged_and_one_large_event_always_fits() {
        let cfg = WatchConfig {
            max_buffer_bytes: 64 << 10,
            ..WatchConfig::default()
        };
        let hub = WatchHub::new(&cfg, 0);
        let mut w = hub.watch(Bytes::from_static(b"k"), false, 0).unwrap();
        // Larger than the budget, but nothing is queued: delivered.
        hub.publish(vec![put_value("k", 1, Bytes::from(vec![1u8; 100 << 10]))]);
        let d = w.try_recv().unwrap().unwrap();
        drop(d);
        // Received and dropped: the next one fits again, many times over.
        for rev in 2..50 {
            hub.publish(vec![put_value("k", rev, Bytes::from(vec![1u8; 100 << 10]))]);
            assert_eq!(revs(&mut w), vec![rev]);
        }
    }

    #[test]
    fn watchers_and_history_share_one_copy_of_each_value() {
        let hub = hub_with(16, 100, 10);
        let mut a = hub.watch(Bytes::from_static(b"k"), false, 0).unwrap();
        let mut b = hub.watch(Bytes::from_static(b"k"), true, 0).unwrap();
        // The value is a slice of a larger buffer (as a command's is).
        let buffer = Bytes::from(vec![5u8; 1 << 20]);
        hub.publish(vec![put_value("k", 1, buffer.slice(10..1010))]);
        let da = a.try_recv().unwrap().unwrap();
        let db = b.try_recv().unwrap().unwrap();
        let va = &da.event().kv.as_ref().unwrap().value;
        let vb = &db.event().kv.as_ref().unwrap().value;
        assert_eq!(va.len(), 1000);
        assert_eq!(va.as_ptr(), vb.as_ptr(), "one copy for both watchers");
        assert!(
            !(buffer.as_ptr_range().contains(&va.as_ptr())),
            "the event does not keep the 1 MiB buffer it was sliced from alive"
        );
        let mut c = hub.watch(Bytes::from_static(b"k"), false, 1).unwrap();
        let dc = c.try_recv().unwrap().unwrap();
        assert_eq!(
            dc.event().kv.as_ref().unwrap().value.as_ptr(),
            va.as_ptr(),
            "a replay from history shares it too"
        );
    }

    #[test]
    fn start_revision_replays_history_or_reports_compaction() {
        let hub = hub_with(16, 3, 10);
        hub.publish(vec![put("k", 1), put("k", 2), put("k", 3), put("k", 4)]);
        let mut w = hub.watch(Bytes::from_static(b"k"), false, 3).unwrap();
        assert_eq!(revs(&mut w), vec![3, 4]);
        let e = hub.watch(Bytes::from_static(b"k"), false, 1).unwrap_err();
        assert!(matches!(e, Error::Compacted(_)), "{e}");
    }

    #[test]
    fn history_is_bounded_in_bytes() {
        let cfg = WatchConfig {
            history_bytes: 1 << 20,
            ..WatchConfig::default()
        };
        let hub = WatchHub::new(&cfg, 0);
        for rev in 1..=10u64 {
            hub.publish(vec![put_value("k", rev, Bytes::from(vec![0u8; 300 << 10]))]);
        }
        // 3 events of 300 KiB fit in 1 MiB, a fourth does not.
        let e = hub.watch(Bytes::from_static(b"k"), false, 7).unwrap_err();
        assert!(matches!(e, Error::Compacted(_)), "{e}");
        assert!(e.to_string().contains("watch.history_bytes"), "{e}");
        let mut w = hub.watch(Bytes::from_static(b"k"), false, 8).unwrap();
        assert_eq!(revs(&mut w), vec![8, 9, 10]);
        let g = hub.inner.lock().unwrap();
        assert!(g.history_bytes <= 1 << 20);
        assert_eq!(
            g.history_bytes,
            g.history.iter().map(|(_, n)| *n as u64).sum::<u64>()
        );
    }

    #[test]
    fn a_replay_larger_than_the_byte_budget_is_charged_not_refused() {
        let cfg = WatchConfig {
            max_buffer_bytes: 64 << 10,
            ..WatchConfig::default()
        };
        let hub = WatchHub::new(&cfg, 0);
        for rev in 1..=4u64 {
            hub.publish(vec![put_value("k", rev, Bytes::from(vec![0u8; 30 << 10]))]);
        }
        let mut drained = hub.watch(Bytes::from_static(b"k"), false, 1).unwrap();
        let mut stalled = hub.watch(Bytes::from_static(b"k"), false, 1).unwrap();
        assert_eq!(revs(&mut drained), vec![1, 2, 3, 4]);
        hub.publish(vec![put_value("k", 5, Bytes::from(vec![0u8; 30 << 10]))]);
        assert_eq!(revs(&mut drained), vec![5], "a drained replay leaves room");
        for rev in 1..=4 {
            assert_eq!(stalled.try_recv().unwrap().unwrap().event().revision, rev);
        }
        let e = stalled.try_recv().unwrap().unwrap_err();
        assert!(e.to_string().contains("watch.max_buffer_bytes"), "{e}");
    }

    #[test]
    fn start_revision_ahead_of_applied_skips_older_events() {
        // A lagging node: the watch starts at 5 but the node has applied 2.
        let hub = hub_with(16, 100, 10);
        hub.publish(vec![put("k", 1), put("k", 2)]);
        let mut w = hub.watch(Bytes::from_static(b"k"), false, 5).unwrap();
        hub.publish(vec![put("k", 3), put("k", 4), put("k", 5), put("k", 6)]);
        assert_eq!(revs(&mut w), vec![5, 6]);
    }

    #[test]
    fn watcher_limit() {
        let hub = hub_with(4, 0, 1);
        let _a = hub.watch(Bytes::from_static(b"k"), false, 0).unwrap();
        assert!(matches!(
            hub.watch(Bytes::from_static(b"k"), false, 0),
            Err(Error::Overloaded(_))
        ));
    }
}
