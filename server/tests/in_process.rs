//! The server library run in-process: `bind` + `run` + shutdown future.

use std::time::Duration;

use d_engine::config::Config;
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::kv_client::KvClient;
use d_engine_server::{bind, run, ServerError};

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::single_node(dir);
    c.client_addr = "127.0.0.1:0".into();
    c.peer_addr = "127.0.0.1:0".into();
    c
}

#[tokio::test]
async fn runs_serves_and_stops_on_the_shutdown_future() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let listeners = bind(&mut cfg).await.unwrap();
    let addr = listeners.client_addr().unwrap();
    // Port 0 was replaced by the bound port (what the node advertises).
    assert_eq!(cfg.client_addr, addr.to_string());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(cfg, listeners, async {
        let _ = stop_rx.await;
    }));

    let mut kv = None;
    for _ in 0..100 {
        if let Ok(c) = KvClient::connect(format!("http://{addr}")).await {
            kv = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut kv = kv.expect("client port answers");
    let mut put = None;
    for _ in 0..100 {
        match kv
            .put(pb::PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => {
                put = Some(r.into_inner());
                break;
            }
            // Not leader yet right after start.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(put.expect("put succeeds").revision > 0);

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server stops within 20s")
        .unwrap()
        .unwrap();
    // The port is released.
    assert!(std::net::TcpListener::bind(addr).is_ok());
}

#[tokio::test]
async fn a_port_in_use_names_the_address_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = config(dir.path());
    cfg.client_addr = held.local_addr().unwrap().to_string();
    let err = match bind(&mut cfg).await {
        Ok(_) => panic!("bind must fail"),
        Err(e) => e,
    };
    assert!(matches!(err, ServerError::Bind { .. }));
    assert_eq!(err.exit_code(), 3);
    assert_eq!(
        err.to_string(),
        format!(
            "client address {} is already in use: stop the other process or set --listen-client",
            cfg.client_addr
        )
    );
}
