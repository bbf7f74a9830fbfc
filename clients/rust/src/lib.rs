//! Rust client for d-engine.
//!
//! [`KvClient`] is the one key-value API that both modes implement: the
//! embedded engine's in-process client (`d_engine::EmbeddedClient`) and the
//! gRPC [`Client`] (through [`Client::kv`]). Business logic written against
//! `KvClient` changes mode by changing only how the client is built.

mod error;
mod kv;
mod types;

pub use error::{Error, ErrorCode, Result};
pub use kv::KvClient;
pub use types::*;
