//! Restart keeps every acknowledged write (WAL + state machine recovery).

use std::time::Duration;

use d_engine::{Consistency, EmbeddedEngine};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for round in 0..3u32 {
        let e = EmbeddedEngine::start(dir.path()).await.unwrap();
        e.wait_ready(Duration::from_secs(5)).await.unwrap();
        let c = e.client();
        // Everything acknowledged in earlier rounds is still there.
        for (k, v) in &acked {
            let got = c.get(k).await.unwrap();
            assert_eq!(
                got.map(|kv| kv.value),
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
