//! The log thread: owns the node's log store (the built-in [`Wal`] or an
//! embedder's [`LogStore`]), does group commit, reports durability.
//!
//! Contract: every `Append` drained in one wake-up is appended, then ONE
//! `LogStore::sync` covers all of it (`durability.mode = "fsync"`; one
//! `fdatasync` in the WAL), and only then is `log_persisted(last_index,
//! last_term)` reported to the consensus loop. In `periodic` mode entries
//! are reported after `LogStore::flush` (handed to the OS) and synced at
//! least every `durability.interval_ms` (see `docs/config.md` for the exact
//! risk). Any log-store error stops the node (`Input::Fatal`): a failed
//! fsync may have dropped data, so nothing more may be acknowledged.
//!
//! The thread uses the store only through the [`LogStore`] trait and is
//! generic over it: the built-in WAL runs monomorphized (static calls, as
//! before the seam existed); an embedder's store runs as
//! `Box<dyn LogStore>`, a handful of indirect calls per wake-up next to at
//! least one sync.

use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use d_engine_core::{Entry, Index};
use d_engine_storage::wal::LogStore;
#[cfg(doc)]
use d_engine_storage::wal::Wal;

use super::failure::NodeFailure;
use super::input::Input;

pub(crate) enum WalTask {
    Append(Vec<Entry>),
    SetCommitted(Index),
    Compact(Index),
    /// Discard the whole log; the next entry will have index `next`.
    Reset {
        next: Index,
        done: std_mpsc::Sender<Result<(), NodeFailure>>,
    },
    Shutdown,
}

/// Why the WAL thread's loop ended with an error.
struct Stopped {
    error: NodeFailure,
    /// The failing wake-up had already taken `Shutdown` off the channel, so
    /// no further `Shutdown` will come: the thread must exit at once (the
    /// consensus loop is joining it).
    shutdown_taken: bool,
}

pub(crate) fn spawn<L: LogStore + 'static>(
    mut wal: L,
    periodic: Option<Duration>,
    input: std_mpsc::Sender<Input>,
    node_id: u64,
    metrics: Arc<crate::metrics::NodeMetrics>,
) -> std::io::Result<(std_mpsc::Sender<WalTask>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std_mpsc::channel::<WalTask>();
    let h = std::thread::Builder::new()
        .name(format!("dengine-wal-{node_id}"))
        .spawn(move || {
            if let Err(stopped) = run(&mut wal, periodic, &rx, &input, &metrics) {
                let e = Arc::new(stopped.error);
                tracing::error!(error = %e, "WAL failed; stopping the node");
                let _ = input.send(Input::Fatal(NodeFailure::Shared(e.clone())));
                if !stopped.shutdown_taken {
                    drain_until_shutdown(&rx, &e);
                }
            }
        })?;
    Ok((tx, h))
}

/// After a failure: keeps answering resets so the loop never blocks on us,
/// until `Shutdown` (or the loop is gone).
fn drain_until_shutdown(rx: &std_mpsc::Receiver<WalTask>, e: &Arc<NodeFailure>) {
    while let Ok(t) = rx.recv() {
        match t {
            WalTask::Reset { done, .. } => {
                let _ = done.send(Err(NodeFailure::during("WAL stopped", e.clone())));
            }
            WalTask::Shutdown => break,
            _ => {}
        }
    }
}

/// The longest a wake-up waits for more entries before its sync.
const MAX_GATHER: Duration = Duration::from_micros(250);

/// Group-commit pacing: how many entries the last sync covered and how long
/// it took.
#[derive(Default)]
struct Pacing {
    last_batch: usize,
    last_sync: Duration,
}

impl Pacing {
    /// How long a wake-up holding `entries` entries waits for more before
    /// syncing: only when fewer have arrived than the last sync covered (a
    /// load of many writers whose requests are still on their way), and at
    /// most half the last sync's duration (capped by [`MAX_GATHER`]).
    /// Without this, writers released together by one sync split into a
    /// lone early entry that takes a sync of its own and the rest that wait
    /// for it. A single writer never waits: its last batch had one entry.
    fn gather_budget(&self, entries: usize) -> Option<Duration> {
        (entries > 0 && entries < self.last_batch).then(|| (self.last_sync / 2).min(MAX_GATHER))
    }
}

/// What the thread knows about the store's durability (periodic mode).
struct Durable {
    /// Entries were appended (and perhaps flushed) since the last sync.
    unsynced: bool,
    /// When the last sync completed (or the thread started).
    last_sync: Instant,
}

impl Durable {
    /// Whether periodic mode (`interval`) must sync now.
    fn due(&self, interval: Duration) -> bool {
        self.unsynced && self.last_sync.elapsed() >= interval
    }

    fn sync<L: LogStore>(&mut self, log: &mut L) -> Result<(), NodeFailure> {
        log.sync()?;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }
}

/// Log entries a task appends.
fn entries_in(t: &WalTask) -> usize {
    match t {
        WalTask::Append(e) => e.len(),
        _ => 0,
    }
}

