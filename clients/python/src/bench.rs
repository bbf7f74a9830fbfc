//! Rust-side latency baseline for `clients/python/bench.py`, compiled only
//! with the `bench` feature (never part of the published extension):
//! `_native.bench_get(engine, key, n, consistency)` issues `n` sequential
//! embedded `get`s of `key` from the calling thread, through the same
//! `block_on` path as `Engine.get` but without Python, and returns
//! `(p50_ns, p99_ns, mean_ns)`.

use d_engine::Error;
use pyo3::prelude::*;

use crate::engine::{consistency, Engine};
use crate::errors;

#[pyfunction]
pub fn bench_get(
    py: Python<'_>,
    engine: PyRef<'_, Engine>,
    key: &[u8],
    n: u64,
    consistency_code: u8,
) -> PyResult<(u64, u64, f64)> {
    let cons = consistency(consistency_code)?;
    let (c, rt) = engine.bench_parts(py)?;
    let key = key.to_vec();
    let r = py.detach(move || {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("valid sigfig");
        for _ in 0..n {
            let t = std::time::Instant::now();
            rt.get().block_on(c.get_with(&key, cons))?;
            h.record(t.elapsed().as_nanos() as u64)
                .expect("auto-resizing histogram");
        }
        Ok::<_, Error>((
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.mean(),
        ))
    });
    r.map_err(|e| errors::to_py(py, e))
}
