//! # d-engine
//!
//! A strongly consistent, replicated key-value and coordination engine on
//! Raft. Use it embedded ([`EmbeddedEngine`]) or talk to a standalone
//! `d-engine-server` with the gRPC [`Client`]; both implement [`KvClient`].
//!
//! - [`auth`]: optional authentication and authorization (`docs/auth.md`).
//! - [`config`]: the node configuration (TOML, `docs/config.md`).
//! - [`runtime`]: the node runtime and its [`runtime::NodeHandle`].
//! - [`embedded`]: [`EmbeddedEngine`] / [`EmbeddedClient`].
//! - [`transport`]: the peer transport (tonic) behind a trait.
//! - [`service`]: the client gRPC services over a node handle.
//! - [`tls`]: TLS and peer mTLS material from `[tls]`.

pub mod auth;
pub mod config;
pub mod embedded;
pub mod runtime;
pub mod service;
pub mod tls;
pub mod transport;

pub use config::Config;
// The API vocabulary: `Error`, `KeyValue`, `KvClient`, `status_codec`, ...
pub use d_engine_api::*;
// The gRPC client, for `use d_engine::{Client, ClientBuilder}` (exactly the
// items the engine used to re-export from the client crate beyond the
// vocabulary above).
pub use d_engine_client::{
    normalize_endpoint, session, Client, ClientBuilder, ClientConfig, Credentials, EndpointHook,
    GrpcAdmin, GrpcCluster, GrpcKv, Membership, NodeStatus, RetryPolicy, DEFAULT_CLIENT_PORT,
    MAX_WRITE_SESSIONS,
};
pub use d_engine_core as core;
pub use embedded::{EmbeddedClient, EmbeddedEngine, EngineBuilder};
pub use runtime::{NodeHandle, StartError};
