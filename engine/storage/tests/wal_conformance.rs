//! Runs the exported log-store conformance suite
//! (`d_engine_storage::conformance`, what an embedder runs on their own
//! store) against the durable WAL (with tiny segments, so compaction and
//! truncation cross segment boundaries, and with a reopen after every
//! step), the in-memory MemLog, and a boxed `dyn LogStore` (how the
//! runtime holds an embedder's store).

use d_engine_core::Entry;
use d_engine_storage::conformance::{
    run_durable_log_store_conformance, run_log_store_conformance, LogStoreHarness as Harness,
};
use d_engine_storage::wal::conformance;
use d_engine_storage::wal::{LogStore, MemLog, Wal, WalOptions};

struct WalHarness {
    dirs: Vec<tempfile::TempDir>,
    opts: WalOptions,
}

impl Harness for WalHarness {
    type Store = Wal;
    fn fresh(&mut self) -> Wal {
        let dir = tempfile::tempdir().unwrap();
        let (wal, rec) = Wal::open(dir.path().join("wal"), self.opts.clone()).unwrap();
        assert!(rec.entries.is_empty());
        self.dirs.push(dir);
        wal
    }
    fn reopen(&mut self, store: Wal) -> Option<(Wal, Vec<Entry>)> {
        let dir = store.dir().to_path_buf();
        drop(store);
        let (wal, rec) = Wal::open(&dir, self.opts.clone()).unwrap();
        assert_eq!(rec.torn_tail, None, "a clean reopen found a torn tail");
        Some((wal, rec.entries))
    }
    fn durable(&self) -> bool {
        true
    }
}

#[test]
fn wal_with_tiny_segments_conforms() {
    let mut h = WalHarness {
        dirs: Vec::new(),
        opts: WalOptions {
            segment_size: 4096,
            write_buffer: 1500,
            ..Default::default()
        },
    };
    run_durable_log_store_conformance(&mut h);
}

#[test]
fn wal_with_default_options_conforms() {
    let mut h = WalHarness {
        dirs: Vec::new(),
        opts: WalOptions::default(),
    };
    run_durable_log_store_conformance(&mut h);
}

#[test]
fn mem_log_conforms() {
    run_log_store_conformance(MemLog::new);
}

#[test]
fn boxed_dyn_log_store_conforms() {
    run_log_store_conformance(|| Box::new(MemLog::new()) as Box<dyn LogStore>);
}

#[test]
fn wal_compaction_drops_whole_segments() {
    let mut h = WalHarness {
        dirs: Vec::new(),
        opts: WalOptions {
            segment_size: 4096,
            ..Default::default()
        },
    };
    let mut wal = h.fresh();
    wal.append(&conformance::entries(1, 200, 1, 500)).unwrap();
    wal.sync().unwrap();
    let before = wal.segment_count();
    assert!(before > 20, "expected many segments, got {before}");
    wal.compact(100).unwrap();
    assert!(wal.segment_count() < before);
    assert!(wal.first_index() > 90 && wal.first_index() <= 101);
    let files = std::fs::read_dir(wal.dir()).unwrap().count();
    assert_eq!(
        files,
        wal.segment_count(),
        "deleted segments are gone from disk"
    );
}

#[test]
fn periodic_mode_flush_and_needs_sync() {
    use d_engine_storage::wal::SyncMode;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        sync_mode: SyncMode::Periodic { interval_ms: 50 },
        ..Default::default()
    };
    let (mut wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
    let t0 = wal.last_sync();
    assert!(!wal.has_unsynced() && !wal.needs_sync(t0 + Duration::from_secs(1)));
    wal.append(&conformance::entries(1, 10, 1, 100)).unwrap();
    assert!(wal.has_unsynced());
    assert!(!wal.needs_sync(t0 + Duration::from_millis(10)));
    assert!(wal.needs_sync(t0 + Duration::from_millis(50)));
    // Flushed but unsynced entries survive the process (here: the Wal value).
    wal.flush().unwrap();
    assert!(wal.has_unsynced());
    drop(wal);
    let (mut wal, rec) = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(rec.entries, conformance::entries(1, 10, 1, 100));
    assert!(!wal.has_unsynced(), "open makes what it recovered durable");
    wal.append(&conformance::entries(11, 11, 1, 100)).unwrap();
    wal.sync().unwrap();
    assert!(!wal.has_unsynced());
    assert!(!wal.needs_sync(Instant::now() + Duration::from_secs(1)));
}
