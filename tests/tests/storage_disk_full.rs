//! A full disk under each storage component, on a real filesystem: a small
//! tmpfs filled to the last byte by a ballast file. Each operation that
//! needs space fails with an error that says the disk is full and names the
//! file; nothing written durably before is lost; once space is freed the
//! data reopens and accepts writes again.
//!
//! Needs root to mount the tmpfs; without it each test prints why it did
//! nothing and passes (CI runs as root).

use std::path::{Path, PathBuf};

use d_engine_core::HardState;
use d_engine_storage::hard_state::{self, HardStateStore};
use d_engine_storage::sm::conformance::{apply1, cmd, put, varied_history};
use d_engine_storage::sm::{
    KvStateMachine, MemStateMachine, SledOptions, SledStateMachine, StateMachine,
};
use d_engine_storage::snapshot::{verify_snapshot_file, SnapshotStore};
use d_engine_storage::wal::conformance::entry;
use d_engine_storage::wal::{LogStore, Wal, WalOptions};
use d_engine_tests::fault::disk::Tmpfs;

/// A mounted tmpfs of `mb` MiB (unmounted on drop, before the tempdir).
struct Disk {
    fs: Tmpfs,
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

fn disk(mb: u64) -> Option<Disk> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mnt");
    match Tmpfs::mount(&root, mb) {
        Ok(fs) => Some(Disk {
            fs,
            root,
            _tmp: tmp,
        }),
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

fn is_enospc(msg: &str) -> bool {
    msg.contains("No space left on device") || msg.contains("os error 28")
}

#[test]
fn wal_append_on_a_full_disk_fails_and_keeps_every_synced_entry() {
    let Some(d) = disk(8) else { return };
    let dir = d.root.join("wal");
    let opts = WalOptions {
        segment_size: 256 * 1024,
        preallocate: 64 * 1024,
        ..Default::default()
    };
    let (mut wal, _) = Wal::open(&dir, opts.clone()).unwrap();
    let mut synced = 0;
    for lo in (1..=160).step_by(16) {
        let batch: Vec<_> = (lo..lo + 16).map(|i| entry(i, 1, 256)).collect();
        wal.append(&batch).unwrap();
        wal.sync().unwrap();
        synced = lo + 15;
    }
    d.fs.fill().unwrap();
    // Appends may still land in space the WAL preallocated; the first one
    // that needs a new segment must fail.
    let mut failure = None;
    for _ in 0..10_000 {
        let lo = wal.last_index() + 1;
        let batch: Vec<_> = (lo..lo + 16).map(|i| entry(i, 1, 1024)).collect();
        match wal.append(&batch).and_then(|_| wal.sync()) {
            Ok(()) => synced = lo + 15,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.expect("a full disk must fail an append within 10,000 batches");
    eprintln!("WAL: synced up to {synced}, then: {err}");
    let msg = err.to_string();
    assert!(err.is_disk_full(), "not reported as disk full: {msg}");
    assert!(
        msg.contains("disk full") && msg.contains(dir.to_str().unwrap()),
        "the error must say the disk is full and name the file: {msg}"
    );
    // The WAL refuses further writes rather than continuing past a hole.
    let lo = wal.last_index() + 1;
    assert!(wal
        .append(&[entry(lo, 1, 8)])
        .and_then(|_| wal.sync())
        .is_err());
    drop(wal);

    d.fs.free();
    let (mut wal, _) = Wal::open(&dir, opts).unwrap();
    assert!(
        wal.last_index() >= synced,
        "synced entries lost: last {} < synced {synced}",
        wal.last_index()
    );
    let got = wal.read(1, synced + 1).unwrap();
    assert_eq!(got.len() as u64, synced);
    for (i, e) in got.iter().enumerate() {
        let index = i as u64 + 1;
        let size = if index <= 160 { 256 } else { 1024 };
        assert_eq!(*e, entry(index, 1, size), "entry {index} changed");
    }
    // And it takes writes again.
    wal.truncate_suffix(synced + 1).unwrap();
    wal.append(&[entry(synced + 1, 2, 64)]).unwrap();
    wal.sync().unwrap();
}

#[test]
fn snapshot_on_a_full_disk_fails_and_leaves_the_previous_one() {
    let Some(d) = disk(4) else { return };
    let sm = MemStateMachine::new();
    varied_history(&sm, 1, 300);
    let store = SnapshotStore::open(&d.root).unwrap();
    let first = store.create(&mut *sm.begin_snapshot().unwrap()).unwrap();
    varied_history(&sm, 301, 300);

    d.fs.fill().unwrap();
    let err = store
        .create(&mut *sm.begin_snapshot().unwrap())
        .expect_err("a snapshot on a full disk must fail");
    assert!(is_enospc(&err.to_string()), "{err}");
    // No partial file is left behind, and the previous snapshot is intact.
    let snaps = snapshot_files(store.dir());
    assert_eq!(snaps, vec![first.path.clone()], "leftover files: {snaps:?}");
    assert_eq!(store.latest().unwrap().unwrap().meta, first.meta);
    verify_snapshot_file(&first.path).unwrap();

    d.fs.free();
    let second = store.create(&mut *sm.begin_snapshot().unwrap()).unwrap();
    assert_eq!(second.meta.last_index, 600);
    verify_snapshot_file(&second.path).unwrap();
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn hard_state_save_on_a_full_disk_fails_and_keeps_the_old_state() {
    let Some(d) = disk(1) else { return };
    let dir = d.root.join("hs");
    std::fs::create_dir_all(&dir).unwrap();
    let (mut store, none) = HardStateStore::open(&dir).unwrap();
    assert!(none.is_none());
    let old = HardState {
        term: 7,
        voted_for: Some(2),
        commit: 40,
    };
    store.save(&old).unwrap();
    d.fs.fill().unwrap();
    let new = HardState {
        term: 8,
        voted_for: Some(3),
        commit: 41,
    };
    let err = store
        .save(&new)
        .expect_err("a vote on a full disk must not be reported durable");
    assert!(is_enospc(&err.to_string()), "{err}");
    d.fs.free();
    assert_eq!(hard_state::load(&dir).unwrap(), Some(old));
}

#[test]
fn state_machine_apply_on_a_full_disk_fails_and_reopens_consistent() {
    let Some(d) = disk(16) else { return };
    let dir = d.root.join("sm");
    let sm = SledStateMachine::open(&dir, SledOptions::default()).unwrap();
    let value = "v".repeat(4096);
    for i in 1..=50 {
        apply1(&sm, cmd(i, 1, put(&format!("k{i:05}"), &value, None)));
    }
    d.fs.fill().unwrap();
    let mut failed_at = None;
    for i in 51..=20_000u64 {
        if let Err(e) = sm.apply(&[cmd(i, 1, put(&format!("k{i:05}"), &value, None))]) {
            assert!(is_enospc(&e.to_string()), "entry {i}: {e}");
            failed_at = Some(i);
            break;
        }
    }
    let failed_at = failed_at.expect("80 MB of applies on a full 16 MiB disk must fail");
    // A failed state machine refuses further work instead of diverging.
    assert!(sm.apply(&[cmd(failed_at, 1, put("x", "y", None))]).is_err());
    drop(sm);

    d.fs.free();
    // sled is not flushed per batch (the WAL is the durable record), so the
    // reopened state may be behind the last applied batch — the node replays
    // the log from its applied index — but it is a consistent prefix: every
    // batch is all or nothing, exactly the keys up to the applied index are
    // there. An unreadable state machine is rebuilt from the snapshot and
    // the log, and says so.
    match SledStateMachine::open(&dir, SledOptions::default()) {
        Ok(sm) => {
            let applied = sm.applied_index();
            eprintln!("reopened after the failure at entry {failed_at}: applied index {applied}");
            assert!(
                applied < failed_at,
                "applied {applied} includes the failed entry"
            );
            for i in 1..=applied {
                assert!(
                    sm.get_raw(format!("k{i:05}").as_bytes()).unwrap().is_some(),
                    "key of applied entry {i} missing"
                );
            }
            assert!(sm
                .get_raw(format!("k{:05}", applied + 1).as_bytes())
                .unwrap()
                .is_none());
            apply1(&sm, cmd(applied + 1, 2, put("after", "free", None)));
        }
        Err(e) => {
            let msg = e.to_string();
            eprintln!(
                "after the failure at entry {failed_at} the state machine needs a rebuild: {msg}"
            );
            assert!(
                msg.contains("rebuilt") || msg.contains("unreadable") || msg.contains("corrupt"),
                "an unopenable state machine must say it needs a rebuild: {msg}"
            );
        }
    }
}
