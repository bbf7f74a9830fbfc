//! The same business logic, run both ways: against the embedded client and
//! against the gRPC client of a (here: in-process) server. Only the line that
//! builds the client changes.
//!
//! ```sh
//! cargo run -p d-engine --example embedded_and_standalone
//! ```

use std::time::Duration;

use d_engine::{ClientBuilder, Config, Consistency, EmbeddedEngine, KvClient};

/// Business logic written once against `KvClient`: an inventory counter with
/// optimistic concurrency (compare-and-swap retry loop).
async fn reserve_items<C: KvClient>(
    kv: &C,
    sku: &str,
    n: u64,
) -> Result<u64, Box<dyn std::error::Error>> {
    let key = format!("stock/{sku}");
    if kv.get(&key).await?.is_none() {
        // Create the record only if nobody else did.
        kv.compare_and_swap(&key, None, Some(b"100".to_vec()))
            .await?;
    }
    loop {
        let cur = kv.get(&key).await?.expect("created above");
        let have: u64 = std::str::from_utf8(&cur.value)?.parse()?;
        if have < n {
            return Err(format!("only {have} {sku} left").into());
        }
        let left = have - n;
        let out = kv
            .compare_and_swap(
                &key,
                Some(cur.value.into()),
                Some(left.to_string().into_bytes()),
            )
            .await?;
        if out.succeeded {
            kv.put_with_ttl(
                format!("hold/{sku}"),
                n.to_string(),
                Duration::from_secs(60),
            )
            .await?;
            return Ok(left);
        }
    }
}

async fn report<C: KvClient>(kv: &C, mode: &str) -> Result<(), Box<dyn std::error::Error>> {
    let left = reserve_items(kv, "apple", 3).await?;
    let holds = kv
        .scan_prefix("hold/", 0, Consistency::Linearizable)
        .await?;
    println!("{mode:>10}: {left} apples left, {} hold(s)", holds.len());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("d-engine-example-{}", std::process::id()));
    let mut config = Config::single_node(&dir);
    config.peer_addr = "127.0.0.1:0".into();
    config.client_addr = "127.0.0.1:0".into(); // serve the gRPC API on any free port
    let engine = EmbeddedEngine::start_with_config(config).await?;
    engine.wait_ready(Duration::from_secs(5)).await?;

    // Embedded mode: in-process calls.
    let embedded = engine.client();
    report(&embedded, "embedded").await?;

    // Standalone mode: the same logic over gRPC.
    let addr = engine.client_addr().expect("client API served");
    let grpc = ClientBuilder::new(vec![format!("http://{addr}")])
        .build()
        .await?;
    report(&grpc.kv(), "gRPC").await?;

    engine.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
