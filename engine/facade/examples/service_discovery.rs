//! Service discovery: instances register under `services/api/` on leases
//! they keep alive; a watcher lists the prefix page by page and then
//! watches it from the listing's revision + 1, so it never misses a change.
//! An instance that stops renewing disappears after its TTL.
//!
//! Runs on an embedded node, or on a cluster when `DENGINE_ENDPOINTS` is set.
//!
//! ```sh
//! cargo run -p d-engine --example service_discovery
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use d_engine::{
    ClientBuilder, EmbeddedEngine, EventType, KvClient, LeaseKeeper, RangeOptions, RangeWalk,
};

type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Registers instance `id` at `addr` on a lease of `ttl` kept alive in the
/// background; dropping the keeper stops renewing.
async fn register<C: KvClient + 'static>(
    client: &Arc<C>,
    id: &str,
    addr: &str,
    ttl: Duration,
) -> Result<LeaseKeeper, AnyError> {
    let grant = client.lease_grant(ttl).await?;
    client
        .put_with_lease(format!("services/api/{id}"), addr, grant.id)
        .await?;
    Ok(LeaseKeeper::start(client.clone(), grant.id, grant.ttl))
}

async fn demo<C: KvClient + 'static>(client: Arc<C>) -> Result<(), AnyError> {
    let a = register(&client, "a", "10.0.0.1:80", Duration::from_secs(10)).await?;
    let b = register(&client, "b", "10.0.0.2:80", Duration::from_secs(1)).await?;

    // List every page, then watch from the first page's revision + 1.
    let mut walk = RangeWalk::new(
        &*client,
        b"services/api/".to_vec(),
        RangeOptions::prefix().with_limit(100),
    );
    let mut live = BTreeMap::new();
    let mut from = 0;
    while let Some(page) = walk.next_page().await? {
        if from == 0 {
            from = page.revision + 1;
        }
        for kv in page.kvs {
            live.insert(kv.key, (kv.value, kv.mod_revision));
        }
    }
    println!("listed {} instance(s)", live.len());
    let mut events = client.watch_prefix("services/api/", from).await?;

    drop(b); // instance b crashes: nobody renews its 1 s lease
    let c = register(&client, "c", "10.0.0.3:80", Duration::from_secs(10)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while live.len() != 2 || !live.contains_key(&b"services/api/c"[..]) {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await?
            .ok_or("watch ended")??;
        let seen = live.get(&ev.kv.key).map_or(0, |(_, rev)| *rev);
        if ev.kv.mod_revision <= seen {
            continue; // already in the listing
        }
        match ev.kind {
            EventType::Put => {
                println!("+ {}", String::from_utf8_lossy(&ev.kv.key));
                live.insert(ev.kv.key, (ev.kv.value, ev.kv.mod_revision));
            }
            EventType::Delete => {
                println!("- {}", String::from_utf8_lossy(&ev.kv.key));
                live.remove(&ev.kv.key);
            }
            EventType::Progress => {} // not asked for
        }
    }
    println!(
        "live: {:?}",
        live.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    );
    for k in [a, c] {
        client.lease_revoke(k.id()).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    match std::env::var("DENGINE_ENDPOINTS") {
        Ok(eps) => {
            let client = ClientBuilder::new(eps.split(',').map(str::to_string))
                .build()
                .await?;
            demo(Arc::new(client.kv())).await
        }
        Err(_) => {
            let dir = tempfile::tempdir()?;
            let engine = EmbeddedEngine::start(dir.path()).await?;
            engine.wait_ready(Duration::from_secs(10)).await?;
            demo(Arc::new(engine.client())).await?;
            engine.stop().await?;
            Ok(())
        }
    }
}
