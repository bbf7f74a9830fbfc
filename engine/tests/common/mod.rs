//! Helpers shared by this crate's integration tests (each test binary
//! includes this module with `mod common;` and may use only part of it).
#![allow(dead_code)]

use std::time::Duration;

use d_engine_node::{Config, EmbeddedEngine};

/// `PROPTEST_CASES` if set, else the CI-sized default.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A ready single-node engine serving gRPC on ephemeral 127.0.0.1 ports,
/// configured by `tune` (validated); returns it, its client URL
/// (`http://…`) and the data directory to keep alive.
pub async fn single_node(
    tune: impl FnOnce(&mut Config),
) -> (EmbeddedEngine, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let client_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = Config::single_node(dir.path());
    cfg.client_addr = client_l.local_addr().unwrap().to_string();
    cfg.peer_addr = peer_l.local_addr().unwrap().to_string();
    tune(&mut cfg);
    cfg.validate().unwrap();
    let url = format!("http://{}", cfg.client_addr);
    let engine = EmbeddedEngine::builder(cfg)
        .peer_listener(peer_l)
        .client_listener(client_l)
        .start()
        .await
        .unwrap();
    engine.wait_ready(Duration::from_secs(10)).await.unwrap();
    (engine, url, dir)
}
