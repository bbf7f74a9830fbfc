//! [`Watch`]: a watch stream of the embedded node, consumed from Python.
//!
//! - `next_event(timeout)` blocks without the GIL for at most `timeout`
//!   seconds (so the Python side can check for signals between waits) and
//!   returns an event tuple, `None` (timed out) or `False` (cancelled); it
//!   raises `WatchCanceled` when the node ends the stream (engine stopped,
//!   slow consumer) and the node's error for a failed watch.
//! - `pump(done)` forwards every event to `done(event, None)` from a runtime
//!   thread until the stream ends (`done(None, exception)`) or is cancelled
//!   (`done(False, None)`): the asyncio form.
//! - `cancel()` is idempotent, callable from any thread, and wakes a waiter.

use std::sync::Arc;
use std::time::Duration;

use d_engine::runtime::WatchStream;
use d_engine::WatchEvent;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBool;
use tokio::sync::{watch as signal, Mutex};

use crate::engine::{deliver, event_tuple, Rt};
use crate::errors;

enum Next {
    Event(WatchEvent),
    TimedOut,
    Cancelled,
    Ended,
    Failed(d_engine::Error),
}

#[pyclass(frozen, module = "d_engine._native")]
pub struct Watch {
    rt: Arc<Rt>,
    stream: Arc<Mutex<Option<WatchStream>>>,
    cancel: Arc<signal::Sender<bool>>,
}

impl Watch {
    pub fn new(rt: Arc<Rt>, stream: WatchStream) -> Watch {
        Watch {
            rt,
            stream: Arc::new(Mutex::new(Some(stream))),
            cancel: Arc::new(signal::channel(false).0),
        }
    }
}

/// Waits for the next item (at most `timeout` if given).
async fn next(
    stream: &Mutex<Option<WatchStream>>,
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
            Some(Some(Ok(ev))) => Next::Event(ev),
            Some(Some(Err(e))) => Next::Failed(e),
        },
    };
    if matches!(out, Next::Cancelled | Next::Ended | Next::Failed(_)) {
        // Unsubscribe from the node at once.
        guard.take();
    }
    out
}

fn to_py(py: Python<'_>, n: Next) -> PyResult<Py<PyAny>> {
    match n {
        Next::Event(ev) => event_tuple(py, &ev),
        Next::TimedOut => Ok(py.None()),
        Next::Cancelled => Ok(PyBool::new(py, false).to_owned().into_any().unbind()),
        Next::Ended => Err(errors::coded(
            py,
            "WATCH_CANCELED",
            "the watch ended: the engine stopped or the watcher fell too far behind (watch.buffer)"
                .to_string(),
        )),
        Next::Failed(e) => Err(errors::to_py(py, e)),
    }
}

#[pymethods]
impl Watch {
    /// The next event tuple, `None` after `timeout` seconds, `False` once cancelled.
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

    /// Forwards events to `done` until the end (see the module docs).
    fn pump(&self, done: Py<PyAny>) {
        let (stream, cancel) = (self.stream.clone(), self.cancel.clone());
        self.rt.get().spawn(async move {
            loop {
                let n = next(&stream, &cancel, None).await;
                let last = !matches!(n, Next::Event(_));
                deliver(&done, move |py| to_py(py, n));
                if last {
                    break;
                }
            }
        });
    }

    /// Stops the watch; a waiting `next_event` returns `False`.
    fn cancel(&self) {
        self.cancel.send_replace(true);
        if let Ok(mut g) = self.stream.try_lock() {
            g.take();
        }
    }

    #[getter]
    fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }
}
