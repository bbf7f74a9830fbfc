//! [`Engine`]: one embedded d-engine node and the tokio runtime it runs on.
//!
//! Contracts:
//! - One multi-thread tokio runtime per engine, owned by it; the node's
//!   servers and every request run on it.
//! - Blocking calls release the GIL (`py.detach`) while they wait, so other
//!   Python threads run; every wait is bounded by the engine's request
//!   timeout or the caller's timeout.
//! - `*_async` variants return at once and later call `done(result, error)`
//!   from a runtime thread (with the GIL); the Python side hands that to its
//!   event loop with `call_soon_threadsafe`.
//! - After `stop()` every call raises `ClientClosed`; `stop()` is idempotent
//!   and also runs when the engine object is garbage-collected.
//! - Runtime tasks never own the engine, so the runtime is never dropped on
//!   one of its own threads.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_engine::{
    CasOutcome, Consistency, EmbeddedClient, EmbeddedEngine, Error, EventType, KeyValue,
    LeaderInfo, MemberInfo, MemberRole, RangeEnd, WatchEvent, WatchOptions,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use tokio::runtime::Runtime;

use crate::cluster::ClusterWatch;
use crate::errors;
use crate::watch::Watch;

/// Owns the runtime; dropping it never blocks (the node was stopped first).
pub struct Rt(Option<Runtime>);

impl Rt {
    pub fn get(&self) -> &Runtime {
        self.0.as_ref().expect("runtime present until drop")
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

struct Inner {
    rt: Arc<Rt>,
    engine: Mutex<Option<EmbeddedEngine>>,
    client: EmbeddedClient,
    closed: AtomicBool,
    node_id: u64,
    peer_addr: Option<String>,
    client_addr: Option<String>,
}

impl Inner {
    /// Stops the node (idempotent). Blocks: call without the GIL.
    fn stop_blocking(&self) -> Result<(), Error> {
        self.closed.store(true, Ordering::SeqCst);
        let engine = self.engine.lock().unwrap_or_else(|p| p.into_inner()).take();
        match engine {
            Some(e) => self.rt.get().block_on(async move {
                let r = e.stop().await;
                drop(e);
                r
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let running = self.engine.lock().map(|e| e.is_some()).unwrap_or(false);
        if running {
            // Garbage-collected without stop(): stop now, without holding the
            // GIL (runtime threads may need it to finish async callbacks).
            let stop = || {
                let _ = self.stop_blocking();
            };
            if Python::try_attach(|py| py.detach(stop)).is_none() {
                let _ = self.stop_blocking();
            }
        }
    }
}

/// Result of one request, converted to Python with the GIL.
pub enum Out {
    Rev(u64),
    Bool(bool),
    Kv(Option<KeyValue>),
    Kvs(Vec<Option<KeyValue>>),
    Scan(Vec<KeyValue>),
    Cas(CasOutcome),
    Leader(LeaderInfo),
    /// A serialized `dengine.v1` response (see `rpc.rs`).
    Message(Vec<u8>),
}

pub fn kv_tuple<'py>(py: Python<'py>, kv: &KeyValue) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            PyBytes::new(py, &kv.key).into_any(),
            PyBytes::new(py, &kv.value).into_any(),
            kv.create_revision.into_pyobject(py)?.into_any(),
            kv.mod_revision.into_pyobject(py)?.into_any(),
            kv.version.into_pyobject(py)?.into_any(),
            kv.expires_at_ms.into_pyobject(py)?.into_any(),
            kv.lease.into_pyobject(py)?.into_any(),
        ],
    )
}

fn opt_kv(py: Python<'_>, kv: &Option<KeyValue>) -> PyResult<Py<PyAny>> {
    Ok(match kv {
        Some(kv) => kv_tuple(py, kv)?.into_any().unbind(),
        None => py.None(),
    })
}

/// `(type, kv, prev_kv)` with type `"put"`, `"delete"` or `"progress"`
/// (only for watches that asked for progress notifications); `prev_kv` is
/// `None` unless the watch asked for it and the key existed.
pub fn event_tuple(py: Python<'_>, ev: &WatchEvent) -> PyResult<Py<PyAny>> {
    let kind = match ev.kind {
        EventType::Put => "put",
        EventType::Delete => "delete",
        EventType::Progress => "progress",
    };
    Ok((kind, kv_tuple(py, &ev.kv)?, opt_kv(py, &ev.prev_kv)?)
        .into_pyobject(py)?
        .into_any()
        .unbind())
}

fn leader_tuple(py: Python<'_>, l: &LeaderInfo) -> PyResult<Py<PyAny>> {
    Ok((l.id, l.client_addr.as_str(), l.term)
        .into_pyobject(py)?
        .into_any()
        .unbind())
}

impl Out {
    fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self {
            Out::Rev(r) => r.into_pyobject(py)?.into_any().unbind(),
            Out::Bool(b) => pyo3::types::PyBool::new(py, b)
                .to_owned()
                .into_any()
                .unbind(),
            Out::Kv(kv) => opt_kv(py, &kv)?,
            Out::Kvs(kvs) => {
                let items = kvs
                    .iter()
                    .map(|kv| opt_kv(py, kv))
                    .collect::<PyResult<Vec<_>>>()?;
                pyo3::types::PyList::new(py, items)?.into_any().unbind()
            }
            Out::Scan(kvs) => {
                let items = kvs
                    .iter()
                    .map(|kv| kv_tuple(py, kv))
                    .collect::<PyResult<Vec<_>>>()?;
                pyo3::types::PyList::new(py, items)?.into_any().unbind()
            }
            Out::Cas(c) => (c.succeeded, opt_kv(py, &c.current)?, c.revision)
                .into_pyobject(py)?
                .into_any()
                .unbind(),
            Out::Leader(l) => leader_tuple(py, &l)?,
            Out::Message(b) => PyBytes::new(py, &b).into_any().unbind(),
        })
    }
}

