//! Node start-up: open (or recover) storage, build the core, start threads.
//!
//! Data dir layout: `IDENTITY`, `LOCK` (held while the node runs),
//! `hardstate`, `wal/`, `sm/` (sled), `snapshots/`, `snapshot-staging/`
//! (incoming transfers).
//!
//! Restart: the hard state, the latest snapshot's meta and the WAL entries
//! after it are handed to the core; the state machine (rebuilt from the
//! snapshot if it is behind, missing or unreadable) reports its applied
//! index and the core hands out every committed entry after it again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use d_engine_client::LeaderInfo;
use d_engine_core::{Member, MemberRole, Membership, RaftNode, RestoreState, SnapshotMeta};
use d_engine_storage::data_dir::DataDir;
use d_engine_storage::hard_state::HardStateStore;
use d_engine_storage::sm::{
    open_or_rebuild, MemStateMachine, OpenOutcome, SledOptions, StateMachine,
};
use d_engine_storage::snapshot::SnapshotStore;
use d_engine_storage::wal::{LogStore, SyncMode, Wal, WalOptions};
use tokio::sync::watch;

use super::addr::MemberAddr;
use super::core_loop::CoreLoop;
use super::handle::NodeHandle;
use super::shared::*;
use super::watch_hub::WatchHub;
use super::{apply, wal_thread};
use crate::config::{Config, ConfigError, DurabilityMode, StateMachineBackend};
use crate::transport::{PeerInbox, Transport};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The data dir, WAL, hard state, snapshots or state machine could not
    /// be opened (the message names the file and what to do).
    #[error("storage: {0}")]
    Storage(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

fn storage<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> StartError {
    move |e| StartError::Storage(format!("{what}: {e}"))
}

struct OpenedStorage {
    data_dir: DataDir,
    wal: Wal,
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

fn open_storage(config: &Config) -> Result<OpenedStorage, StartError> {
    let data_dir = DataDir::open(&config.data_dir, config.node_id, &config.cluster_id)
        .map_err(storage("data dir"))?;
    let (hard_state, hs) =
        HardStateStore::open(data_dir.hard_state_dir()).map_err(storage("hard state"))?;
    let snapshots = SnapshotStore::open(data_dir.path()).map_err(storage("snapshots"))?;
    let latest = snapshots
        .latest()
        .map_err(storage("snapshots"))?
        .map(|i| (i.meta, i.path));
    let latest_path = latest.as_ref().map(|(_, p)| p.as_path());
    let sm: Arc<dyn StateMachine> = match config.state_machine.backend {
        StateMachineBackend::Sled => {
            let opened = open_or_rebuild(
                &data_dir.path().join("sm"),
                SledOptions {
                    cache_bytes: config.state_machine.cache_mb << 20,
                },
                latest_path,
            )
            .map_err(storage("state machine"))?;
            match &opened.outcome {
                OpenOutcome::Opened => {}
                other => tracing::info!(outcome = ?other, "state machine opened"),
            }
            Arc::new(opened.sm)
        }
        StateMachineBackend::Memory => {
            let sm = match latest_path {
                Some(p) => MemStateMachine::from_snapshot(p),
                None => Ok(MemStateMachine::new()),
            }
            .map_err(storage(
                "state machine (memory backend, loading the latest snapshot)",
            ))?;
            tracing::info!(
                applied_index = sm.applied_index(),
                "memory state machine loaded; the log after it is replayed"
            );
            Arc::new(sm)
        }
    };

    let wal_opts = WalOptions {
        segment_size: config.durability.segment_bytes,
        sync_mode: match config.durability.mode {
            DurabilityMode::Fsync => SyncMode::Always,
            DurabilityMode::Periodic => SyncMode::Periodic {
                interval_ms: config.durability.interval_ms,
            },
        },
        ..WalOptions::default()
    };
    let (mut wal, recovered) = Wal::open(data_dir.wal_dir(), wal_opts).map_err(storage("WAL"))?;
    if let Some(t) = &recovered.torn_tail {
        tracing::warn!(file = %t.file.display(), offset = t.offset, reason = %t.reason,
            "WAL: cut an unsynced torn tail");
    }
    let (snap_index, snap_term) = latest
        .as_ref()
        .map(|(m, _)| (m.last_index, m.last_term))
        .unwrap_or((0, 0));
    let mut entries = recovered.entries;
    if let Some(first) = entries.first() {
        if first.index > snap_index + 1 {
            return Err(StartError::Storage(format!(
                "the WAL starts at index {} but the latest snapshot covers only up to index \
                 {snap_index}: entries {}..{} are missing; {}",
                first.index,
                snap_index + 1,
                first.index,
                d_engine_storage::wal::RESTORE_ADVICE
            )));
        }
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
            wal.reset(snap_index + 1).map_err(storage("WAL reset"))?;
            entries.clear();
        } else {
            entries.retain(|e| e.index > snap_index);
        }
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
    let staging_dir = data_dir.path().join("snapshot-staging");
    std::fs::create_dir_all(&staging_dir)?;
    Ok(OpenedStorage {
        data_dir,
        wal,
        hard_state,
        snapshots,
        latest,
        sm,
        restore,
        staging_dir,
    })
}

/// Starts a node with `config`. `make_transport` receives the node's
/// [`PeerInbox`] (for reporting unreachable peers) and returns the outbound
/// transport. The caller serves the inbound peer side with
/// [`NodeHandle::peer_inbox`]. Must be called within a tokio runtime.
pub async fn start<F>(config: Config, make_transport: F) -> Result<NodeHandle, StartError>
where
    F: FnOnce(Arc<dyn PeerInbox>) -> Arc<dyn Transport>,
{
    config.validate()?;
    let cfg = config.clone();
    let st = tokio::task::spawn_blocking(move || open_storage(&cfg))
        .await
        .map_err(|e| StartError::Storage(format!("storage open task failed: {e}")))??;
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
        config,
    });
    shared
        .published
        .snapshot_index
        .store(snapshot_index, std::sync::atomic::Ordering::Release);
    let transport = make_transport(shared.peer_inbox());

    let periodic = match shared.config.durability.mode {
        DurabilityMode::Fsync => None,
        DurabilityMode::Periodic => {
            Some(Duration::from_millis(shared.config.durability.interval_ms))
        }
    };
    let (wal_tx, wal_h) = wal_thread::spawn(st.wal, periodic, input_tx, shared.id)?;
    let (apply_tx, apply_h) = apply::spawn(shared.clone(), st.sm, applied_tx)?;

    let tick = shared.config.tick();
    let expire = Duration::from_millis(shared.config.ttl.expire_interval_ms);
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
        last_committed_term: 0,
        last_commit_sent: 0,
        commit_to_send: 0,
        unregistered: Vec::new(),
        last_membership: None,
        last_leader: (u64::MAX, u64::MAX),
        logged_leader: (0, 0),
        heard: Default::default(),
        batch: Vec::new(),
        batch_bytes: 0,
        batch_waiters: Vec::new(),
        reads: Vec::new(),
    };
    let mut first_publish = shared.leader_tx.subscribe();
    let h = std::thread::Builder::new()
        .name(format!("dengine-core-{}", shared.id))
        .spawn(move || core_loop.run())?;
    shared.threads.lock().expect("poisoned").push(h);
    // The loop publishes members and leader before its first wait; wait for
    // that so the handle never reports an empty view.
    let _ = first_publish.changed().await;
    Ok(NodeHandle { shared })
}
