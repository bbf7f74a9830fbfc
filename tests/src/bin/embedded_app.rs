//! A test application that embeds a d-engine node, for the multi-process
//! embedded cluster test (`tests/tests/cluster_embedded.rs`).
//!
//! `embedded-app <config.toml>`: starts the engine from the file, then
//! writes `app/<node id>/<n>` = `n` for n = 1, 2, ... through its in-process
//! client (a follower forwards to the leader), printing `ACK <key>` on
//! stdout only after the write was acknowledged. A failed write is retried
//! with the same key. Exits cleanly on SIGTERM.

use std::io::Write;
use std::time::Duration;

use d_engine::EmbeddedEngine;
use tokio::signal::unix::{signal, SignalKind};

/// As an application embedding d-engine should (docs/performance.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = std::env::args()
        .nth(1)
        .ok_or("usage: embedded-app <config.toml>")?;
    let engine = EmbeddedEngine::start_with(&config).await?;
    let id = engine.node_id();
    engine.wait_ready(Duration::from_secs(30)).await?;
    println!("READY {id}");
    let client = engine.client();
    let mut term = signal(SignalKind::terminate())?;
    let mut n: u64 = 1;
    loop {
        let key = format!("app/{id}/{n:06}");
        tokio::select! {
            r = client.put(&key, n.to_string()) => match r {
                Ok(_) => {
                    println!("ACK {key}");
                    std::io::stdout().flush()?;
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    println!("RETRY {key}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = term.recv() => break,
        }
    }
    engine.stop().await?;
    println!("STOPPED {id}");
    Ok(())
}
