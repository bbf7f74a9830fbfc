//! Snapshot files in transit (`snapshot::transfer`): limits checked before
//! anything is staged, in-order staging with resume, validation while
//! staged, adoption into the store, then install.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use d_engine_core::{NodeId, SnapshotMeta};
use d_engine_storage::data_dir::DataDir;
use d_engine_storage::sm::conformance as c;
use d_engine_storage::sm::{open_or_rebuild, MemStateMachine, SledOptions, StateMachine};
use d_engine_storage::snapshot::{
    InboundError, InboundLimits, InboundOffer, SnapshotInfo, SnapshotReader, SnapshotStaging,
    SnapshotStore,
};

const LIMITS: InboundLimits = InboundLimits {
    local_id: 2,
    max_bytes: 1 << 30,
};

fn offer(from: NodeId, meta: &SnapshotMeta, r: &SnapshotReader) -> InboundOffer {
    InboundOffer {
        from,
        meta: meta.clone(),
        total_size: r.len(),
        checksum: r.checksum(),
    }
}

/// A leader's snapshot of `n` varied entries, written to `dir/snapshots`.
fn leader_snapshot(dir: &Path, n: u64, big: bool) -> (MemStateMachine, SnapshotInfo) {
    let leader = MemStateMachine::new();
    c::varied_history(&leader, 1, n);
    if big {
        // Large values so the file spans several chunks.
        for i in 0..40u64 {
            let v = "x".repeat(50_000 + i as usize);
            leader
                .apply(&[c::cmd(n + 1 + i, 3, c::put(&format!("big/{i}"), &v, None))])
                .unwrap();
        }
    }
    let store = SnapshotStore::open(dir).unwrap();
    let info = store
        .create(&mut *leader.begin_snapshot().unwrap())
        .unwrap();
    (leader, info)
}

fn files(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Err(_) => Vec::new(),
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }
}

#[test]
fn chunks_resume_validate_adopt_and_install() {
    let d = tempfile::tempdir().unwrap();
    let (leader, info) = leader_snapshot(&d.path().join("leader"), 400, true);
    let chunk = 256 * 1024;
    assert!(info.size > 4 * chunk as u64);
    let reader = SnapshotReader::open(&info.path).unwrap();
    assert_eq!(reader.len(), info.size);
    let follower = DataDir::open(d.path().join("follower"), 2, "c").unwrap();
    let (staging, _) = follower.open_snapshot_staging().unwrap();
    let mut rx = staging
        .begin(offer(1, &info.meta, &reader), LIMITS)
        .unwrap();
    assert_eq!(rx.resume_offset(), 0);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(rx.path()), 0o600);
    assert_eq!(mode(staging.dir()), 0o700);
    let c0 = reader.read_chunk(0, chunk).unwrap();
    assert_eq!(rx.accept(0, &c0).unwrap(), chunk as u64);
    // A re-sent chunk is acknowledged again.
    assert_eq!(rx.accept(0, &c0).unwrap(), chunk as u64);
    // A gap is refused with the expected offset; the prefix stays.
    let err = rx.accept(2 * chunk as u64, &c0).unwrap_err();
    assert!(
        matches!(err, InboundError::ChunkDoesNotFit { expected, .. } if expected == chunk as u64),
        "{err}"
    );
    assert!(!err.staging_deleted());
    let c1 = reader.read_chunk(chunk as u64, chunk).unwrap();
    rx.accept(chunk as u64, &c1).unwrap();
    // The receiver restarts: it resumes from the last acknowledged chunk.
    drop(rx);
    let mut rx = staging
        .begin(offer(1, &info.meta, &reader), LIMITS)
        .unwrap();
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
    let staged = rx.finish().unwrap();
    assert_eq!(staged.meta, info.meta);
    assert_eq!(
        files(staging.dir()),
        vec![format!(
            "staged-from1-{}-{}.snap",
            info.meta.last_index, info.meta.last_term
        )]
    );
    let store = follower.open_snapshot_store().unwrap();
    let installed = store.adopt_staged(&staged.path, &staged.meta).unwrap();
    assert_eq!(
        installed,
        store.file_path(info.meta.last_index, info.meta.last_term)
    );
    assert!(files(staging.dir()).is_empty());
    assert_eq!(store.latest().unwrap().unwrap().meta, info.meta);
    // Install into a sled state machine that had other data.
    let sm_dir = follower.state_machine_dir();
    let opened = open_or_rebuild(&sm_dir, SledOptions::default(), None).unwrap();
    c::varied_history(&opened.sm, 1, 10);
    opened.sm.install_snapshot(&installed).unwrap();
    assert_eq!(c::dump(&opened.sm), c::dump(&leader));
    assert_eq!(opened.sm.applied_index(), 440);
    drop(opened);
    let reopened = open_or_rebuild(&sm_dir, SledOptions::default(), Some(&installed)).unwrap();
    assert_eq!(reopened.sm.applied_index(), 440, "install is durable");
    assert_eq!(reopened.replay_from, 441);
    assert_eq!(c::dump(&reopened.sm), c::dump(&leader));
}

