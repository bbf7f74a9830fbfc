//! Measures what a restart costs with each state machine backend: loads N
//! keys of 256-byte values into a one-node engine, stops it, and times the
//! next start until the node is leader again and every key is readable.
//!
//! ```sh
//! cargo run --release -p d-engine --example restart_time -- [KEYS] [memory|sled]
//! ```
//!
//! Defaults: 1,000,000 keys, `memory`. The data dir is a temporary directory
//! in the system temp dir; the snapshot threshold is the default (100,000
//! entries), so a restart loads the latest snapshot and replays the log after it
//! (`memory`) or replays the log after sled's applied index (`sled`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use d_engine::config::StateMachineBackend;
use d_engine::{Config, Consistency, EmbeddedEngine};

const CLIENTS: usize = 1000;

async fn start(dir: &std::path::Path, backend: StateMachineBackend) -> EmbeddedEngine {
    let mut config = Config::single_node(dir);
    config.state_machine.backend = backend;
    EmbeddedEngine::start_in_process(config)
        .await
        .expect("engine start")
}

fn key(i: usize) -> String {
    format!("{i:08}")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let keys: usize = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|_| format!("KEYS must be a number, got {n:?}"))?,
        None => 1_000_000,
    };
    let backend = match args.next().as_deref() {
        None | Some("memory") => StateMachineBackend::Memory,
        Some("sled") => StateMachineBackend::Sled,
        Some(other) => return Err(format!("backend must be memory or sled, got {other:?}").into()),
    };
    let dir = tempfile::tempdir()?;
    let value = Arc::new(vec![b'v'; 256]);

    let engine = start(dir.path(), backend).await;
    engine.wait_ready(Duration::from_secs(10)).await?;
    let loaded = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CLIENTS {
        let c = engine.client();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < keys {
                c.put(key(i), value.as_slice()).await?;
                i += CLIENTS;
            }
            Ok::<_, d_engine::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "{backend:?}: loaded {keys} keys in {:.1} s",
        loaded.elapsed().as_secs_f64()
    );
    engine.stop().await?;

    let restarted = Instant::now();
    let engine = start(dir.path(), backend).await;
    let started = restarted.elapsed();
    engine.wait_ready(Duration::from_secs(600)).await?;
    let ready = restarted.elapsed();
    let c = engine.client();
    for i in [0, keys / 2, keys - 1] {
        let got = c.get_with(key(i), Consistency::Linearizable).await?;
        assert_eq!(
            got.map(|kv| kv.value.len()),
            Some(256),
            "key {i} after restart"
        );
    }
    let readable = restarted.elapsed();
    println!(
        "{backend:?}: restart: start returned after {:.2} s, leader after {:.2} s, \
         linearizable reads of the first, middle and last key after {:.2} s",
        started.as_secs_f64(),
        ready.as_secs_f64(),
        readable.as_secs_f64()
    );
    engine.stop().await?;
    Ok(())
}
