//! Rust gRPC client for d-engine.