/// Whether a task must be executed without waiting for more.
fn is_urgent(t: &WalTask) -> bool {
    matches!(t, WalTask::Shutdown | WalTask::Reset { .. })
}

fn run<L: LogStore>(
    wal: &mut L,
    periodic: Option<Duration>,
    rx: &std_mpsc::Receiver<WalTask>,
    input: &std_mpsc::Sender<Input>,
    metrics: &crate::metrics::NodeMetrics,
) -> Result<(), Stopped> {
    let closed = |error: NodeFailure| Stopped {
        error,
        shutdown_taken: true,
    };
    let mut tasks: Vec<WalTask> = Vec::new();
    let mut pacing = Pacing::default();
    let mut durable = Durable {
        unsynced: false,
        last_sync: Instant::now(),
    };
    loop {
        let first = match periodic {
            Some(iv) if durable.unsynced => {
                let wait = iv.saturating_sub(durable.last_sync.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(t) => Some(t),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return finish(wal).map_err(closed),
                }
            }
            _ => match rx.recv() {
                Ok(t) => Some(t),
                Err(_) => return finish(wal).map_err(closed),
            },
        };
        tasks.extend(first);
        while let Ok(t) = rx.try_recv() {
            tasks.push(t);
        }
        let mut entries: usize = tasks.iter().map(entries_in).sum();
        if periodic.is_none() && !tasks.iter().any(is_urgent) {
            if let Some(budget) = pacing.gather_budget(entries) {
                entries = gather(rx, &mut tasks, entries, pacing.last_batch, budget);
            }
        }
        let shutdown = tasks.iter().any(|t| matches!(t, WalTask::Shutdown));
        let started = Instant::now();
        let synced =
            wake_up(wal, &mut durable, periodic, &mut tasks, input).map_err(|error| Stopped {
                error,
                shutdown_taken: shutdown,
            })?;
        if synced {
            pacing = Pacing {
                last_batch: entries,
                last_sync: started.elapsed(),
            };
            metrics
                .wal_sync_seconds
                .observe(pacing.last_sync.as_secs_f64());
            metrics.wal_batch_entries.observe(entries as f64);
        }
        if shutdown {
            return finish(wal).map_err(closed);
        }
    }
}

/// Receives more tasks until they append `target` entries in all, an
/// urgent task arrives, or `budget` has passed; returns the entries held.
fn gather(
    rx: &std_mpsc::Receiver<WalTask>,
    tasks: &mut Vec<WalTask>,
    mut entries: usize,
    target: usize,
    budget: Duration,
) -> usize {
    let deadline = Instant::now() + budget;
    while entries < target {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let Ok(t) = rx.recv_timeout(left) else {
            break;
        };
        entries += entries_in(&t);
        let urgent = is_urgent(&t);
        tasks.push(t);
        if urgent {
            break;
        }
    }
    entries
}

/// Executes the tasks of one wake-up: appends, then one sync for all of
/// them. Returns whether entries were appended.
fn wake_up<L: LogStore>(
    wal: &mut L,
    durable: &mut Durable,
    periodic: Option<Duration>,
    tasks: &mut Vec<WalTask>,
    input: &std_mpsc::Sender<Input>,
) -> Result<bool, NodeFailure> {
    let mut appended = false;
    for t in tasks.drain(..) {
        match t {
            WalTask::Append(entries) => {
                wal.append(&entries)?;
                appended = true;
            }
            WalTask::SetCommitted(i) => wal.set_committed(i),
            WalTask::Compact(i) => wal.compact(i)?,
            WalTask::Reset { next, done } => {
                // Anything appended before the reset is discarded by it.
                if let Err(e) = wal.reset(next) {
                    // Both the waiting loop and the node's stop report it.
                    let e = Arc::new(NodeFailure::from(e));
                    let _ = done.send(Err(NodeFailure::Shared(e.clone())));
                    return Err(NodeFailure::Shared(e));
                }
                let _ = done.send(Ok(()));
            }
            WalTask::Shutdown => {}
        }
    }
    if appended {
        match periodic {
            None => durable.sync(wal)?,
            Some(iv) => {
                wal.flush()?;
                durable.unsynced = true;
                if durable.due(iv) {
                    durable.sync(wal)?;
                }
            }
        }
        if let Some(term) = wal.last_term() {
            let _ = input.send(Input::Persisted {
                index: wal.last_index(),
                term,
            });
        }
    } else if periodic.is_some_and(|iv| durable.due(iv)) {
        durable.sync(wal)?;
    }
    Ok(appended)
}

