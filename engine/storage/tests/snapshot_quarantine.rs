//! `SnapshotStore::latest_valid`: a snapshot file that does not validate is
//! moved aside into `snapshots/quarantine/` and the next older one is used.

use std::os::unix::fs::PermissionsExt;

use d_engine_storage::sm::conformance as c;
use d_engine_storage::sm::{MemStateMachine, StateMachine};
use d_engine_storage::snapshot::{SnapshotStore, QUARANTINE_DIR};

fn store_with_three() -> (tempfile::TempDir, SnapshotStore, MemStateMachine) {
    let d = tempfile::tempdir().unwrap();
    let sm = MemStateMachine::new();
    let store = SnapshotStore::open(d.path()).unwrap();
    // KEEP_SNAPSHOTS is 2: create the third by hand after the first two.
    for round in 0..2u64 {
        c::varied_history(&sm, round * 10 + 1, 10);
        store.create(&mut *sm.begin_snapshot().unwrap()).unwrap();
    }
    (d, store, sm)
}

#[test]
fn a_damaged_newest_snapshot_is_quarantined_and_the_previous_one_returned() {
    let (_d, store, _sm) = store_with_three();
    let list = store.list().unwrap();
    assert_eq!(list.iter().map(|x| x.0).collect::<Vec<_>>(), vec![20, 10]);
    // Flip bytes in the middle of the newest: the checksum no longer holds.
    let newest = list[0].2.clone();
    let mut b = std::fs::read(&newest).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&newest, &b).unwrap();

    let v = store.latest_valid().unwrap();
    assert_eq!(v.latest.as_ref().unwrap().meta.last_index, 10);
    assert_eq!(v.quarantined.len(), 1);
    let q = &v.quarantined[0];
    assert_eq!(q.original, newest);
    assert!(!newest.exists());
    assert!(q.moved_to.exists());
    assert_eq!(
        q.moved_to.parent().unwrap(),
        store.dir().join(QUARANTINE_DIR)
    );
    assert!(q
        .moved_to
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("snapshot-00000000000000000020-"));
    assert!(q.reason.contains("corrupt"), "{}", q.reason);
    let mode = std::fs::metadata(store.dir().join(QUARANTINE_DIR))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    // The quarantine dir is not a snapshot: listing and the next start ignore it.
    assert_eq!(store.list().unwrap().len(), 1);
    let again = store.latest_valid().unwrap();
    assert_eq!(again.latest.unwrap().meta.last_index, 10);
    assert!(again.quarantined.is_empty());
}

#[test]
fn a_file_with_a_right_checksum_but_another_snapshot_inside_is_quarantined() {
    let (_d, store, _sm) = store_with_three();
    let list = store.list().unwrap();
    // The snapshot of index 10 renamed to claim index 30: valid file, wrong name.
    let fake = store
        .dir()
        .join(format!("snapshot-{:020}-{:020}.snap", 30, list[0].1));
    std::fs::copy(&list[1].2, &fake).unwrap();
    let v = store.latest_valid().unwrap();
    assert_eq!(v.latest.unwrap().meta.last_index, 20);
    assert_eq!(v.quarantined.len(), 1);
    assert!(
        v.quarantined[0].reason.contains("named for index 30"),
        "{}",
        v.quarantined[0].reason
    );
}

#[test]
fn when_nothing_validates_there_is_no_latest() {
    let (_d, store, _sm) = store_with_three();
    for (_, _, p) in store.list().unwrap() {
        std::fs::write(&p, b"not a snapshot").unwrap();
    }
    let v = store.latest_valid().unwrap();
    assert!(v.latest.is_none());
    assert_eq!(v.quarantined.len(), 2);
    assert!(store.list().unwrap().is_empty());
}
