//! Crash tests with real processes: a child process applies, builds
//! snapshots and installs snapshots on a real data directory and is killed
//! with SIGKILL at seeded random points. The parent reopens the directory and
//! checks that the state machine is exactly the deterministic model at its
//! applied index (old or new state, never a mix), that every snapshot the
//! child reported is durable and valid, that every install the child
//! reported survived, and that recovery (snapshot + log replay) converges.
//!
//! The child is this test binary re-run with `SM_CRASH_CHILD` set (see
//! `crash_child`, ignored when run directly).

use bytes::Bytes;
use d_engine_core::{ConfChange, Entry, EntryPayload};
use d_engine_storage::command::{
    Command, Compare, CompareOp, CompareTarget, KeyRange, Op, RangeSpec, Txn, TxnOp,
};
use d_engine_storage::sm::conformance::{dump, dump_leases};
use d_engine_storage::sm::{
    open_or_rebuild, KvStateMachine, MemStateMachine, SledOptions, SledStateMachine,
    SnapshotRecord, StateMachine,
};
use d_engine_storage::snapshot::{verify_snapshot_file, SnapshotStore};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

/// Entries the child never goes beyond (bounds every loop).
const MAX_INDEX: u64 = 60_000;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The deterministic "log": entry `i` of the workload.
fn entry(i: u64) -> Entry {
    let r = splitmix(i);
    let term = 1 + i / 1000;
    let key = Bytes::from(format!("key/{:04}", (r >> 8) % 600));
    let payload = match r % 100 {
        0 => EntryPayload::Config(ConfChange::AddLearner {
            id: 2 + (r >> 16) % 5,
            addr: format!("127.0.0.1:{}", 9000 + i % 1000),
        }),
        1 => EntryPayload::Config(ConfChange::Promote {
            id: 2 + (r >> 16) % 5,
        }),
        2 => EntryPayload::Config(ConfChange::Remove {
            id: 2 + (r >> 16) % 5,
        }),
        3 => EntryPayload::Noop,
        4..=6 => EntryPayload::Command(Command::new(Op::Expire { now_ms: i * 10 }).encode()),
        7..=18 => EntryPayload::Command(Command::new(Op::Delete { key }).encode()),
        19..=28 => EntryPayload::Command(
            Command::new(Op::CompareAndSwap {
                key,
                expected: if r & (1 << 40) == 0 {
                    None
                } else {
                    Some(Bytes::from(format!("v{}", i - 1)))
                },
                new_value: Some(Bytes::from(format!("v{i}"))),
                expires_at_ms: None,
            })
            .encode(),
        ),
        46..=49 => EntryPayload::Command(
            Command::new(Op::LeaseGrant {
                id: 1 + (r >> 16) % 6,
                ttl_ms: 1 + (r >> 32) % 10_000,
            })
            .encode(),
        ),
        50..=51 => EntryPayload::Command(
            Command::new(Op::LeaseRevoke {
                id: 1 + (r >> 16) % 6,
            })
            .encode(),
        ),
        52..=60 => EntryPayload::Command(
            Command::new(Op::Put {
                key,
                value: Bytes::from(format!("l{i}")),
                expires_at_ms: None,
                lease: 1 + (r >> 16) % 6,
            })
            .encode(),
        ),
        61..=62 => EntryPayload::Command(
            Command::new(Op::DeleteRange {
                range: KeyRange::prefix(format!("key/0{}", (r >> 16) % 6)),
                prev_kv: r & (1 << 40) != 0,
            })
            .encode(),
        ),
        63..=65 => EntryPayload::Command(
            Command::with_client(
                Op::Txn(Box::new(Txn {
                    compares: vec![Compare {
                        key: key.clone(),
                        op: CompareOp::Greater,
                        target: CompareTarget::Version(0),
                    }],
                    success: vec![
                        TxnOp::Put {
                            key: key.clone(),
                            value: Bytes::from(format!("t{i}")),
                            expires_at_ms: None,
                            lease: 1 + (r >> 16) % 6,
                        },
                        TxnOp::Range(RangeSpec {
                            range: KeyRange::prefix("key/00"),
                            limit: 5,
                            keys_only: false,
                            count_only: false,
                        }),
                    ],
                    failure: vec![TxnOp::DeleteRange {
                        range: KeyRange {
                            start: key,
                            end: Bytes::from(format!("key/{:04}", (r >> 8) % 600 + 20)),
                        },
                        prev_kv: false,
                    }],
                })),
                100 + (r >> 20) % 8,
                i,
            )
            .encode(),
        ),
        29..=45 => EntryPayload::Command(
            Command::with_client(
                Op::Put {
                    key,
                    value: Bytes::from(format!("c{i}")),
                    expires_at_ms: None,
                    lease: 0,
                },
                (r >> 20) % 8,
                i / 2,
            )
            .encode(),
        ),
        _ => {
            let len = ((r >> 24) % 1500) as usize;
            let ttl = if r.is_multiple_of(3) {
                Some(i * 10 + (r >> 44) % 5000)
            } else {
                None
            };
            let mut v = format!("v{i}:").into_bytes();
            v.resize(len.max(v.len()), b'a' + (i % 26) as u8);
            EntryPayload::Command(
                Command::new(Op::Put {
                    key,
                    value: Bytes::from(v),
                    expires_at_ms: ttl,
                    lease: 0,
                })
                .encode(),
            )
        }
    };
    Entry {
        term,
        index: i,
        payload,
    }
}

