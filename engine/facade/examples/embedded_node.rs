//! An application process that embeds a d-engine node: the building block of
//! `examples/cluster/embedded.sh` (three such processes form a cluster over
//! gRPC, exactly like standalone servers).
//!
//! ```sh
//! cargo run -p d-engine --example embedded_node -- path/to/node.toml
//! ```
//!
//! Every second it increments `counter/<node id>` through its in-process
//! client (a follower forwards the write to the leader) and prints what it
//! reads back, plus leader changes. Stops cleanly on Ctrl-C or SIGTERM.

use std::time::Duration;

use d_engine::{Consistency, EmbeddedEngine};
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = std::env::args()
        .nth(1)
        .ok_or("usage: embedded_node <config.toml>")?;
    let engine = EmbeddedEngine::start_with(&config).await?;
    let id = engine.node_id();
    let leader = engine.wait_ready(Duration::from_secs(10)).await?;
    println!("node {id}: ready, leader is node {}", leader.id);

    let client = engine.client();
    let key = format!("counter/{id}");
    let mut leaders = engine.leader_changes();
    let mut term = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut count: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match client.put(&key, (count + 1).to_string()).await {
                    Ok(revision) => {
                        count += 1;
                        let seen = client.get_with(&key, Consistency::Eventual).await?;
                        let value = seen.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                        println!("node {id}: {key} = {value:?} (revision {revision})");
                    }
                    Err(e) => println!("node {id}: write failed, will retry: {e}"),
                }
            }
            changed = leaders.changed() => {
                if changed.is_err() { break; }
                let l = leaders.borrow_and_update().clone();
                println!("node {id}: leader is now node {} (term {})", l.id, l.term);
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    engine.stop().await?;
    println!("node {id}: stopped");
    Ok(())
}
