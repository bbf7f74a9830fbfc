//! [`AppEngine`]: an embedded node running an [`Application`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_engine_api::{Error, LeaderInfo, Result};
use d_engine_storage::sm::{Applied, SmError, SnapshotSource, StateMachine};

use super::machine::{AppStateMachine, Factory};
use super::{Application, Codec, Consistency, WriteId};
use crate::config::Config;
use crate::embedded::{EmbeddedEngine, EngineBuilder};
use crate::runtime::{StartError, StateMachineFactory};

/// An embedded node whose state machine is the application's `A`.
///
/// - [`AppEngine::propose`] commits a command through the Raft log and
///   returns its output once it is applied on the node that answered. On
///   a follower the command is forwarded to the leader's client API
///   (`dengine.v1.App`) under the same write id, following leader changes
///   with the embedded client's retry rules (`crate::embedded`, "Writes
///   on a follower"), so it is applied once even when an attempt times
///   out after the leader applied it. With `embedded.forward_to_leader =
///   false`, or when no other member has a client address, a follower
///   answers `Error::NotLeader` naming the leader and its client address
///   (`NoLeader` during an election). With `[auth]` on, forwarded commands
///   authenticate with `auth.forward_token`, whose user needs a readwrite
///   grant of the whole keyspace or the admin role. `Error::Timeout` (or
///   a retryable error after the forwarder's attempts: `NoLeader`,
///   `Unavailable`) means the outcome is unknown: retry with the same
///   [`WriteId`] ([`AppEngine::propose_with_id`]) and the command is
///   applied at most once, the retry getting the original output.
///   A command is at most `limits.max_value_bytes` encoded.
/// - [`AppEngine::query`] answers from the local state after the read
///   barrier of `consistency`: `Linearizable` (ReadIndex, leader only),
///   `Lease` (leader, off the loop while its lease holds) or `Eventual`
///   (any node, as applied locally). The answer is the application's own
///   value, never copied through bytes.
/// - Everything else of an embedded node (status, health, membership,
///   snapshots, the peer and admin gRPC services) is on
///   [`AppEngine::engine`]. The key-value calls fail on this node.
pub struct AppEngine<A: Application> {
    engine: EmbeddedEngine,
    machine: Arc<AppStateMachine<A>>,
    client_id: u64,
    next_seq: AtomicU64,
}

impl<A: Application> std::fmt::Debug for AppEngine<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppEngine")
            .field("engine", &self.engine)
            .finish()
    }
}

impl EngineBuilder {
    /// Starts the node running the application `factory` makes (one fresh
    /// instance at start and one per installed snapshot).
    pub async fn start_app<A: Application>(
        self,
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> std::result::Result<AppEngine<A>, StartError> {
        let factory: Factory<A> = Arc::new(factory);
        let slot: Arc<Mutex<Option<Arc<AppStateMachine<A>>>>> = Arc::default();
        let (f, s) = (factory.clone(), slot.clone());
        let open: StateMachineFactory = Arc::new(move |snapshot| {
            let m = Arc::new(AppStateMachine::open(f.clone(), snapshot)?);
            *s.lock().expect("poisoned") = Some(m.clone());
            Ok(Arc::new(Running(m)) as Arc<dyn StateMachine>)
        });
        let engine = self.state_machine(open).start().await?;
        let machine = slot
            .lock()
            .expect("poisoned")
            .take()
            .expect("the node opened its state machine before it started");
        Ok(AppEngine {
            engine,
            machine,
            client_id: fresh_client_id(),
            next_seq: AtomicU64::new(1),
        })
    }
}

/// The runtime's reference to the machine, a separate allocation: a
/// stopping node waits (up to 5 s) for its reference to be the last one,
/// which the [`AppEngine`]'s own reference (for queries) would never let
/// happen.
struct Running<A: Application>(Arc<AppStateMachine<A>>);

impl<A: Application> StateMachine for Running<A> {
    fn apply(
        &self,
        entries: &[d_engine_core::Entry],
    ) -> std::result::Result<Vec<Applied>, SmError> {
        self.0.apply(entries)
    }
    fn data_bytes(&self) -> u64 {
        self.0.data_bytes()
    }
    fn applied_index(&self) -> u64 {
        self.0.applied_index()
    }
    fn applied_term(&self) -> u64 {
        self.0.applied_term()
    }
    fn membership(&self) -> d_engine_core::Membership {
        self.0.membership()
    }
    fn begin_snapshot(&self) -> std::result::Result<Box<dyn SnapshotSource>, SmError> {
        self.0.begin_snapshot()
    }
    fn install_snapshot(
        &self,
        path: &Path,
    ) -> std::result::Result<d_engine_core::SnapshotMeta, SmError> {
        self.0.install_snapshot(path)
    }
}

/// A random non-zero client id for this engine's write ids.
fn fresh_client_id() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to time and pid (unique enough for
        // write ids, which only need to differ between live proposers).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b = (t ^ ((std::process::id() as u64) << 32)).to_le_bytes();
    }
    u64::from_le_bytes(b).max(1)
}

