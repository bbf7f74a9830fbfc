//! The watch hub: fans applied key changes out to watchers.
//!
//! - Events are published by the apply thread after each applied batch, so
//!   every watcher sees changes after commit, in log (revision) order.
//! - **What a watcher gets** ([`WatchSpec`]): the changes of one key, a
//!   prefix or a range `[key, end)` (`end` = `[0]`: every key from `key`
//!   on), minus the kinds its filters drop (no puts / no deletes), each with
//!   the key's previous value if it asked for `prev_kv`.
//! - **Previous values** are read from the state machine while applying
//!   (`SmEvent::prev_value`, which shares the stored bytes with the memory
//!   backend) and kept with the event in the history, where they count in
//!   `watch.history_bytes`. Only a watcher that asked for them is charged
//!   for them and gets them on the wire.
//! - **One copy per event.** On publish each event's key and values are
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
//!   history is refused with a `Compacted` [`WatchCancel`] carrying the
//!   oldest revision still held.
//! - Every watcher has a queue bounded at `watch.buffer` events (plus one
//!   slot reserved for the final error) **and** at `watch.max_buffer_bytes`
//!   bytes: an event stays charged to the watcher until its consumer drops
//!   the [`Delivery`] (for gRPC, when the transport takes the message). A
//!   watcher whose next event would pass either bound is cancelled with a
//!   final `Overloaded` [`WatchCancel`] naming the limit, never silently
//!   skipped.
//! - **Every cancel is typed** (`Error::WatchCanceled`): `Overloaded` (slow
//!   consumer), `Compacted` (snapshot installed: `compact_revision` is the
//!   oldest revision the node can replay), `ShuttingDown` (node stopping or
//!   failed), each with the `resume_revision` to watch again from: the first
//!   revision the watcher has not been handed (events are never skipped by
//!   resuming there; a revision cut in the middle is delivered again).
//! - **Progress**: [`HubStream::caught_up`] tells a watch's consumer, when
//!   nothing is waiting, the revision it has caught up to (the node's
//!   applied revision as of the last publish).
//! - A watcher whose receiver was dropped is removed on the next publish.
//!
//! (Over 500 lines only because of its unit tests, which follow the code.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use d_engine_api::{
    Error, ErrorCode, EventType, KeyValue, Result, WatchCancel, WatchEvent, WatchOptions,
};
use d_engine_storage::sm::{KeyValue as SmKv, WatchEvent as SmEvent, WatchEventKind};
use tokio::sync::mpsc;

use super::types::{to_client_kv, WatchStream};
use crate::config::WatchConfig;

/// Bytes charged per event beyond its key and values (the event's fixed
/// fields and its share of the queue), so that many empty values still
/// count.
pub(crate) const EVENT_OVERHEAD: usize = 64;

/// Bytes an event holds in memory (key, value and previous value plus
/// [`EVENT_OVERHEAD`]). The key is counted once: after [`own`] the event's
/// key and its key-value's key are one buffer.
pub(crate) fn event_bytes(ev: &SmEvent) -> usize {
    ev.key.len()
        + ev.kv.as_ref().map_or(0, |kv| kv.value.len())
        + ev.prev_value.as_ref().map_or(0, |v| v.len())
        + EVENT_OVERHEAD
}

/// The bytes of an event of `full` [`event_bytes`] charged to a watcher:
/// its previous value only if the watcher asked for it.
fn charged_bytes(ev: &SmEvent, full: usize, prev_kv: bool) -> usize {
    if prev_kv {
        full
    } else {
        full - ev.prev_value.as_ref().map_or(0, |v| v.len())
    }
}

/// `ev` with its key and values in buffers of exactly their size, the key
/// shared by the event and its key-value.
fn own(mut ev: SmEvent) -> SmEvent {
    ev.key = Bytes::copy_from_slice(&ev.key);
    if let Some(kv) = ev.kv.as_mut() {
        kv.key = ev.key.clone();
        kv.value = Bytes::copy_from_slice(&kv.value);
    }
    if let Some(v) = ev.prev_value.as_mut() {
        *v = Bytes::copy_from_slice(v);
    }
    ev
}

