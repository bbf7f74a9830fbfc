//! The application state machine contract, in process: the conformance
//! checks (`d_engine::app::app_conformance`) on the example machine
//! (`engine/facade/examples/app_jobs.rs`); an apply that fails or panics
//! stops the node, which reports failed and names the entry; a snapshot
//! whose reader fails is refused and the previous state kept; a large
//! snapshot image is written and restored in bounded memory (measured by
//! this binary's counting allocator); a follower's proposals are forwarded
//! to the leader once, under the leader's auth and limits, or answered
//! `NotLeader` when forwarding is off (3 nodes in this process, real gRPC).
//!
//! The tests of this file run one at a time ([`serial`]) so the memory
//! measurement sees only its own allocations.

// The guard of [`serial`] is held across awaits on purpose: it serializes
// whole tests, each on its own runtime, and no task takes it twice.
#![allow(clippy::await_holding_lock)]

#[allow(dead_code)]
#[path = "../../engine/facade/examples/app_jobs.rs"]
mod example;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use d_engine::app::{
    app_conformance, AppEngine, AppError, AppStateMachine, Application, Applying, Codec,
    ConformanceCase, Consistency, SnapshotImage,
};
use d_engine::config::Config;
use d_engine_storage::sm::StateMachine;
use d_engine_storage::snapshot::SnapshotStore;
use example::{Cmd, Jobs};

