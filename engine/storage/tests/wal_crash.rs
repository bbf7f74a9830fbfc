//! Crash tests with real processes: a child (`wal-crash-child`) appends,
//! syncs, overwrites, truncates and compacts a WAL, announcing each step on
//! stdout; this test SIGKILLs it at random moments (at least 30 times per
//! run, some right as it starts a compaction or a truncation), reopens the
//! WAL and checks that every entry the child reported durable is present,
//! in order, with intact bytes, and that nothing is corrupt.
//!
//! Seeded: set `WAL_CRASH_SEED` to replay a seed printed by a failure (kill
//! timing still varies with the machine's speed).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use d_engine_core::{Index, Term};
use d_engine_storage::wal::conformance::derived_entry;
use d_engine_storage::wal::{LogStore, Wal, WalOptions};

const CHILD: &str = env!("CARGO_BIN_EXE_wal-crash-child");
/// Rounds run until this many kills happened (or MAX_ROUNDS).
const TARGET_KILLS: usize = 40;
const MAX_ROUNDS: u64 = 80;
const MIN_KILLS: usize = 30;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn opts() -> WalOptions {
    WalOptions {
        segment_size: 16 * 1024,
        ..Default::default()
    }
}

/// What the parent knows must be in the log.
#[derive(Default)]
struct Model {
    /// index -> term of every entry that must be present.
    required: BTreeMap<Index, Term>,
}

impl Model {
    fn apply(&mut self, line: &str, ctx: &str) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> u64 {
            w.get(i)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{ctx}: bad child line {line:?}"))
        };
        match w.first().copied() {
            Some("durable") => {
                let (lo, hi, term) = (num(1), num(2), num(3));
                for i in lo..=hi {
                    self.required.insert(i, term);
                }
            }
            // From the announcement on, these entries may or may not survive.
            Some("truncating") => {
                let from = num(1);
                self.required.retain(|&i, _| i < from);
            }
            Some("compacting") => {
                let upto = num(1);
                self.required.retain(|&i, _| i > upto);
            }
            Some("open" | "truncated" | "compacted" | "done") => {}
            _ => panic!("{ctx}: unexpected child line {line:?}"),
        }
    }
}

/// Opens the WAL and checks it against the model; returns the recovered
/// log as the new model (the open made it durable).
fn verify(dir: &Path, model: &Model, ctx: &str) -> (Model, bool) {
    let (wal, rec) = Wal::open(dir, opts())
        .unwrap_or_else(|e| panic!("{ctx}: WAL refused to open after SIGKILL: {e}"));
    let first = wal.first_index();
    assert_eq!(
        rec.entries.first().map(|e| e.index).unwrap_or(first),
        first,
        "{ctx}: recovered entries start at first_index"
    );
    let mut prev_term = 0;
    for (k, e) in rec.entries.iter().enumerate() {
        assert_eq!(
            e.index,
            first + k as u64,
            "{ctx}: entries in order, no gaps"
        );
        assert!(e.term >= prev_term, "{ctx}: terms never decrease");
        prev_term = e.term;
        assert_eq!(
            e,
            &derived_entry(e.index, e.term),
            "{ctx}: entry {} bytes intact",
            e.index
        );
    }
    for (&i, &t) in &model.required {
        assert!(
            i >= first && i <= wal.last_index(),
            "{ctx}: durable entry {i} (term {t}) lost: log is {first}..={}",
            wal.last_index()
        );
        let e = &rec.entries[(i - first) as usize];
        assert_eq!(e.term, t, "{ctx}: durable entry {i} has the wrong term");
    }
    let required = rec.entries.iter().map(|e| (e.index, e.term)).collect();
    (Model { required }, rec.torn_tail.is_some())
}

#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// After the n-th "durable" line (plus a random pause of up to 2 ms).
    Durable(u64, u64),
    /// As soon as the child announces its n-th compaction.
    Compacting(u64),
    /// As soon as the child announces its n-th truncation.
    Truncating(u64),
    /// After a fixed delay from spawn, whatever it is doing.
    Delay(u64),
}

fn spawn(dir: &Path, seed: u64) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(CHILD)
        .arg(dir)
        .arg(seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn wal-crash-child");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    (child, rx)
}

