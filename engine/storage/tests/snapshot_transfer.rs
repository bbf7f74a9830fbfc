//! Chunked transfer: in-order staging, idempotent re-send, resume after the
//! receiver restarts, verification, then install.

use d_engine_storage::sm::conformance as c;
use d_engine_storage::sm::{open_or_rebuild, MemStateMachine, SledOptions, StateMachine};
use d_engine_storage::snapshot::{SnapshotError, SnapshotReader, SnapshotReceiver, SnapshotStore};

#[test]
fn chunks_resume_and_install() {
    let d = tempfile::tempdir().unwrap();
    let leader = MemStateMachine::new();
    c::varied_history(&leader, 1, 400);
    // Large values so the file spans several chunks.
    for i in 0..40u64 {
        let v = "x".repeat(50_000 + i as usize);
        leader
            .apply(&[c::cmd(401 + i, 3, c::put(&format!("big/{i}"), &v, None))])
            .unwrap();
    }
    let lstore = SnapshotStore::open(&d.path().join("leader")).unwrap();
    let info = lstore
        .create(&mut *leader.begin_snapshot().unwrap())
        .unwrap();
    let chunk = 256 * 1024;
    assert!(info.size > 4 * chunk as u64);
    let mut reader = SnapshotReader::open(&info.path).unwrap();
    let fdir = d.path().join("follower");
    let fstore = SnapshotStore::open(&fdir).unwrap();
    let index = info.meta.last_index;
    let mut rx = SnapshotReceiver::open(&fstore, index).unwrap();
    assert_eq!(rx.resume_offset(), 0);
    let c0 = reader.read_chunk(0, chunk).unwrap();
    assert_eq!(rx.accept(0, &c0).unwrap(), chunk as u64);
    // Idempotent re-send of the last chunk.
    assert_eq!(rx.accept(0, &c0).unwrap(), chunk as u64);
    // A gap is refused with the expected offset.
    let err = rx.accept(2 * chunk as u64, &c0).unwrap_err();
    assert!(
        matches!(err, SnapshotError::UnexpectedOffset { expected, .. } if expected == chunk as u64)
    );
    // A re-send with different bytes is refused.
    let mut wrong = c0.clone();
    wrong[10] ^= 1;
    assert!(matches!(
        rx.accept(0, &wrong).unwrap_err(),
        SnapshotError::ChunkMismatch { .. }
    ));
    let c1 = reader.read_chunk(chunk as u64, chunk).unwrap();
    rx.accept(chunk as u64, &c1).unwrap();
    // The receiver restarts: it resumes from the last acknowledged chunk.
    drop(rx);
    let mut rx = SnapshotReceiver::open(&fstore, index).unwrap();
    let mut off = rx.resume_offset();
    assert_eq!(off, 2 * chunk as u64);
    loop {
        let data = reader.read_chunk(off, chunk).unwrap();
        if data.is_empty() {
            break;
        }
        off = rx.accept(off, &data).unwrap();
    }
    assert_eq!(off, info.size);
    let got = rx.finish().unwrap();
    assert_eq!(got.meta, info.meta);
    // Install into a sled state machine that had other data.
    let sm_dir = fdir.join("sm");
    let opened = open_or_rebuild(&sm_dir, SledOptions::default(), None).unwrap();
    c::varied_history(&opened.sm, 1, 10);
    opened.sm.install_snapshot(&got.path).unwrap();
    assert_eq!(c::dump(&opened.sm), c::dump(&leader));
    assert_eq!(opened.sm.applied_index(), 440);
    drop(opened);
    let reopened = open_or_rebuild(&sm_dir, SledOptions::default(), Some(&got.path)).unwrap();
    assert_eq!(reopened.sm.applied_index(), 440, "install is durable");
    assert_eq!(reopened.replay_from, 441);
    assert_eq!(c::dump(&reopened.sm), c::dump(&leader));
}

