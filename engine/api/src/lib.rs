//! The vocabulary of d-engine's API, shared by the engine (runtime, client
//! services, auth), the embedded client, the gRPC client and the Python
//! binding, so each concept has one type and one spelling on the wire.
//!
//! - [`types`]: plain values of the key-value and cluster API.
//! - [`cluster_state`]: [`ClusterState`], the item of every cluster-change
//!   stream, and the rule that decides which views are news.
//! - [`error`]: [`Error`] / [`ErrorCode`], what a caller can act on.
//! - [`limits`]: request size limits and the one message each refusal has.
//! - [`status_codec`]: [`Error`] ⇄ gRPC status (the `client.proto` error
//!   convention), identical on both sides of the wire.
//! - [`convert`]: pure conversions between wire messages and these types.
//! - [`kv`]: the [`KvClient`] trait every client implements;
//!   [`dyn_kv`]: [`DynKvClient`], any `KvClient` behind one type, and the
//!   object-safe `dyn_kv::ErasedKvClient`.
//! - [`coord`]: the [`CoordClient`] trait (locks, election) and [`HeldLock`].
//! - [`lease_keeper`]: [`LeaseKeeper`], background lease renewal.
//! - [`tls`]: TLS options as data and the PEM file checks.
//! - [`retry`], [`write_ids`], [`auth_header`]: the retry curve, the
//!   exactly-once write-id windows and the `authorization` interceptor,
//!   shared by the Rust client and the embedded node's leader forwarder.
//! - [`cluster_state`]: leader and membership change streams.
//!
//! Contract: nothing here performs I/O except reading the PEM files a
//! [`TlsOptions`] names, and nothing here links a TLS stack, a runtime or
//! connection machinery (channels and routing stay in the client crate).

pub mod auth_header;
pub mod cluster_state;
pub mod convert;
pub mod coord;
pub mod dyn_kv;
pub mod error;
pub mod kv;
pub mod lease_keeper;
pub mod limits;
pub mod retry;
pub mod status;
pub mod status_codec;
pub mod tls;
pub mod types;
pub mod write_ids;

pub use auth_header::AuthHeader;
/// The buffer type of keys and values in [`KeyValue`] (re-exported so users
/// need no direct `bytes` dependency).
pub use bytes::Bytes;
pub use cluster_state::{
    ClusterChangeStream, ClusterState, ClusterStateStream, ClusterStateTracker,
};
pub use coord::{CoordClient, HeldLock};
pub use dyn_kv::DynKvClient;
pub use error::{Error, ErrorCode, Result, WatchCancel};
pub use kv::{scan_prefix_pages, KvClient, RangeWalk, WatchStream};
pub use lease_keeper::LeaseKeeper;
pub use limits::{Limits, MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use retry::RetryPolicy;
pub use status::{Alarm, NodeRole, NodeStatus};
pub use status_codec::cancel_error;
pub use tls::{PemSource, TlsOptions};
pub use types::*;
pub use write_ids::{WriteSessions, WriteTicket, WRITE_WINDOW};
