//! # d-engine
//!
//! A strongly consistent, replicated key-value and coordination engine on
//! Raft. Embed a node in your process ([`EmbeddedEngine`], feature
//! `embedded`) or talk to a standalone `d-engine-server` with the gRPC
//! [`Client`] (feature `client`); both implement [`KvClient`], so business
//! logic written against it runs unchanged in both modes.
//!
//! This crate only re-exports: the API vocabulary from `d-engine-api`, the
//! node from `d-engine-node`, the gRPC client from `d-engine-client`. Both
//! features are on by default.

// The node re-exports the whole API vocabulary; its own `tls` module (the
// node's TLS material) takes the name the api's `tls` has without it.
#[cfg(not(feature = "embedded"))]
pub use d_engine_api::*;
#[cfg(feature = "embedded")]
pub use d_engine_node::*;

#[cfg(feature = "client")]
pub use d_engine_client::{
    normalize_endpoint, session, Client, ClientBuilder, ClientConfig, Credentials, EndpointHook,
    GrpcAdmin, GrpcCluster, GrpcKv, Membership, NodeStatus, RetryPolicy, DEFAULT_CLIENT_PORT,
    MAX_WRITE_SESSIONS,
};
