//! Checks an [`Application`] implementer runs against their own machine
//! (from a `#[test]`): [`app_conformance`]. Each check panics with a
//! description of what broke the contract.
//!
//! What is checked, through the engine's own [`AppStateMachine`] (the
//! code a node runs):
//!
//! 1. **Determinism and batching**: the commands applied as one batch, in
//!    batches of 3, and one by one give the same outputs and state.
//! 2. **Snapshots**: an image taken halfway is point-in-time (later applies
//!    do not leak into it); a fresh instance restored from it and given
//!    the rest of the commands reaches the same outputs and state; the
//!    image survives a snapshot file (checksums, chunking); `restore`
//!    copes with a stream that returns a few bytes per read (as the file's
//!    records do at their boundaries) and `write_to` with a sink that
//!    takes a few bytes per write.
//! 3. **Exactly-once**: a command re-proposed with the same write id is
//!    applied once and answered with the first output.
//! 4. **Refused snapshots**: an image the reader refuses (an error or a
//!    panic) leaves the previous state and applied index in place.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use d_engine_core::{Entry, EntryPayload};
use d_engine_storage::sm::{ApplyResult, SnapshotRecord, StateMachine};
use d_engine_storage::snapshot::format::SnapshotWriter;
use d_engine_storage::snapshot::SnapshotStore;

use super::image::{KIND_DATA, KIND_SESSIONS};
use super::machine::{encode_payload, AppStateMachine};
use super::{Application, Applying, Codec};

/// What [`app_conformance`] needs besides a factory.
pub struct ConformanceCase<A: Application> {
    /// A varied history (at least 4 commands; every kind your machine
    /// has, including ones it answers with an error output).
    pub commands: Vec<A::Command>,
    /// A query whose answer describes the whole state (compared between
    /// machines that must agree).
    pub probe: A::Query,
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!(
            "dengine-app-conformance-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&p).expect("create a temporary directory");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A reader or writer that moves at most `most` bytes per call.
struct Trickle<T> {
    inner: T,
    most: usize,
}

impl<T: std::io::Read> std::io::Read for Trickle<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.most);
        self.inner.read(&mut buf[..n])
    }
}

impl std::io::Write for Trickle<Vec<u8>> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.most);
        self.inner.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn entry(index: u64, payload: Bytes) -> Entry {
    Entry {
        term: 1,
        index,
        payload: EntryPayload::Command(payload),
    }
}

fn outputs(applied: Vec<d_engine_storage::sm::Applied>) -> Vec<Bytes> {
    applied
        .into_iter()
        .map(|a| match a.result {
            ApplyResult::Output(b) => b,
            other => panic!("entry {}: expected an output, got {other:?}", a.index),
        })
        .collect()
}

