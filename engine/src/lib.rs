//! # d-engine
//!
//! A strongly consistent, replicated key-value and coordination engine on
//! Raft. Use it embedded ([`EmbeddedEngine`]) or talk to a standalone
//! `d-engine-server` with the gRPC [`Client`]; both implement [`KvClient`].

pub mod config;
pub mod embedded;
pub mod runtime;
pub mod service;
pub mod transport;

pub use d_engine_client::*;
pub use d_engine_core as core;
