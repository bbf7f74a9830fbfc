//! Node start-up: open (or recover) storage, build the core, start threads.
//!
//! Data dir layout: owned by `d_engine_storage::layout` (every path and the
//! state-machine backend choice); this module only asks it for each part.
//!
//! Restart: the hard state, the latest snapshot's meta and the WAL entries
//! after it are handed to the core; the state machine (rebuilt from the
//! snapshot if it is behind, missing or unreadable) reports its applied
//! index and the core hands out every committed entry after it again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use d_engine_api::LeaderInfo;
use d_engine_core::{Member, MemberRole, Membership, RaftNode, RestoreState, SnapshotMeta};
use d_engine_storage::data_dir::DataDir;
use d_engine_storage::hard_state::HardStateStore;
use d_engine_storage::layout::{StateMachineBackend as SmBackend, StateMachineOpened};
use d_engine_storage::sm::{OpenOutcome, SledOptions, SmError, StateMachine};
use d_engine_storage::snapshot::SnapshotStore;
use d_engine_storage::wal::{read_all, LogStore, LogStoreContext, Wal, WalError};
use tokio::sync::watch;

use super::addr::MemberAddr;
use super::core_loop::CoreLoop;
use super::failure::NodeFailure;
use super::handle::NodeHandle;
use super::inbox::NodeInbox;
use super::shared::*;
use super::watch_hub::WatchHub;
use super::{apply, wal_thread};
use crate::config::{Config, ConfigError, StateMachineBackend};
use crate::transport::{PeerInbox, Transport};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The data dir, WAL, hard state, snapshots or state machine could not
    /// be opened, or do not fit together (the failure names the file and
    /// what to do; the storage crate's error is its source).
    #[error("storage: {0}")]
    Storage(NodeFailure),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A storage error while opening the node (its type names the store).
fn storage<E: Into<NodeFailure>>(e: E) -> StartError {
    StartError::Storage(e.into())
}

/// The node's log store, as opened: the built-in WAL runs unboxed on the
/// log thread (static dispatch), an embedder's store boxed.
enum OpenedLog {
    Wal(Wal),
    Custom(Box<dyn LogStore>),
}

impl OpenedLog {
    fn store(&mut self) -> &mut dyn LogStore {
        match self {
            OpenedLog::Wal(w) => w,
            OpenedLog::Custom(b) => &mut **b,
        }
    }
}

struct OpenedStorage {
    data_dir: DataDir,
    log: OpenedLog,
    hard_state: HardStateStore,
    snapshots: SnapshotStore,
    latest: Option<(SnapshotMeta, PathBuf)>,
    sm: Arc<dyn StateMachine>,
    restore: RestoreState,
    staging_dir: PathBuf,
}

pub(crate) fn initial_membership(config: &Config) -> Membership {
    let mut m = Membership::default();
    for mc in config.initial_members() {
        m.members.insert(
            mc.id,
            Member {
                role: MemberRole::Voter,
                addr: MemberAddr::new(mc.peer_addr, mc.client_addr).encode(),
            },
        );
    }
    m
}

/// Opens the state machine a node runs instead of the configured
/// key-value backend: called once at start, with the newest valid snapshot
/// file (if any), after the log is known to continue it. It returns a
/// machine whose applied index is that snapshot's (or 0 without one); the
/// engine then replays the committed log after it. The seam for
/// application machines (`d_engine::app`) and custom storage engines: see
/// `docs/embedding.md`.
pub type StateMachineFactory =
    Arc<dyn Fn(Option<&std::path::Path>) -> Result<Arc<dyn StateMachine>, SmError> + Send + Sync>;

/// Opens the log store a node runs instead of the built-in WAL: called
/// once at start (in a blocking task), with the node id, a private
/// directory `<data_dir>/log-store` (created `0700`) and the durability
/// mode. It returns the store holding everything it kept (see the
/// [`LogStore`] contract: every synced entry, in place); the engine reads
/// it all back, checks it continues the latest snapshot, and runs it on
/// the log thread. An error stops the start, named. A data dir whose log
/// is in the built-in WAL refuses a custom store and vice versa (either
/// would start from an empty log). See `docs/embedding.md`, "Storage
/// backends".
pub type LogStoreFactory =
    Arc<dyn Fn(&LogStoreContext) -> Result<Box<dyn LogStore>, WalError> + Send + Sync>;

