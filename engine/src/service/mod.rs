//! The client gRPC API of a node: `dengine.v1.Kv`, `Lease`, `Lock`,
//! `Election`, `Cluster`, `Admin`, `Maintenance` (backups) and `App`
//! (application commands, [`app`])
//! over a [`NodeHandle`], plus the standard gRPC health service
//! (`grpc.health.v1.Health`) and server reflection (v1 and v1alpha), so
//! `grpcurl -plaintext 127.0.0.1:9083 list` works.
//!
//! [`serve_clients`] serves all of them on one listener (mini-redis style:
//! tests bind `127.0.0.1:0` and stop the server with a future).
//!
//! # Conventions
//! - Errors follow `client.proto`'s header (gRPC code + `google.rpc.ErrorInfo`
//!   with domain `d-engine`, reason = `ErrorCode` name), encoded by
//!   `d_engine_api::status_codec` (see [`status`]).
//! - Bad input (empty or oversized key, oversized value, too many keys,
//!   unknown consistency, absurd TTL) → INVALID_ARGUMENT naming the field and
//!   the limit ([`validate`]).
//! - A write (or linearizable/lease read, or admin change) sent to a
//!   follower or learner → UNAVAILABLE / `NOT_LEADER` with the leader's id
//!   and client address; clients follow the hint. No server-side forwarding.
//! - Health: the empty service name and every d-engine service report
//!   SERVING while the node can serve linearizable requests and has
//!   storage quota left (`crate::metrics::health`: a leader heard from
//!   recently, not failed, no NOSPACE alarm), NOT_SERVING otherwise and
//!   once the server shuts down.
//! - Metrics: every call is counted by method and status
//!   (`crate::metrics::grpc`, `docs/metrics.md`).
//! - Auth (`[auth]`, off by default; `docs/auth.md`): every Kv, Cluster
//!   and Admin RPC authenticates (UNAUTHENTICATED otherwise); Kv checks
//!   the key or prefix against the user's grants and Admin needs the
//!   `admin` role (PERMISSION_DENIED naming user, target and access).
//!   Health and reflection stay open.
//! - Shutdown: the server stops accepting, open watches end with a
//!   `canceled` message ("SHUTTING_DOWN: ..."), in-flight unary calls finish.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod convert;
pub mod election;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod quota;
mod ranges;
pub mod status;
pub mod validate;
mod watch_stream;

#[cfg(test)]
mod coord_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_tests;

use std::future::Future;
use std::time::Duration;

use d_engine_proto::v1::admin_server::AdminServer;
use d_engine_proto::v1::cluster_server::ClusterServer;
use d_engine_proto::v1::election_server::ElectionServer;
use d_engine_proto::v1::kv_server::KvServer;
use d_engine_proto::v1::lease_server::LeaseServer;
use d_engine_proto::v1::lock_server::LockServer;
use d_engine_proto::v1::maintenance_server::MaintenanceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

pub use admin::AdminService;
pub use cluster::ClusterService;
pub use election::ElectionService;
pub use kv::KvService;
pub use lease::LeaseService;
pub use lock::LockService;
pub use maintenance::MaintenanceService;

use crate::runtime::NodeHandle;

/// Names reported by the health service (besides "").
const SERVICE_NAMES: [&str; 9] = [
    "dengine.v1.Kv",
    "dengine.v1.Lease",
    "dengine.v1.Lock",
    "dengine.v1.Election",
    "dengine.v1.Cluster",
    "dengine.v1.Admin",
    "dengine.v1.Maintenance",
    "dengine.v1.Auth",
    "dengine.v1.App",
];

/// Serves the client API (Kv, Cluster, Admin, health, reflection) for
/// `handle` on `listener` until `shutdown` resolves, then drains: no new
/// connections, watches are cancelled with a reason, in-flight calls
/// finish. Message sizes are bounded by `limits.max_request_bytes`.
/// Garbage on the port fails only that connection.
pub async fn serve_clients(
    listener: TcpListener,
    handle: NodeHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_clients_tls(listener, handle, None, shutdown).await
}