fn entries(from: u64, to_inclusive: u64) -> Vec<Entry> {
    (from..=to_inclusive).map(entry).collect()
}

/// Applies the workload up to `to` (inclusive) in batches of varying size.
fn advance(sm: &dyn KvStateMachine, to: u64) {
    let mut i = sm.applied_index() + 1;
    while i <= to {
        let n = 1 + splitmix(i ^ 0xabc) % 40;
        let end = (i + n - 1).min(to);
        sm.apply(&entries(i, end)).expect("apply");
        i = end + 1;
    }
}

fn opts() -> SledOptions {
    SledOptions {
        cache_bytes: 32 << 20,
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

fn open_child(dir: &Path) -> (SledStateMachine, SnapshotStore) {
    let store = SnapshotStore::open(dir).unwrap();
    let latest = store.latest().unwrap().map(|i| i.path);
    let opened = open_or_rebuild(&dir.join("sm"), opts(), latest.as_deref()).unwrap();
    (opened.sm, store)
}

fn child_apply(dir: &Path) {
    let (sm, _) = open_child(dir);
    say(&format!("READY {}", sm.applied_index()));
    advance(&sm, MAX_INDEX);
}

fn child_build(dir: &Path) {
    let (sm, store) = open_child(dir);
    let sm = std::sync::Arc::new(sm);
    say(&format!("READY {}", sm.applied_index()));
    while sm.applied_index() + 600 < MAX_INDEX {
        advance(&*sm, sm.applied_index() + 200);
        let mut src = sm.begin_snapshot().unwrap();
        let s = src.meta().last_index;
        say(&format!("BUILD {s}"));
        let st = store.clone();
        let t = std::thread::spawn(move || st.create(&mut *src).unwrap());
        while !t.is_finished() {
            let a = sm.applied_index();
            advance(&*sm, (a + 5).min(MAX_INDEX));
        }
        let info = t.join().unwrap();
        say(&format!("SNAP {}", info.meta.last_index));
    }
}

fn child_install(dir: &Path) {
    let (sm, store) = open_child(dir);
    say(&format!("READY {}", sm.applied_index()));
    let model = MemStateMachine::new();
    advance(&model, sm.applied_index());
    while sm.applied_index() + 400 < MAX_INDEX {
        let x = sm.applied_index() + 150;
        advance(&model, x);
        let info = store.create(&mut *model.begin_snapshot().unwrap()).unwrap();
        say(&format!("INSTALL {x}"));
        sm.install_snapshot(&info.path).unwrap();
        say(&format!("INSTALLED {x}"));
        advance(&sm, x + 50);
        advance(&model, x + 50);
    }
}

/// Child process entry point (does nothing unless run by the parent).
#[test]
#[ignore = "child process entry for the crash tests; run by the parent tests"]
fn crash_child() {
    let Ok(mode) = std::env::var("SM_CRASH_CHILD") else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var("SM_CRASH_DIR").unwrap());
    match mode.as_str() {
        "apply" => child_apply(&dir),
        "build" => child_build(&dir),
        "install" => child_install(&dir),
        m => panic!("unknown mode {m}"),
    }
}

fn records(sm: &dyn KvStateMachine) -> Vec<SnapshotRecord> {
    let mut src = sm.begin_snapshot().unwrap();
    let mut v = Vec::new();
    while let Some(r) = src.next_record().unwrap() {
        v.push(r);
    }
    v.sort_by_key(|r| match r {
        SnapshotRecord::Kv(kv) => (0, kv.key.to_vec()),
        SnapshotRecord::Client { key, .. } => {
            let mut k = key.client_id.to_be_bytes().to_vec();
            k.extend_from_slice(key.user.as_bytes());
            (1, k)
        }
        SnapshotRecord::Lease(l) => (2, l.id.to_be_bytes().to_vec()),
        SnapshotRecord::Auth(a) => (3, a.clone()),
        SnapshotRecord::App(b) => (4, b.to_vec()),
    });
    v
}

/// The state must be exactly the model at its applied index.
fn assert_consistent(sm: &dyn KvStateMachine, what: &str) {
    let model = MemStateMachine::new();
    advance(&model, sm.applied_index());
    assert_eq!(sm.applied_term(), model.applied_term(), "{what}: term");
    assert_eq!(sm.membership(), model.membership(), "{what}: membership");
    assert_eq!(
        dump(sm),
        dump(&model),
        "{what}: keys at {}",
        sm.applied_index()
    );
    assert_eq!(
        dump_leases(sm),
        dump_leases(&model),
        "{what}: leases at {}",
        sm.applied_index()
    );
    assert_eq!(sm.data_bytes(), model.data_bytes(), "{what}: data bytes");
    assert_eq!(records(sm), records(&model), "{what}: snapshot image");
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = splitmix(self.0);
        self.0 % n.max(1)
    }
}