/// What a watcher covers and delivers: the hub's form of
/// [`WatchOptions`] (validated by the caller).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WatchSpec {
    pub key: Bytes,
    /// The wire `range_end`: empty = `key` only; `[0]` = every key from
    /// `key` on; otherwise the exclusive end (above `key`).
    pub end: Bytes,
    /// 0 = only events published after the watch is registered.
    pub start_revision: u64,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchSpec {
    pub(crate) fn new(key: Bytes, o: &WatchOptions) -> Self {
        let end = Bytes::from(o.end.to_wire(&key));
        WatchSpec {
            key,
            end,
            start_revision: o.start_revision,
            prev_kv: o.prev_kv,
            progress_notify: o.progress_notify,
            no_put: o.no_put,
            no_delete: o.no_delete,
        }
    }

    /// One key, or every key starting with it (`prefix`).
    #[cfg(test)]
    pub(crate) fn simple(key: &'static [u8], prefix: bool, start_revision: u64) -> Self {
        let o = if prefix {
            WatchOptions::prefix()
        } else {
            WatchOptions::key()
        };
        WatchSpec::new(
            Bytes::from_static(key),
            &o.with_start_revision(start_revision),
        )
    }

    fn matches(&self, key: &[u8]) -> bool {
        match &self.end[..] {
            [] => key == &self.key[..],
            [0] => key >= &self.key[..],
            end => key >= &self.key[..] && key < end,
        }
    }

    fn wants_kind(&self, kind: &WatchEventKind) -> bool {
        match kind {
            WatchEventKind::Put => !self.no_put,
            WatchEventKind::Delete => !self.no_delete,
        }
    }
}

/// One event handed to one watcher. The event's bytes are shared with the
/// history and every other watcher; they stay charged to this watcher's
/// `watch.max_buffer_bytes` until the `Delivery` is dropped.
pub(crate) struct Delivery {
    event: SmEvent,
    bytes: usize,
    prev_kv: bool,
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
    fn charge(self: &Arc<Self>, event: &SmEvent, bytes: usize, prev_kv: bool) -> Delivery {
        self.events.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        Delivery {
            event: event.clone(),
            bytes,
            prev_kv,
            queued: self.clone(),
        }
    }
}

impl Delivery {
    /// The event (its key and value are shared bytes).
    pub(crate) fn event(&self) -> &SmEvent {
        &self.event
    }

    /// The key before the event, if the watcher asked for `prev_kv` and
    /// the key existed (shares the event's bytes).
    pub(crate) fn prev_kv(&self) -> Option<SmKv> {
        if !self.prev_kv {
            return None;
        }
        let (meta, value) = (self.event.prev?, self.event.prev_value.clone()?);
        Some(SmKv {
            key: self.event.key.clone(),
            value,
            create_revision: meta.create_revision,
            mod_revision: meta.mod_revision,
            version: meta.version,
            expires_at_ms: meta.expires_at_ms,
            lease: meta.lease,
        })
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
/// final `Err(Error::WatchCanceled)` when the node cancels the watch.
/// Dropping it cancels the watch.
#[derive(Debug)]
pub(crate) struct HubStream {
    rx: mpsc::Receiver<Result<Delivery>>,
    /// The first revision the watch can deliver: its start revision, or
    /// (start 0) one past the node's applied revision at registration.
    pub(crate) start: u64,
    /// The hub's published revision (see [`HubStream::caught_up`]).
    published: Arc<AtomicU64>,
}

impl HubStream {
    pub(crate) async fn recv(&mut self) -> Option<Result<Delivery>> {
        self.rx.recv().await
    }

    pub(crate) fn try_recv(
        &mut self,
    ) -> std::result::Result<Result<Delivery>, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }

    /// When nothing is waiting: the revision this watch has caught up to
    /// (every matching change at or below it has been received). The hub
    /// stores its published revision after handing that batch's events
    /// out, so reading it before checking the queue never claims an event
    /// still queued.
    pub(crate) fn caught_up(&self) -> Option<u64> {
        let published = self.published.load(Ordering::Acquire);
        self.rx.is_empty().then_some(published)
    }
}

struct Watcher {
    spec: WatchSpec,
    /// Events below this revision are never delivered (the watch asked to
    /// start later; on a lagging node they may still be published after
    /// registration).
    min_revision: u64,
    tx: mpsc::Sender<Result<Delivery>>,
    /// Events delivered and not yet dropped by the consumer.
    queued: Arc<Queued>,
}

/// A typed cancel.
fn cancel(code: ErrorCode, reason: String, compact_revision: u64, resume_revision: u64) -> Error {
    Error::WatchCanceled(WatchCancel {
        code,
        reason,
        compact_revision,
        resume_revision,
    })
}

impl Watcher {
    fn wants(&self, ev: &SmEvent) -> bool {
        ev.revision >= self.min_revision
            && self.spec.wants_kind(&ev.kind)
            && self.spec.matches(&ev.key)
    }