/// Counts the bytes this process holds allocated, and the peak since the
/// last [`reset_peak`].
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new_size) };
        if !q.is_null() {
            if new_size >= l.size() {
                let grow = new_size - l.size();
                let now = CURRENT.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(l.size() - new_size, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The bytes allocated now; the peak starts again from here.
fn reset_peak() -> usize {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// Every test of this file holds this (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn the_example_machine_conforms() {
    let _serial = serial();
    let mut commands = vec![Cmd::Pop];
    for i in 0..12 {
        commands.push(Cmd::Incr(format!("c{}", i % 3), i));
        commands.push(Cmd::Push(format!("job{i}")));
        if i % 4 == 0 {
            commands.push(Cmd::Pop);
        }
    }
    app_conformance(
        Jobs::default,
        ConformanceCase {
            commands,
            probe: "dump".to_string(),
        },
    );
}

/// A sum that fails on a command of 13, panics on 666, and whose snapshot
/// reader refuses images when `refuse_restore` is set.
#[derive(Default)]
struct Fragile {
    sum: u64,
    refuse_restore: bool,
}

impl Application for Fragile {
    type Command = u64;
    type Output = u64;
    type Query = ();
    type QueryOutput = u64;
    fn apply(&mut self, batch: Vec<Applying<u64>>) -> Result<Vec<u64>, AppError> {
        let mut out = Vec::new();
        for a in batch {
            match a.command {
                13 => return Err(AppError::new(format!("13 is unlucky (entry {})", a.index))),
                666 => panic!("the devil at entry {}", a.index),
                n => {
                    self.sum += n;
                    out.push(self.sum);
                }
            }
        }
        Ok(out)
    }
    fn query(&self, _: &()) -> u64 {
        self.sum
    }
    fn snapshot(&self) -> Box<dyn SnapshotImage> {
        Box::new(self.sum.encode())
    }
    fn restore(&mut self, image: &mut dyn std::io::Read) -> Result<(), AppError> {
        if self.refuse_restore {
            return Err(AppError::new("this reader refuses every image"));
        }
        let mut b = Vec::new();
        image
            .read_to_end(&mut b)
            .map_err(|e| AppError::new(e.to_string()))?;
        self.sum = u64::decode(&b)?;
        Ok(())
    }
}

async fn single_node(dir: &std::path::Path) -> AppEngine<Fragile> {
    let mut config = Config::single_node(dir);
    config.client_addr.clear();
    let engine = d_engine::EmbeddedEngine::builder(config)
        .without_network()
        .start_app(Fragile::default)
        .await
        .unwrap();
    engine.wait_ready(Duration::from_secs(10)).await.unwrap();
    engine
}

async fn assert_stops_on(bad: u64, what: &str) {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let engine = single_node(dir.path()).await;
    assert_eq!(engine.propose(5).await.unwrap(), 5);
    assert_eq!(
        engine.query(&(), Consistency::Linearizable).await.unwrap(),
        5
    );
    assert!(
        engine.propose(bad).await.is_err(),
        "the failing write must fail"
    );
    // The node stopped applying and reports failed, naming the entry.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let health = engine.engine().handle().health();
        if !health.live {
            let why = health.reasons.join("; ");
            assert!(why.contains(what), "health does not name the cause: {why}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health still live after a failed apply: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = engine.propose(1).await.unwrap_err().to_string();
    assert!(e.contains(what) && e.contains("entry"), "{e}");
    assert_eq!(
        engine.machine().query(&()),
        5,
        "nothing after the failure applied"
    );
    let _ = engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_error_stops_the_node_and_names_the_entry() {
    assert_stops_on(13, "13 is unlucky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_panic_stops_the_node_and_names_the_entry() {
    assert_stops_on(666, "the devil").await;
}

#[test]
fn a_snapshot_the_reader_refuses_keeps_the_previous_state() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let leader = AppStateMachine::new(Fragile::default);
    let entry = |index: u64, n: u64| d_engine::core::Entry {
        term: 1,
        index,
        payload: d_engine::core::EntryPayload::Command(
            // The log payload of an application command without write id.
            {
                let mut b = vec![0xA5, 0];
                b.extend_from_slice(&n.encode());
                b.into()
            },
        ),
    };
    leader.apply(&[entry(1, 2), entry(2, 3)]).unwrap();
    let info = store
        .create(&mut *leader.begin_snapshot().unwrap())
        .unwrap();

    let follower = AppStateMachine::new(|| Fragile {
        refuse_restore: true,
        ..Default::default()
    });
    follower.apply(&[entry(1, 2)]).unwrap();
    let e = follower
        .install_snapshot(&info.path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refused") && e.contains("refuses every image"),
        "{e}"
    );
    assert_eq!(follower.applied_index(), 1, "the previous state is kept");
    assert_eq!(follower.query(&()), 2);
    // And it still applies the log.
    follower.apply(&[entry(2, 3)]).unwrap();
    assert_eq!(follower.query(&()), 5);
    // A reader that accepts it gets the leader's state.
    let ok = AppStateMachine::new(Fragile::default);
    assert_eq!(ok.install_snapshot(&info.path).unwrap().last_index, 2);
    assert_eq!(ok.query(&()), 5);
}

/// A state that is only a length: its image is `len` bytes that are a
/// function of their offset, generated while written and checked while
/// read. The application holds nothing, so what a snapshot allocates is
/// the engine's.
#[derive(Default)]
struct Big {
    len: u64,
    /// Set by `restore` once every byte of the image checked out.
    restored: bool,
}

fn big_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(2_654_435_761) >> 13) as u8
}

struct BigImage(u64);

impl SnapshotImage for BigImage {
    fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.0.to_le_bytes())?;
        let mut piece = vec![0u8; 64 << 10];
        let mut at = 0u64;
        while at < self.0 {
            let n = piece.len().min((self.0 - at) as usize);
            for (i, b) in piece[..n].iter_mut().enumerate() {
                *b = big_byte(at + i as u64);
            }
            out.write_all(&piece[..n])?;
            at += n as u64;
        }
        Ok(())
    }
}

impl Application for Big {
    type Command = u64;
    type Output = u64;
    type Query = ();
    type QueryOutput = (u64, bool);
    fn apply(&mut self, batch: Vec<Applying<u64>>) -> Result<Vec<u64>, AppError> {
        Ok(batch
            .into_iter()
            .map(|a| {
                self.len = a.command;
                self.len
            })
            .collect())
    }
    fn query(&self, _: &()) -> (u64, bool) {
        (self.len, self.restored)
    }
    fn snapshot(&self) -> Box<dyn SnapshotImage> {
        Box::new(BigImage(self.len))
    }
    fn restore(&mut self, image: &mut dyn std::io::Read) -> Result<(), AppError> {
        let io = |e: std::io::Error| AppError::new(format!("big image: {e}"));
        let mut head = [0u8; 8];
        image.read_exact(&mut head).map_err(io)?;
        let len = u64::from_le_bytes(head);
        let mut piece = vec![0u8; 64 << 10];
        let mut at = 0u64;
        loop {
            let n = image.read(&mut piece).map_err(io)?;
            if n == 0 {
                break;
            }
            for (i, b) in piece[..n].iter().enumerate() {
                if *b != big_byte(at + i as u64) {
                    return Err(AppError::new(format!(
                        "big image: wrong byte at {}",
                        at + i as u64
                    )));
                }
            }
            at += n as u64;
        }
        if at != len {
            return Err(AppError::new(format!(
                "big image: {at} bytes, expected {len}"
            )));
        }
        self.len = len;
        self.restored = true;
        Ok(())
    }
}

fn command_entry(index: u64, n: u64) -> d_engine::core::Entry {
    let mut b = vec![0xA5, 0];
    b.extend_from_slice(&n.encode());
    d_engine::core::Entry {
        term: 1,
        index,
        payload: d_engine::core::EntryPayload::Command(b.into()),
    }
}

/// A 64 MiB image is written to a snapshot file and restored from it while
/// the process never holds more than 16 MiB beyond what it held before
/// (before the image was streamed, writing it alone held all 64 MiB); a
/// damaged copy of the file is refused and the previous state kept.
#[test]
fn a_large_snapshot_is_written_and_restored_in_bounded_memory() {
    let _serial = serial();
    const LEN: u64 = 64 << 20;
    const BOUND: usize = 16 << 20;
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let leader = AppStateMachine::new(Big::default);
    leader.apply(&[command_entry(1, LEN)]).unwrap();

    let base = reset_peak();
    let info = store
        .create(&mut *leader.begin_snapshot().unwrap())
        .unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert!(
        info.size > LEN,
        "the file holds the image ({} bytes)",
        info.size
    );
    assert!(
        peak < BOUND,
        "writing a {LEN}-byte image held {peak} bytes at its peak (bound {BOUND})"
    );
    eprintln!("snapshot of {LEN} bytes written with a peak of {peak} bytes");

    let fresh = AppStateMachine::new(Big::default);
    let base = reset_peak();
    assert_eq!(fresh.install_snapshot(&info.path).unwrap().last_index, 1);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert_eq!(fresh.query(&()), (LEN, true));
    assert!(
        peak < BOUND,
        "restoring a {LEN}-byte image held {peak} bytes at its peak (bound {BOUND})"
    );
    eprintln!("snapshot of {LEN} bytes restored with a peak of {peak} bytes");

    // One flipped byte in the middle of the image: refused, state kept.
    let bad = dir.path().join("damaged.snap");
    let mut bytes = std::fs::read(&info.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&bad, bytes).unwrap();
    let keeper = AppStateMachine::new(Big::default);
    keeper.apply(&[command_entry(1, 5)]).unwrap();
    let e = keeper.install_snapshot(&bad).unwrap_err().to_string();
    assert!(
        e.contains("checksum"),
        "a damaged file is named as such: {e}"
    );
    assert_eq!(keeper.applied_index(), 1);
    assert_eq!(keeper.query(&()), (5, false), "the previous state is kept");
}

/// `n` application nodes in this process on 127.0.0.1 (real gRPC), each
/// config changed by `tune`; returns them with their data directories.
async fn app_cluster(
    n: u64,
    tune: impl Fn(&mut Config),
) -> (Vec<AppEngine<Fragile>>, Vec<tempfile::TempDir>) {
    use d_engine::config::MemberConfig;
    use tokio::net::TcpListener;
    let mut ls = Vec::new();
    for _ in 0..n {
        let p = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (pa, ca) = (p.local_addr().unwrap(), c.local_addr().unwrap());
        ls.push((p, pa.to_string(), c, ca.to_string()));
    }
    let members: Vec<MemberConfig> = ls
        .iter()
        .enumerate()
        .map(|(i, (_, p, _, c))| MemberConfig {
            id: i as u64 + 1,
            peer_addr: p.clone(),
            client_addr: c.clone(),
        })
        .collect();
    let (mut engines, mut dirs) = (Vec::new(), Vec::new());
    for (i, (pl, pa, cl, ca)) in ls.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::single_node(dir.path());
        cfg.node_id = i as u64 + 1;
        cfg.peer_addr = pa;
        cfg.client_addr = ca;
        cfg.members = members.clone();
        cfg.raft.tick_ms = 10;
        cfg.raft.election_timeout_ms = 300;
        cfg.raft.heartbeat_interval_ms = 60;
        tune(&mut cfg);
        let engine = d_engine::EmbeddedEngine::builder(cfg)
            .peer_listener(pl)
            .client_listener(cl)
            .start_app(Fragile::default)
            .await
            .unwrap();
        engines.push(engine);
        dirs.push(dir);
    }
    (engines, dirs)
}

/// The index of the leader, once one is elected and ready.
async fn app_leader(engines: &[AppEngine<Fragile>]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for (i, e) in engines.iter().enumerate() {
            if e.engine().status().role == d_engine::runtime::NodeRole::Leader
                && e.wait_ready(Duration::from_millis(100)).await.is_ok()
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader within 15 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With `embedded.forward_to_leader = false`, a follower answers
/// `NotLeader` naming the leader and its client address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_forwarding_a_follower_answers_not_leader_with_the_hint() {
    let _serial = serial();
    let (engines, _dirs) = app_cluster(3, |c| c.embedded.forward_to_leader = false).await;
    let l = app_leader(&engines).await;
    let f = (l + 1) % 3;
    match engines[f].propose(1).await {
        Err(d_engine::Error::NotLeader {
            leader_id,
            leader_addr,
        }) => {
            assert_eq!(leader_id, Some(engines[l].engine().node_id()));
            assert_eq!(
                leader_addr,
                engines[l].engine().client_addr().map(|a| a.to_string())
            );
        }
        other => panic!("a follower without forwarding answered {other:?}"),
    }
    assert_eq!(engines[l].propose(1).await.unwrap(), 1);
    for e in &engines {
        e.stop().await.unwrap();
    }
}

/// With `[auth]` on: a follower's proposal is forwarded as the
/// forward-token user and applied once (a retry under the same write id
/// through the other follower gets the first output); a raw
/// `App/Propose` to the leader without credentials is UNAUTHENTICATED,
/// one from a user with a narrower grant PERMISSION_DENIED, an oversized
/// command INVALID_ARGUMENT naming the limit, one without a write id
/// INVALID_ARGUMENT naming `write_id`; none of them applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_commands_are_applied_once_under_the_leaders_auth_and_limits() {
    use d_engine::auth::{sha256_hex, Access, AuthConfig, GrantConfig, RoleConfig, UserConfig};
    use d_engine_proto::v1 as pb;
    let _serial = serial();
    const TOKEN: &str = "app-forwarder-token";
    const NARROW: &str = "app-narrow-token";
    let user = |name: &str, token: &str, role: &str| UserConfig {
        name: name.into(),
        password_hash: None,
        tokens: vec![sha256_hex(token.as_bytes())],
        roles: vec![role.into()],
    };
    let role = |name: &str, prefix: &str| RoleConfig {
        name: name.into(),
        grants: vec![GrantConfig {
            prefix: prefix.into(),
            access: Access::Readwrite,
        }],
    };
    let (engines, _dirs) = app_cluster(3, |c| {
        c.limits.max_value_bytes = 1024;
        c.auth = AuthConfig {
            enabled: true,
            forward_token: Some(TOKEN.into()),
            roles: vec![role("everything", ""), role("narrow", "app/")],
            users: vec![
                user("forwarder", TOKEN, "everything"),
                user("narrow", NARROW, "narrow"),
            ],
            ..AuthConfig::default()
        };
    })
    .await;
    let l = app_leader(&engines).await;
    let (f, g) = ((l + 1) % 3, (l + 2) % 3);

    let id = engines[f].next_write_id();
    assert_eq!(engines[f].propose_with_id(&2, &id).await.unwrap(), 2);
    assert_eq!(
        engines[l]
            .query(&(), Consistency::Linearizable)
            .await
            .unwrap(),
        2
    );
    // The same write id again, through the other follower: the first
    // output, not applied again.
    assert_eq!(engines[g].propose_with_id(&2, &id).await.unwrap(), 2);
    assert_eq!(engines[f].propose(3).await.unwrap(), 5);

    let url = format!("http://{}", engines[l].engine().client_addr().unwrap());
    let call = |token: Option<&'static str>, command: Vec<u8>, write_id: Option<pb::WriteId>| {
        let url = url.clone();
        async move {
            let mut c = pb::app_client::AppClient::connect(url).await.unwrap();
            let mut req = tonic::Request::new(pb::AppProposeRequest { command, write_id });
            if let Some(t) = token {
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            c.propose(req).await
        }
    };
    let wid = || {
        Some(pb::WriteId {
            client_id: 99,
            seq: 1,
        })
    };
    let st = call(None, 7u64.encode(), wid()).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::Unauthenticated, "{st:?}");
    let st = call(Some(NARROW), 7u64.encode(), wid()).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");
    assert!(st.message().contains("narrow"), "{st:?}");
    let st = call(Some(TOKEN), vec![0; 1025], wid()).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(
        st.message().contains("limits.max_value_bytes") && st.message().contains("command"),
        "{st:?}"
    );
    let st = call(Some(TOKEN), 7u64.encode(), None).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("write_id"), "{st:?}");
    // The forward token's user may: applied once, answered twice.
    for _ in 0..2 {
        let ok = call(Some(TOKEN), 7u64.encode(), wid()).await.unwrap();
        assert_eq!(u64::decode(&ok.into_inner().output).unwrap(), 12);
    }
    // Every replica ends with 2 + 3 + 7 (nothing refused was applied).
    let deadline = Instant::now() + Duration::from_secs(10);
    for e in &engines {
        while e.machine().query(&()) != 12 {
            assert!(
                Instant::now() < deadline,
                "node {} holds {}, expected 12",
                e.engine().node_id(),
                e.machine().query(&())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for e in &engines {
        e.stop().await.unwrap();
    }
}
