//! Storage written outside the engine runs a 3-node cluster: a custom log
//! store and a custom key-value state machine.
//!
//! `TestLog` is an embedder's `LogStore`: a working copy in memory plus a
//! "disk" (one per node, owned by the test, outliving the nodes) that holds
//! only what was made durable: `sync` (and `truncate_suffix`, `compact`,
//! `reset`, durable on return by the contract) copy the working log onto
//! it; a plain `append` does not. Reopening a node's store starts from its
//! disk, exactly what a crash would leave. Every call is counted.
//!
//! The test runs every node on it over real gRPC (ephemeral ports), writes,
//! restarts a follower, makes a lagging follower install a snapshot (the
//! store is reset), restarts the whole cluster (the state then comes from
//! the stores and snapshots alone: the memory state machine keeps nothing)
//! and checks every key on every node; it checks that the built-in WAL was
//! never opened, and runs the exported conformance suite on the same store.
//!
//! The state machine is `CountingSm`, an embedder's key-value machine
//! (`StateMachine` + `KvStateMachine`, here delegating to the built-in
//! memory machine and counting applies), plugged in with
//! `EngineBuilder::state_machine`: the key-value API runs on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use d_engine_node::config::MemberConfig;
use d_engine_node::core::{Entry, Index, Term};
use d_engine_node::core::{Membership, SnapshotMeta};
use d_engine_node::runtime::{LogStoreFactory, NodeRole, StateMachineFactory};
use d_engine_node::storage::command::KeyRange;
use d_engine_node::storage::conformance::{run_durable_log_store_conformance, LogStoreHarness};
use d_engine_node::storage::sm::{
    Applied, KeyValue, KvStateMachine, LeaseRecord, MemStateMachine, SmError, SnapshotSource,
    StateMachine,
};
use d_engine_node::storage::wal::{LogStore, LogStoreContext, MemLog, Result as LogResult};
use d_engine_node::{Config, Consistency, EmbeddedEngine};
use tokio::net::TcpListener;

/// What a node's store made durable: survives the node (and its store).
type Disk = Arc<Mutex<MemLog>>;

#[derive(Default, Debug)]
struct Counts {
    opens: AtomicU64,
    appends: AtomicU64,
    syncs: AtomicU64,
    compacts: AtomicU64,
    resets: AtomicU64,
}

impl Counts {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

struct TestLog {
    work: MemLog,
    disk: Disk,
    counts: Arc<Counts>,
}

impl TestLog {
    /// Opens the store from what `disk` holds (after a crash: the synced log).
    fn open(disk: Disk, counts: Arc<Counts>) -> Self {
        counts.opens.fetch_add(1, Ordering::Relaxed);
        let work = disk.lock().unwrap().clone();
        TestLog { work, disk, counts }
    }

