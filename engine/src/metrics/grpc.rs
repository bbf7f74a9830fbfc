//! Client RPCs by method and status: a tower layer around the client gRPC
//! server ([`GrpcMetricsLayer`]) feeding `dengine_grpc_requests_total`
//! and `dengine_grpc_request_duration_seconds`.
//!
//! - `method` is the full gRPC path (`/dengine.v1.Kv/Put`) of a method the
//!   port serves (read once from the embedded descriptor sets); any other
//!   path counts as `other`, so a client cannot grow the label set.
//! - `code` is the gRPC status name. A call that fails before its first
//!   message carries its status in the response headers (tonic's
//!   "trailers only" response) and is counted with that code; otherwise
//!   the status comes in the trailers, after the call is counted, and the
//!   call counts as `OK`. So a server stream (Watch) that is cancelled
//!   later counts as `OK` when it opens; its end shows in the watch
//!   metrics instead. The duration is until the response headers: the
//!   whole call for a unary RPC.
//! - Per call: one map lookup of pre-resolved strings, a counter increment
//!   and a histogram observation; nothing is allocated.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prost::Message;

use super::NodeMetrics;

/// gRPC status names by code (0..=16).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Every method path of the client port's services.
fn known_methods() -> &'static HashSet<String> {
    static METHODS: OnceLock<HashSet<String>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let mut set = HashSet::new();
        for bytes in [
            d_engine_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(fds) = prost_types::FileDescriptorSet::decode(bytes) else {
                continue;
            };
            for f in fds.file {
                let pkg = f.package.unwrap_or_default();
                for s in f.service {
                    let svc = s.name.unwrap_or_default();
                    for m in s.method {
                        set.insert(format!("/{pkg}.{svc}/{}", m.name.unwrap_or_default()));
                    }
                }
            }
        }
        for v in ["v1", "v1alpha"] {
            set.insert(format!(
                "/grpc.reflection.{v}.ServerReflection/ServerReflectionInfo"
            ));
        }
        set
    })
}

/// The `method` label for a request path (see the module docs).
pub fn method_label(path: &str) -> &'static str {
    known_methods()
        .get(path)
        .map(|s| s.as_str())
        .unwrap_or("other")
}

/// The `code` label for a `grpc-status` header value (`None`: no status in
/// the headers, the call counts as OK).
pub fn code_label(status: Option<&[u8]>) -> &'static str {
    match status {
        None => CODES[0],
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .and_then(|c| CODES.get(c).copied())
            .unwrap_or("UNKNOWN"),
    }
}

/// Counts every call through the wrapped service (see the module docs).
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<NodeMetrics>,
}

impl GrpcMetricsLayer {
    pub(crate) fn new(metrics: Arc<NodeMetrics>) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the server's routes.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<NodeMetrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path());
        Counted {
            inner: self.inner.call(req),
            metrics: self.metrics.clone(),
            method,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpcMetrics`]: counts the call when the
    /// response headers are ready.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        metrics: Arc<NodeMetrics>,
        method: &'static str,
        started: Instant,
    }
}

impl<F, RB, E> Future for Counted<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        let code = match &out {
            Ok(resp) => code_label(resp.headers().get("grpc-status").map(|v| v.as_bytes())),
            Err(_) => "UNAVAILABLE",
        };
        this.metrics
            .grpc_requests
            .with_label_values(&[*this.method, code])
            .inc();
        this.metrics
            .grpc_seconds
            .with_label_values(&[*this.method])
            .observe(this.started.elapsed().as_secs_f64());
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_of_the_client_port_are_known_others_are_not() {
        assert_eq!(method_label("/dengine.v1.Kv/Put"), "/dengine.v1.Kv/Put");
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/dengine.v1.Kv/NoSuchMethod"), "other");
        assert_eq!(method_label("/x"), "other");
    }

    #[test]
    fn status_codes_map_to_names() {
        assert_eq!(code_label(None), "OK");
        assert_eq!(code_label(Some(b"14")), "UNAVAILABLE");
        assert_eq!(code_label(Some(b"3")), "INVALID_ARGUMENT");
        assert_eq!(code_label(Some(b"99")), "UNKNOWN");
        assert_eq!(code_label(Some(b"x")), "UNKNOWN");
    }
}
