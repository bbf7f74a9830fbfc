//! A job lock with fencing tokens, written once against `KvClient +
//! CoordClient` and run on an embedded node, or on a cluster when
//! `DENGINE_ENDPOINTS` is set (e.g. `127.0.0.1:9083,127.0.0.1:9183`, see
//! `examples/cluster/standalone.sh`).
//!
//! Four workers race for lock "jobs/nightly-report"; each holds it on a
//! lease of its own that a background keeper renews, writes the job's output
//! only if its fencing token is still the newest (a transaction), and
//! releases. The tokens printed grow with every holder.
//!
//! ```sh
//! cargo run -p d-engine --example job_lock
//! ```

use std::sync::Arc;
use std::time::Duration;

use d_engine::{
    ClientBuilder, Compare, CompareOp, CompareTarget, CoordClient, EmbeddedEngine, HeldLock,
    KvClient, Txn, TxnOp,
};

type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the job under the lock; the output is written only while the
/// lock's key still exists with this holder's token (fencing).
async fn run_job<C: KvClient + CoordClient + 'static>(
    client: Arc<C>,
    worker: usize,
) -> Result<u64, AnyError> {
    let lock = HeldLock::acquire(
        client.clone(),
        "jobs/nightly-report",
        Duration::from_secs(5),
    )
    .await?;
    let token = lock.fencing_token();
    println!("worker {worker}: holds the lock, fencing token {token}");
    tokio::time::sleep(Duration::from_millis(100)).await; // the job itself
    let fenced = Txn::new()
        .when([Compare::new(
            lock.key().key.clone(),
            CompareOp::Equal,
            CompareTarget::CreateRevision(token),
        )])
        .and_then([TxnOp::put(
            b"jobs/nightly-report/output".to_vec(),
            format!("written by worker {worker} with token {token}").into_bytes(),
        )]);
    let out = client.txn(fenced).await?;
    assert!(out.succeeded, "the lock is still ours");
    lock.release().await?;
    Ok(token)
}

async fn race<C: KvClient + CoordClient + 'static>(client: Arc<C>) -> Result<(), AnyError> {
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let c = client.clone();
        tasks.push(tokio::spawn(run_job(c, worker)));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await??);
    }
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 4, "every holder got its own token");
    let out = client
        .get("jobs/nightly-report/output")
        .await?
        .expect("written");
    println!("output: {}", String::from_utf8_lossy(&out.value));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    match std::env::var("DENGINE_ENDPOINTS") {
        Ok(eps) => {
            let client = ClientBuilder::new(eps.split(',').map(str::to_string))
                .build()
                .await?;
            race(Arc::new(client.kv())).await
        }
        Err(_) => {
            let dir = tempfile::tempdir()?;
            let engine = EmbeddedEngine::start(dir.path()).await?;
            engine.wait_ready(Duration::from_secs(10)).await?;
            race(Arc::new(engine.client())).await?;
            engine.stop().await?;
            Ok(())
        }
    }
}
