//! Files of a data dir (issue 16, findings 3 and 8): a newest snapshot that
//! does not validate is moved aside on start and the previous one is used,
//! unless that would lose entries (then the node refuses to start and says
//! why); every directory is 0700 and every file 0600.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use d_engine_node::config::StateMachineBackend;
use d_engine_node::{Config, EmbeddedEngine};

fn config(dir: &Path, backend: StateMachineBackend, segment_bytes: u64) -> Config {
    let mut config = Config::single_node(dir);
    config.state_machine.backend = backend;
    config.durability.segment_bytes = segment_bytes;
    config
}

async fn start(config: Config) -> EmbeddedEngine {
    let e = EmbeddedEngine::start_in_process(config).await.unwrap();
    e.wait_ready(Duration::from_secs(5)).await.unwrap();
    e
}

async fn put_range(e: &EmbeddedEngine, range: std::ops::Range<u32>) {
    let c = e.client();
    for i in range {
        c.put(
            format!("k{i:04}"),
            format!("value-{i:04}-{}", "x".repeat(200)),
        )
        .await
        .unwrap();
    }
}

async fn assert_range(e: &EmbeddedEngine, range: std::ops::Range<u32>) {
    let c = e.client();
    for i in range {
        let got = c
            .get(format!("k{i:04}"))
            .await
            .unwrap()
            .map(|kv| kv.value.to_vec());
        assert_eq!(
            got,
            Some(format!("value-{i:04}-{}", "x".repeat(200)).into_bytes()),
            "key {i}"
        );
    }
}

/// Complete snapshot files in `snapshots/`, newest first.
fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    v.sort();
    v.reverse();
    v
}

fn quarantined(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir.join("snapshots").join("quarantine")) {
        Err(_) => Vec::new(),
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
    }
}

/// Overwrites bytes in the middle of a snapshot file: its records no
/// longer match its checksum.
fn damage(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    for x in &mut b[mid..mid + 16] {
        *x ^= 0x5a;
    }
    std::fs::write(path, b).unwrap();
}

/// Two snapshots, the newest damaged; the log still reaches back to the
/// older one: the node moves the bad file aside and rebuilds from the older
/// snapshot plus the log, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newest_snapshot_that_does_not_validate_is_moved_aside_and_the_previous_one_used() {
    for backend in [StateMachineBackend::Memory, StateMachineBackend::Sled] {
        let dir = tempfile::tempdir().unwrap();
        let e = start(config(dir.path(), backend, 64 << 20)).await;
        put_range(&e, 0..40).await;
        e.handle().trigger_snapshot().await.unwrap();
        put_range(&e, 40..80).await;
        e.handle().trigger_snapshot().await.unwrap();
        put_range(&e, 80..90).await;
        e.stop().await.unwrap();
        drop(e);

        let snaps = snapshot_files(dir.path());
        assert_eq!(snaps.len(), 2, "{snaps:?}");
        damage(&snaps[0]);
        let bad_name = snaps[0].file_name().unwrap().to_string_lossy().into_owned();
        // The sled backend would not read a snapshot it does not need:
        // remove its database so the start has to rebuild from a snapshot.
        let _ = std::fs::remove_dir_all(dir.path().join("sm"));

        let e = start(config(dir.path(), backend, 64 << 20)).await;
        assert_range(&e, 0..90).await;
        e.stop().await.unwrap();
        drop(e);
        let q = quarantined(dir.path());
        assert_eq!(q.len(), 1, "{backend:?}: {q:?}");
        assert!(
            q[0].starts_with(&format!("{bad_name}.corrupt-")),
            "{backend:?}: {q:?}"
        );
        assert!(!snaps[0].exists(), "the bad file left snapshots/");
    }
}

/// The newest snapshot is damaged and the log was compacted past the
/// previous one: the entries in between exist nowhere on this node, so it
/// refuses to start and says so (never silently loses acknowledged writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_snapshot_whose_entries_were_compacted_away_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    // Small WAL segments so compaction really drops the early log.
    let cfg = || config(dir.path(), StateMachineBackend::Memory, 4096);
    let e = start(cfg()).await;
    put_range(&e, 0..40).await;
    let older = e.handle().trigger_snapshot().await.unwrap();
    put_range(&e, 40..200).await;
    let newer = e.handle().trigger_snapshot().await.unwrap();
    put_range(&e, 200..205).await;
    e.stop().await.unwrap();
    drop(e);

    let snaps = snapshot_files(dir.path());
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    damage(&snaps[0]);

    let err = match EmbeddedEngine::start_in_process(cfg()).await {
        Ok(_) => panic!("the start must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&format!("covers only up to index {older}")),
        "{err}"
    );
    assert!(err.contains("are missing"), "{err}");
    assert!(err.contains("would lose acknowledged writes"), "{err}");
    assert!(err.contains("moved aside"), "{err}");
    assert!(err.contains("quarantine"), "{err}");
    assert!(err.contains("re-add the node"), "{err}");
    assert!(newer > older);
    // A second attempt refuses the same way (the file stays aside).
    let err = match EmbeddedEngine::start_in_process(cfg()).await {
        Ok(_) => panic!("a second start must be refused too"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("are missing") && err.contains("quarantine"),
        "{err}"
    );
}

/// Every directory and file in `dir` (recursively), with its mode.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, bool, u32)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        let mode = md.permissions().mode() & 0o7777;
        out.push((e.path(), md.is_dir(), mode));
        if md.is_dir() {
            walk(&e.path(), out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_directory_is_0700_and_every_file_0600() {
    for backend in [StateMachineBackend::Memory, StateMachineBackend::Sled] {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("node");
        let e = start(config(&dir, backend, 64 << 20)).await;
        put_range(&e, 0..50).await;
        e.handle().trigger_snapshot().await.unwrap();
        put_range(&e, 50..60).await;
        e.stop().await.unwrap();
        drop(e);

        let mut all = Vec::new();
        walk(&dir, &mut all);
        let names: Vec<String> = all
            .iter()
            .map(|(p, _, _)| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        for want in [
            "IDENTITY",
            "LOCK",
            "hardstate",
            "wal",
            "snapshots",
            "snapshot-staging",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{backend:?}: no {want} in {names:?}"
            );
        }
        assert!(names.iter().any(|n| n.starts_with("wal/")), "{names:?}");
        assert!(
            names.iter().any(|n| n.starts_with("snapshots/snapshot-")),
            "{names:?}"
        );
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{backend:?}: the data dir itself");
        let wrong: Vec<String> = all
            .iter()
            .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
            .map(|(p, is_dir, mode)| format!("{} (dir: {is_dir}) {mode:04o}", p.display()))
            .collect();
        assert!(wrong.is_empty(), "{backend:?}: {wrong:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_data_dir_open_to_others_is_tightened() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = start(config(&dir, StateMachineBackend::Memory, 64 << 20)).await;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    e.stop().await.unwrap();
}
