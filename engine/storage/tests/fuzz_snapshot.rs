//! Property-based fuzzing of the snapshot file decoder.
//!
//! Contracts checked:
//! - any file content gives records or a `Corrupt` error naming the file and
//!   an offset; never a panic, never an allocation driven by a forged length;
//! - a file whose checksum is valid but whose record bodies are arbitrary
//!   (a forged or buggy writer) is still decoded safely;
//! - what the writer writes reads back identically, and random damage to a
//!   written file is always detected before the reader reports the end.
//!
//! Set `PROPTEST_CASES` for a longer run.

use std::path::Path;

use bytes::Bytes;
use d_engine_core::{Member, MemberRole, Membership, SnapshotMeta};
use d_engine_storage::sm::{KeyValue, LeaseRecord, SnapshotRecord};
use d_engine_storage::snapshot::format::SnapshotWriter;
use d_engine_storage::snapshot::{SnapshotError, SnapshotFileReader};
use proptest::prelude::*;

mod common;

/// Reads every record of `path`; `Err` on the first problem.
fn read_all(path: &Path) -> Result<(SnapshotMeta, Vec<SnapshotRecord>), SnapshotError> {
    let mut r = SnapshotFileReader::open(path)?;
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    Ok((r.meta().clone(), out))
}

fn assert_names_file(err: &SnapshotError, path: &Path) -> Result<(), TestCaseError> {
    let msg = err.to_string();
    prop_assert!(matches!(err, SnapshotError::Corrupt { .. }), "{}", msg);
    prop_assert!(msg.contains(&path.display().to_string()), "{}", msg);
    Ok(())
}

/// A syntactically framed snapshot with arbitrary meta and record bodies and
/// a correct trailer checksum.
fn forged(meta: &[u8], records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(b"DENGSNAP");
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    f.extend_from_slice(meta);
    for (tag, body) in records {
        f.push(*tag);
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(body);
    }
    f.push(0xFF);
    f.extend_from_slice(&(records.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

fn kv() -> impl Strategy<Value = KeyValue> {
    (
        proptest::collection::vec(any::<u8>(), 1..40),
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
    )
        .prop_map(
            |(key, value, create_revision, mod_revision, version, expires_at_ms, lease)| KeyValue {
                // A key has a deadline or a lease, never both.
                lease: if expires_at_ms.is_some() { 0 } else { lease },
                key: Bytes::from(key),
                value: Bytes::from(value),
                create_revision,
                mod_revision,
                version,
                expires_at_ms,
            },
        )
}

fn meta() -> impl Strategy<Value = SnapshotMeta> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::btree_map(1u64..100, (any::<bool>(), "[0-9.:]{0,21}"), 0..5),
    )
        .prop_map(|(last_index, last_term, m)| SnapshotMeta {
            last_index,
            last_term,
            membership: Membership {
                members: m
                    .into_iter()
                    .map(|(id, (voter, addr))| {
                        let role = if voter {
                            MemberRole::Voter
                        } else {
                            MemberRole::Learner
                        };
                        (id, Member { role, addr })
                    })
                    .collect(),
            },
        })
}

fn record() -> impl Strategy<Value = SnapshotRecord> {
    prop_oneof![
        3 => kv().prop_map(SnapshotRecord::Kv),
        1 => (any::<u64>(), any::<u64>())
            .prop_map(|(id, ttl_ms)| SnapshotRecord::Lease(LeaseRecord { id, ttl_ms })),
    ]
}

fn write_snapshot(path: &Path, meta: &SnapshotMeta, records: &[SnapshotRecord]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = SnapshotWriter::new(file, path, meta).unwrap();
    for r in records {
        w.record(r).unwrap();
    }
    w.finish().unwrap();
}

/// A file written before leases (value records of version 1, no lease
/// records) still reads, its keys without a lease.
#[test]
fn files_written_before_leases_still_read() {
    let mut meta = Vec::new();
    meta.extend_from_slice(&7u64.to_le_bytes());
    meta.extend_from_slice(&2u64.to_le_bytes());
    meta.extend_from_slice(&0u32.to_le_bytes()); // no members
    let mut kv = Vec::new();
    kv.extend_from_slice(&1u32.to_le_bytes());
    kv.push(b'k');
    kv.push(1); // record version 1
    for x in [3u64, 5, 2] {
        kv.extend_from_slice(&x.to_le_bytes());
    }
    kv.push(1);
    kv.extend_from_slice(&99u64.to_le_bytes());
    kv.extend_from_slice(&2u32.to_le_bytes());
    kv.extend_from_slice(b"vv");
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("old.snap");
    std::fs::write(&p, forged(&meta, &[(1, kv)])).unwrap();
    let (m, recs) = read_all(&p).unwrap();
    assert_eq!((m.last_index, m.last_term), (7, 2));
    assert_eq!(
        recs,
        vec![SnapshotRecord::Kv(KeyValue {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"vv"),
            create_revision: 3,
            mod_revision: 5,
            version: 2,
            expires_at_ms: Some(99),
            lease: 0,
        })]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases(400)))]

    #[test]
    fn arbitrary_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), with_magic in any::<bool>()) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.snap");
        let mut b = bytes;
        if with_magic && b.len() >= 12 {
            b[..8].copy_from_slice(b"DENGSNAP");
            b[8..12].copy_from_slice(&1u32.to_le_bytes());
        }
        std::fs::write(&p, &b).unwrap();
        if let Err(e) = read_all(&p) {
            assert_names_file(&e, &p)?;
        }
    }

    #[test]
    fn checksum_valid_files_with_arbitrary_bodies_never_panic(
        meta in proptest::collection::vec(any::<u8>(), 0..64),
        records in proptest::collection::vec(
            (prop_oneof![Just(1u8), Just(2u8), Just(5u8), any::<u8>()], proptest::collection::vec(any::<u8>(), 0..80)),
            0..6,
        ),
    ) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("forged.snap");
        std::fs::write(&p, forged(&meta, &records)).unwrap();
        match read_all(&p) {
            Ok((_, recs)) => prop_assert_eq!(recs.len(), records.len()),
            Err(e) => assert_names_file(&e, &p)?,
        }
    }

    #[test]
    fn written_snapshots_read_back_and_damage_is_detected(
        m in meta(),
        records in proptest::collection::vec(record(), 0..12),
        pos in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("good.snap");
        write_snapshot(&p, &m, &records);
        let (meta_back, recs) = read_all(&p).expect("a written snapshot reads back");
        prop_assert_eq!(meta_back, m);
        prop_assert_eq!(recs, records);

        let mut bytes = std::fs::read(&p).unwrap();
        let at = pos.index(bytes.len());
        bytes[at] ^= mask;
        let bad = d.path().join("bad.snap");
        std::fs::write(&bad, &bytes).unwrap();
        let err = read_all(&bad).expect_err("damaged snapshot accepted");
        assert_names_file(&err, &bad)?;
    }
}
