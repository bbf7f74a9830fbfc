//! The standalone quick start from the product description, unchanged
//! apart from the crate name (`d_engine` re-exports this crate).
//!
//! Start a server first (`d-engine-server`, client port 9083 by default),
//! then: `cargo run -p d-engine-client --example quickstart_standalone`.
#![allow(unused_imports)] // the seed imports `Client` without naming it

use d_engine_client::{Client, ClientBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = ClientBuilder::new(vec!["http://127.0.0.1:9083".to_string()])
        .build()
        .await?;

    client.kv().put(b"key".to_vec(), b"value".to_vec()).await?;
    println!("put key=value");
    Ok(())
}
