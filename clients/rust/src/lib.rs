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
mod auth_admin;
mod backup;
mod builder;
mod client;
mod cluster;
mod cluster_watch;
mod endpoint;
mod grpc_kv;
mod router;
pub mod tls;
mod watch;

pub use admin::GrpcAdmin;
pub use auth::Credentials;
pub use auth_admin::{AuthChange, AuthPermission, AuthRole, AuthToken, AuthUser, GrpcAuth};
pub use backup::{SavedSnapshot, BACKUP_IDLE_TIMEOUT};
pub use builder::{ClientBuilder, ClientConfig, EndpointHook, MAX_WRITE_SESSIONS};
pub use client::Client;
pub use cluster::{GrpcCluster, Membership};
/// Write identities for exactly-once retries (moved to `d-engine-api`).
pub use d_engine_api::write_ids as session;
pub use d_engine_api::RetryPolicy;
pub use d_engine_api::{Alarm, NodeRole, NodeStatus};
pub use endpoint::{normalize_endpoint, DEFAULT_CLIENT_PORT};
pub use grpc_kv::GrpcKv;
pub use tls::{PemSource, TlsOptions};

// The API vocabulary (types, errors, limits, status codec, `KvClient`)
// lives in `d_engine_api`; re-exported so `d_engine_client::Error`,
// `d_engine_client::status_codec::…` and `d_engine_client::KvClient` keep
// working.
pub use d_engine_api::types::*;
pub use d_engine_api::{cancel_error, dyn_kv, limits, status_codec};
pub use d_engine_api::{
    scan_prefix_pages, CoordClient, DynKvClient, HeldLock, KvClient, LeaseKeeper, RangeWalk,
    WatchStream,
};
pub use d_engine_api::{Bytes, Limits, MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use d_engine_api::{ClusterChangeStream, ClusterState};
pub use d_engine_api::{Error, ErrorCode, Result, WatchCancel};
// Crate-internal paths of the moved modules.
use d_engine_api::{convert, error, kv, types};
