//! Rust client for d-engine.
//!
//! [`KvClient`] is the one key-value API that both modes implement: the
//! embedded engine's in-process client (`d_engine::EmbeddedClient`) and the
//! gRPC [`Client`] (through [`Client::kv`]). Business logic written against
//! `KvClient` changes mode by changing only how the client is built.
//!
//! ```no_run
//! use d_engine_client::{Client, ClientBuilder};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client: Client = ClientBuilder::new(vec!["http://127.0.0.1:9083".to_string()])
//!     .build()
//!     .await?;
//! client.kv().put(b"key".to_vec(), b"value".to_vec()).await?;
//! # Ok(()) }
//! ```
//!
//! The gRPC client discovers the leader (asking any endpoint), follows
//! NotLeader hints, retries on leader change, unavailability and overload
//! with jittered exponential backoff inside an overall deadline, and tags
//! every write with a `(client_id, seq)` that stays the same on retries so
//! the server applies it once. See [`ClientConfig`] for every knob and
//! [`status_codec`] for the wire error convention.

mod admin;
mod auth;
mod backoff;
mod builder;
mod client;
mod cluster;
mod convert;
mod endpoint;
mod error;
mod grpc_kv;
mod kv;
mod limits;
mod router;
pub mod session;
pub mod status_codec;
pub mod tls;
mod types;
mod watch;

pub use admin::{GrpcAdmin, NodeStatus};
pub use auth::Credentials;
pub use backoff::RetryPolicy;
pub use builder::{ClientBuilder, ClientConfig, EndpointHook, MAX_WRITE_SESSIONS};
pub use client::Client;
pub use cluster::{GrpcCluster, Membership};
pub use endpoint::{normalize_endpoint, DEFAULT_CLIENT_PORT};
pub use error::{Error, ErrorCode, Result};
pub use grpc_kv::{GrpcKv, ScanPage};
pub use kv::{KvClient, WatchStream};
pub use limits::{Limits, MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use tls::{PemSource, TlsOptions};
pub use types::*;
pub use watch::cancel_error;