#[test]
fn sigkill_at_random_points_loses_nothing_durable() {
    let seed: u64 = std::env::var("WAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("wal crash test seed: WAL_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut model = Model::default();
    let (mut kills, mut in_compaction, mut in_truncation, mut torn, mut durable_lines) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    let started = Instant::now();

    for round in 0..MAX_ROUNDS {
        if kills >= TARGET_KILLS {
            break;
        }
        let ctx = format!("seed {seed} round {round}");
        let kill_at = match round % 4 {
            0 => KillAt::Durable(1 + rng.below(40), rng.below(2000)),
            1 => KillAt::Compacting(1 + rng.below(2)),
            2 => KillAt::Truncating(1 + rng.below(3)),
            _ => KillAt::Delay(5 + rng.below(120)),
        };
        let (mut child, rx) = spawn(&dir, rng.next());
        let spawned = Instant::now();
        let mut seen = (0u64, 0u64, 0u64); // durable, compacting, truncating
        let mut pending = None::<&str>; // an announced compaction/truncation not yet finished
        let mut killed = false;
        let mut lines = Vec::new();
        loop {
            let wait = match kill_at {
                KillAt::Delay(ms) => Duration::from_millis(ms).saturating_sub(spawned.elapsed()),
                _ => Duration::from_secs(10),
            };
            let line = match rx.recv_timeout(wait) {
                Ok(l) => l,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    assert!(
                        matches!(kill_at, KillAt::Delay(_)),
                        "{ctx}: child silent for 10 s"
                    );
                    child.kill().expect("kill");
                    killed = true;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            model.apply(&line, &ctx);
            let word = line.split_whitespace().next().unwrap_or("").to_string();
            let word = word.as_str();
            match word {
                "durable" => seen.0 += 1,
                "compacting" => {
                    seen.1 += 1;
                    pending = Some("compacting");
                }
                "truncating" => {
                    seen.2 += 1;
                    pending = Some("truncating");
                }
                "compacted" | "truncated" => pending = None,
                _ => {}
            }
            if word == "durable" && pending == Some("truncating") {
                pending = None; // an overwrite completed
            }
            lines.push(line);
            let fire = match kill_at {
                KillAt::Durable(n, us) if seen.0 == n => {
                    std::thread::sleep(Duration::from_micros(us));
                    true
                }
                KillAt::Compacting(n) => word == "compacting" && seen.1 == n,
                KillAt::Truncating(n) => word == "truncating" && seen.2 == n,
                KillAt::Delay(ms) => spawned.elapsed() >= Duration::from_millis(ms),
                _ => false,
            };
            if fire {
                child.kill().expect("kill");
                killed = true;
                break;
            }
        }
        let status = child.wait().expect("wait");
        // Everything the child printed before it died counts.
        for line in rx.iter() {
            model.apply(&line, &ctx);
            let word = line.split_whitespace().next().unwrap_or("");
            match word {
                "compacting" => pending = Some("compacting"),
                "truncating" => pending = Some("truncating"),
                "compacted" | "truncated" | "durable" => pending = None,
                _ => {}
            }
            lines.push(line);
        }
        durable_lines += lines.iter().filter(|l| l.starts_with("durable")).count();
        if killed {
            kills += 1;
            match pending {
                Some("compacting") => in_compaction += 1,
                Some("truncating") => in_truncation += 1,
                _ => {}
            }
        } else {
            assert!(status.success(), "{ctx}: child failed: {status:?}");
            assert_eq!(lines.last().map(String::as_str), Some("done"), "{ctx}");
        }
        let (next, was_torn) = verify(&dir, &model, &ctx);
        torn += was_torn as usize;
        model = next;
    }
    eprintln!(
        "wal crash test: {kills} SIGKILLs ({in_compaction} during a compaction, {in_truncation} \
         during a truncation), {torn} torn tails repaired, {durable_lines} durable reports \
         checked, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(kills >= MIN_KILLS, "only {kills} kill points (seed {seed})");
}

#[test]
fn write_failure_poisons_the_wal_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    // Limit file sizes to 12 KiB (the child's segments roll at 64 KiB): a
    // write into the first segment fails with EFBIG part-way, like a full
    // disk.
    let out = Command::new(CHILD)
        .arg(&dir)
        .arg("1")
        .arg("fsize")
        .arg((12 * 1024).to_string())
        .output()
        .expect("run child");
    assert!(out.status.success(), "child failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut model = Model::default();
    let mut err_line = None;
    for line in text.lines() {
        if line.starts_with("durable") {
            model.apply(line, "fsize");
        } else if line.starts_with("error") {
            err_line = Some(line.to_string());
        }
    }
    let err_line = err_line.unwrap_or_else(|| panic!("no write error reached:\n{text}"));
    assert!(err_line.contains("disk_full=true"), "{err_line}");
    assert!(
        text.contains("\npoisoned ") && text.contains("\nsync-poisoned\n"),
        "after a failed write every later call must fail:\n{text}"
    );
    assert!(text.contains("accepts no more writes"), "{text}");
    assert!(
        model.required.len() >= 14,
        "too few entries written before the error"
    );
    let (_, _) = verify(&dir, &model, "after EFBIG");
}
