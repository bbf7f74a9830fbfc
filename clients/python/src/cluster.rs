//! [`ClusterWatch`]: the embedded node's cluster-change stream
//! (`EmbeddedEngine::cluster_changes`), consumed from Python; the Python
//! side builds `leader_changes()`, `member_changes()` and
//! `cluster_changes()` (iterators and async iterators) on it.
//!
//! Items cross as serialized `dengine.v1.ClusterEvent` messages, so the
//! Python side decodes them with the gRPC client's code (one codec).
//! Same shape as [`crate::watch::Watch`]:
//! - `next_event(timeout)` blocks without the GIL for at most `timeout`
//!   seconds; returns the event bytes, `None` (timed out), `False`
//!   (cancelled) or raises `ShuttingDown` when the node stopped;
//! - `pump(done)` calls `done(bytes, None)` per item from a runtime thread,
//!   then `done(None, ShuttingDown)` at the end or `done(False, None)` once
//!   cancelled (the asyncio form);
//! - `cancel()` is idempotent, callable from any thread, wakes a waiter.

use std::sync::Arc;
use std::time::Duration;

use d_engine::{convert, ClusterState, ClusterStateStream};
use d_engine_proto::v1 as pb;
use prost::Message;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes};
use tokio::sync::{watch as signal, Mutex};

use crate::engine::{deliver, Rt};
use crate::errors;

enum Next {
    Item(ClusterState),
    TimedOut,
    Cancelled,
    Ended,
}

#[pyclass(frozen, module = "d_engine._native")]
pub struct ClusterWatch {
    rt: Arc<Rt>,
    stream: Arc<Mutex<Option<ClusterStateStream>>>,
    cancel: Arc<signal::Sender<bool>>,
}

impl ClusterWatch {
    pub fn new(rt: Arc<Rt>, stream: ClusterStateStream) -> ClusterWatch {
        ClusterWatch {
            rt,
            stream: Arc::new(Mutex::new(Some(stream))),
            cancel: Arc::new(signal::channel(false).0),
        }
    }
}

async fn next(
    stream: &Mutex<Option<ClusterStateStream>>,
    cancel: &signal::Sender<bool>,
    timeout: Option<Duration>,
) -> Next {
    let mut cancelled = cancel.subscribe();
    if *cancelled.borrow() {
        return Next::Cancelled;
    }
    let mut guard = stream.lock().await;
    let Some(rx) = guard.as_mut() else {
        return Next::Cancelled;
    };
    let recv = async {
        match timeout {
            Some(t) => tokio::time::timeout(t, rx.recv()).await.ok(),
            None => Some(rx.recv().await),
        }
    };
    let out = tokio::select! {
        _ = cancelled.wait_for(|c| *c) => Next::Cancelled,
        r = recv => match r {
            None => Next::TimedOut,
            Some(None) => Next::Ended,
            Some(Some(s)) => Next::Item(s),
        },
    };
    if matches!(out, Next::Cancelled | Next::Ended) {
        guard.take();
    }
    out
}

/// The wire form of one item (header node id only: the embedded node).
fn encode(s: ClusterState) -> Vec<u8> {
    pb::ClusterEvent {
        header: Some(pb::ResponseHeader {
            node_id: s.node_id,
            term: s.leader.term,
            revision: 0,
        }),
        leader_id: s.leader.id,
        leader_addr: s.leader.client_addr,
        term: s.leader.term,
        members: convert::members_to_wire(s.members),
        leader_changed: s.leader_changed,
        members_changed: s.members_changed,
    }
    .encode_to_vec()
}

fn to_py(py: Python<'_>, n: Next) -> PyResult<Py<PyAny>> {
    match n {
        Next::Item(s) => Ok(PyBytes::new(py, &encode(s)).into_any().unbind()),
        Next::TimedOut => Ok(py.None()),
        Next::Cancelled => Ok(PyBool::new(py, false).to_owned().into_any().unbind()),
        Next::Ended => Err(errors::coded(
            py,
            "SHUTTING_DOWN",
            "the cluster-change stream ended: the engine stopped".to_string(),
        )),
    }
}

#[pymethods]
impl ClusterWatch {
    /// The next item's bytes, `None` after `timeout` seconds, `False` once cancelled.
    fn next_event(&self, py: Python<'_>, timeout: f64) -> PyResult<Py<PyAny>> {
        if !(timeout.is_finite() && timeout >= 0.0) {
            return Err(PyValueError::new_err(format!(
                "timeout must be a finite number of seconds >= 0, got {timeout}"
            )));
        }
        let (rt, stream, cancel) = (self.rt.clone(), self.stream.clone(), self.cancel.clone());
        let t = Duration::from_secs_f64(timeout);
        let n = py.detach(move || rt.get().block_on(next(&stream, &cancel, Some(t))));
        to_py(py, n)
    }

    /// Forwards items to `done` until the end (see the module docs).
    fn pump(&self, done: Py<PyAny>) {
        let (stream, cancel) = (self.stream.clone(), self.cancel.clone());
        self.rt.get().spawn(async move {
            loop {
                let n = next(&stream, &cancel, None).await;
                let last = !matches!(n, Next::Item(_));
                deliver(&done, move |py| to_py(py, n));
                if last {
                    break;
                }
            }
        });
    }

    /// Stops the stream; a waiting `next_event` returns `False`.
    fn cancel(&self) {
        self.cancel.send_replace(true);
        if let Ok(mut g) = self.stream.try_lock() {
            g.take();
        }
    }
}
