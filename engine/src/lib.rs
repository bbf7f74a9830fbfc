//! d-engine: embedded engine, storage and runtime.
pub use d_engine_core as core;
