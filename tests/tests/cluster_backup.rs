//! Backup, restore and disaster recovery on real server processes
//! (`docs/operations.md`):
//!
//! - a 3-node cluster holding `DENGINE_BACKUP_KEYS` keys (default
//!   [`DEFAULT_BACKUP_KEYS`], the 100,000; ~5 s on the CI machine)
//!   is backed up under concurrent writes
//!   (`GrpcAdmin::snapshot_save`), restored with `d-engine-server restore`
//!   into a new 3-node cluster, and every key of the backup is read back
//!   with its revision; nothing newer than the backup is there;
//! - two of three nodes are lost for good, the third is restarted with
//!   `--force-new-cluster` (without it, it cannot serve), grows again with
//!   two learners that are promoted, and every acknowledged write is read,
//!   also after the survivor itself is stopped;
//! - bad input: a corrupt backup, a foreign file, a non-empty data dir, a
//!   node id that is not a member, a missing flag, an existing output file.
//!
//! The tests run one at a time (2-core CI machine).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use d_engine_client::{Client, ClientBuilder, Consistency, Error, MemberRole, Txn, TxnOp};
use d_engine_tests::cluster::{server_binary, Cluster, ClusterConfig};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Keys loaded before the backup in CI. Measured on the 2-core CI machine
/// with debug builds: see `docs/operations.md` ("Tests").
const DEFAULT_BACKUP_KEYS: usize = 100_000;