/// Which storage a node runs where it does not use the built-ins: `None`
/// is the default (the configured key-value backend; the built-in WAL).
#[derive(Clone, Default)]
pub struct NodeStorage {
    /// The state machine (see [`StateMachineFactory`]).
    pub state_machine: Option<StateMachineFactory>,
    /// The Raft log store (see [`LogStoreFactory`]).
    pub log_store: Option<LogStoreFactory>,
}

/// Opens the node's log: the built-in WAL, or the embedder's store.
/// Returns it with every entry it holds, in order.
fn open_log(
    config: &Config,
    data_dir: &DataDir,
    custom: Option<&LogStoreFactory>,
) -> Result<(OpenedLog, Vec<d_engine_core::Entry>), StartError> {
    let wal_opts = config.durability.wal_options();
    let Some(open) = custom else {
        data_dir.check_builtin_log().map_err(storage)?;
        let (wal, recovered) = Wal::open(data_dir.wal_dir(), wal_opts).map_err(storage)?;
        if let Some(t) = &recovered.torn_tail {
            tracing::warn!(file = %t.file.display(), offset = t.offset, reason = %t.reason,
                "WAL: cut an unsynced torn tail");
        }
        return Ok((OpenedLog::Wal(wal), recovered.entries));
    };
    let dir = data_dir.prepare_custom_log().map_err(storage)?;
    let ctx = LogStoreContext {
        node_id: config.node_id,
        dir,
        sync_mode: wal_opts.sync_mode,
    };
    let during = |what: &str, e: WalError| storage(NodeFailure::during(what, e));
    let store = open(&ctx).map_err(|e| during("opening the custom log store", e))?;
    let entries = read_all(&*store).map_err(|e| during("reading the custom log store back", e))?;
    // A store that breaks the read contract would hand the core a log with
    // holes: refuse it here, naming the store's own claim.
    let (first, last) = (store.first_index(), store.last_index());
    let contiguous = entries
        .iter()
        .enumerate()
        .all(|(i, e)| e.index == first + i as u64);
    if !contiguous || entries.len() as u64 != (last + 1).saturating_sub(first) {
        return Err(StartError::Storage(NodeFailure::Inconsistent(format!(
            "the custom log store reports entries {first}..={last} but read({first}, {}) \
             returned {} entries{}: it breaks the LogStore contract (run \
             d_engine_storage::conformance against it)",
            last + 1,
            entries.len(),
            if contiguous {
                ""
            } else {
                " with indexes out of order"
            }
        ))));
    }
    tracing::info!(first, last, "custom log store opened");
    Ok((OpenedLog::Custom(store), entries))
}