/// [`serve_clients`] over TLS when `tls` is set (`[tls] client_api`,
/// loaded by [`crate::tls::NodeTls::load`]): the port then accepts TLS
/// connections only.
pub async fn serve_clients_tls(
    listener: TcpListener,
    handle: NodeHandle,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let max = handle.config().limits.max_request_bytes;
    let mut builder = tonic::transport::Server::builder();
    let tls_on = tls.is_some();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }

    let (reporter, health) = tonic_health::server::health_reporter();
    // The status before the first call; the driver keeps it current.
    let initial = if handle.health().serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    set_health(&reporter, initial).await;
    let health_driver = tokio::spawn(crate::metrics::health::drive_grpc_health(
        handle.clone(),
        reporter.clone(),
        &SERVICE_NAMES,
    ));

    // List only what this port serves (the descriptor set also holds the
    // peer-only `dengine.v1.Raft`).
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(d_engine_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for name in SERVICE_NAMES.iter().chain(&[
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]) {
            b = b.with_service_name(*name);
        }
        b
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("embedded descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("embedded descriptor sets are valid");

    // Shutdown: the caller's future, or the node stopping on its own.
    let node = handle.clone();
    let stop = stop_tx.clone();
    let health_reporter = reporter.clone();
    let watcher = tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => {}
            _ = node.stopped() => {}
        }
        health_driver.abort();
        let _ = health_driver.await;
        set_health(&health_reporter, ServingStatus::NotServing).await;
        stop.send_replace(true);
    });

    // One gate (and one verification cache) for all three services.
    let gate = {
        let node = handle.clone();
        crate::auth::Gate::from_config(&handle.config().auth)
            .with_replicated(std::sync::Arc::new(move || node.auth_state()))
    };
    if gate.enabled() && !tls_on {
        tracing::warn!(
            client_addr = %handle.config().client_addr,
            allow_plaintext = handle.config().auth.allow_plaintext,
            "auth is enabled on a plaintext client API: passwords and tokens cross the \
             connection in clear; enable tls.client_api (docs/tls.md)"
        );
    }
    let kv = KvServer::new(KvService::new(handle.clone(), stop_rx.clone()).with_gate(gate.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let lease = LeaseServer::new(
        LeaseService::new(handle.clone(), stop_rx.clone()).with_gate(gate.clone()),
    )
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let lock = LockServer::new(LockService::new(handle.clone()).with_gate(gate.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let election =
        ElectionServer::new(ElectionService::new(handle.clone()).with_gate(gate.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
    let cluster = ClusterServer::new(
        ClusterService::new(handle.clone())
            .with_gate(gate.clone())
            .with_stop(stop_rx.clone()),
    )
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let admin = AdminServer::new(AdminService::new(handle.clone()).with_gate(gate.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let auth = d_engine_proto::v1::auth_server::AuthServer::new(auth::AuthService::new(
        handle.clone(),
        gate.clone(),
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let app = d_engine_proto::v1::app_server::AppServer::new(
        app::AppService::new(handle.clone()).with_gate(gate.clone()),
    )
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let maintenance =
        MaintenanceServer::new(MaintenanceService::new(handle.clone()).with_gate(gate))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);

    let mut server_stop = stop_rx.clone();
    let result = builder
        .layer(crate::metrics::grpc::GrpcMetricsLayer::new(
            handle.shared.metrics.clone(),
        ))
        .max_concurrent_streams(Some(handle.config().limits.max_concurrent_streams))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(kv)
        .add_service(lease)
        .add_service(lock)
        .add_service(election)
        .add_service(cluster)
        .add_service(admin)
        .add_service(maintenance)
        .add_service(auth)
        .add_service(app)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(
            quota::limited_incoming(listener, handle.config().limits.max_client_connections),
            async move {
                let _ = server_stop.wait_for(|s| *s).await;
            },
        )
        .await;
    watcher.abort();
    drop(stop_tx);
    result
}

async fn set_health(reporter: &tonic_health::server::HealthReporter, s: ServingStatus) {
    reporter.set_service_status("", s).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(name, s).await;
    }
}