    fn persist(&self) {
        *self.disk.lock().unwrap() = self.work.clone();
    }
}

impl LogStore for TestLog {
    fn append(&mut self, entries: &[Entry]) -> LogResult<()> {
        self.counts.appends.fetch_add(1, Ordering::Relaxed);
        self.work.append(entries)
    }
    fn sync(&mut self) -> LogResult<()> {
        self.counts.syncs.fetch_add(1, Ordering::Relaxed);
        self.persist();
        Ok(())
    }
    // `flush` keeps the default (a sync): safe in every durability mode.
    fn truncate_suffix(&mut self, from: Index) -> LogResult<()> {
        self.work.truncate_suffix(from)?;
        self.persist();
        Ok(())
    }
    fn compact(&mut self, upto: Index) -> LogResult<()> {
        self.counts.compacts.fetch_add(1, Ordering::Relaxed);
        self.work.compact(upto)?;
        self.persist();
        Ok(())
    }
    fn reset(&mut self, next_index: Index) -> LogResult<()> {
        self.counts.resets.fetch_add(1, Ordering::Relaxed);
        self.work.reset(next_index)?;
        self.persist();
        Ok(())
    }
    fn read(&self, lo: Index, hi: Index) -> LogResult<Vec<Entry>> {
        self.work.read(lo, hi)
    }
    fn set_committed(&mut self, index: Index) {
        self.work.set_committed(index)
    }
    fn first_index(&self) -> Index {
        self.work.first_index()
    }
    fn last_index(&self) -> Index {
        self.work.last_index()
    }
    fn last_term(&self) -> Option<Term> {
        self.work.last_term()
    }
}

/// An embedder's key-value state machine: the memory machine behind
/// delegation, counting applied batches.
struct CountingSm {
    inner: MemStateMachine,
    applies: Arc<AtomicU64>,
}

impl StateMachine for CountingSm {
    fn apply(&self, entries: &[Entry]) -> Result<Vec<Applied>, SmError> {
        self.applies.fetch_add(1, Ordering::Relaxed);
        self.inner.apply(entries)
    }
    fn data_bytes(&self) -> u64 {
        self.inner.data_bytes()
    }
    fn applied_index(&self) -> Index {
        self.inner.applied_index()
    }
    fn applied_term(&self) -> Term {
        self.inner.applied_term()
    }
    fn membership(&self) -> Membership {
        self.inner.membership()
    }
    fn begin_snapshot(&self) -> Result<Box<dyn SnapshotSource>, SmError> {
        self.inner.begin_snapshot()
    }
    fn install_snapshot(&self, path: &std::path::Path) -> Result<SnapshotMeta, SmError> {
        self.inner.install_snapshot(path)
    }
    fn into_kv(self: Arc<Self>) -> Option<Arc<dyn KvStateMachine>> {
        Some(self)
    }
    fn auth_state(&self) -> Arc<d_engine_node::storage::auth::AuthState> {
        self.inner.auth_state()
    }
}

impl KvStateMachine for CountingSm {
    fn get(&self, key: &[u8], now_ms: u64) -> Result<Option<KeyValue>, SmError> {
        self.inner.get(key, now_ms)
    }
    fn get_raw(&self, key: &[u8]) -> Result<Option<KeyValue>, SmError> {
        self.inner.get_raw(key)
    }
    fn scan_prefix_each(
        &self,
        prefix: &[u8],
        now_ms: u64,
        visit: &mut dyn FnMut(KeyValue) -> bool,
    ) -> Result<(), SmError> {
        self.inner.scan_prefix_each(prefix, now_ms, visit)
    }
    fn range_each(
        &self,
        range: &KeyRange,
        now_ms: u64,
        visit: &mut dyn FnMut(KeyValue) -> bool,
    ) -> Result<Index, SmError> {
        self.inner.range_each(range, now_ms, visit)
    }
    fn range_count(&self, range: &KeyRange, now_ms: u64) -> Result<u64, SmError> {
        self.inner.range_count(range, now_ms)
    }
    fn lease(&self, id: u64) -> Result<Option<LeaseRecord>, SmError> {
        self.inner.lease(id)
    }
    fn leases(&self) -> Result<Vec<LeaseRecord>, SmError> {
        self.inner.leases()
    }
    fn lease_keys_each(
        &self,
        id: u64,
        visit: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), SmError> {
        self.inner.lease_keys_each(id, visit)
    }
    fn earliest_deadline(&self) -> Result<Option<u64>, SmError> {
        self.inner.earliest_deadline()
    }
}

fn counting_sm(applies: Arc<AtomicU64>) -> StateMachineFactory {
    Arc::new(move |snapshot: Option<&std::path::Path>| {
        let inner = match snapshot {
            Some(p) => MemStateMachine::from_snapshot(p)?,
            None => MemStateMachine::new(),
        };
        Ok(Arc::new(CountingSm {
            inner,
            applies: applies.clone(),
        }) as Arc<dyn StateMachine>)
    })
}

/// The disks and counters of every node, by node id.
#[derive(Clone, Default)]
struct Stores {
    disks: Arc<Mutex<HashMap<u64, Disk>>>,
    counts: Arc<Mutex<HashMap<u64, Arc<Counts>>>>,
    /// Batches applied by the custom state machines of every node.
    applies: Arc<AtomicU64>,
}

impl Stores {
    fn factory(&self) -> LogStoreFactory {
        let stores = self.clone();
        Arc::new(move |ctx: &LogStoreContext| {
            assert!(
                ctx.dir.is_dir() && ctx.dir.ends_with("log-store"),
                "the engine hands the store its private directory: {}",
                ctx.dir.display()
            );
            let disk = stores
                .disks
                .lock()
                .unwrap()
                .entry(ctx.node_id)
                .or_default()
                .clone();
            let counts = stores.counts(ctx.node_id);
            Ok(Box::new(TestLog::open(disk, counts)) as Box<dyn LogStore>)
        })
    }