#[test]
fn a_file_that_fails_validation_is_deleted_and_the_transfer_restarts() {
    let d = tempfile::tempdir().unwrap();
    let (_, info) = leader_snapshot(&d.path().join("leader"), 100, false);
    let good = std::fs::read(&info.path).unwrap();
    let staging = SnapshotStaging::new(d.path().join("staging"));
    let reader = SnapshotReader::open(&info.path).unwrap();

    // Damaged bytes, but the announced checksum is theirs: not a snapshot.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n / 2] ^= 0xff;
    let mut o = offer(1, &info.meta, &reader);
    o.checksum = crc32c::crc32c(&bad);
    let mut rx = staging.begin(o.clone(), LIMITS).unwrap();
    rx.accept(0, &bad).unwrap();
    let err = rx.finish().unwrap_err();
    assert!(err.to_string().contains("not a valid snapshot"), "{err}");
    assert!(err.staging_deleted());
    assert!(files(staging.dir()).is_empty());
    let rx = staging.begin(o, LIMITS).unwrap();
    assert_eq!(rx.resume_offset(), 0, "a bad transfer starts over");
    rx.discard();

    // The announced checksum does not match the bytes.
    let mut o = offer(1, &info.meta, &reader);
    o.checksum ^= 1;
    let mut rx = staging.begin(o, LIMITS).unwrap();
    rx.accept(0, &good).unwrap();
    let err = rx.finish().unwrap_err();
    assert!(
        err.to_string().contains("snapshot checksum mismatch"),
        "{err}"
    );
    assert!(files(staging.dir()).is_empty());

    // A valid snapshot announced as another one.
    let mut o = offer(1, &info.meta, &reader);
    o.meta.last_index += 1;
    let mut rx = staging.begin(o, LIMITS).unwrap();
    rx.accept(0, &good).unwrap();
    let err = rx.finish().unwrap_err();
    assert!(
        err.to_string().contains("announced as index 101")
            && err.to_string().contains("holds index 100"),
        "{err}"
    );
    assert!(files(staging.dir()).is_empty());

    // Done early: the prefix is kept for resume.
    let mut rx = staging
        .begin(offer(1, &info.meta, &reader), LIMITS)
        .unwrap();
    rx.accept(0, &good[..100]).unwrap();
    let err = rx.finish().unwrap_err();
    assert!(
        matches!(err, InboundError::Incomplete { len: 100, .. }),
        "{err}"
    );
    assert_eq!(files(staging.dir()).len(), 1);
}

#[test]
fn limits_are_checked_before_anything_is_staged() {
    let d = tempfile::tempdir().unwrap();
    let (_, info) = leader_snapshot(&d.path().join("leader"), 20, false);
    let reader = SnapshotReader::open(&info.path).unwrap();
    let staging = SnapshotStaging::new(d.path().join("staging"));

    let small = InboundLimits {
        local_id: 2,
        max_bytes: reader.len() - 1,
    };
    let err = staging
        .begin(offer(1, &info.meta, &reader), small)
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "snapshot.max_inbound_bytes = {} on node 2",
            reader.len() - 1
        )),
        "{err}"
    );
    assert!(!staging.dir().exists(), "not even the directory is created");

    // 1 EiB: no test machine has that much free.
    let mut huge = offer(1, &info.meta, &reader);
    huge.total_size = 1 << 60;
    let no_limit = InboundLimits {
        local_id: 2,
        max_bytes: u64::MAX,
    };
    let err = staging.begin(huge, no_limit).unwrap_err();
    assert!(
        err.to_string().contains("must stay free")
            && err.to_string().contains("free disk space on node 2"),
        "{err}"
    );
    assert!(files(staging.dir()).is_empty());

    // Bytes beyond the announced size.
    let mut rx = staging
        .begin(offer(1, &info.meta, &reader), LIMITS)
        .unwrap();
    let too_many = vec![7u8; reader.len() as usize + 1];
    let err = rx.accept(0, &too_many).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("announced size {}", reader.len())),
        "{err}"
    );
    assert_eq!(rx.resume_offset(), 0);
}

#[test]
fn a_new_snapshot_from_a_sender_supersedes_its_partial_transfers() {
    let d = tempfile::tempdir().unwrap();
    let (_, older) = leader_snapshot(&d.path().join("a"), 20, false);
    let (_, newer) = leader_snapshot(&d.path().join("b"), 30, false);
    let staging = SnapshotStaging::new(d.path().join("staging"));
    let r_old = SnapshotReader::open(&older.path).unwrap();
    let r_new = SnapshotReader::open(&newer.path).unwrap();
    let mut rx = staging
        .begin(offer(1, &older.meta, &r_old), LIMITS)
        .unwrap();
    rx.accept(0, &r_old.read_chunk(0, 100).unwrap()).unwrap();
    let mut other = staging
        .begin(offer(3, &older.meta, &r_old), LIMITS)
        .unwrap();
    other.accept(0, &r_old.read_chunk(0, 50).unwrap()).unwrap();
    drop((rx, other));
    assert_eq!(files(staging.dir()).len(), 2);
    let rx = staging
        .begin(offer(1, &newer.meta, &r_new), LIMITS)
        .unwrap();
    assert_eq!(rx.resume_offset(), 0);
    let names = files(staging.dir());
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("incoming-from3-")));
    assert!(names
        .iter()
        .any(|n| n.starts_with(&format!("incoming-from1-{}-", newer.meta.last_index))));
    // Idle: the host discards it.
    let p = rx.path().to_path_buf();
    rx.discard();
    assert!(!p.exists());
}

#[test]
fn a_restart_deletes_staged_files_and_keeps_partial_ones() {
    let d = tempfile::tempdir().unwrap();
    let dir = DataDir::open(d.path(), 1, "c").unwrap();
    let (staging, _) = dir.open_snapshot_staging().unwrap();
    std::fs::write(staging.dir().join("staged-from2-10-1.snap"), b"x").unwrap();
    std::fs::write(
        staging.dir().join("incoming-from2-11-1-100-00000000.part"),
        b"y",
    )
    .unwrap();
    let (staging, not_removed) = dir.open_snapshot_staging().unwrap();
    assert!(not_removed.is_empty());
    assert_eq!(
        files(staging.dir()),
        vec!["incoming-from2-11-1-100-00000000.part".to_string()]
    );
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