/// Runs `kills` child processes in `mode`, each killed `delay` after the
/// trigger line, and checks the directory after each.
fn crash_loop(mode: &str, seed: u64, kills: usize, trigger: &str, max_delay_us: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    let exe = std::env::current_exe().unwrap();
    let mut mid_op_kills = 0;
    for round in 0..kills {
        let mut child = Proc::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SM_CRASH_CHILD", mode)
            .env("SM_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut reported_snap = 0u64;
        let mut reported_install = 0u64;
        let mut pending_install = None;
        let mut pending_build = None;
        // Skip a seeded number of trigger lines, then kill after a random delay.
        let skip = rng.below(3);
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        for line in lines.by_ref() {
            let line = line.unwrap();
            let mut it = line.split_whitespace();
            let (tag, n) = (
                it.next().unwrap_or(""),
                it.next().and_then(|x| x.parse::<u64>().ok()),
            );
            match (tag, n) {
                ("SNAP", Some(n)) => {
                    reported_snap = n;
                    pending_build = None;
                }
                ("BUILD", Some(n)) => pending_build = Some(n),
                ("INSTALL", Some(n)) => pending_install = Some(n),
                ("INSTALLED", Some(n)) => {
                    reported_install = n;
                    pending_install = None;
                }
                _ => {}
            }
            if line.starts_with(trigger) {
                if seen == skip {
                    break;
                }
                seen += 1;
            }
            assert!(
                Instant::now() < deadline,
                "child never reached its kill point"
            );
        }
        std::thread::sleep(Duration::from_micros(rng.below(max_delay_us)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Drain what the child printed before dying.
        for line in lines.map_while(Result::ok) {
            let mut it = line.split_whitespace();
            match (it.next(), it.next().and_then(|x| x.parse::<u64>().ok())) {
                (Some("SNAP"), Some(n)) => {
                    reported_snap = n;
                    pending_build = None;
                }
                (Some("INSTALLED"), Some(n)) => {
                    reported_install = n;
                    pending_install = None;
                }
                _ => {}
            }
        }
        if pending_install.is_some() || pending_build.is_some() {
            mid_op_kills += 1;
        }
        let what = format!("{mode} round {round} (seed {seed:#x})");
        // Every snapshot file on disk is complete and valid; the last reported one survived.
        let store = SnapshotStore::open(dir.path()).unwrap();
        let list = store.list().unwrap();
        for (_, _, p) in &list {
            verify_snapshot_file(p).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        if reported_snap > 0 {
            assert!(
                list.first().map(|x| x.0).unwrap_or(0) >= reported_snap,
                "{what}: snapshot {reported_snap} lost"
            );
        }
        // The state machine opens, without rebuild, and is consistent.
        let sm = SledStateMachine::open(&dir.path().join("sm"), opts())
            .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
        assert!(
            sm.applied_index() >= reported_install,
            "{what}: install of {reported_install} lost"
        );
        assert_consistent(&sm, &what);
        drop(sm);
        // Recovery: snapshot (if ahead) + log replay converges to the model.
        let latest = store.latest().unwrap().map(|i| i.path);
        let o = open_or_rebuild(&dir.path().join("sm"), opts(), latest.as_deref()).unwrap();
        let target = o.replay_from + 30;
        advance(&o.sm, target);
        assert_consistent(&o.sm, &format!("{what} after replay"));
    }
    eprintln!("{mode}: {kills} kills, {mid_op_kills} in the middle of a snapshot build or install");
}

fn seed() -> u64 {
    std::env::var("SM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001)
}

#[test]
fn crash_during_apply() {
    crash_loop("apply", seed(), 5, "READY", 150_000);
}

#[test]
fn crash_during_snapshot_build() {
    crash_loop("build", seed() ^ 1, 6, "BUILD", 40_000);
}

#[test]
fn crash_during_snapshot_install() {
    crash_loop("install", seed() ^ 2, 6, "INSTALL ", 20_000);
}

/// The workload really exercises leases, transactions and delete-ranges
/// (so the crash checks above cover them).
#[test]
fn workload_exercises_leases_and_txns() {
    use d_engine_storage::sm::ApplyResult;
    let model = MemStateMachine::new();
    let (mut revoked_keys, mut txn_ok, mut txn_failed, mut ranged, mut leased_puts) =
        (0, 0, 0, 0, 0);
    for i in 1..=3000 {
        for a in model.apply(&[entry(i)]).unwrap() {
            match a.result {
                ApplyResult::LeaseRevoked { deleted, .. } => revoked_keys += deleted,
                ApplyResult::Txn {
                    succeeded: true, ..
                } => txn_ok += 1,
                ApplyResult::Txn {
                    succeeded: false, ..
                } => txn_failed += 1,
                ApplyResult::DeleteRange { deleted, .. } => ranged += deleted,
                ApplyResult::Put { .. } if a.events[0].kv.as_ref().unwrap().lease != 0 => {
                    leased_puts += 1
                }
                _ => {}
            }
        }
    }
    assert!(
        revoked_keys > 10 && txn_ok > 10 && txn_failed > 10 && ranged > 10 && leased_puts > 50,
        "{revoked_keys} {txn_ok} {txn_failed} {ranged} {leased_puts}"
    );
    assert!(!model.leases().unwrap().is_empty());
}
