//! The consensus core must stay free of I/O, clocks and OS randomness: this
//! test scans every source file under `src/` for forbidden names.

use std::path::{Path, PathBuf};

/// Forbidden identifiers, matched as whole words (so `brand` or `Instantiate`
/// do not trip them). `std::time` etc. are also caught in grouped imports such
/// as `use std::{fs, ...}` by the checks in `grouped_std_imports`.
const FORBIDDEN_WORDS: &[&str] = &["tokio", "rand", "SystemTime", "Instant"];
const FORBIDDEN_PATHS: &[&str] = &["std::time", "std::fs", "std::net"];
const FORBIDDEN_STD_MODULES: &[&str] = &["time", "fs", "net"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whole-word occurrences of `word` in `text`.
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
    })
}

/// Finds `std::{ ... time ... }`-style imports (possibly nested, multi-line).
fn grouped_std_imports(text: &str) -> Vec<String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut found = Vec::new();
    for (i, _) in compact.match_indices("std::{") {
        let rest = &compact[i + "std::{".len()..];
        let mut depth = 1;
        let mut end = rest.len();
        for (j, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let group = &rest[..end];
        for m in FORBIDDEN_STD_MODULES {
            if has_word(group, m) {
                found.push(format!("std::{{..{m}..}}"));
            }
        }
    }
    found
}

fn violations(text: &str) -> Vec<String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut v: Vec<String> = FORBIDDEN_WORDS
        .iter()
        .filter(|w| has_word(text, w))
        .map(|w| w.to_string())
        .collect();
    v.extend(
        FORBIDDEN_PATHS
            .iter()
            .filter(|p| compact.contains(*p))
            .map(|p| p.to_string()),
    );
    v.extend(grouped_std_imports(text));
    v
}

#[test]
fn core_sources_use_no_io_clock_or_os_randomness() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() >= 5,
        "expected the core's sources under {src:?}"
    );
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read source");
        for v in violations(&text) {
            bad.push(format!("{}: {v}", f.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "forbidden I/O / clock / randomness in the core:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_scanner_catches_every_form() {
    for bad in [
        "use tokio::sync::mpsc;",
        "let x = rand::random::<u64>();",
        "use std::time::Duration;",
        "let t = std :: time :: Instant::now();",
        "use std::{fs, collections::HashMap};",
        "use std::{\n    collections::BTreeMap,\n    net::TcpStream,\n};",
        "use std::{io, time};",
        "let now = SystemTime::now();",
        "fn f(i: Instant) {}",
        "std::fs::read(\"x\")",
    ] {
        assert!(!violations(bad).is_empty(), "not caught: {bad}");
    }
    for ok in [
        "use std::collections::BTreeMap;",
        "let brand_new = 1; // operand",
        "struct Instantiated;",
        "let timeout = self.election_ticks;",
        "use std::{collections::VecDeque, fmt};",
    ] {
        assert!(violations(ok).is_empty(), "false positive: {ok}");
    }
}
