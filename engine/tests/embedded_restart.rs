//! Restart keeps every acknowledged write (WAL + state machine recovery).

use std::time::Duration;

use d_engine_node::config::StateMachineBackend;
use d_engine_node::{Config, Consistency, EmbeddedEngine};

async fn start(dir: &std::path::Path, backend: StateMachineBackend) -> EmbeddedEngine {
    let mut config = Config::single_node(dir);
    config.state_machine.backend = backend;
    EmbeddedEngine::start_in_process(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_acknowledged_writes() {
    restart_keeps_acknowledged_writes_with(StateMachineBackend::Sled).await;
}

/// The memory backend holds nothing across a restart: round 1 is rebuilt
/// from the log alone, round 2 from the snapshot plus the log after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_acknowledged_writes_in_memory_backend() {
    restart_keeps_acknowledged_writes_with(StateMachineBackend::Memory).await;
}

/// A node switched between backends keeps every write either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_backends_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = 0u32;
    for (round, backend) in [
        StateMachineBackend::Sled,
        StateMachineBackend::Memory,
        StateMachineBackend::Sled,
        StateMachineBackend::Memory,
    ]
    .into_iter()
    .enumerate()
    {
        let e = start(dir.path(), backend).await;
        e.wait_ready(Duration::from_secs(5)).await.unwrap();
        let c = e.client();
        for i in 0..written {
            let got = c
                .get(format!("k{i}"))
                .await
                .unwrap()
                .map(|kv| kv.value.to_vec());
            assert_eq!(got, Some(format!("v{i}").into_bytes()), "round {round}");
        }
        for _ in 0..50 {
            c.put(format!("k{written}"), format!("v{written}"))
                .await
                .unwrap();
            written += 1;
        }
        if round == 1 {
            e.handle().trigger_snapshot().await.unwrap();
        }
        e.stop().await.unwrap();
    }
}

async fn restart_keeps_acknowledged_writes_with(backend: StateMachineBackend) {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for round in 0..3u32 {
        let e = start(dir.path(), backend).await;
        e.wait_ready(Duration::from_secs(5)).await.unwrap();
        let c = e.client();
        // Everything acknowledged in earlier rounds is still there.
        for (k, v) in &acked {
            let got = c.get(k).await.unwrap();
            assert_eq!(
                got.map(|kv| kv.value.to_vec()),
                Some(v.clone()),
                "round {round} key {k:?}"
            );
        }
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let k = format!("r{round}/{i}").into_bytes();
                let v = format!("v{round}-{i}").into_bytes();
                c.put(&k, &v).await.map(|_| (k, v))
            }));
        }
        for t in tasks {
            acked.push(t.await.unwrap().unwrap());
        }
        if round == 1 {
            // A snapshot + compaction in the middle of the history.
            let idx = e.handle().trigger_snapshot().await.unwrap();
            assert!(idx > 0);
        }
        let n = c
            .scan_prefix(format!("r{round}/"), 0, Consistency::Lease)
            .await
            .unwrap()
            .len();
        assert_eq!(n, 200);
        e.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_engine_on_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = EmbeddedEngine::start(dir.path()).await.unwrap();
    let err = EmbeddedEngine::start(dir.path()).await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("lock") || err.to_string().contains("use"),
        "{err}"
    );
    e.stop().await.unwrap();
}