pub(crate) fn consistency(c: u8) -> PyResult<Consistency> {
    match c {
        0 => Ok(Consistency::Linearizable),
        1 => Ok(Consistency::Lease),
        2 => Ok(Consistency::Eventual),
        _ => Err(PyValueError::new_err(format!(
            "consistency code {c} is not 0 (linearizable), 1 (lease) or 2 (eventual)"
        ))),
    }
}

fn ttl(ttl_ms: u64) -> Option<Duration> {
    (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms))
}

type Fut = std::pin::Pin<Box<dyn Future<Output = Result<Out, Error>> + Send + 'static>>;

/// One embedded node. Thread-safe; see the module docs.
#[pyclass(frozen, module = "d_engine._native")]
pub struct Engine {
    inner: Arc<Inner>,
}

fn new_runtime() -> PyResult<Runtime> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get().clamp(2, 4))
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("d-engine-py")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the tokio runtime: {e}")))
}

#[cfg(feature = "bench")]
impl Engine {
    /// The client and runtime, for the `bench` feature's Rust baseline.
    pub(crate) fn bench_parts(&self, py: Python<'_>) -> PyResult<(EmbeddedClient, Arc<Rt>)> {
        self.check_open(py)?;
        Ok((self.inner.client.clone(), self.inner.rt.clone()))
    }
}