fn open_storage(config: &Config, custom: &NodeStorage) -> Result<OpenedStorage, StartError> {
    let custom_sm = custom.state_machine.as_ref();
    let data_dir =
        DataDir::open(&config.data_dir, config.node_id, &config.cluster_id).map_err(storage)?;
    if let Some(notice) = data_dir.mode_notice() {
        tracing::warn!(data_dir = %data_dir.path().display(), "{notice}");
    }
    let (hard_state, hs) = HardStateStore::open(data_dir.hard_state_dir()).map_err(storage)?;
    let snapshots = data_dir.open_snapshot_store().map_err(storage)?;
    let valid = snapshots.latest_valid().map_err(storage)?;
    for q in &valid.quarantined {
        tracing::error!(
            file = %q.original.display(),
            moved_to = %q.moved_to.display(),
            reason = %q.reason,
            "snapshot file does not validate; moved it aside and trying the previous snapshot"
        );
    }
    let quarantined = valid.quarantined;
    let latest = valid.latest.map(|i| (i.meta, i.path));
    let (mut log, mut entries) = open_log(config, &data_dir, custom.log_store.as_ref())?;
    let (snap_index, snap_term) = latest
        .as_ref()
        .map(|(m, _)| (m.last_index, m.last_term))
        .unwrap_or((0, 0));
    // Even an empty log knows where it starts (after a compaction or an
    // installed snapshot): a gap between the snapshot and the log means
    // entries this node may have acknowledged are gone.
    let wal_first = entries
        .first()
        .map(|e| e.index)
        .unwrap_or_else(|| log.store().first_index());
    if wal_first > snap_index + 1 {
        return Err(StartError::Storage(NodeFailure::Inconsistent(
            log_gap_message(snap_index, wal_first, &quarantined, &snapshots),
        )));
    }
    if !entries.is_empty() {
        let diverged = entries
            .iter()
            .find(|e| e.index == snap_index)
            .is_some_and(|e| e.term != snap_term);
        if diverged {
            // The log before the snapshot disagrees with it: the snapshot (from
            // a leader) wins; the log after it is rebuilt by replication.
            tracing::warn!(
                snap_index,
                "WAL diverges from the latest snapshot; resetting it"
            );
            log.store()
                .reset(snap_index + 1)
                .map_err(|e| storage(NodeFailure::during("resetting the WAL", e)))?;
            entries.clear();
        } else {
            entries.retain(|e| e.index > snap_index);
        }
    }
    // The state machine is opened (and perhaps rebuilt from the snapshot)
    // only once the log is known to continue the snapshot.
    let latest_path = latest.as_ref().map(|(_, p)| p.as_path());
    let backend = match config.state_machine.backend {
        StateMachineBackend::Sled => SmBackend::Sled(SledOptions {
            cache_bytes: config.state_machine.cache_mb << 20,
        }),
        StateMachineBackend::Memory => SmBackend::Memory,
    };
    let opened = match custom_sm {
        Some(open) => d_engine_storage::layout::OpenedStateMachine {
            sm: open(latest_path).map_err(|e| {
                storage(NodeFailure::during(
                    "opening the application state machine",
                    e,
                ))
            })?,
            how: StateMachineOpened::Memory,
        },
        None => data_dir
            .open_state_machine(backend, latest_path)
            .map_err(storage)?,
    };
    let sm: Arc<dyn StateMachine> = opened.sm;
    match opened.how {
        StateMachineOpened::Sled(OpenOutcome::Opened) => {}
        StateMachineOpened::Sled(other) => tracing::info!(outcome = ?other, "state machine opened"),
        StateMachineOpened::Memory => tracing::info!(
            applied_index = sm.applied_index(),
            "memory state machine loaded; the log after it is replayed"
        ),
    }

    let last_index = entries.last().map(|e| e.index).unwrap_or(snap_index);
    let mut hard = hs.unwrap_or_default();
    hard.commit = hard.commit.min(last_index).max(snap_index);
    let applied = sm.applied_index().max(snap_index);
    let restore = RestoreState {
        hard_state: hard,
        snapshot: latest.as_ref().map(|(m, _)| m.clone()),
        entries,
        initial_membership: initial_membership(config),
        applied,
    };
    let (staging, not_removed) = data_dir.open_snapshot_staging().map_err(storage)?;
    for e in not_removed {
        tracing::warn!(error = %e, "cannot remove an orphaned staged snapshot");
    }
    let staging_dir = staging.dir().to_path_buf();
    Ok(OpenedStorage {
        data_dir,
        log,
        hard_state,
        snapshots,
        latest,
        sm,
        restore,
        staging_dir,
    })
}