    /// Delivers `ev` (of `full` bytes); false if the watcher is gone
    /// (dropped, or cancelled now because it fell too far behind).
    fn deliver(&self, ev: &SmEvent, full: usize, limits: &Limits) -> bool {
        let bytes = charged_bytes(ev, full, self.spec.prev_kv);
        // The channel holds `buffer` events plus the cancellation notice;
        // events the consumer holds but has not dropped count too.
        if self.queued.events.load(Ordering::Acquire) >= limits.buffer {
            let _ = self.tx.try_send(Err(cancel(
                ErrorCode::Overloaded,
                format!(
                    "watch cancelled: the watcher fell {} events behind (watch.buffer); \
                     re-watch from revision {} to resume",
                    limits.buffer, ev.revision
                ),
                0,
                ev.revision,
            )));
            return false;
        }
        let queued = self.queued.bytes.load(Ordering::Acquire);
        if queued > 0 && queued + bytes > limits.max_buffer_bytes {
            let _ = self.tx.try_send(Err(cancel(
                ErrorCode::Overloaded,
                format!(
                    "watch cancelled: the watcher has {queued} bytes of events it has not \
                     received, and the next one ({bytes} bytes) would pass \
                     watch.max_buffer_bytes = {}; read events faster, then re-watch from \
                     revision {} to resume",
                    limits.max_buffer_bytes, ev.revision
                ),
                0,
                ev.revision,
            )));
            return false;
        }
        let d = self.queued.charge(ev, bytes, self.spec.prev_kv);
        // On failure the delivery is dropped, which uncharges it.
        self.tx.try_send(Ok(d)).is_ok()
    }
}

/// Converts a delivered event to the client type (copies the key and
/// values into the client's `Vec`s).
pub(crate) fn to_client_event(d: &Delivery) -> WatchEvent {
    let ev = d.event();
    let prev_kv = d.prev_kv().as_ref().map(to_client_kv);
    match ev.kind {
        WatchEventKind::Put => WatchEvent {
            kind: EventType::Put,
            kv: ev
                .kv
                .as_ref()
                .map(to_client_kv)
                .unwrap_or_else(|| deleted_kv(&ev.key, ev.revision)),
            prev_kv,
        },
        WatchEventKind::Delete => WatchEvent {
            kind: EventType::Delete,
            kv: deleted_kv(&ev.key, ev.revision),
            prev_kv,
        },
    }
}

fn deleted_kv(key: &Bytes, revision: u64) -> KeyValue {
    KeyValue {
        key: key.clone(),
        value: Bytes::new(),
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
    /// The applied revision whose events have all been handed to watchers
    /// (stored after each publish).
    published: Arc<AtomicU64>,
    /// `watch.progress_interval_ms`: idleness after which a watch that asked
    /// for progress notifications gets one.
    progress_interval: Duration,
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
            published: Arc::new(AtomicU64::new(applied)),
            progress_interval: Duration::from_millis(config.progress_interval_ms),
            rt: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// `watch.progress_interval_ms`.
    pub(crate) fn progress_interval(&self) -> Duration {
        self.progress_interval
    }

    /// Registers a watcher. Events arrive as shared [`Delivery`]s.
    pub(crate) fn watch(&self, spec: WatchSpec) -> Result<HubStream> {
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
        let start_revision = spec.start_revision;
        let start = if start_revision > 0 {
            start_revision
        } else {
            self.published.load(Ordering::Acquire) + 1
        };
        let (tx, rx) = mpsc::channel(l.buffer + 1);
        let w = Watcher {
            spec,
            min_revision: start_revision,
            tx,
            queued: Arc::new(Queued::default()),
        };
        if start_revision > 0 {
            if start_revision < g.floor {
                return Err(cancel(
                    ErrorCode::Compacted,
                    format!(
                        "start_revision {start_revision} is older than the watch history, \
                         which begins at revision {} on this node (watch.history, \
                         watch.history_bytes); read the current state and watch from the \
                         read's revision + 1 (or from revision 0)",
                        g.floor
                    ),
                    g.floor,
                    start_revision,
                ));
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
                let bytes = charged_bytes(e, *n, w.spec.prev_kv);
                let _ = w.tx.try_send(Ok(w.queued.charge(e, bytes, w.spec.prev_kv)));
            }
        }
        g.watchers.push(w);
        Ok(HubStream {
            rx,
            start,
            published: self.published.clone(),
        })
    }

    /// Like [`WatchHub::watch`], for the embedded API: a task on the node's
    /// runtime converts each event to the client type for the consumer, and
    /// sends [`EventType::Progress`] notifications when the watch asked for
    /// them and has been idle for `watch.progress_interval_ms`. The
    /// consumer's channel holds one event, which stays charged to the
    /// watcher (`watch.buffer`, `watch.max_buffer_bytes`) until the consumer
    /// takes it, so the bounds mean the same as over gRPC.
    pub(crate) fn watch_client(&self, spec: WatchSpec) -> Result<WatchStream> {
        let rt = match &self.rt {
            Some(rt) => rt.clone(),
            None => tokio::runtime::Handle::try_current().map_err(|_| {
                Error::Internal("watch needs a tokio runtime: start the node inside one".into())
            })?,
        };
        let progress = spec.progress_notify.then_some(self.progress_interval);
        let mut from = self.watch(spec)?;
        let (tx, rx) = mpsc::channel(1);
        rt.spawn(async move {
            // The event last handed over, charged until the consumer takes it.
            let mut handed: Option<Delivery> = None;
            let mut idle_since = tokio::time::Instant::now();
            loop {
                // Room in a one-slot channel: the consumer took the last one.
                let Ok(permit) = tx.reserve().await else {
                    return;
                };
                drop(handed.take());
                let tick = async {
                    match progress {
                        Some(every) => tokio::time::sleep_until(idle_since + every).await,
                        None => std::future::pending().await,
                    }
                };
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = from.recv() => next,
                    _ = tick => {
                        idle_since = tokio::time::Instant::now();
                        match from.caught_up() {
                            Some(rev) => permit.send(Ok(WatchEvent::progress(rev))),
                            None => drop(permit),
                        }
                        continue;
                    }
                };
                idle_since = tokio::time::Instant::now();
                match next {
                    None => return,
                    Some(Ok(d)) => {
                        permit.send(Ok(to_client_event(&d)));
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
    /// into the history. `applied`: the applied index after the batch.
    pub(crate) fn publish(&self, events: Vec<SmEvent>, applied: u64) {
        if events.is_empty() {
            self.published.fetch_max(applied, Ordering::AcqRel);
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
        // After the events are queued (see `HubStream::caught_up`).
        let last = events.last().map_or(0, |(e, _)| e.revision);
        self.published
            .fetch_max(applied.max(last), Ordering::AcqRel);
        if !keep {
            g.floor = g.floor.max(last + 1);
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

    /// Where a watcher ended now resumes: past everything published, or
    /// its start if later.
    fn resume_of(&self, w: &Watcher) -> u64 {
        w.min_revision
            .max(self.published.load(Ordering::Acquire) + 1)
    }

    /// The state was replaced by a snapshot at `index`: history before it
    /// is gone, and every watch ends `Compacted` (its events between its
    /// resume revision and `index` are not in any history of this node).
    pub(crate) fn reset(&self, index: u64) {
        let mut g = self.inner.lock().expect("watch hub poisoned");
        g.history.clear();
        g.history_bytes = 0;
        g.floor = index + 1;
        for w in g.watchers.drain(..) {
            let resume = self.resume_of(&w);
            let _ = w.tx.try_send(Err(cancel(
                ErrorCode::Compacted,
                format!(
                    "watch cancelled: this node installed a snapshot at revision {index}; \
                     re-read and watch again from the read's revision + 1"
                ),
                index + 1,
                resume,
            )));
        }
        self.published.fetch_max(index, Ordering::AcqRel);
    }

    /// Ends every watch with a `ShuttingDown` cancel saying `reason` and
    /// where to resume (on another node).
    pub(crate) fn close_all(&self, reason: &str) {
        let mut g = self.inner.lock().expect("watch hub poisoned");
        for w in g.watchers.drain(..) {
            let resume = self.resume_of(&w);
            let _ = w.tx.try_send(Err(cancel(
                ErrorCode::ShuttingDown,
                format!(
                    "watch cancelled: {reason}; watch again on another node from revision {resume}"
                ),
                0,
                resume,
            )));
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
            prev_value: None,
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
        let mut k = hub.watch(WatchSpec::simple(b"a", false, 0)).unwrap();
        let mut p = hub.watch(WatchSpec::simple(b"a", true, 0)).unwrap();
        hub.publish(vec![put("a", 1), put("ab", 2), put("b", 3), put("a", 4)], 0);
        assert_eq!(revs(&mut k), vec![1, 4]);
        assert_eq!(revs(&mut p), vec![1, 2, 4]);
    }

    #[test]
    fn slow_watcher_is_cancelled_with_reason() {
        let hub = hub_with(2, 100, 10);
        let mut w = hub.watch(WatchSpec::simple(b"k", false, 0)).unwrap();
        hub.publish(vec![put("k", 1), put("k", 2), put("k", 3), put("k", 4)], 0);
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
        let mut slow = hub.watch(WatchSpec::simple(b"k", false, 0)).unwrap();
        let mut fast = hub.watch(WatchSpec::simple(b"k", false, 0)).unwrap();
        let mut fast_got = 0;
        // 16 events of 256 KiB: 4 MiB against a 1 MiB budget, well under
        // watch.buffer (1024 events).
        for rev in 1..=16u64 {
            hub.publish(
                vec![put_value("k", rev, Bytes::from(vec![0u8; 256 << 10]))],
                0,
            );
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
        assert_eq!(err.code(), ErrorCode::Overloaded, "{err:?}");
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
        let mut w = hub.watch(WatchSpec::simple(b"k", false, 0)).unwrap();
        // Larger than the budget, but nothing is queued: delivered.
        hub.publish(
            vec![put_value("k", 1, Bytes::from(vec![1u8; 100 << 10]))],
            0,
        );
        let d = w.try_recv().unwrap().unwrap();
        drop(d);
        // Received and dropped: the next one fits again, many times over.
        for rev in 2..50 {
            hub.publish(
                vec![put_value("k", rev, Bytes::from(vec![1u8; 100 << 10]))],
                0,
            );
            assert_eq!(revs(&mut w), vec![rev]);
        }
    }

    #[test]
    fn watchers_and_history_share_one_copy_of_each_value() {
        let hub = hub_with(16, 100, 10);
        let mut a = hub.watch(WatchSpec::simple(b"k", false, 0)).unwrap();
        let mut b = hub.watch(WatchSpec::simple(b"k", true, 0)).unwrap();
        // The value is a slice of a larger buffer (as a command's is).
        let buffer = Bytes::from(vec![5u8; 1 << 20]);
        hub.publish(vec![put_value("k", 1, buffer.slice(10..1010))], 0);
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
        let mut c = hub.watch(WatchSpec::simple(b"k", false, 1)).unwrap();
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
        hub.publish(vec![put("k", 1), put("k", 2), put("k", 3), put("k", 4)], 0);
        let mut w = hub.watch(WatchSpec::simple(b"k", false, 3)).unwrap();
        assert_eq!(revs(&mut w), vec![3, 4]);
        let e = hub.watch(WatchSpec::simple(b"k", false, 1)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Compacted, "{e}");
    }

    #[test]
    fn history_is_bounded_in_bytes() {
        let cfg = WatchConfig {
            history_bytes: 1 << 20,
            ..WatchConfig::default()
        };
        let hub = WatchHub::new(&cfg, 0);
        for rev in 1..=10u64 {
            hub.publish(
                vec![put_value("k", rev, Bytes::from(vec![0u8; 300 << 10]))],
                0,
            );
        }
        // 3 events of 300 KiB fit in 1 MiB, a fourth does not.
        let e = hub.watch(WatchSpec::simple(b"k", false, 7)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Compacted, "{e}");
        assert!(e.to_string().contains("watch.history_bytes"), "{e}");
        let mut w = hub.watch(WatchSpec::simple(b"k", false, 8)).unwrap();
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
            hub.publish(
                vec![put_value("k", rev, Bytes::from(vec![0u8; 30 << 10]))],
                0,
            );
        }
        let mut drained = hub.watch(WatchSpec::simple(b"k", false, 1)).unwrap();
        let mut stalled = hub.watch(WatchSpec::simple(b"k", false, 1)).unwrap();
        assert_eq!(revs(&mut drained), vec![1, 2, 3, 4]);
        hub.publish(vec![put_value("k", 5, Bytes::from(vec![0u8; 30 << 10]))], 0);
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
        hub.publish(vec![put("k", 1), put("k", 2)], 0);
        let mut w = hub.watch(WatchSpec::simple(b"k", false, 5)).unwrap();
        hub.publish(vec![put("k", 3), put("k", 4), put("k", 5), put("k", 6)], 0);
        assert_eq!(revs(&mut w), vec![5, 6]);
    }

    fn spec(key: &'static [u8], end: &'static [u8]) -> WatchSpec {
        WatchSpec {
            key: Bytes::from_static(key),
            end: Bytes::from_static(end),
            ..WatchSpec::default()
        }
    }

    fn del(key: &str, rev: u64, prev_value: &'static [u8], prev_rev: u64) -> SmEvent {
        SmEvent {
            kind: WatchEventKind::Delete,
            key: Bytes::copy_from_slice(key.as_bytes()),
            revision: rev,
            kv: None,
            prev: Some(d_engine_storage::sm::KeyMeta {
                create_revision: prev_rev,
                mod_revision: prev_rev,
                version: 1,
                expires_at_ms: None,
                lease: 0,
            }),
            prev_value: Some(Bytes::from_static(prev_value)),
        }
    }

    /// An overwrite of `key` (previous value `prev_value` from `prev_rev`).
    fn overwrite(key: &str, rev: u64, prev_value: &'static [u8], prev_rev: u64) -> SmEvent {
        let mut e = put(key, rev);
        let d = del(key, rev, prev_value, prev_rev);
        e.prev = d.prev;
        e.prev_value = d.prev_value;
        e
    }

    fn cancel_of(e: &Error) -> &WatchCancel {
        match e {
            Error::WatchCanceled(c) => c,
            other => panic!("not a watch cancel: {other:?}"),
        }
    }

    #[test]
    fn ranges_match_half_open_and_from_key() {
        let hub = hub_with(16, 100, 10);
        let mut r = hub.watch(spec(b"b", b"d")).unwrap();
        let mut from = hub.watch(spec(b"c", b"\0")).unwrap();
        let mut all = hub.watch(spec(b"", b"\0")).unwrap();
        hub.publish(
            vec![
                put("a", 1),
                put("b", 2),
                put("bz", 3),
                put("c", 4),
                put("d", 5),
                put("zz", 6),
            ],
            6,
        );
        assert_eq!(revs(&mut r), vec![2, 3, 4], "[b, d): d itself is out");
        assert_eq!(revs(&mut from), vec![4, 5, 6]);
        assert_eq!(revs(&mut all), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn filters_drop_kinds_and_still_advance_progress() {
        let hub = hub_with(16, 100, 10);
        let mut no_delete = hub
            .watch(WatchSpec {
                no_delete: true,
                ..WatchSpec::simple(b"k", true, 0)
            })
            .unwrap();
        let mut no_put = hub
            .watch(WatchSpec {
                no_put: true,
                ..WatchSpec::simple(b"k", true, 0)
            })
            .unwrap();
        hub.publish(vec![put("k1", 1), del("k1", 2, b"v", 1), put("k2", 3)], 3);
        assert_eq!(revs(&mut no_delete), vec![1, 3]);
        assert_eq!(revs(&mut no_put), vec![2]);
        // Idle and drained: caught up to the applied revision, filtered
        // events included.
        hub.publish(vec![put("other", 4)], 5);
        assert_eq!(no_put.caught_up(), Some(5));
    }

    #[test]
    fn prev_kv_only_for_watchers_that_ask_and_charged_only_to_them() {
        let hub = hub_with(16, 100, 10);
        let mut with = hub
            .watch(WatchSpec {
                prev_kv: true,
                ..WatchSpec::simple(b"k", false, 0)
            })
            .unwrap();
        let mut without = hub.watch(WatchSpec::simple(b"k", false, 0)).unwrap();
        hub.publish(vec![put("k", 1)], 1);
        hub.publish(vec![overwrite("k", 2, b"old-value", 1)], 2);
        hub.publish(vec![del("k", 3, b"v", 2)], 3);
        let got: Vec<Delivery> =
            std::iter::from_fn(|| with.try_recv().ok().map(|r| r.unwrap())).collect();
        assert!(
            got[0].prev_kv().is_none(),
            "a new key has no previous value"
        );
        let prev = got[1].prev_kv().expect("overwrite carries the old value");
        assert_eq!((&prev.value[..], prev.mod_revision), (&b"old-value"[..], 1));
        let client = to_client_event(&got[2]);
        assert_eq!(client.kind, EventType::Delete);
        assert_eq!(client.prev_kv.unwrap().value, b"v"[..]);
        // Charged with the previous value: 9 more bytes than the other watcher.
        assert_eq!(
            got[1].bytes,
            event_bytes(&overwrite("k", 2, b"old-value", 1))
        );
        let plain: Vec<Delivery> =
            std::iter::from_fn(|| without.try_recv().ok().map(|r| r.unwrap())).collect();
        assert!(plain.iter().all(|d| d.prev_kv().is_none()));
        assert_eq!(plain[1].bytes + 9, got[1].bytes);
        // The history keeps the previous value for a later replay.
        let mut late = hub
            .watch(WatchSpec {
                prev_kv: true,
                ..WatchSpec::simple(b"k", false, 2)
            })
            .unwrap();
        let d = late.try_recv().unwrap().unwrap();
        assert_eq!(&d.prev_kv().unwrap().value[..], b"old-value");
    }

    #[test]
    fn progress_is_reported_only_when_nothing_is_queued() {
        let hub = hub_with(16, 100, 10);
        let mut w = hub.watch(WatchSpec::simple(b"k", false, 0)).unwrap();
        assert_eq!(w.start, 1, "start 0 = one past the applied revision");
        assert_eq!(w.caught_up(), Some(0));
        hub.publish(vec![put("k", 1)], 2);
        assert_eq!(w.caught_up(), None, "an event is waiting");
        assert_eq!(revs(&mut w), vec![1]);
        assert_eq!(w.caught_up(), Some(2));
        // Entries without key changes (no-ops, leases) advance it too.
        hub.publish(vec![], 7);
        assert_eq!(w.caught_up(), Some(7));
    }

    #[test]
    fn every_cancel_is_typed_with_where_to_resume() {
        // Slow consumer: resume at the first event it was not handed.
        let hub = hub_with(2, 100, 10);
        let mut slow = hub.watch(WatchSpec::simple(b"k", false, 0)).unwrap();
        hub.publish(vec![put("k", 1), put("k", 2), put("k", 3)], 3);
        let (got, e) = revs_until_err(&mut slow);
        assert_eq!(got, vec![1, 2]);
        let c = cancel_of(&e);
        assert_eq!((c.code, c.resume_revision), (ErrorCode::Overloaded, 3));

        // Shutdown: resume past everything published (or at the start).
        let hub = hub_with(16, 100, 10);
        let mut live = hub.watch(WatchSpec::simple(b"k", false, 0)).unwrap();
        let mut ahead = hub.watch(WatchSpec::simple(b"k", false, 50)).unwrap();
        hub.publish(vec![put("k", 1), put("x", 2)], 4);
        hub.close_all("the node is shutting down");
        let (got, e) = revs_until_err(&mut live);
        assert_eq!(got, vec![1]);
        let c = cancel_of(&e);
        assert_eq!((c.code, c.resume_revision), (ErrorCode::ShuttingDown, 5));
        let c = cancel_of(&revs_until_err(&mut ahead).1).clone();
        assert_eq!(c.resume_revision, 50);

        // Snapshot installed: compacted, oldest revision = the snapshot's + 1.
        let hub = hub_with(16, 100, 10);
        let mut w = hub.watch(WatchSpec::simple(b"k", false, 0)).unwrap();
        hub.publish(vec![put("k", 1)], 1);
        hub.reset(90);
        let (got, e) = revs_until_err(&mut w);
        assert_eq!(got, vec![1]);
        let c = cancel_of(&e);
        assert_eq!(
            (c.code, c.compact_revision, c.resume_revision),
            (ErrorCode::Compacted, 91, 2)
        );

        // A start older than the history: refused, typed the same way.
        let hub = hub_with(16, 2, 10);
        hub.publish(vec![put("k", 1), put("k", 2), put("k", 3)], 3);
        let e = hub.watch(WatchSpec::simple(b"k", false, 1)).unwrap_err();
        let c = cancel_of(&e);
        assert_eq!(
            (c.code, c.compact_revision, c.resume_revision),
            (ErrorCode::Compacted, 2, 1)
        );
    }

    /// The revisions received until the final error (which must come).
    fn revs_until_err(rx: &mut HubStream) -> (Vec<u64>, Error) {
        let mut v = vec![];
        loop {
            match rx.try_recv().expect("the watch ends with an error") {
                Ok(d) => v.push(d.event().revision),
                Err(e) => return (v, e),
            }
        }
    }

    #[test]
    fn watcher_limit() {
        let hub = hub_with(4, 0, 1);
        let _a = hub.watch(WatchSpec::simple(b"k", false, 0)).unwrap();
        assert!(matches!(
            hub.watch(WatchSpec::simple(b"k", false, 0)),
            Err(Error::Overloaded(_))
        ));
    }
}
