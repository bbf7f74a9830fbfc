//! The embedded quick start from the product description, unchanged apart
//! from the imports it leaves out.
//!
//! Run it from a directory holding a `d-engine.toml` (this directory has one:
//! a single node serving peers on 127.0.0.1:9081 and clients on
//! 127.0.0.1:9083):
//!
//! ```sh
//! cd engine/facade/examples && cargo run --example quickstart_embedded
//! ```

use d_engine::EmbeddedEngine;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Start with config file
    let engine = EmbeddedEngine::start_with("d-engine.toml").await?;

    // Wait for leader election
    engine.wait_ready(Duration::from_secs(5)).await?;

    // Get zero-overhead KV client
    let client = engine.client();
    client.put(b"key".to_vec(), b"value".to_vec()).await?;

    engine.stop().await?;
    Ok(())
}
