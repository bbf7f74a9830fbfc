//! Torn-write and bit-flip tests on WAL files: recovery cuts a torn tail and
//! refuses, without modifying anything, to open on any other damage, naming
//! the file and byte offset.

use std::fs;
use std::path::{Path, PathBuf};

use d_engine_core::Entry;
use d_engine_storage::wal::conformance::{derived_entry, entries};
use d_engine_storage::wal::{segment_file_name, LogStore, Wal, WalError, WalOptions};

fn opts() -> WalOptions {
    WalOptions {
        segment_size: 4096,
        ..Default::default()
    }
}

/// Writes `batches` (each synced), returning the entries and, for each
/// entry, the (segment path, start offset, end offset) of its record.
fn write_log(dir: &Path, batches: &[Vec<Entry>]) -> (Vec<Entry>, Vec<(PathBuf, u64, u64)>) {
    write_log_with(dir, batches, opts())
}

/// [`write_log`] with other options (e.g. room for larger records in one
/// segment).
fn write_log_with(
    dir: &Path,
    batches: &[Vec<Entry>],
    opts: WalOptions,
) -> (Vec<Entry>, Vec<(PathBuf, u64, u64)>) {
    let (mut wal, _) = Wal::open(dir, opts).unwrap();
    let mut all = Vec::new();
    let mut spans = Vec::new();
    for b in batches {
        for e in b {
            // One entry at a time so each record's span can be measured.
            wal.append(std::slice::from_ref(e)).unwrap();
            wal.flush().unwrap();
            // Records follow the 32-byte segment header back to back.
            let seg = last_segment(dir);
            let start = match spans.last() {
                Some((p, _, end)) if *p == seg => *end,
                _ => 32,
            };
            spans.push((seg, start, start + encoded_len(e)));
            all.push(e.clone());
        }
        wal.sync().unwrap();
    }
    (all, spans)
}

fn encoded_len(e: &Entry) -> u64 {
    let mut v = Vec::new();
    d_engine_storage::wal::record::encode_record(e, 0, &mut v);
    v.len() as u64
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names.pop().unwrap()
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

fn restore(dir: &Path, snap: &[(PathBuf, Vec<u8>)]) {
    for e in fs::read_dir(dir).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    for (p, b) in snap {
        fs::write(p, b).unwrap();
    }
}

/// Rewrites `path` with `change` applied to its bytes.
fn edit(path: &Path, change: impl FnOnce(&mut [u8])) {
    let mut b = fs::read(path).unwrap();
    change(&mut b);
    fs::write(path, b).unwrap();
}

fn flip(path: &Path, offset: u64, bit: u8) {
    edit(path, |b| b[offset as usize] ^= 1 << bit);
}

/// Asserts that open refuses with a corruption error naming `file` and
/// `offset` and the remedy, and that it changed nothing on disk.
fn assert_refused(dir: &Path, file: &Path, offset: u64, what: &str) -> String {
    let before = snapshot(dir);
    let err = Wal::open(dir, opts()).expect_err(what);
    let msg = err.to_string();
    match &err {
        WalError::Corrupt {
            file: f, offset: o, ..
        } => {
            assert_eq!(f, file, "{what}: wrong file in {msg}");
            assert_eq!(*o, offset, "{what}: wrong offset in {msg}");
        }
        other => panic!("{what}: expected Corrupt, got {other}"),
    }
    assert!(err.is_corruption());
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("byte offset {offset}")), "{msg}");
    assert!(msg.contains("re-add the node"), "{msg}");
    assert_eq!(
        snapshot(dir),
        before,
        "{what}: a refused open must not modify files"
    );
    msg
}

