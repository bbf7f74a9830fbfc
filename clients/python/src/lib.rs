//! `d_engine._native`: the d-engine engine in-process for Python.
//!
//! The public Python API is `d_engine.EmbeddedEngine`
//! (`python/d_engine/_embedded.py`): argument checking, dataclasses and the
//! asyncio form live there; this module only moves bytes and integers across
//! the boundary, releasing the GIL whenever it waits.

#[cfg(feature = "bench")]
mod bench;
mod cluster;
mod engine;
mod errors;
mod rpc;
mod watch;

use pyo3::prelude::*;

/// The engine's own allocations (Python objects still use Python's
/// allocator); see docs/performance.md, "Allocator".
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Installs a stderr log subscriber when `DENGINE_LOG` is set (an
/// `EnvFilter` directive such as `info` or `d_engine=debug`).
fn init_logging() {
    if let Ok(filter) = std::env::var("DENGINE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logging();
    m.add_class::<engine::Engine>()?;
    m.add_class::<watch::Watch>()?;
    m.add_class::<cluster::ClusterWatch>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The API's size limits (one definition: `d_engine_api::limits`).
    m.add("MAX_KEY_BYTES", d_engine::MAX_KEY_BYTES)?;
    m.add("MAX_VALUE_BYTES", d_engine::MAX_VALUE_BYTES)?;
    m.add("KEY_SETTING", d_engine::limits::KEY_SETTING)?;
    m.add("VALUE_SETTING", d_engine::limits::VALUE_SETTING)?;
    #[cfg(feature = "bench")]
    m.add_function(wrap_pyfunction!(bench::bench_get, m)?)?;
    Ok(())
}
