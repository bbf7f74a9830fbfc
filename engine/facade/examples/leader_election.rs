//! One candidate of a leader election over a d-engine cluster. Run three
//! (each is a process), kill the leader, watch another take over:
//! `examples/cluster/election.sh` does exactly that.
//!
//! ```sh
//! DENGINE_ENDPOINTS=127.0.0.1:9083,127.0.0.1:9183,127.0.0.1:9283 \
//!   cargo run -p d-engine --example leader_election -- worker-1 30
//! ```
//!
//! Arguments: the candidate's name (its proclaimed value) and how many
//! seconds to run. The candidate campaigns on a 3 s lease that a keeper
//! renews; once elected it proclaims a heartbeat value every second, and it
//! prints every leader it observes. A killed leader's lease expires ~3 s
//! later and the next candidate in line is elected.

use std::sync::Arc;
use std::time::Duration;

use d_engine::{ClientBuilder, CoordClient, LeaseKeeper};

type AnyError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    let mut args = std::env::args().skip(1);
    let me = args
        .next()
        .unwrap_or_else(|| format!("candidate-{}", std::process::id()));
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);
    let eps = std::env::var("DENGINE_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:9083,127.0.0.1:9183,127.0.0.1:9283".into());
    let client = Arc::new(
        ClientBuilder::new(eps.split(',').map(str::to_string))
            .build()
            .await?
            .kv(),
    );
    // The cluster may still be electing its own leader: retry a little.
    let mut tries = 0;
    let grant = loop {
        match client.lease_grant(Duration::from_secs(3)).await {
            Ok(g) => break g,
            Err(e) if e.is_retryable() && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut keeper = LeaseKeeper::start(client.clone(), grant.id, grant.ttl);

    let mut observed = client.observe("election/demo").await?;
    tokio::spawn(async move {
        while let Some(Ok(kv)) = observed.recv().await {
            println!("observed leader: {}", String::from_utf8_lossy(&kv.value));
        }
    });

    let run = async {
        let leader = client
            .campaign("election/demo", grant.id, me.as_bytes())
            .await?;
        println!("{me}: elected (fencing token {})", leader.revision);
        for beat in 1.. {
            tokio::time::sleep(Duration::from_secs(1)).await;
            client
                .proclaim(&leader, format!("{me} (beat {beat})"))
                .await?;
        }
        Ok::<(), AnyError>(())
    };
    tokio::select! {
        r = run => r?,
        e = keeper.lost() => println!("{me}: lease lost ({e}); stepping down"),
        _ = tokio::time::sleep(Duration::from_secs(seconds)) => {
            println!("{me}: done after {seconds} s; resigning");
        }
    }
    let _ = client.lease_revoke(grant.id).await;
    Ok(())
}