fn finish<L: LogStore>(wal: &mut L) -> Result<(), NodeFailure> {
    Ok(wal.sync()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_engine_storage::wal::conformance::entry;
    use d_engine_storage::wal::{Wal, WalOptions};

    #[test]
    fn only_a_wake_up_smaller_than_the_last_batch_waits_and_briefly() {
        let after = |last_batch, sync_us| Pacing {
            last_batch,
            last_sync: Duration::from_micros(sync_us),
        };
        // A lone writer: its last batch was one entry.
        assert_eq!(after(1, 300).gather_budget(1), None);
        // Nothing to append (commit floors, compaction): no wait.
        assert_eq!(after(100, 300).gather_budget(0), None);
        // As many as last time: sync at once.
        assert_eq!(after(100, 300).gather_budget(100), None);
        assert_eq!(after(100, 300).gather_budget(150), None);
        // Fewer: half the last sync, never more than MAX_GATHER.
        assert_eq!(
            after(100, 300).gather_budget(1),
            Some(Duration::from_micros(150))
        );
        assert_eq!(after(100, 10_000).gather_budget(99), Some(MAX_GATHER));
    }

    /// A store that counts the calls the thread makes (over `MemLog`).
    #[derive(Default)]
    struct Counting {
        log: d_engine_storage::wal::MemLog,
        appends: usize,
        syncs: usize,
        flushes: usize,
    }

    impl LogStore for Counting {
        fn append(&mut self, e: &[Entry]) -> d_engine_storage::wal::Result<()> {
            self.appends += 1;
            self.log.append(e)
        }
        fn sync(&mut self) -> d_engine_storage::wal::Result<()> {
            self.syncs += 1;
            Ok(())
        }
        fn flush(&mut self) -> d_engine_storage::wal::Result<()> {
            self.flushes += 1;
            Ok(())
        }
        fn truncate_suffix(&mut self, from: Index) -> d_engine_storage::wal::Result<()> {
            self.log.truncate_suffix(from)
        }
        fn compact(&mut self, upto: Index) -> d_engine_storage::wal::Result<()> {
            self.log.compact(upto)
        }
        fn reset(&mut self, next: Index) -> d_engine_storage::wal::Result<()> {
            self.log.reset(next)
        }
        fn read(&self, lo: Index, hi: Index) -> d_engine_storage::wal::Result<Vec<Entry>> {
            self.log.read(lo, hi)
        }
        fn set_committed(&mut self, index: Index) {
            self.log.set_committed(index)
        }
        fn first_index(&self) -> Index {
            self.log.first_index()
        }
        fn last_index(&self) -> Index {
            self.log.last_index()
        }
        fn last_term(&self) -> Option<d_engine_core::Term> {
            self.log.last_term()
        }
    }

    fn appends(lo: Index, hi: Index) -> Vec<WalTask> {
        (lo..=hi)
            .map(|i| WalTask::Append(vec![entry(i, 1, 8)]))
            .collect()
    }

    /// Group commit through the trait: every batch of a wake-up appended,
    /// ONE sync for all, then the last one reported persisted; in periodic
    /// mode a flush per wake-up and a sync only once the interval passed.
    #[test]
    fn one_sync_per_wake_up_and_periodic_flushes_through_the_trait() {
        let (input, inputs) = std_mpsc::channel();
        let mut log = Counting::default();
        let mut durable = Durable {
            unsynced: false,
            last_sync: Instant::now(),
        };
        let mut tasks = appends(1, 5);
        assert!(wake_up(&mut log, &mut durable, None, &mut tasks, &input).unwrap());
        assert_eq!((log.appends, log.syncs, log.flushes), (5, 1, 0));
        assert!(matches!(
            inputs.try_recv(),
            Ok(Input::Persisted { index: 5, term: 1 })
        ));

        let iv = Duration::from_secs(10);
        let mut tasks = appends(6, 7);
        assert!(wake_up(&mut log, &mut durable, Some(iv), &mut tasks, &input).unwrap());
        assert_eq!((log.appends, log.syncs, log.flushes), (7, 1, 1));
        assert!(durable.unsynced, "flushed, not synced");
        assert!(matches!(
            inputs.try_recv(),
            Ok(Input::Persisted { index: 7, .. })
        ));
        // The interval passes: the next wake-up (even without entries) syncs.
        durable.last_sync = Instant::now().checked_sub(iv).expect("a clock 10 s old");
        assert!(!wake_up(&mut log, &mut durable, Some(iv), &mut Vec::new(), &input).unwrap());
        assert_eq!(log.syncs, 2);
        assert!(!durable.unsynced);
        // Nothing pending: no sync.
        durable.last_sync = Instant::now().checked_sub(iv).expect("a clock 10 s old");
        wake_up(&mut log, &mut durable, Some(iv), &mut Vec::new(), &input).unwrap();
        assert_eq!(log.syncs, 2);
    }

    /// A wake-up that holds both a failing task and `Shutdown` must end the
    /// thread: the consensus loop, joining it, sends no second `Shutdown`.
    /// (A full disk during shutdown used to hang the node this way.)
    #[test]
    fn a_failure_in_the_shutdown_wake_up_ends_the_thread() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
            let (input, inputs) = std_mpsc::channel();
            let (tx, thread) = spawn(wal, None, input, 1, Default::default()).unwrap();
            // Index 5 on an empty log leaves a gap: the append is refused.
            tx.send(WalTask::Append(vec![entry(5, 1, 8)])).unwrap();
            tx.send(WalTask::Shutdown).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !thread.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: the WAL thread did not exit after a failure and Shutdown"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            thread.join().unwrap();
            assert!(
                matches!(inputs.try_recv(), Ok(Input::Fatal(_))),
                "round {round}: the failure was not reported"
            );
        }
    }
}