fn backup_keys() -> usize {
    std::env::var("DENGINE_BACKUP_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_BACKUP_KEYS)
}

fn config(nodes: usize, cluster_id: &str) -> ClusterConfig {
    ClusterConfig {
        nodes,
        cluster_id: cluster_id.into(),
        ..Default::default()
    }
}

/// `ID=PEER/CLIENT,...` of every node of `c` (the `--peers` value).
fn peers_of(c: &Cluster) -> String {
    c.ids()
        .iter()
        .map(|id| format!("{id}={}/{}", c.peer_addr(*id), c.client_addr(*id)))
        .collect::<Vec<_>>()
        .join(",")
}

fn run_server(args: &[&str]) -> Output {
    std::process::Command::new(server_binary())
        .args(args)
        .output()
        .expect("run d-engine-server")
}

fn text(o: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn restore(snapshot: &Path, data_dir: &Path, id: u64, cluster_id: &str, peers: &str) -> Output {
    run_server(&[
        "restore",
        "--snapshot",
        &snapshot.display().to_string(),
        "--data-dir",
        &data_dir.display().to_string(),
        "--node-id",
        &id.to_string(),
        "--cluster-id",
        cluster_id,
        "--peers",
        peers,
    ])
}

/// Loads `n` keys `bk/<i>` in transactions of 128 puts, 8 in flight.
async fn load_keys(client: &Client, n: usize) {
    let chunks: Vec<Vec<usize>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(128)
        .map(|c| c.to_vec())
        .collect();
    let chunks = Arc::new(Mutex::new(chunks));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let kv = client.kv();
        let chunks = chunks.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(chunk) = chunks.lock().unwrap().pop() else {
                    return;
                };
                let txn = Txn::new().and_then(
                    chunk
                        .iter()
                        .map(|i| TxnOp::put(format!("bk/{i:06}"), format!("value-{i}"))),
                );
                let mut tries = 0;
                loop {
                    match kv.txn(txn.clone()).await {
                        Ok(_) => break,
                        Err(e) => {
                            tries += 1;
                            assert!(tries < 20, "loading keys: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Acknowledged concurrent writes: key → (value, revision).
type Acked = Arc<Mutex<BTreeMap<String, (String, u64)>>>;

fn start_writers(
    client: &Client,
    n: usize,
    stop: Arc<AtomicBool>,
    acked: Acked,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|w| {
            let kv = client.kv();
            let stop = stop.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 1_000_000 {
                    let key = format!("cw/{w}/{i:07}");
                    let value = format!("c{i}");
                    if let Ok(rev) = kv.put(&key, &value).await {
                        acked.lock().unwrap().insert(key, (value, rev));
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_writes_restores_into_a_new_cluster() {
    let _g = SERIAL.lock().await;
    let n = backup_keys();
    let started = Instant::now();
    let mut c = Cluster::start(config(3, "orig"));
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let client = c.client().await;
    load_keys(&client, n).await;
    let loaded = started.elapsed();
    let kv = client.kv();
    let sample = kv
        .get_with("bk/000000", Consistency::Linearizable)
        .await
        .unwrap()
        .expect("loaded");

    // Back up while two writers go on.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let writers = start_writers(&client, 2, stop.clone(), acked.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked_before_backup = acked.lock().unwrap().clone();
    // Outside the cluster's directory: it outlives the old cluster.
    let keep = tempfile::tempdir().unwrap();
    let backup = keep.path().join("backup.snap");
    let saved = client
        .admin()
        .snapshot_save(&backup, false)
        .await
        .unwrap_or_else(|e| panic!("snapshot_save: {e}\n{}", c.log_tails(20)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked_before_backup.is_empty(),
        "no concurrent write before the backup"
    );
    assert!(
        acked.values().any(|(_, rev)| *rev > saved.revision),
        "no write after the backup's revision {}: the backup did not run under writes",
        saved.revision
    );
    assert_eq!(saved.bytes, std::fs::metadata(&backup).unwrap().len());
    assert_eq!(saved.sha256.len(), 64);
    let backed_up = started.elapsed();

    // An existing file is not overwritten unless asked.
    let before = std::fs::read(&backup).unwrap();
    let e = client
        .admin()
        .snapshot_save(&backup, false)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&backup).unwrap(), before);
    // No temp file is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(keep.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".part-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    drop(client);
    drop(c); // the old cluster is gone

    // Restore into a new 3-node cluster.
    let mut r = Cluster::prepare(config(3, "restored"));
    let peers = peers_of(&r);
    for id in r.ids() {
        let o = restore(&backup, &r.data_dir(id), id, "restored", &peers);
        assert!(o.status.success(), "restore node {id}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(&format!("revision {}", saved.revision)),
            "{}",
            text(&o)
        );
    }
    r.start_all();
    r.wait_leader(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", r.log_tails(30)));
    let client = r.client().await;
    let kv = client.kv();
    let all = kv
        .scan_prefix("bk/", 0, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(all.len(), n, "every loaded key is in the restored cluster");
    for (i, kvp) in all.iter().enumerate() {
        assert_eq!(kvp.key, format!("bk/{i:06}").into_bytes());
        assert_eq!(kvp.value, format!("value-{i}").into_bytes());
        assert!(kvp.mod_revision <= saved.revision);
    }
    assert_eq!(
        all[0].mod_revision, sample.mod_revision,
        "revisions are kept"
    );
    assert_eq!(all[0].create_revision, sample.create_revision);

    // Concurrent writes: everything at or below the backup's revision is
    // there with its revision; nothing above it is.
    let restored: BTreeMap<String, (String, u64)> = kv
        .scan_prefix("cw/", 0, Consistency::Linearizable)
        .await
        .unwrap()
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key.to_vec()).unwrap(),
                (
                    String::from_utf8(kv.value.to_vec()).unwrap(),
                    kv.mod_revision,
                ),
            )
        })
        .collect();
    for (k, (v, rev)) in &acked {
        if *rev <= saved.revision {
            assert_eq!(restored.get(k), Some(&(v.clone(), *rev)), "{k} at {rev}");
        } else {
            assert!(
                !restored.contains_key(k),
                "{k} at {rev} is newer than the backup"
            );
        }
    }
    for k in acked_before_backup.keys() {
        assert!(
            restored.contains_key(k),
            "{k} was acknowledged before the backup started"
        );
    }
    assert!(restored.values().all(|(_, rev)| *rev <= saved.revision));

    // The new cluster takes writes above the backup's revision, on every node.
    let rev = kv.put("after-restore", "yes").await.unwrap();
    assert!(rev > saved.revision, "{rev} <= {}", saved.revision);
    for id in r.ids() {
        r.wait_applied(id, rev, Duration::from_secs(20))
            .await
            .unwrap();
    }
    eprintln!(
        "backup test: {n} keys loaded in {loaded:?}, backed up ({} bytes, revision {}) at \
         {backed_up:?}, verified at {:?}",
        saved.bytes,
        saved.revision,
        started.elapsed()
    );
}

async fn short_client(addrs: Vec<String>) -> Client {
    ClientBuilder::new(addrs)
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("client builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_majority_recovers_with_force_new_cluster_and_learners() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(config(3, "dr"));
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let client = c.client().await;
    let kv = client.kv();
    let mut acked = BTreeMap::new();
    let mut last = 0;
    for i in 0..300u32 {
        let (k, v) = (format!("dr/{i:04}"), format!("v{i}"));
        last = kv.put(&k, &v).await.unwrap();
        acked.insert(k, v);
    }
    // The survivor has every acknowledged write (the operator picks the
    // survivor with the highest applied index).
    c.wait_applied(1, last, Duration::from_secs(20))
        .await
        .unwrap();
    drop(client);
    c.kill(2);
    c.kill(3);
    c.terminate(1, Duration::from_secs(10));

    // Without the flag the survivor starts but cannot serve writes.
    c.restart(1);
    c.wait_serving(1, Duration::from_secs(30)).await.unwrap();
    let lone = short_client(vec![format!("http://{}", c.client_addr(1))]).await;
    let e = lone.kv().put("dr/refused", "x").await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoLeader(_) | Error::Timeout(_) | Error::Unavailable(_)
        ),
        "{e}"
    );
    drop(lone);
    c.terminate(1, Duration::from_secs(10));

    // With it: the only voter, serving every acknowledged write.
    c.node(1).spec.args.push("--force-new-cluster".into());
    c.restart(1);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    assert_eq!(leader, Ok(1), "{}", c.log_tails(30));
    let log = c.node(1).log();
    assert!(
        log.contains("FORCE-NEW-CLUSTER"),
        "not logged loudly:\n{log}"
    );
    // The flag is for one start only; later starts must not carry it.
    c.node(1).spec.args.retain(|a| a != "--force-new-cluster");
    let client = ClientBuilder::new(vec![format!("http://{}", c.client_addr(1))])
        .request_timeout(Duration::from_secs(15))
        .build()
        .await
        .unwrap();
    let members = client.cluster().members().await.unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    let kv = client.kv();
    let rev = kv.put("dr/after-force", "yes").await.unwrap();
    acked.insert("dr/after-force".into(), "yes".into());

    // Grow again: two learners, caught up, promoted.
    let admin = client.admin();
    for id in [4u64, 5] {
        let (peer, client_addr) = c.spawn_joiner(id);
        c.wait_serving(id, Duration::from_secs(30)).await.unwrap();
        admin
            .add_learner(id, peer, client_addr)
            .await
            .unwrap_or_else(|e| panic!("add learner {id}: {e}\n{}", c.log_tails(30)));
        c.wait_applied(id, rev, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", c.log_tails(30)));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let res = admin.promote(id).await;
            let voter = client
                .cluster()
                .members()
                .await
                .map(|ms| ms.iter().any(|m| m.id == id && m.role == MemberRole::Voter))
                .unwrap_or(false);
            match res {
                Ok(_) => break,
                Err(_) if voter => break,
                Err(e @ (Error::ChangeInProgress(_) | Error::Timeout(_))) => {
                    assert!(Instant::now() < deadline, "promote {id}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("promote {id}: {e}\n{}", c.log_tails(30)),
            }
        }
    }
    let members = client.cluster().members().await.unwrap();
    let mut voters: Vec<u64> = members
        .iter()
        .filter(|m| m.role == MemberRole::Voter)
        .map(|m| m.id)
        .collect();
    voters.sort();
    assert_eq!(voters, vec![1, 4, 5], "{members:?}");
    drop(client);

    // The new voters hold everything: stop the survivor, 4 and 5 still
    // form a majority and serve every acknowledged write.
    c.terminate(1, Duration::from_secs(10));
    let leader = c
        .wait_new_leader(1, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.log_tails(30)));
    assert!(leader == 4 || leader == 5, "leader {leader}");
    let client = ClientBuilder::new(vec![
        format!("http://{}", c.client_addr(4)),
        format!("http://{}", c.client_addr(5)),
    ])
    .request_timeout(Duration::from_secs(20))
    .build()
    .await
    .unwrap();
    let kv = client.kv();
    let all: BTreeMap<String, String> = kv
        .scan_prefix("dr/", 0, Consistency::Linearizable)
        .await
        .unwrap_or_else(|e| panic!("read after the survivor stopped: {e}\n{}", c.log_tails(30)))
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key.to_vec()).unwrap(),
                String::from_utf8(kv.value.to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(all, acked);
}

/// A small valid backup from a one-node cluster; returns (cluster, file).
async fn small_backup() -> (Cluster, PathBuf) {
    let mut c = Cluster::start(config(1, "small"));
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let client = c.client().await;
    for i in 0..20 {
        client.kv().put(format!("s/{i}"), "x").await.unwrap();
    }
    let file = c.dir().join("small.snap");
    client.admin().snapshot_save(&file, false).await.unwrap();
    (c, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_bad_input_and_changes_nothing() {
    let _g = SERIAL.lock().await;
    let (c, good) = small_backup().await;
    let dir = c.dir().to_path_buf();
    let peers = "1=127.0.0.1:1/127.0.0.1:2,2=127.0.0.1:3/127.0.0.1:4";

    // A corrupt backup: one flipped byte in the middle.
    let corrupt = dir.join("corrupt.snap");
    let mut bytes = std::fs::read(&good).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&corrupt, &bytes).unwrap();
    let target = dir.join("restore-target");
    let o = restore(&corrupt, &target, 1, "new", peers);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a usable d-engine backup"), "{}", text(&o));
    assert!(
        err.contains("snapshot save"),
        "says what to do: {}",
        text(&o)
    );
    assert!(!target.exists(), "nothing written for a corrupt backup");

    // A foreign file.
    let foreign = dir.join("foreign.txt");
    std::fs::write(&foreign, "hello world, not a backup").unwrap();
    let o = restore(&foreign, &target, 1, "new", peers);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad magic"),
        "{}",
        text(&o)
    );
    assert!(!target.exists());

    // A non-empty data dir is never touched.
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("old-data"), "keep").unwrap();
    let o = restore(&good, &target, 1, "new", peers);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not empty") && err.contains("old-data"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("old-data")).unwrap(),
        "keep"
    );
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1);

    // A node id that is not among the members.
    let fresh = dir.join("fresh");
    let o = restore(&good, &fresh, 7, "new", peers);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--node-id 7 is not among the members"),
        "{}",
        text(&o)
    );
    assert!(!fresh.exists());

    // A missing flag: clap names it.
    let o = run_server(&[
        "restore",
        "--data-dir",
        "x",
        "--node-id",
        "1",
        "--cluster-id",
        "n",
        "--peers",
        peers,
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--snapshot"),
        "{}",
        text(&o)
    );

    // The good file restores (and the result is a startable node).
    let o = restore(&good, &fresh, 1, "new", peers);
    assert!(o.status.success(), "{}", text(&o));
    assert!(fresh.join("IDENTITY").exists());
    // Restoring again into it is refused.
    let o = restore(&good, &fresh, 1, "new", peers);
    assert!(!o.status.success());

    // force-new-cluster with --join is refused before touching anything.
    let o = run_server(&[
        "--force-new-cluster",
        "--join",
        "--data-dir",
        &fresh.display().to_string(),
        "--node-id",
        "1",
        "--cluster-id",
        "new",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--join"),
        "{}",
        text(&o)
    );
    drop(c);
}