#[test]
fn torn_last_record_at_every_byte_offset_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (all, spans) = write_log(&dir, &[entries(1, 4, 1, 90), entries(5, 6, 2, 150)]);
    let good = snapshot(&dir);
    let (seg, start, end) = spans.last().unwrap().clone();
    for cut in start..end {
        restore(&dir, &good);
        let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let (mut wal, rec) = Wal::open(&dir, opts()).unwrap();
        assert_eq!(rec.entries, all[..5], "cut at {cut}");
        match rec.torn_tail {
            Some(t) => {
                assert_eq!((t.file.as_path(), t.offset), (seg.as_path(), start));
                assert_eq!(t.dropped_bytes, cut - start);
            }
            None => assert_eq!(cut, start, "only a cut at the record boundary is clean"),
        }
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            start,
            "file cut at the boundary"
        );
        // The log continues normally afterwards.
        wal.append(&[derived_entry(6, 3)]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, rec) = Wal::open(&dir, opts()).unwrap();
        assert_eq!(rec.torn_tail, None);
        assert_eq!(rec.entries.last(), Some(&derived_entry(6, 3)));
    }
}

#[test]
fn zeros_after_the_last_record_are_free_space_and_garbage_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (all, spans) = write_log(&dir, &[entries(1, 3, 1, 100)]);
    let good = snapshot(&dir);
    let (seg, _, end) = spans.last().unwrap().clone();
    let mut garbage = vec![0u8; 4096];
    for (i, b) in garbage.iter_mut().enumerate().skip(2048) {
        *b = (i * 7 + 3) as u8;
    }
    // The WAL preallocates: the segment already ends in zeros.
    assert!(fs::metadata(&seg).unwrap().len() > end, "preallocated");
    for zeros in [0usize, 8192] {
        restore(&dir, &good);
        let mut b = fs::read(&seg).unwrap();
        b.truncate(end as usize);
        b.resize(end as usize + zeros, 0);
        fs::write(&seg, b).unwrap();
        let (mut wal, rec) = Wal::open(&dir, opts()).unwrap();
        assert_eq!(rec.entries, all);
        assert_eq!(rec.torn_tail, None, "zeros are free space, not damage");
        assert_eq!(fs::metadata(&seg).unwrap().len(), end + zeros as u64);
        // Appends overwrite the zeros and survive a reopen.
        wal.append(&[derived_entry(4, 1), derived_entry(5, 2)])
            .unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, rec) = Wal::open(&dir, opts()).unwrap();
        assert_eq!(rec.entries.len(), 5);
        assert_eq!(rec.torn_tail, None);
    }
    restore(&dir, &good);
    let mut b = fs::read(&seg).unwrap();
    b.truncate(end as usize);
    b.extend_from_slice(&garbage);
    fs::write(&seg, b).unwrap();
    let (_, rec) = Wal::open(&dir, opts()).unwrap();
    assert_eq!(rec.entries, all);
    assert_eq!(rec.torn_tail.unwrap().offset, end);
    assert_eq!(fs::metadata(&seg).unwrap().len(), end);
}

#[test]
fn bit_flip_in_synced_middle_records_refuses_to_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    // Three synced batches in one segment.
    let (_, spans) = write_log(
        &dir,
        &[
            entries(1, 4, 1, 60),
            entries(5, 8, 1, 60),
            entries(9, 10, 2, 60),
        ],
    );
    assert_eq!(spans[0].0, spans[9].0, "all in one segment");
    let good = snapshot(&dir);
    // Every bit of a middle record (entry 5: header, payload, checksum).
    let (seg, start, end) = spans[4].clone();
    for off in start..end {
        for bit in [0u8, 3, 7] {
            restore(&dir, &good);
            flip(&seg, off, bit);
            assert_refused(&dir, &seg, start, &format!("flip bit {bit} at {off}"));
        }
    }
    // The first record of the segment too.
    restore(&dir, &good);
    flip(&seg, spans[0].1 + 20, 1);
    let msg = assert_refused(&dir, &seg, spans[0].1, "first record");
    assert!(msg.contains("not a torn tail"), "{msg}");
}

/// Zeros `[from, to)` of `path`: sectors a power loss never wrote back.
fn zero(path: &Path, from: u64, to: u64) {
    edit(path, |b| b[from as usize..to as usize].fill(0));
}