    fn counts(&self, id: u64) -> Arc<Counts> {
        self.counts.lock().unwrap().entry(id).or_default().clone()
    }

    fn durable_last(&self, id: u64) -> Index {
        self.disks.lock().unwrap()[&id].lock().unwrap().last_index()
    }
}

struct Node {
    cfg: Config,
    engine: Option<EmbeddedEngine>,
    dir: tempfile::TempDir,
}

fn e(n: &Node) -> &EmbeddedEngine {
    n.engine.as_ref().unwrap()
}

async fn start(
    cfg: &Config,
    stores: &Stores,
    listeners: Option<(TcpListener, TcpListener)>,
) -> EmbeddedEngine {
    let mut b = EmbeddedEngine::builder(cfg.clone())
        .log_store(stores.factory())
        .state_machine(counting_sm(stores.applies.clone()));
    if let Some((p, c)) = listeners {
        b = b.peer_listener(p).client_listener(c);
    }
    b.start()
        .await
        .expect("start a node on the custom log store")
}

async fn cluster(stores: &Stores) -> Vec<Node> {
    let mut ls = Vec::new();
    for _ in 0..3 {
        let p = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpListener::bind("127.0.0.1:0").await.unwrap();
        ls.push((p, c));
    }
    let members: Vec<MemberConfig> = ls
        .iter()
        .enumerate()
        .map(|(i, (p, c))| MemberConfig {
            id: i as u64 + 1,
            peer_addr: p.local_addr().unwrap().to_string(),
            client_addr: c.local_addr().unwrap().to_string(),
        })
        .collect();
    let mut nodes = Vec::new();
    for (i, (p, c)) in ls.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::single_node(dir.path());
        cfg.node_id = i as u64 + 1;
        cfg.peer_addr = members[i].peer_addr.clone();
        cfg.client_addr = members[i].client_addr.clone();
        cfg.members = members.clone();
        cfg.raft.tick_ms = 10;
        cfg.raft.election_timeout_ms = 150;
        cfg.raft.heartbeat_interval_ms = 30;
        let engine = start(&cfg, stores, Some((p, c))).await;
        nodes.push(Node {
            cfg,
            engine: Some(engine),
            dir,
        });
    }
    nodes
}

