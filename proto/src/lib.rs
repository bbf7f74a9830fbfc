//! Generated gRPC types for d-engine.