/// The first 512-byte sector boundary at or after `at`.
fn next_sector(at: u64) -> u64 {
    at.div_ceil(512) * 512
}

#[test]
fn unwritten_sectors_in_the_final_record_are_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    // A final record of ~1.5 KiB spans at least two sector boundaries.
    let (all, spans) = write_log(&dir, &[entries(1, 5, 1, 60), entries(6, 6, 1, 1500)]);
    let good = snapshot(&dir);
    let (seg, start, end) = spans[5].clone();
    let mut sector = next_sector(start);
    while sector < end {
        restore(&dir, &good);
        zero(&seg, sector, sector + 512);
        let (_, rec) = Wal::open(&dir, opts()).unwrap();
        assert_eq!(rec.entries, all[..5], "sector at {sector}");
        assert_eq!(rec.torn_tail.unwrap().offset, start);
        sector += 512;
    }
}

#[test]
fn bit_flip_in_the_final_record_is_refused_not_cut() {
    // A crash leaves whole sectors unwritten, never flipped bits: a flip in
    // the final record is damage to data that may have been acknowledged.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (_, spans) = write_log(&dir, &[entries(1, 5, 1, 60), entries(6, 6, 1, 60)]);
    let good = snapshot(&dir);
    let (seg, start, end) = spans[5].clone();
    for off in (start..end).step_by(3) {
        restore(&dir, &good);
        flip(&seg, off, 5);
        let msg = assert_refused(&dir, &seg, start, &format!("flip at {off}"));
        assert!(msg.contains("not a torn tail"), "{msg}");
    }
}

#[test]
fn damage_across_the_last_synced_record_and_the_only_later_one_is_refused() {
    // Found by fuzz_wal in CI: bytes spanning the end of the last synced
    // record and the header of the single record appended after that sync.
    // No later record survives to prove the sync, so only the shape of the
    // damage (not zeros, not a short file) shows that it is not torn.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (_, spans) = write_log(&dir, &[entries(1, 5, 1, 180), entries(6, 6, 1, 0)]);
    let good = snapshot(&dir);
    let (seg, start5, end5) = spans[4].clone();
    for (mask_at, mask) in [
        (end5 - 4, [1u8, 1, 9, 43, 188]),
        (end5 - 1, [7, 7, 7, 7, 7]),
    ] {
        restore(&dir, &good);
        edit(&seg, |b| {
            for (i, m) in mask.iter().enumerate() {
                b[mask_at as usize + i] ^= m;
            }
        });
        assert_refused(&dir, &seg, start5, &format!("damage at {mask_at}"));
    }
}

#[test]
fn torn_sectors_inside_the_last_synced_batch_follow_the_durable_mark() {
    // Entries 1..=4 synced, then 5..=8 appended and synced as one batch.
    // Records 6..=8 carry the durable mark "end of record 4": the bytes of
    // record 5 had not been synced when they were appended, so an unwritten
    // sector in record 5 is what a power loss that wrote back later sectors
    // first leaves, and is cut as a torn tail (with 6..=8). The same damage
    // in record 3 is below that mark: acknowledged data, refuse.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let big = WalOptions {
        segment_size: 64 * 1024,
        ..opts()
    };
    let (all, spans) = write_log_with(&dir, &[entries(1, 4, 1, 1100), entries(5, 8, 1, 1100)], big);
    assert_eq!(spans[0].0, spans[7].0, "all in one segment");
    let good = snapshot(&dir);
    let (seg, start5, _) = spans[4].clone();
    let s = next_sector(start5);
    zero(&seg, s, s + 512);
    let (_, rec) = Wal::open(&dir, opts()).unwrap();
    assert_eq!(rec.entries, all[..4]);
    let t = rec.torn_tail.unwrap();
    assert_eq!(t.offset, start5);
    assert!(t.reason.contains("3 later record(s)"), "{}", t.reason);

    restore(&dir, &good);
    let (seg, start3, _) = spans[2].clone();
    let s = next_sector(start3);
    zero(&seg, s, s + 512);
    let msg = assert_refused(&dir, &seg, start3, "record 3");
    assert!(msg.contains("appended after"), "{msg}");
}