/// The refusal when the log does not continue where the usable snapshot
/// ends: names both indexes, any snapshot quarantined now or earlier, and
/// what to do.
fn log_gap_message(
    snap_index: u64,
    wal_first: u64,
    quarantined: &[d_engine_storage::snapshot::Quarantined],
    snapshots: &SnapshotStore,
) -> String {
    let covered = if snap_index == 0 {
        "no valid snapshot remains".to_string()
    } else {
        format!("the newest valid snapshot covers only up to index {snap_index}")
    };
    let mut msg = format!(
        "the WAL starts at index {wal_first} but {covered}: entries {}..={} are missing, and \
         rebuilding the state without them would lose acknowledged writes, so this node \
         refuses to start",
        snap_index + 1,
        wal_first - 1
    );
    if !quarantined.is_empty() {
        let files: Vec<String> = quarantined
            .iter()
            .map(|q| format!("{} ({})", q.moved_to.display(), q.reason))
            .collect();
        msg.push_str(&format!(
            ". They were only in the snapshot that failed validation and was moved aside: {}",
            files.join("; ")
        ));
    } else {
        let qdir = snapshots
            .dir()
            .join(d_engine_storage::snapshot::QUARANTINE_DIR);
        if qdir.is_dir() {
            msg.push_str(&format!(
                ". A snapshot moved to {} at an earlier start may have held them",
                qdir.display()
            ));
        }
    }
    msg.push_str(
        ". To recover: restore a good copy of that snapshot file into the snapshots \
         directory, or stop the node, move its data dir aside (keep it for inspection) and \
         re-add the node to the cluster as a learner so a leader sends it a fresh snapshot",
    );
    msg
}

/// Starts a node with `config`. `make_transport` receives the node's
/// [`PeerInbox`] (for reporting unreachable peers) and returns the outbound
/// transport. The caller serves the inbound peer side with
/// [`NodeHandle::peer_inbox`]. Must be called within a tokio runtime.
pub async fn start<F>(config: Config, make_transport: F) -> Result<NodeHandle, StartError>
where
    F: FnOnce(Arc<dyn PeerInbox>) -> Arc<dyn Transport>,
{
    start_with_state_machine(config, None, make_transport).await
}

/// [`start`], running the state machine `custom_sm` opens instead of the
/// configured key-value backend (`None`: the key-value one).
pub async fn start_with_state_machine<F>(
    config: Config,
    custom_sm: Option<StateMachineFactory>,
    make_transport: F,
) -> Result<NodeHandle, StartError>
where
    F: FnOnce(Arc<dyn PeerInbox>) -> Arc<dyn Transport>,
{
    let (handle, ()) = start_with(config, custom_sm, |inbox| (make_transport(inbox), ())).await?;
    Ok(handle)
}

/// [`start_with_storage`] choosing only the state machine (the log is the
/// built-in WAL).
pub async fn start_with<F, X>(
    config: Config,
    custom_sm: Option<StateMachineFactory>,
    make_transport: F,
) -> Result<(NodeHandle, X), StartError>
where
    F: FnOnce(Arc<dyn PeerInbox>) -> (Arc<dyn Transport>, X),
{
    let storage = NodeStorage {
        state_machine: custom_sm,
        log_store: None,
    };
    start_with_storage(config, storage, make_transport).await
}