impl Engine {
    fn launch<F>(py: Python<'_>, start: F) -> PyResult<Engine>
    where
        F: Future<Output = Result<EmbeddedEngine, d_engine::StartError>> + Send,
    {
        let rt = new_runtime()?;
        let started = py.detach(|| rt.block_on(start));
        let engine = match started {
            Ok(e) => e,
            Err(e) => {
                rt.shutdown_background();
                return Err(errors::start_to_py(py, e));
            }
        };
        let inner = Inner {
            client: engine.client(),
            node_id: engine.node_id(),
            peer_addr: engine.peer_addr().map(|a| a.to_string()),
            client_addr: engine.client_addr().map(|a| a.to_string()),
            engine: Mutex::new(Some(engine)),
            rt: Arc::new(Rt(Some(rt))),
            closed: AtomicBool::new(false),
        };
        Ok(Engine {
            inner: Arc::new(inner),
        })
    }

    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(errors::closed(py));
        }
        Ok(())
    }

    /// Runs `fut` to completion without the GIL.
    fn block(&self, py: Python<'_>, fut: Fut) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let rt = self.inner.rt.clone();
        match py.detach(move || rt.get().block_on(fut)) {
            Ok(out) => out.into_py(py),
            Err(e) => Err(errors::to_py(py, e)),
        }
    }

    /// Spawns `fut`; calls `done(result, None)` or `done(None, exception)`.
    fn spawn(&self, py: Python<'_>, fut: Fut, done: Py<PyAny>) -> PyResult<()> {
        self.check_open(py)?;
        self.inner.rt.get().spawn(async move {
            let r = fut.await;
            deliver(&done, move |py| match r {
                Ok(out) => out.into_py(py),
                Err(e) => Err(errors::to_py(py, e)),
            });
        });
        Ok(())
    }

    fn op(&self, args: OpArgs) -> Fut {
        let c = self.inner.client.clone();
        match args {
            OpArgs::Put(k, v, t) => Box::pin(async move {
                match ttl(t) {
                    Some(d) => c.put_with_ttl(k, v, d).await.map(Out::Rev),
                    None => c.put(k, v).await.map(Out::Rev),
                }
            }),
            OpArgs::Get(k, cons) => Box::pin(async move { c.get_with(k, cons).await.map(Out::Kv) }),
            OpArgs::GetMulti(ks, cons) => {
                Box::pin(async move { c.get_multi(ks, cons).await.map(Out::Kvs) })
            }
            OpArgs::Key(k) => Box::pin(async move { c.delete(k).await.map(Out::Bool) }),
            OpArgs::Cas(k, exp, new, t) => Box::pin(async move {
                match ttl(t) {
                    Some(d) => c
                        .compare_and_swap_with_ttl(k, exp, new, d)
                        .await
                        .map(Out::Cas),
                    None => c.compare_and_swap(k, exp, new).await.map(Out::Cas),
                }
            }),
            OpArgs::Scan(p, limit, cons) => {
                Box::pin(async move { c.scan_prefix(p, limit, cons).await.map(Out::Scan) })
            }
            OpArgs::Call(method, req) => {
                Box::pin(
                    async move { crate::rpc::dispatch(c, method, req).await.map(Out::Message) },
                )
            }
            OpArgs::Timeout(d) => {
                let engine_handle = c.handle().clone();
                Box::pin(async move { engine_handle.wait_leader(d).await.map(Out::Leader) })
            }
        }
    }
}

enum OpArgs {
    Put(Vec<u8>, Vec<u8>, u64),
    Get(Vec<u8>, Consistency),
    GetMulti(Vec<Vec<u8>>, Consistency),
    Key(Vec<u8>),
    Cas(Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>, u64),
    Scan(Vec<u8>, u32, Consistency),
    Call(String, Vec<u8>),
    Timeout(Duration),
}

/// Calls `done(value, None)` / `done(None, exc)` with the GIL, from a
/// runtime thread. Errors raised by `done` are reported as unraisable.
pub fn deliver<F>(done: &Py<PyAny>, make: F)
where
    F: for<'py> FnOnce(Python<'py>) -> PyResult<Py<PyAny>>,
{
    // The interpreter may be shutting down: then nobody waits any more.
    let _ = Python::try_attach(|py| {
        let args = match make(py) {
            Ok(v) => (v, py.None()),
            Err(e) => (py.None(), e.into_value(py).into_any()),
        };
        if let Err(e) = done.call1(py, args) {
            e.write_unraisable(py, None);
        }
    });
}

fn keys_arg(keys: Vec<Bound<'_, PyBytes>>) -> Vec<Vec<u8>> {
    keys.iter().map(|k| k.as_bytes().to_vec()).collect()
}

