//! Stopping the consensus loop: every queued and waiting request is failed
//! (`ShuttingDown`, or `Storage` naming the failure), the WAL thread syncs
//! what it holds and stops, the apply thread stops, watches are closed and
//! the state machine is closed (bounded wait after a failure).

use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use d_engine_api::Error;

use super::super::apply::ApplyTask;
use super::super::failure::NodeFailure;
use super::super::shared::*;
use super::super::wal_thread::WalTask;
use super::CoreLoop;

impl CoreLoop {
    /// Stops the node: fails queued requests, stops and joins the WAL and
    /// apply threads (the WAL syncs what it has), closes watches.
    pub(super) fn stop(&mut self, error: Option<NodeFailure>) {
        let shared = self.shared.clone();
        let failed = error.is_some();
        let stop_error = error.as_ref().map(|e| e.to_error(shared.id));
        if let Some(e) = error {
            tracing::error!(error = %e, node = shared.id, "node stopping after a fatal error");
            *shared.failure.lock().expect("poisoned") = Some(e);
            shared.state.store(STATE_FAILED, Ordering::Release);
        } else {
            let _ = shared.state.compare_exchange(
                STATE_RUNNING,
                STATE_STOPPING,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        let err = || match &stop_error {
            Some(e) => e.clone(),
            None => Error::ShuttingDown("the node is shutting down".into()),
        };
        for w in self.batch_waiters.drain(..).flatten() {
            w.complete(Err(err()));
        }
        // Every waiting linearizable reader wakes, finds the node stopped
        // and fails with its error.
        self.reads.clear();
        shared.published.reads.publish(None, u64::MAX);
        for tx in self.snapshot_waiters.drain(..) {
            let _ = tx.send(Err(err()));
        }
        while let Ok(i) = self.rx.try_recv() {
            if i.is_client() {
                shared.queued.fetch_sub(1, Ordering::AcqRel);
            }
            i.fail(err());
        }
        let _ = self.wal_tx.send(WalTask::Shutdown);
        self.register_waiters(); // the apply thread fails them on shutdown
        let _ = self.apply_tx.send(ApplyTask::Shutdown);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        shared.hub.close_all(if failed {
            "the node failed"
        } else {
            "the node is shutting down"
        });
        if !failed {
            shared.state.store(STATE_STOPPED, Ordering::Release);
        }
        shared
            .published
            .role
            .store(ROLE_FOLLOWER, Ordering::Release);
        shared
            .published
            .leader_ready
            .store(false, Ordering::Release);
        shared
            .published
            .lease_deadline_ns
            .store(0, Ordering::Release);
        // Close the state machine: wait (bounded) for in-flight reads to
        // drop their references so sled flushes and releases its lock.
        let sm = shared.sm.write().expect("poisoned").take();
        if let Some(sm) = sm {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Arc::strong_count(&sm) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if Arc::strong_count(&sm) > 1 {
                tracing::warn!("state machine still referenced at shutdown");
            }
            if failed {
                close_failed_state_machine(sm);
            } else {
                drop(sm);
            }
        }
    }
}

/// How long a stopping node waits for a failed state machine to close.
const FAILED_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Closes the state machine of a node that stopped after a storage failure
/// without letting it block the stop: sled flushes when its last handle is
/// dropped, and after an I/O error (a full disk) that flush can wait
/// forever. The drop runs on its own thread; after [`FAILED_CLOSE_WAIT`]
/// the node stops anyway (the WAL, not sled, is the durable record, and the
/// next start replays it).
fn close_failed_state_machine(sm: Arc<dyn d_engine_storage::sm::StateMachine>) {
    let (done_tx, done_rx) = std_mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("dengine-sm-close".into())
        .spawn(move || {
            drop(sm);
            let _ = done_tx.send(());
        });
    match spawned {
        Ok(_) => {
            if done_rx.recv_timeout(FAILED_CLOSE_WAIT).is_err() {
                tracing::warn!(
                    "the failed state machine did not close within {FAILED_CLOSE_WAIT:?} \
                     (sled flushing to a failed disk); stopping without waiting for it"
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot spawn a thread to close the state machine; it was closed on this thread")
        }
    }
}
