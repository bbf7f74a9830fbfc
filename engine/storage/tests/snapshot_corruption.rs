//! Damaged snapshot files: every truncation and many bit flips give a clear
//! error naming the file and an offset, never a panic and never a success.

use d_engine_storage::sm::conformance as c;
use d_engine_storage::sm::{MemStateMachine, SledOptions, SledStateMachine, StateMachine};
use d_engine_storage::snapshot::{verify_snapshot_file, SnapshotError, SnapshotStore};
use std::path::{Path, PathBuf};

fn make_snapshot(dir: &Path) -> PathBuf {
    let sm = MemStateMachine::new();
    c::varied_history(&sm, 1, 120);
    let store = SnapshotStore::open(dir).unwrap();
    store
        .create(&mut *sm.begin_snapshot().unwrap())
        .unwrap()
        .path
}

fn assert_clear(err: SnapshotError, path: &Path) {
    let msg = err.to_string();
    assert!(matches!(err, SnapshotError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "names the file: {msg}"
    );
    assert!(msg.contains("offset"), "names the offset: {msg}");
}

#[test]
fn every_truncation_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let good = make_snapshot(d.path());
    let bytes = std::fs::read(&good).unwrap();
    verify_snapshot_file(&good).unwrap();
    let bad = d.path().join("bad.snap");
    // Every offset near the ends, and a stride through the middle.
    let mut cuts: Vec<usize> = (0..64.min(bytes.len())).collect();
    cuts.extend((bytes.len().saturating_sub(64))..bytes.len());
    cuts.extend((0..bytes.len()).step_by(7));
    for cut in cuts {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let err = verify_snapshot_file(&bad).expect_err(&format!("cut at {cut} must fail"));
        assert_clear(err, &bad);
    }
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&bad, &longer).unwrap();
    assert_clear(verify_snapshot_file(&bad).unwrap_err(), &bad);
}

#[test]
fn bit_flips_are_detected() {
    let d = tempfile::tempdir().unwrap();
    let good = make_snapshot(d.path());
    let bytes = std::fs::read(&good).unwrap();
    let bad = d.path().join("flip.snap");
    let mut rng = 0x9e3779b97f4a7c15u64;
    for n in 0..600 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let pos = if n < bytes.len().min(100) {
            n // every byte of the header region
        } else {
            (rng as usize) % bytes.len()
        };
        let mut b = bytes.clone();
        b[pos] ^= 1 << ((rng >> 32) % 8);
        std::fs::write(&bad, &b).unwrap();
        let err = verify_snapshot_file(&bad).expect_err(&format!("flip at {pos} must fail"));
        assert_clear(err, &bad);
    }
}

#[test]
fn installing_a_corrupt_snapshot_leaves_the_state_intact() {
    let d = tempfile::tempdir().unwrap();
    let good = make_snapshot(&d.path().join("s"));
    let mut bytes = std::fs::read(&good).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let bad = d.path().join("bad.snap");
    std::fs::write(&bad, &bytes).unwrap();
    let sled = SledStateMachine::open(&d.path().join("sm"), SledOptions::default()).unwrap();
    c::varied_history(&sled, 1, 40);
    let before = c::dump(&sled);
    let err = sled.install_snapshot(&bad).unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert_eq!(c::dump(&sled), before);
    assert_eq!(sled.applied_index(), 40);
    c::varied_history(&sled, 41, 5);
    drop(sled);
    let again = SledStateMachine::open(&d.path().join("sm"), SledOptions::default()).unwrap();
    assert!(again.applied_index() <= 45);
    let mem = MemStateMachine::new();
    c::varied_history(&mem, 1, 3);
    assert!(mem.install_snapshot(&bad).is_err());
    assert_eq!(mem.applied_index(), 3);
}

#[test]
fn foreign_file_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.snap");
    std::fs::write(&p, b"this is not a snapshot at all, just some text").unwrap();
    let err = verify_snapshot_file(&p).unwrap_err();
    assert!(err.to_string().contains("bad magic"), "{err}");
}