#[test]
fn corrupt_transfer_is_rejected_and_restarts() {
    let d = tempfile::tempdir().unwrap();
    let leader = MemStateMachine::new();
    c::varied_history(&leader, 1, 100);
    let lstore = SnapshotStore::open(&d.path().join("leader")).unwrap();
    let info = lstore
        .create(&mut *leader.begin_snapshot().unwrap())
        .unwrap();
    let mut bytes = std::fs::read(&info.path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    let fstore = SnapshotStore::open(&d.path().join("f")).unwrap();
    let mut rx = SnapshotReceiver::open(&fstore, 100).unwrap();
    rx.accept(0, &bytes).unwrap();
    let err = rx.finish().unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    let rx = SnapshotReceiver::open(&fstore, 100).unwrap();
    assert_eq!(rx.resume_offset(), 0, "a bad transfer starts over");
    // Announced index must match.
    let mut rx = SnapshotReceiver::open(&fstore, 99).unwrap();
    rx.accept(0, &std::fs::read(&info.path).unwrap()).unwrap();
    assert!(matches!(
        rx.finish().unwrap_err(),
        SnapshotError::WrongIndex { .. }
    ));
}

#[test]
fn store_keeps_latest_two_and_cleans_temp_files() {
    let d = tempfile::tempdir().unwrap();
    let sm = MemStateMachine::new();
    let store = SnapshotStore::open(d.path()).unwrap();
    for round in 0..4u64 {
        c::varied_history(&sm, round * 10 + 1, 10);
        store.create(&mut *sm.begin_snapshot().unwrap()).unwrap();
    }
    let list = store.list().unwrap();
    assert_eq!(list.iter().map(|x| x.0).collect::<Vec<_>>(), vec![40, 30]);
    assert_eq!(store.latest().unwrap().unwrap().meta.last_index, 40);
    std::fs::write(store.dir().join("snapshot-x.snap.tmp"), b"partial").unwrap();
    let store = SnapshotStore::open(d.path()).unwrap();
    assert!(!store.dir().join("snapshot-x.snap.tmp").exists());
}

#[test]
fn open_or_rebuild_recovers_a_broken_sled_dir() {
    let d = tempfile::tempdir().unwrap();
    let sm_dir = d.path().join("sm");
    let opened = open_or_rebuild(&sm_dir, SledOptions::default(), None).unwrap();
    c::varied_history(&opened.sm, 1, 60);
    let store = SnapshotStore::open(d.path()).unwrap();
    let info = store
        .create(&mut *opened.sm.begin_snapshot().unwrap())
        .unwrap();
    let expected = c::dump(&opened.sm);
    drop(opened);
    // Missing database directory.
    let current = std::fs::read_to_string(sm_dir.join("CURRENT")).unwrap();
    std::fs::remove_dir_all(sm_dir.join(current.trim())).unwrap();
    let o = open_or_rebuild(&sm_dir, SledOptions::default(), Some(&info.path)).unwrap();
    assert!(
        matches!(
            o.outcome,
            d_engine_storage::sm::OpenOutcome::RestoredFromSnapshot { .. }
        ),
        "{:?}",
        o.outcome
    );
    assert_eq!(o.replay_from, 61);
    assert_eq!(c::dump(&o.sm), expected);
    drop(o);
    // Garbage CURRENT.
    std::fs::write(sm_dir.join("CURRENT"), "../../etc").unwrap();
    let o = open_or_rebuild(&sm_dir, SledOptions::default(), Some(&info.path)).unwrap();
    assert_eq!(c::dump(&o.sm), expected);
    drop(o);
    // No snapshot: starts empty and asks for the whole log.
    std::fs::write(sm_dir.join("CURRENT"), "db-999999").unwrap();
    let o = open_or_rebuild(&sm_dir, SledOptions::default(), None).unwrap();
    assert!(matches!(
        o.outcome,
        d_engine_storage::sm::OpenOutcome::CreatedEmpty { reason: Some(_) }
    ));
    assert_eq!(o.replay_from, 1);
}