async fn leader_of(nodes: &[Node]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let leaders: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].engine.is_some())
            .filter(|&i| e(&nodes[i]).status().role == NodeRole::Leader)
            .collect();
        if let [l] = leaders[..] {
            if e(&nodes[l])
                .wait_ready(Duration::from_millis(100))
                .await
                .is_ok()
            {
                return l;
            }
        }
        assert!(Instant::now() < deadline, "no single ready leader in 15 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until node `n` serves keys `k0..k{count}` with their values.
async fn has_all(n: &Node, count: u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let c = e(n).client();
    'retry: loop {
        for i in 0..count {
            let got = c
                .get_with(format!("k{i}"), Consistency::Eventual)
                .await
                .unwrap()
                .map(|kv| kv.value.to_vec());
            if got != Some(format!("v{i}").into_bytes()) {
                assert!(
                    Instant::now() < deadline,
                    "node {} lacks k{i} (got {got:?}): {:?}",
                    n.cfg.node_id,
                    e(n).status()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue 'retry;
            }
        }
        return;
    }
}

async fn write(nodes: &[Node], from: u32, to: u32) {
    let l = leader_of(nodes).await;
    let c = e(&nodes[l]).client();
    for i in from..to {
        c.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_run_on_a_custom_log_store() {
    let stores = Stores::default();
    let mut nodes = cluster(&stores).await;
    write(&nodes, 0, 40).await;
    for n in &nodes {
        has_all(n, 40).await;
    }
    assert!(
        stores.applies.load(Ordering::Relaxed) > 0,
        "the custom state machines applied the writes"
    );
    for n in &nodes {
        has_all(n, 40).await;
        let id = n.cfg.node_id;
        let c = stores.counts(id);
        assert!(
            Counts::get(&c.appends) > 0 && Counts::get(&c.syncs) > 0,
            "node {id} appended and synced through the custom store: {c:?}"
        );
        assert!(stores.durable_last(id) >= 40, "node {id}: entries synced");
        assert!(
            !n.dir.path().join("wal").exists(),
            "node {id} never opened the built-in WAL"
        );
    }

    // A follower restarts: it reopens its store (its synced log) and
    // catches up on what it missed.
    let l = leader_of(&nodes).await;
    let f = (l + 1) % 3;
    let fid = nodes[f].cfg.node_id;
    nodes[f].engine.take().unwrap().stop().await.unwrap();
    write(&nodes, 40, 60).await;
    nodes[f].engine = Some(start(&nodes[f].cfg, &stores, None).await);
    has_all(&nodes[f], 60).await;
    assert_eq!(Counts::get(&stores.counts(fid).opens), 2, "reopened once");

    // Another follower misses entries the leader then compacts into a
    // snapshot: it installs the snapshot, which resets its store.
    let l = leader_of(&nodes).await;
    let g = (l + 2) % 3;
    let gid = nodes[g].cfg.node_id;
    nodes[g].engine.take().unwrap().stop().await.unwrap();
    write(&nodes, 60, 80).await;
    e(&nodes[l]).handle().trigger_snapshot().await.unwrap();
    // The log thread compacts after the snapshot is saved, asynchronously.
    let lid = nodes[l].cfg.node_id;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Counts::get(&stores.counts(lid).compacts) == 0 {
        assert!(
            Instant::now() < deadline,
            "the leader compacted its store within 10 s of the snapshot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write(&nodes, 80, 90).await;
    nodes[g].engine = Some(start(&nodes[g].cfg, &stores, None).await);
    has_all(&nodes[g], 90).await;
    assert!(
        Counts::get(&stores.counts(gid).resets) > 0,
        "the lagging follower's store was reset by the snapshot install"
    );

    // The whole cluster restarts: with the memory state machine nothing
    // survives but the snapshots and the custom stores.
    for n in &mut nodes {
        n.engine.take().unwrap().stop().await.unwrap();
    }
    for n in &mut nodes {
        n.engine = Some(start(&n.cfg, &stores, None).await);
    }
    write(&nodes, 90, 100).await;
    for n in &nodes {
        has_all(n, 100).await;
    }
    for n in &nodes {
        e(n).stop().await.unwrap();
    }
}

/// A node whose log is in one kind of store refuses to start on the other
/// (it would start from an empty log and lose acknowledged entries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_keeps_its_kind_of_log_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::single_node(dir.path());
    cfg.client_addr.clear();
    let builtin = EmbeddedEngine::builder(cfg.clone())
        .without_network()
        .start()
        .await
        .unwrap();
    builtin.wait_ready(Duration::from_secs(5)).await.unwrap();
    builtin.client().put("a", "1").await.unwrap();
    builtin.stop().await.unwrap();
    drop(builtin);
    let stores = Stores::default();
    let err = EmbeddedEngine::builder(cfg.clone())
        .without_network()
        .log_store(stores.factory())
        .start()
        .await
        .expect_err("a custom store on a WAL data dir must be refused");
    assert!(err.to_string().contains("built-in WAL"), "{err}");

    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg2 = Config::single_node(dir2.path());
    cfg2.client_addr.clear();
    let custom = EmbeddedEngine::builder(cfg2.clone())
        .without_network()
        .log_store(stores.factory())
        .start()
        .await
        .unwrap();
    custom.wait_ready(Duration::from_secs(5)).await.unwrap();
    custom.client().put("b", "2").await.unwrap();
    custom.stop().await.unwrap();
    drop(custom);
    let err = EmbeddedEngine::builder(cfg2)
        .without_network()
        .start()
        .await
        .expect_err("the built-in WAL on a custom store's data dir must be refused");
    assert!(err.to_string().contains("custom log store"), "{err}");
}

/// The store used above passes the exported conformance suite, with a
/// reopen (from its disk) after every step.
#[test]
fn the_test_store_passes_the_exported_conformance_suite() {
    struct H(Arc<Counts>);
    impl LogStoreHarness for H {
        type Store = TestLog;
        fn fresh(&mut self) -> TestLog {
            TestLog::open(Disk::default(), self.0.clone())
        }
        fn reopen(&mut self, store: TestLog) -> Option<(TestLog, Vec<Entry>)> {
            let disk = store.disk.clone();
            drop(store);
            let s = TestLog::open(disk, self.0.clone());
            let all = d_engine_node::storage::wal::read_all(&s).unwrap();
            Some((s, all))
        }
        fn durable(&self) -> bool {
            true
        }
    }
    run_durable_log_store_conformance(&mut H(Arc::default()));
}
