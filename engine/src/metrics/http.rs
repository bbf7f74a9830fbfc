//! The metrics/health HTTP listener (`[metrics] listen_addr`), plain
//! HTTP/1.1:
//!
//! | Path | 200 when | Body |
//! |---|---|---|
//! | `GET /metrics` | always | Prometheus text format 0.0.4 |
//! | `GET /health` | the node runs (not failed, not stopping) | JSON [`Health`] |
//! | `GET /ready` | it can serve linearizable requests | JSON [`Health`] |
//!
//! `/health` and `/ready` answer 503 with the same JSON (its `reasons`
//! say why) when the check fails. Anything else is 404. No
//! authentication: bind it to loopback or a monitoring network.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::health::Health;
use super::Observe;

/// The Content-Type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The routes of the listener, over `node`.
pub fn router<O: Observe>(node: O) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<O>))
        .route("/health", get(live::<O>))
        .route("/ready", get(ready::<O>))
        .with_state(node)
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve<O: Observe>(
    listener: TcpListener,
    handle: O,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(handle))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics<O: Observe>(State(node): State<O>) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        node.metrics_text(),
    )
        .into_response()
}

fn json(ok: bool, h: &Health) -> Response {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string(h).unwrap_or_else(|_| "{}".into());
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn live<O: Observe>(State(node): State<O>) -> Response {
    let d = node.health();
    json(d.live, &d)
}

async fn ready<O: Observe>(State(node): State<O>) -> Response {
    let d = node.health();
    json(d.ready, &d)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::config::Config;
    use crate::embedded::EmbeddedEngine;

    /// A plain HTTP/1.1 GET: (status, body).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("answer within 5 s")
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_embedded_engine_serves_metrics_and_health_only_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let off = EmbeddedEngine::start(dir.path().join("off")).await.unwrap();
        assert_eq!(off.metrics_addr(), None);
        off.stop().await.unwrap();

        let mut cfg = Config::single_node(dir.path().join("on"));
        cfg.metrics.listen_addr = "127.0.0.1:0".into();
        let e = EmbeddedEngine::start_in_process(cfg).await.unwrap();
        e.wait_ready(Duration::from_secs(10)).await.unwrap();
        let addr = e.metrics_addr().expect("metrics listener bound");
        e.handle().put("k", "v", None, None).await.unwrap();

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = get(addr, "/ready").await;
            if status == 200 {
                assert!(body.contains("\"ready\":true"), "{body}");
                break;
            }
            assert!(Instant::now() < deadline, "/ready: {status} {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (status, body) = get(addr, "/health").await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains("dengine_proposals_total{result=\"ok\"} 1"),
            "{body}"
        );
        assert!(body.contains("dengine_is_leader 1"), "{body}");
        // The same text is available in process.
        assert!(e
            .handle()
            .metrics_text()
            .contains("dengine_proposals_total{result=\"ok\"} 1"));
        e.stop().await.unwrap();
        // Stopped: the listener is gone.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