impl<A: Application> AppEngine<A> {
    /// Starts `config` (peer and client listeners as configured) running
    /// the application `factory` makes.
    pub async fn start(
        config: Config,
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> std::result::Result<Self, StartError> {
        EmbeddedEngine::builder(config).start_app(factory).await
    }

    /// [`AppEngine::start`] with the TOML configuration file at `path`.
    pub async fn start_with(
        path: impl AsRef<Path>,
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> std::result::Result<Self, StartError> {
        Self::start(Config::from_file(path)?, factory).await
    }

    /// The embedded node (status, events, admin, stop).
    pub fn engine(&self) -> &EmbeddedEngine {
        &self.engine
    }

    /// Waits until a leader is elected and ready.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<LeaderInfo> {
        self.engine.wait_ready(timeout).await
    }

    /// A new write id of this engine (for [`AppEngine::propose_with_id`]).
    pub fn next_write_id(&self) -> WriteId {
        WriteId {
            client_id: self.client_id,
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            user: String::new(),
        }
    }

    /// Commits `command` and returns its output (see the type docs).
    pub async fn propose(&self, command: A::Command) -> Result<A::Output> {
        let id = self.next_write_id();
        self.propose_with_id(&command, &id).await
    }

    /// Commits `command` under write id `id`: a retry with the same id is
    /// applied at most once and returns the first attempt's output. A
    /// retry older than the deduplication window (256 writes per client
    /// id) fails with `InvalidArgument` and is not applied again.
    pub async fn propose_with_id(&self, command: &A::Command, id: &WriteId) -> Result<A::Output> {
        if id.client_id == 0 || id.seq == 0 {
            return Err(Error::InvalidArgument(format!(
                "write id (client_id {}, seq {}): both must be >= 1 (take ids from \
                 next_write_id())",
                id.client_id, id.seq
            )));
        }
        let out = self
            .engine
            .propose_app(&command.encode(), (id.client_id, id.seq))
            .await?;
        A::Output::decode(&out.output).map_err(|e| {
            Error::Internal(format!(
                "output of the write at index {}: {e}",
                out.revision
            ))
        })
    }

    /// Answers `query` at `consistency` (see the type docs).
    pub async fn query(
        &self,
        query: &A::Query,
        consistency: Consistency,
    ) -> Result<A::QueryOutput> {
        self.engine.handle().read_barrier(consistency).await?;
        Ok(self.machine.query(query))
    }

    /// The machine itself, for queries without a read barrier from
    /// synchronous code (what an `Eventual` query reads).
    pub fn machine(&self) -> &Arc<AppStateMachine<A>> {
        &self.machine
    }

    /// Stops the node (see [`EmbeddedEngine::stop`]).
    pub async fn stop(&self) -> Result<()> {
        self.engine.stop().await
    }
}