#[test]
fn damage_in_a_closed_segment_refuses_even_in_its_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let batches: Vec<_> = (0..12)
        .map(|b| entries(1 + b * 10, 10 + b * 10, 1, 100))
        .collect();
    let (_, spans) = write_log(&dir, &batches);
    let first_seg = spans[0].0.clone();
    let last_of_first = spans
        .iter()
        .rev()
        .find(|s| s.0 == first_seg)
        .unwrap()
        .clone();
    assert_ne!(first_seg, spans.last().unwrap().0, "several segments");
    let good = snapshot(&dir);
    flip(&first_seg, last_of_first.2 - 1, 0);
    let msg = assert_refused(&dir, &first_seg, last_of_first.1, "closed segment");
    assert!(msg.contains("closed and synced"), "{msg}");

    // A truncated closed segment: its last record is gone, so the next
    // segment no longer continues it.
    restore(&dir, &good);
    let f = fs::OpenOptions::new().write(true).open(&first_seg).unwrap();
    f.set_len(last_of_first.1 + 10).unwrap();
    drop(f);
    assert!(Wal::open(&dir, opts()).unwrap_err().is_corruption());

    // A damaged segment header.
    restore(&dir, &good);
    flip(&first_seg, 18, 4);
    assert_refused(&dir, &first_seg, 0, "segment header");
}

#[test]
fn a_missing_segment_is_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let batches: Vec<_> = (0..12)
        .map(|b| entries(1 + b * 10, 10 + b * 10, 1, 100))
        .collect();
    write_log(&dir, &batches);
    let mut segs: Vec<_> = snapshot(&dir).into_iter().map(|s| s.0).collect();
    assert!(segs.len() >= 3);
    fs::remove_file(&segs[1]).unwrap();
    segs.remove(1);
    let msg = assert_refused(&dir, &segs[1], 0, "gap");
    assert!(msg.contains("gap in the log"), "{msg}");
}

#[test]
fn foreign_files_refuse_to_open_and_temp_files_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    write_log(&dir, &[entries(1, 3, 1, 10)]);

    let stray = dir.join("notes.txt");
    fs::write(&stray, b"hello").unwrap();
    let err = Wal::open(&dir, opts()).unwrap_err();
    assert!(
        matches!(&err, WalError::Foreign { file, .. } if *file == stray),
        "{err}"
    );
    assert!(err.to_string().contains("notes.txt"), "{err}");
    fs::remove_file(&stray).unwrap();

    let fake = dir.join(segment_file_name(100));
    fs::write(&fake, b"this is not a wal segment, just text").unwrap();
    let err = Wal::open(&dir, opts()).unwrap_err();
    assert!(
        matches!(&err, WalError::Foreign { file, .. } if *file == fake),
        "{err}"
    );
    fs::remove_file(&fake).unwrap();

    // A crash while starting a segment leaves a temp file: harmless.
    let tmpfile = dir.join(format!("{}.tmp", segment_file_name(4)));
    fs::write(&tmpfile, b"partial").unwrap();
    let (wal, rec) = Wal::open(&dir, opts()).unwrap();
    assert_eq!(rec.removed_temp_files, vec![tmpfile.clone()]);
    assert!(!tmpfile.exists());
    assert_eq!(wal.last_index(), 3);
}

#[test]
fn renamed_segment_refuses_to_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    write_log(&dir, &[entries(1, 3, 1, 10)]);
    let from = dir.join(segment_file_name(1));
    let to = dir.join(segment_file_name(2));
    fs::rename(&from, &to).unwrap();
    let msg = assert_refused(&dir, &to, 16, "renamed");
    assert!(msg.contains("file name says 2"), "{msg}");
}