/// Runs every check on the machines `factory` makes. Panics on the first
/// broken contract.
pub fn app_conformance<A, F>(factory: F, case: ConformanceCase<A>)
where
    A: Application,
    A::QueryOutput: PartialEq + Debug,
    F: Fn() -> A + Send + Sync + 'static,
{
    let factory: Arc<dyn Fn() -> A + Send + Sync> = Arc::new(factory);
    let n = case.commands.len();
    assert!(n >= 4, "give at least 4 commands (got {n})");
    let payloads: Vec<Bytes> = case
        .commands
        .iter()
        .enumerate()
        .map(|(i, c)| encode_payload(c, Some((7, i as u64 + 1))))
        .collect();
    let entries: Vec<Entry> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| entry(i as u64 + 1, p.clone()))
        .collect();
    let fresh = || AppStateMachine::with_factory(factory.clone());
    let probe = |m: &AppStateMachine<A>| m.query(&case.probe);

    // 1. Determinism and batching.
    let whole = fresh();
    let out_whole = outputs(whole.apply(&entries).expect("apply as one batch"));
    for size in [3usize, 1] {
        let m = fresh();
        let mut out = Vec::new();
        for chunk in entries.chunks(size) {
            out.extend(outputs(m.apply(chunk).expect("apply in batches")));
        }
        assert_eq!(
            out, out_whole,
            "outputs differ when applied in batches of {size}"
        );
        assert_eq!(
            probe(&m),
            probe(&whole),
            "state differs in batches of {size}"
        );
        assert_eq!(m.applied_index(), n as u64);
    }

    // 2. Snapshots: point in time, round trip through a file.
    let dir = TempDir::new();
    let store = SnapshotStore::open(&dir.0).expect("open a snapshot store");
    let half = n / 2;
    let a = fresh();
    a.apply(&entries[..half]).expect("apply the first half");
    let mut source = a.begin_snapshot().expect("begin a snapshot");
    let rest = outputs(a.apply(&entries[half..]).expect("apply the second half"));
    assert_eq!(
        rest,
        out_whole[half..],
        "outputs after a snapshot began differ"
    );
    let info = store.create(&mut *source).expect("write the snapshot file");
    let first_half = fresh();
    first_half
        .apply(&entries[..half])
        .expect("apply the first half");
    let b = fresh();
    let meta = b
        .install_snapshot(&info.path)
        .expect("install the snapshot");
    assert_eq!(meta.last_index, half as u64, "snapshot index");
    assert_eq!(
        probe(&b),
        probe(&first_half),
        "the image is not point-in-time (it shows applies made after it began) or does not \
         restore the state"
    );
    let again = outputs(b.apply(&entries[half..]).expect("apply after restoring"));
    assert_eq!(again, out_whole[half..], "outputs after restoring differ");
    assert_eq!(
        probe(&b),
        probe(&whole),
        "state after restoring and applying differs"
    );

    // 2b. Streams: the image written into a sink taking at most 5 bytes
    // per write, read back from a stream giving at most 7 per read.
    let mut direct = factory();
    let first: Vec<Applying<A::Command>> = (0..half)
        .map(|i| Applying {
            index: i as u64 + 1,
            term: 1,
            command: A::Command::decode(&case.commands[i].encode()).expect("a command decodes"),
        })
        .collect();
    direct.apply(first).expect("apply the first half directly");
    let mut image = Trickle {
        inner: Vec::new(),
        most: 5,
    };
    direct
        .snapshot()
        .write_to(&mut image)
        .expect("write the image into a slow sink");
    let mut restored = factory();
    let mut stream = Trickle {
        inner: std::io::Cursor::new(image.inner),
        most: 7,
    };
    restored
        .restore(&mut stream)
        .expect("restore from a stream of short reads");
    assert_eq!(
        restored.query(&case.probe),
        probe(&first_half),
        "restoring from short reads (7 bytes each) gives another state: read the image \
         with read_exact/read_to_end or a BufReader, never assume one read returns it all"
    );

    // 3. Exactly-once: the whole history again under the same write ids.
    let replay: Vec<Entry> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| entry(n as u64 + 1 + i as u64, p.clone()))
        .collect();
    let dup = outputs(whole.apply(&replay).expect("apply retries"));
    assert_eq!(
        dup, out_whole,
        "a retry was not answered with the first output"
    );
    assert_eq!(probe(&whole), probe(&b), "a retry was applied again");

    // 4. A refused image keeps the previous state.
    let garbage = dir.0.join("garbage.snap");
    let meta = d_engine_core::SnapshotMeta {
        last_index: 10_000,
        last_term: 1,
        membership: Default::default(),
    };
    let file = std::fs::File::create(&garbage).expect("create a snapshot file");
    let mut w = SnapshotWriter::new(file, &garbage, &meta).expect("snapshot writer");
    let mut sessions = vec![KIND_SESSIONS];
    sessions.extend_from_slice(&0u32.to_le_bytes());
    w.record(&SnapshotRecord::App(Bytes::from(sessions)))
        .expect("write");
    let mut junk = vec![KIND_DATA];
    junk.extend(std::iter::repeat_n(0xFFu8, 37));
    w.record(&SnapshotRecord::App(Bytes::from(junk)))
        .expect("write");
    w.finish().expect("finish the snapshot file");
    let before = probe(&b);
    let applied = b.applied_index();
    if b.install_snapshot(&garbage).is_ok() {
        // The reader accepted 37 bytes of 0xFF: legal if that is a valid
        // image for this machine; then the state must be whatever it says.
        return;
    }
    assert_eq!(
        b.applied_index(),
        applied,
        "a refused snapshot moved the applied index"
    );
    assert_eq!(probe(&b), before, "a refused snapshot changed the state");
    let _ = A::Output::decode(&out_whole[0]).expect("outputs decode");
}
