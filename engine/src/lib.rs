//! # d-engine-node
//!
//! The d-engine node: everything that runs a replica (runtime, peer
//! transport, client gRPC services, auth, embedded mode). Applications use
//! it through the `d-engine` facade crate, which adds the gRPC client; this
//! crate never depends on the client (`engine/tests/module_graph.rs` and
//! `engine/Cargo.toml`). Its vocabulary (`Error`, `KeyValue`, [`KvClient`],
//! the status codec) comes from `d-engine-api`.
//!
//! - [`auth`]: optional authentication and authorization (`docs/auth.md`).
//! - [`config`]: the node configuration (TOML, `docs/config.md`).
//! - [`runtime`]: the node runtime and its [`runtime::NodeHandle`].
//! - [`embedded`]: [`EmbeddedEngine`] / [`EmbeddedClient`].
//! - [`storage`]: the storage crate, for custom log stores and state
//!   machines (`EngineBuilder::log_store`, `EngineBuilder::state_machine`).
//! - [`recipes`]: locks and leader election over leases and transactions.
//! - [`transport`]: the peer transport (tonic) behind a trait.
//! - [`service`]: the client gRPC services over a node handle.
//! - [`tls`]: TLS and peer mTLS material from `[tls]`.

pub mod app;
pub mod auth;
pub mod config;
pub mod embedded;
pub mod metrics;
pub mod recipes;
pub mod runtime;
pub mod service;
pub mod tls;
pub mod transport;

pub use config::Config;
// The API vocabulary: `Error`, `KeyValue`, `KvClient`, `status_codec`, ...
pub use d_engine_api::*;
pub use d_engine_core as core;
/// The storage crate: the public storage seams an embedder implements
/// ([`storage::wal::LogStore`], [`storage::sm::StateMachine`]) and their
/// conformance suites ([`storage::conformance`]); see `docs/embedding.md`.
pub use d_engine_storage as storage;
pub use embedded::{EmbeddedClient, EmbeddedEngine, EngineBuilder};
pub use runtime::{NodeHandle, StartError};