fn duration_arg(seconds: f64) -> PyResult<Duration> {
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(PyValueError::new_err(format!(
            "timeout must be a finite number of seconds >= 0, got {seconds}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[pymethods]
impl Engine {
    /// A single-node engine with its data in `data_dir` and no listeners.
    #[staticmethod]
    fn start(py: Python<'_>, data_dir: PathBuf) -> PyResult<Engine> {
        Engine::launch(py, async move { EmbeddedEngine::start(data_dir).await })
    }

    /// An engine configured by the TOML file at `path` (docs/config.md).
    #[staticmethod]
    fn start_with(py: Python<'_>, path: PathBuf) -> PyResult<Engine> {
        Engine::launch(py, async move { EmbeddedEngine::start_with(path).await })
    }

    /// Waits for a leader; returns `(leader_id, leader_client_addr, term)`.
    fn wait_ready(&self, py: Python<'_>, timeout: f64) -> PyResult<Py<PyAny>> {
        let f = self.op(OpArgs::Timeout(duration_arg(timeout)?));
        self.block(py, f)
    }

    fn wait_ready_async(&self, py: Python<'_>, timeout: f64, done: Py<PyAny>) -> PyResult<()> {
        let f = self.op(OpArgs::Timeout(duration_arg(timeout)?));
        self.spawn(py, f, done)
    }

    /// Stops the node (WAL synced, threads joined). Idempotent.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        py.detach(move || inner.stop_blocking())
            .map_err(|e| errors::to_py(py, e))
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    #[getter]
    fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// Bound peer (Raft) address, if served.
    #[getter]
    fn peer_addr(&self) -> Option<String> {
        self.inner.peer_addr.clone()
    }

    /// Bound client gRPC API address, if served.
    #[getter]
    fn client_addr(&self) -> Option<String> {
        self.inner.client_addr.clone()
    }

    #[pyo3(signature = (key, value, ttl_ms=0))]
    fn put(&self, py: Python<'_>, key: &[u8], value: &[u8], ttl_ms: u64) -> PyResult<Py<PyAny>> {
        let f = self.op(OpArgs::Put(key.to_vec(), value.to_vec(), ttl_ms));
        self.block(py, f)
    }

    fn put_async(
        &self,
        py: Python<'_>,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        done: Py<PyAny>,
    ) -> PyResult<()> {
        let f = self.op(OpArgs::Put(key.to_vec(), value.to_vec(), ttl_ms));
        self.spawn(py, f, done)
    }

    #[pyo3(signature = (key, consistency=0))]
    fn get(&self, py: Python<'_>, key: &[u8], consistency: u8) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let cons = self::consistency(consistency)?;
        let c = self.inner.client.clone();
        let key = key.to_vec();
        // Hot path: no boxing, no Out enum.
        let rt = self.inner.rt.clone();
        match py.detach(move || rt.get().block_on(c.get_with(key, cons))) {
            Ok(kv) => opt_kv(py, &kv),
            Err(e) => Err(errors::to_py(py, e)),
        }
    }

    fn get_async(
        &self,
        py: Python<'_>,
        key: &[u8],
        consistency: u8,
        done: Py<PyAny>,
    ) -> PyResult<()> {
        let f = self.op(OpArgs::Get(key.to_vec(), self::consistency(consistency)?));
        self.spawn(py, f, done)
    }

    #[pyo3(signature = (keys, consistency=0))]
    fn get_multi(
        &self,
        py: Python<'_>,
        keys: Vec<Bound<'_, PyBytes>>,
        consistency: u8,
    ) -> PyResult<Py<PyAny>> {
        let f = self.op(OpArgs::GetMulti(
            keys_arg(keys),
            self::consistency(consistency)?,
        ));
        self.block(py, f)
    }

    fn get_multi_async(
        &self,
        py: Python<'_>,
        keys: Vec<Bound<'_, PyBytes>>,
        consistency: u8,
        done: Py<PyAny>,
    ) -> PyResult<()> {
        let f = self.op(OpArgs::GetMulti(
            keys_arg(keys),
            self::consistency(consistency)?,
        ));
        self.spawn(py, f, done)
    }

    fn delete(&self, py: Python<'_>, key: &[u8]) -> PyResult<Py<PyAny>> {
        let f = self.op(OpArgs::Key(key.to_vec()));
        self.block(py, f)
    }

    fn delete_async(&self, py: Python<'_>, key: &[u8], done: Py<PyAny>) -> PyResult<()> {
        let f = self.op(OpArgs::Key(key.to_vec()));
        self.spawn(py, f, done)
    }

    /// Returns `(succeeded, kv_or_None, revision)`.
    #[pyo3(signature = (key, expected, new_value, ttl_ms=0))]
    fn compare_and_swap(
        &self,
        py: Python<'_>,
        key: &[u8],
        expected: Option<&[u8]>,
        new_value: Option<&[u8]>,
        ttl_ms: u64,
    ) -> PyResult<Py<PyAny>> {
        let args = OpArgs::Cas(
            key.to_vec(),
            expected.map(<[u8]>::to_vec),
            new_value.map(<[u8]>::to_vec),
            ttl_ms,
        );
        let f = self.op(args);
        self.block(py, f)
    }

    #[allow(clippy::too_many_arguments)]
    fn compare_and_swap_async(
        &self,
        py: Python<'_>,
        key: &[u8],
        expected: Option<&[u8]>,
        new_value: Option<&[u8]>,
        ttl_ms: u64,
        done: Py<PyAny>,
    ) -> PyResult<()> {
        let args = OpArgs::Cas(
            key.to_vec(),
            expected.map(<[u8]>::to_vec),
            new_value.map(<[u8]>::to_vec),
            ttl_ms,
        );
        let f = self.op(args);
        self.spawn(py, f, done)
    }

    /// A coordination call (`rpc.rs`): `method` is the RPC name (e.g.
    /// "Txn"), `request` its serialized request; returns the serialized
    /// response.
    fn call(&self, py: Python<'_>, method: &str, request: &[u8]) -> PyResult<Py<PyAny>> {
        let f = self.op(OpArgs::Call(method.to_string(), request.to_vec()));
        self.block(py, f)
    }

    fn call_async(
        &self,
        py: Python<'_>,
        method: &str,
        request: &[u8],
        done: Py<PyAny>,
    ) -> PyResult<()> {
        let f = self.op(OpArgs::Call(method.to_string(), request.to_vec()));
        self.spawn(py, f, done)
    }

    #[pyo3(signature = (prefix, limit=0, consistency=0))]
    fn scan_prefix(
        &self,
        py: Python<'_>,
        prefix: &[u8],
        limit: u32,
        consistency: u8,
    ) -> PyResult<Py<PyAny>> {
        let f = self.op(OpArgs::Scan(
            prefix.to_vec(),
            limit,
            self::consistency(consistency)?,
        ));
        self.block(py, f)
    }

    fn scan_prefix_async(
        &self,
        py: Python<'_>,
        prefix: &[u8],
        limit: u32,
        consistency: u8,
        done: Py<PyAny>,
    ) -> PyResult<()> {
        let f = self.op(OpArgs::Scan(
            prefix.to_vec(),
            limit,
            self::consistency(consistency)?,
        ));
        self.spawn(py, f, done)
    }

    /// A watch served by the local node of `key`, of every key under it if
    /// `prefix`, or of `[key, range_end)` (`b"\0"`: every key from `key`
    /// on), with the options of [`WatchOptions`].
    #[pyo3(signature = (key, prefix, start_revision, range_end=None, prev_kv=false, progress_notify=false, no_put=false, no_delete=false))]
    #[allow(clippy::too_many_arguments)]
    fn watch(
        &self,
        py: Python<'_>,
        key: &[u8],
        prefix: bool,
        start_revision: u64,
        range_end: Option<Vec<u8>>,
        prev_kv: bool,
        progress_notify: bool,
        no_put: bool,
        no_delete: bool,
    ) -> PyResult<Watch> {
        self.check_open(py)?;
        let end = match (prefix, range_end) {
            (true, _) => RangeEnd::Prefix,
            (false, None) => RangeEnd::Single,
            (false, Some(e)) if e.is_empty() => RangeEnd::Single,
            (false, Some(e)) if e == [0] => RangeEnd::FromKey,
            (false, Some(e)) => RangeEnd::Before(e),
        };
        let options = WatchOptions {
            end,
            start_revision,
            prev_kv,
            progress_notify,
            no_put,
            no_delete,
        };
        let stream = self
            .inner
            .client
            .handle()
            .watch_with(key.to_vec(), &options)
            .map_err(|e| errors::to_py(py, e))?;
        Ok(Watch::new(self.inner.rt.clone(), stream))
    }

    /// The local node's leader/membership changes (see `cluster.rs`).
    fn cluster_changes(&self, py: Python<'_>) -> PyResult<ClusterWatch> {
        self.check_open(py)?;
        // The stream's task runs on the engine's runtime.
        let _in_runtime = self.inner.rt.get().enter();
        let stream = self.inner.client.handle().cluster_changes();
        Ok(ClusterWatch::new(self.inner.rt.clone(), stream))
    }

    /// `[(id, peer_addr, client_addr, role)]`.
    fn members(&self, py: Python<'_>) -> PyResult<Vec<(u64, String, String, &'static str)>> {
        self.check_open(py)?;
        Ok(self
            .inner
            .client
            .members()
            .into_iter()
            .map(|m: MemberInfo| {
                let role = match m.role {
                    MemberRole::Voter => "voter",
                    MemberRole::Learner => "learner",
                };
                (m.id, m.peer_addr, m.client_addr, role)
            })
            .collect())
    }

    /// `(leader_id, leader_client_addr, term)`; id 0 if unknown.
    fn leader(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        leader_tuple(py, &self.inner.client.leader())
    }

    fn __repr__(&self) -> String {
        format!(
            "Engine(node_id={}, peer_addr={:?}, client_addr={:?}, closed={})",
            self.inner.node_id,
            self.inner.peer_addr,
            self.inner.client_addr,
            self.inner.closed.load(Ordering::SeqCst)
        )
    }
}