/// [`start_with_state_machine`] for a transport that comes with a companion
/// the caller needs afterwards (e.g. the tonic transport's inbound Raft
/// service): `make_transport` returns both, and the companion is handed
/// back beside the node. `make_transport` is called exactly once, after
/// storage opened and before the node's threads start. `custom` chooses
/// the state machine and the log store (the built-ins where `None`).
pub async fn start_with_storage<F, X>(
    config: Config,
    custom: NodeStorage,
    make_transport: F,
) -> Result<(NodeHandle, X), StartError>
where
    F: FnOnce(Arc<dyn PeerInbox>) -> (Arc<dyn Transport>, X),
{
    config.validate()?;
    let cfg = config.clone();
    let st = tokio::task::spawn_blocking(move || open_storage(&cfg, &custom))
        .await
        .map_err(|e| {
            StartError::Storage(NodeFailure::Thread(format!(
                "storage open task failed: {e}"
            )))
        })??;
    let mut core_cfg = config.core_config();
    core_cfg.seed = config.node_id
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let applied = st.sm.applied_index();
    let snapshot_index = st.latest.as_ref().map(|(m, _)| m.last_index).unwrap_or(0);
    let core = RaftNode::new(core_cfg, st.restore)
        .map_err(|e| StartError::Config(ConfigError::new("raft", e.to_string())))?;

    let (input_tx, input_rx) = std_mpsc::channel();
    let (applied_tx, applied_rx) = watch::channel(applied);
    let (leader_tx, _) = watch::channel(LeaderInfo {
        id: 0,
        client_addr: String::new(),
        term: 0,
    });
    let (members_tx, _) = watch::channel(Vec::new());
    let (stopped_tx, _) = watch::channel(false);
    let hub = Arc::new(WatchHub::new(&config.watch, applied));
    let quota = super::quota::Quota::new(config.storage.quota_bytes);
    quota.observe(st.sm.data_bytes());
    let shared = Arc::new(Shared {
        id: config.node_id,
        epoch: Instant::now(),
        input: input_tx.clone(),
        queued: Arc::new(AtomicUsize::new(0)),
        pending_proposals: Arc::new(AtomicUsize::new(0)),
        pending_reads: Arc::new(AtomicUsize::new(0)),
        peer_queued: Arc::new(AtomicUsize::new(0)),
        published: Published::default(),
        applied: AtomicU64::new(applied),
        applied_rx,
        sm: std::sync::RwLock::new(Some(st.sm.clone())),
        hub,
        leader_tx,
        members_tx,
        state: AtomicU8::new(STATE_RUNNING),
        failure: Mutex::new(None),
        stopped_tx,
        staging_dir: st.staging_dir,
        threads: Mutex::new(Vec::new()),
        quota,
        leases: Default::default(),
        metrics: Arc::new(crate::metrics::NodeMetrics::new()),
        config,
    });
    shared
        .published
        .snapshot_index
        .store(snapshot_index, std::sync::atomic::Ordering::Release);
    let (transport, companion) = make_transport(Arc::new(NodeInbox::new(&shared)));

    let periodic = shared.config.durability.sync_interval();
    let (wal_tx, wal_h) = match st.log {
        OpenedLog::Wal(wal) => {
            wal_thread::spawn(wal, periodic, input_tx, shared.id, shared.metrics.clone())?
        }
        OpenedLog::Custom(store) => {
            wal_thread::spawn(store, periodic, input_tx, shared.id, shared.metrics.clone())?
        }
    };
    let (apply_tx, apply_h) = apply::spawn(shared.clone(), st.sm, applied_tx)?;

    let tick = shared.config.tick();
    let expire = shared.config.ttl.expire_interval();
    let core_loop = CoreLoop {
        shared: shared.clone(),
        core,
        rx: input_rx,
        wal_tx,
        apply_tx,
        threads: vec![wal_h, apply_h],
        transport,
        rt: tokio::runtime::Handle::current(),
        hard_state: st.hard_state,
        snapshots: st.snapshots,
        latest_snapshot: st.latest,
        _data_dir: st.data_dir,
        staged: Default::default(),
        snapshot_building: false,
        snapshot_waiters: Vec::new(),
        next_read_id: 1,
        read_batches: Default::default(),
        tick,
        ticks_done: 0,
        tick_offset: 0,
        next_expire: Instant::now() + expire,
        next_lease_check: Instant::now(),
        lease_revokes: Vec::new(),
        last_committed_term: 0,
        last_commit_sent: 0,
        commit_to_send: 0,
        unregistered: Vec::new(),
        last_membership: None,
        last_leader: (u64::MAX, u64::MAX),
        logged_leader: (0, 0),
        heard: Default::default(),
        metrics_tick: 0,
        batch: Vec::new(),
        batch_bytes: 0,
        batch_waiters: Vec::new(),
        reads: Vec::new(),
        log_bytes: Default::default(),
    };
    let mut first_publish = shared.leader_tx.subscribe();
    let h = std::thread::Builder::new()
        .name(format!("dengine-core-{}", shared.id))
        .spawn(move || core_loop.run())?;
    shared.threads.lock().expect("poisoned").push(h);
    // The loop publishes members and leader before its first wait; wait for
    // that so the handle never reports an empty view.
    let _ = first_publish.changed().await;
    Ok((NodeHandle { shared }, companion))
}
