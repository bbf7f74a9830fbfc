//! The import graph of `engine/src` has no circles, and its top-level
//! modules form the layering below.
//!
//! Run: `cargo test -p d-engine-node --test module_graph -- --nocapture` (prints
//! the top-level graph). It reads the sources; `MODULE_GRAPH_SRC=<dir>`
//! checks another tree (e.g. an older checkout's `engine/src`).
//!
//! How the graph is built (a small, dependency-free reader of Rust source,
//! not a compiler, so it states what it understands):
//! - every `engine/src/**/*.rs` file is one node; its module path follows
//!   from the file's place (`a/mod.rs` and `a.rs` are module `a`, `lib.rs`
//!   is the crate root); comments, strings and char literals are blanked
//!   first, so doc links and messages make no edges;
//! - an edge `F -> G` is a path in `F` that names something in `G`: every
//!   `use` item (braces, `self`, globs and `as` expanded) and every path in
//!   code that starts with `crate::`, `super::`, `self::` or the name of a
//!   child module;
//! - a path is resolved to the file that **defines** the name, following
//!   `use` bindings and globs of the module it goes through: `use
//!   super::NodeHandle` in `runtime/x.rs` points at `runtime/handle.rs`, not
//!   at `runtime/mod.rs` that re-exports it. A `mod x;` declaration is
//!   containment, not an import, and makes no edge; nor does a parent's
//!   `pub use` of its own descendants' items (a facade `mod.rs` that also
//!   defines a trait its children implement is not a circle), while any
//!   other import of a child by its parent is an edge;
//! - `#[cfg(test)]` items (unit-test modules, inline or in their own file)
//!   are left out: they compile only into the test binary, they must reach
//!   into the module they test (`use super::*`), and a test helper that
//!   builds state from two modules is not a dependency of the shipped code.
//!   Everything else, including `#[cfg(feature = ..)]` code, counts;
//! - an inline non-test `mod x { .. }` block is not understood: the test
//!   fails and says so (none exists; teach the reader before adding one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the bottom up: a module may import only modules
/// to its left (the crate root, `lib.rs`, is the facade above them all and
/// may import anything). `config` is at the bottom: everything reads it, it
/// reads nothing of the engine. A top-level module not listed here fails the
/// test until it is placed.
const LAYERS: &[&str] = &[
    "config",
    "metrics",
    "tls",
    "auth",
    "transport",
    "runtime",
    "recipes",
    "service",
    "embedded",
    // Application state machines: an embedded node running `Application`.
    "app",
];

/// File edges that close circles in areas being re-cut on other branches
/// right now, exempt until those branches are merged. Each names the branch
/// that removes it. The lead empties this list at merge; an entry whose
/// edge no longer exists fails the test (so a stale entry cannot hide a new
/// circle later).
const ALLOWED_CYCLE_EDGES: &[(&str, &str, &str)] = &[];

/// Top-level edges against [`LAYERS`] exempt for the same reason.
const ALLOWED_LAYER_EDGES: &[(&str, &str, &str)] = &[];

#[test]
fn engine_src_has_no_import_cycles() {
    let graph = Graph::read(&src_dir());
    let mut edges = graph.edges.clone();
    let mut failures = Vec::new();
    for (from, to, branch) in ALLOWED_CYCLE_EDGES {
        let key = (from.to_string(), to.to_string());
        if edges.remove(&key).is_none() {
            failures.push(format!(
                "ALLOWED_CYCLE_EDGES lists {from} -> {to} ({branch}) but that import is gone: \
                 remove the entry"
            ));
        }
    }
    for cycle in cycles(&edges) {
        let mut msg = String::from("import cycle in engine/src:\n");
        for w in cycle.windows(2) {
            let why = &edges[&(w[0].clone(), w[1].clone())];
            msg.push_str(&format!("    {} -> {}   ({why})\n", w[0], w[1]));
        }
        failures.push(msg);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn top_level_modules_follow_the_layering() {
    let graph = Graph::read(&src_dir());
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut top: BTreeMap<(String, String), String> = BTreeMap::new();
    for ((from, to), why) in &graph.edges {
        let (a, b) = (top_module(from), top_module(to));
        if a != b && a != "lib" {
            top.entry((a, b))
                .or_insert_with(|| format!("{from} -> {to}: {why}"));
        }
    }
    println!("top-level imports of engine/src (importer -> imported):");
    for ((a, b), why) in &top {
        println!("    {a:>10} -> {b:<10} e.g. {why}");
    }
    let mut failures = Vec::new();
    for (a, b, branch) in ALLOWED_LAYER_EDGES {
        if !top.contains_key(&(a.to_string(), b.to_string())) {
            failures.push(format!(
                "ALLOWED_LAYER_EDGES lists {a} -> {b} ({branch}) but no such import remains: \
                 remove the entry"
            ));
        }
    }
    for ((a, b), why) in &top {
        if ALLOWED_LAYER_EDGES.iter().any(|(x, y, _)| x == a && y == b) {
            continue;
        }
        match (rank(a), rank(b)) {
            (Some(ra), Some(rb)) if ra > rb => {}
            (Some(_), Some(_)) => failures.push(format!(
                "`{a}` imports `{b}`, which is not below it in LAYERS ({why})"
            )),
            (None, _) | (_, None) => failures.push(format!(
                "`{a}` -> `{b}`: a top-level module missing from LAYERS; place it ({why})"
            )),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The reader itself, on a made-up crate: re-exports are followed to the
/// defining file, test modules make no edges, a circle is reported.
#[test]
fn the_reader_resolves_reexports_and_finds_a_planted_cycle() {
    let dir = std::env::temp_dir().join(format!("module_graph_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let files: &[(&str, &str)] = &[
        ("lib.rs", "pub mod a;\nmod b;\npub use a::Thing;\n"),
        (
            "a/mod.rs",
            "mod inner;\npub use inner::Thing;\n// use crate::b::Gone;\n",
        ),
        (
            "a/inner.rs",
            "pub struct Thing;\nfn f() -> &'static str { \"crate::b::X\" }\n\
             #[cfg(test)]\nmod tests { use crate::b::Helper; }\n",
        ),
        (
            "b.rs",
            "use crate::a::Thing;\npub struct Helper;\nfn g() { super::a::inner::f(); }\n",
        ),
    ];
    for (p, text) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let g = Graph::read(&dir);
    let keys: BTreeSet<_> = g.edges.keys().cloned().collect();
    let e = |a: &str, b: &str| (a.to_string(), b.to_string());
    // `crate::a::Thing` is defined in a/inner.rs, re-exported by a/mod.rs.
    assert!(keys.contains(&e("b.rs", "a/inner.rs")), "{keys:?}");
    assert!(!keys.contains(&e("b.rs", "a/mod.rs")), "{keys:?}");
    // Comments, strings and test modules make no edges.
    assert!(!keys.contains(&e("a/inner.rs", "b.rs")), "{keys:?}");
    assert!(cycles(&g.edges).is_empty());
    // Plant one: a/inner.rs now uses b.rs.
    std::fs::write(
        dir.join("a/inner.rs"),
        "pub struct Thing;\npub fn f() { let _ = crate::b::Helper; }\n",
    )
    .unwrap();
    let g = Graph::read(&dir);
    let found = cycles(&g.edges);
    assert_eq!(found.len(), 1, "{found:?}");
    let c: BTreeSet<_> = found[0].iter().cloned().collect();
    assert_eq!(
        c,
        ["a/inner.rs", "b.rs"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `engine/src`, or the tree named by `MODULE_GRAPH_SRC` (to check another
/// checkout without building it).
fn src_dir() -> PathBuf {
    match std::env::var_os("MODULE_GRAPH_SRC") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    }
}

/// `runtime/x.rs` -> `runtime`, `config.rs` -> `config`, `lib.rs` -> `lib`.
fn top_module(file: &str) -> String {
    let first = file.split('/').next().unwrap();
    first.trim_end_matches(".rs").to_string()
}

// ----- the graph ------------------------------------------------------------

#[derive(Default)]
struct FileInfo {
    /// Names of items defined here.
    defines: BTreeSet<String>,
    /// `use` bindings: name -> absolute path (`None`: outside the crate).
    binds: BTreeMap<String, Option<Vec<String>>>,
    /// Glob imports of crate modules (absolute paths).
    globs: Vec<Vec<String>>,
    /// Paths this file names: (absolute path, line, as written).
    refs: Vec<(Vec<String>, usize, String)>,
}

struct Graph {
    /// (from file, to file) -> one place that makes the edge.
    edges: BTreeMap<(String, String), String>,
}

impl Graph {
    fn read(root: &Path) -> Graph {
        let mut files = Vec::new();
        collect(root, root, &mut files);
        files.sort();
        // Pass 1: module paths, test-only child modules, blanked sources.
        let mut sources: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
        let mut test_modules: BTreeSet<Vec<String>> = BTreeSet::new();
        for rel in &files {
            let text = std::fs::read_to_string(root.join(rel)).unwrap();
            let module = module_path(rel);
            let (code, test_children) = drop_test_items(&blank(&text));
            for c in test_children {
                let mut m = module.clone();
                m.push(c);
                test_modules.insert(m);
            }
            sources.insert(rel.clone(), (module, code));
        }
        sources.retain(|_, (m, _)| !test_modules.iter().any(|t| m.starts_with(t)));
        let by_module: BTreeMap<Vec<String>, String> = sources
            .iter()
            .map(|(f, (m, _))| (m.clone(), f.clone()))
            .collect();
        // Pass 2: what each file defines, binds and names.
        let mut infos: BTreeMap<String, FileInfo> = BTreeMap::new();
        for (file, (module, code)) in &sources {
            let children: BTreeSet<String> = by_module
                .keys()
                .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
                .map(|m| m.last().unwrap().clone())
                .collect();
            infos.insert(file.clone(), parse(file, module, &children, code));
        }
        let mut edges = BTreeMap::new();
        for (file, info) in &infos {
            for (path, line, written) in &info.refs {
                if let Some(to) = resolve(&infos, &by_module, path, 0) {
                    if &to != file {
                        edges
                            .entry((file.clone(), to))
                            .or_insert_with(|| format!("{file}:{line} `{written}`"));
                    }
                }
            }
        }
        Graph { edges }
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(root, &p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy();
            out.push(rel.replace('\\', "/"));
        }
    }
}

fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "lib.rs" | "main.rs" if parts.is_empty() => {}
        "mod.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The file that defines what `path` (absolute) names.
fn resolve(
    infos: &BTreeMap<String, FileInfo>,
    by_module: &BTreeMap<Vec<String>, String>,
    path: &[String],
    depth: usize,
) -> Option<String> {
    let n = (0..=path.len())
        .rev()
        .find(|n| by_module.contains_key(&path[..*n]))?;
    let file = by_module[&path[..n]].clone();
    let rest = &path[n..];
    let Some(name) = rest.first() else {
        return Some(file);
    };
    if depth > 16 {
        return Some(file);
    }
    let info = &infos[&file];
    if info.defines.contains(name) {
        return Some(file);
    }
    if let Some(target) = info.binds.get(name) {
        return match target {
            Some(t) => {
                let mut p = t.clone();
                p.extend(rest[1..].iter().cloned());
                resolve(infos, by_module, &p, depth + 1).or(Some(file))
            }
            None => Some(file),
        };
    }
    for g in &info.globs {
        let Some(gf) = by_module.get(g) else { continue };
        let gi = &infos[gf];
        if gi.defines.contains(name) || gi.binds.contains_key(name) {
            let mut p = g.clone();
            p.extend(rest.iter().cloned());
            return resolve(infos, by_module, &p, depth + 1).or(Some(file));
        }
    }
    Some(file)
}

// ----- reading Rust source ----------------------------------------------------

/// The source with comments, string and char literals replaced by spaces
/// (newlines kept, so line numbers stay right).
fn blank(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let put = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    while i < c.len() {
        let at = |k: usize| c.get(i + k).copied().unwrap_or('\0');
        if at(0) == '/' && at(1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
                out.push(' ');
            }
        } else if at(0) == '/' && at(1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    put(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if (at(0) == 'r' || (at(0) == 'b' && at(1) == 'r'))
            && !prev_is_ident(&c, i)
            && raw_string_start(&c, i + usize::from(at(0) == 'b')).is_some()
        {
            let start = i + usize::from(at(0) == 'b');
            let hashes = raw_string_start(&c, start).unwrap();
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body = start + 2 + hashes;
            let text: String = c[body..].iter().collect();
            let end = body
                + text
                    .find(&close)
                    .map_or(c.len() - body, |p| text[..p].chars().count() + close.len());
            for &ch in &c[i..end.min(c.len())] {
                put(&mut out, ch);
            }
            i = end;
        } else if at(0) == '"' {
            put(&mut out, '"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    put(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    put(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if at(0) == '\'' && (at(1) == '\\' || (at(2) == '\'' && at(1) != '\'')) {
            // A char literal (a lifetime has no closing quote right after).
            out.push(' ');
            i += 1;
            if c[i] == '\\' {
                out.push(' ');
                i += 1;
            }
            while i < c.len() && c[i] != '\'' {
                put(&mut out, c[i]);
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// At `r"` / `r#"`: the number of `#`s.
fn raw_string_start(c: &[char], i: usize) -> Option<usize> {
    if c.get(i) != Some(&'r') {
        return None;
    }
    let mut n = 0;
    while c.get(i + 1 + n) == Some(&'#') {
        n += 1;
    }
    (c.get(i + 1 + n) == Some(&'"')).then_some(n)
}

/// Blanks every `#[cfg(test)]` item; returns the code and the names of
/// test-only child modules declared as `#[cfg(test)] mod x;`.
fn drop_test_items(code: &str) -> (String, Vec<String>) {
    let mut c: Vec<char> = code.chars().collect();
    let mut children = Vec::new();
    let pat: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + pat.len() <= c.len() {
        if c[i..i + pat.len()] != pat[..] {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + pat.len();
        // The item: up to its `;` or its matching `}`.
        let mut depth = 0;
        let mut item = String::new();
        while j < c.len() {
            let ch = c[j];
            item.push(ch);
            j += 1;
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ';' if depth == 0 => break,
                _ => {}
            }
        }
        let words: Vec<&str> = item
            .split(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        if item.trim_end().ends_with(';') {
            if let Some(p) = words.iter().position(|w| *w == "mod") {
                if let Some(name) = words.get(p + 1) {
                    children.push(name.to_string());
                }
            }
        }
        for ch in &mut c[start..j] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        i = j;
    }
    (c.into_iter().collect(), children)
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    /// `::`
    Sep,
}

fn tokens(code: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' {
            let s = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[s..i].iter().collect();
            // `r#ident`
            let word = word.strip_prefix("r#").map(str::to_string).unwrap_or(word);
            out.push((Tok::Ident(word), line));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::Sep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

const DEF_KEYWORDS: &[&str] = &[
    "struct", "enum", "fn", "trait", "type", "const", "static", "union", "mod",
];

fn parse(file: &str, module: &[String], children: &BTreeSet<String>, code: &str) -> FileInfo {
    let toks = tokens(code);
    let mut info = FileInfo::default();
    let ident = |k: usize| match toks.get(k) {
        Some((Tok::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    // Absolute form of a path written in this file (`None`: not the crate's).
    let absolute = |segs: &[String]| -> Option<Vec<String>> {
        let mut out = module.to_vec();
        let mut rest = segs;
        match segs.first().map(String::as_str) {
            Some("crate") => {
                out.clear();
                rest = &segs[1..];
            }
            Some("self") => rest = &segs[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    out.pop()?;
                    rest = &rest[1..];
                }
            }
            Some(first) if children.contains(first) => {}
            _ => return None,
        }
        out.extend(rest.iter().cloned());
        Some(out)
    };
    let mut k = 0;
    while k < toks.len() {
        let line = toks[k].1;
        match ident(k) {
            Some("use") => {
                let end = (k..toks.len())
                    .find(|j| toks[*j].0 == Tok::Punct(';'))
                    .unwrap_or(toks.len());
                let mut leaves = Vec::new();
                use_tree(&toks[k + 1..end], &[], &mut leaves);
                let public = is_pub(&toks, k);
                for (segs, bind) in leaves {
                    let abs = absolute(&segs);
                    let written = segs.join("::");
                    // A parent re-exporting its own child's item is part of
                    // declaring the child, not a use of it.
                    let reexports_child = public
                        && abs
                            .as_ref()
                            .is_some_and(|a| a.len() > module.len() && a.starts_with(module));
                    match bind {
                        UseLeaf::Glob => {
                            if let Some(a) = &abs {
                                info.globs.push(a.clone());
                                if !reexports_child {
                                    info.refs
                                        .push((a.clone(), line, format!("use {written}::*")));
                                }
                            }
                        }
                        UseLeaf::Name(name) => {
                            if let Some(a) = abs.as_ref().filter(|_| !reexports_child) {
                                info.refs.push((a.clone(), line, format!("use {written}")));
                            }
                            if name != "_" {
                                info.binds.insert(name, abs);
                            }
                        }
                    }
                }
                k = end + 1;
                continue;
            }
            Some("mod") => {
                if let (Some(name), Some((Tok::Punct('{'), _))) = (ident(k + 1), toks.get(k + 2)) {
                    panic!(
                        "{file}:{line}: inline `mod {name} {{ .. }}` outside #[cfg(test)]: \
                         module_graph does not resolve paths inside it; teach it first"
                    );
                }
            }
            Some(kw) if DEF_KEYWORDS.contains(&kw) => {
                if let Some(name) = ident(k + 1) {
                    info.defines.insert(name.to_string());
                }
            }
            Some(first) => {
                let bound = match info.binds.get(first) {
                    Some(Some(abs)) => Some(abs.clone()),
                    _ => None,
                };
                let starts_path = matches!(first, "crate" | "super" | "self")
                    || children.contains(first)
                    || bound.is_some();
                let after_sep = k > 0 && toks[k - 1].0 == Tok::Sep;
                if starts_path && !after_sep && toks.get(k + 1).map(|t| &t.0) == Some(&Tok::Sep) {
                    let mut segs = vec![first.to_string()];
                    let mut j = k + 1;
                    while toks.get(j).map(|t| &t.0) == Some(&Tok::Sep) {
                        match ident(j + 1) {
                            Some(s) => segs.push(s.to_string()),
                            None => break,
                        }
                        j += 2;
                    }
                    let abs = match bound {
                        // A path through a name this file imported.
                        Some(mut abs) => {
                            abs.extend(segs[1..].iter().cloned());
                            Some(abs)
                        }
                        None => absolute(&segs),
                    };
                    if let Some(abs) = abs {
                        info.refs.push((abs, line, segs.join("::")));
                    }
                    k = j;
                    continue;
                }
            }
            None => {}
        }
        k += 1;
    }
    info
}

/// Whether the `use` at `k` is `pub` or `pub(..)`.
fn is_pub(toks: &[(Tok, usize)], k: usize) -> bool {
    let word = |j: usize| matches!(&toks[j].0, Tok::Ident(s) if s == "pub");
    match k.checked_sub(1).map(|j| &toks[j].0) {
        Some(Tok::Ident(s)) => s == "pub",
        Some(Tok::Punct(')')) => (0..k - 1)
            .rev()
            .find(|j| toks[*j].0 == Tok::Punct('('))
            .is_some_and(|j| j > 0 && word(j - 1)),
        _ => false,
    }
}

enum UseLeaf {
    Name(String),
    Glob,
}

/// Expands a use tree (`a::{b, c::d as e, f::*, self}`) into its leaves.
fn use_tree(toks: &[(Tok, usize)], prefix: &[String], out: &mut Vec<(Vec<String>, UseLeaf)>) {
    // Split at top-level commas.
    let mut depth = 0;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, (t, _)) in toks.iter().enumerate() {
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                parts.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&toks[start..]);
    for part in parts {
        let mut segs = prefix.to_vec();
        let mut i = 0;
        // Leading `::` (a crate from the extern prelude).
        if part.first().map(|t| &t.0) == Some(&Tok::Sep) {
            i += 1;
        }
        loop {
            match part.get(i).map(|t| &t.0) {
                Some(Tok::Ident(s)) if s == "as" => {
                    if let Some((Tok::Ident(alias), _)) = part.get(i + 1) {
                        out.push((segs.clone(), UseLeaf::Name(alias.clone())));
                    }
                    break;
                }
                Some(Tok::Ident(s)) => {
                    segs.push(s.clone());
                    i += 1;
                }
                Some(Tok::Sep) => i += 1,
                Some(Tok::Punct('*')) => {
                    out.push((segs.clone(), UseLeaf::Glob));
                    break;
                }
                Some(Tok::Punct('{')) => {
                    let inner = &part[i + 1..part.len() - 1];
                    use_tree(inner, &segs, out);
                    break;
                }
                _ => {
                    if segs.len() > prefix.len() {
                        let last = segs.last().unwrap().clone();
                        if last == "self" {
                            segs.pop();
                            let name = segs.last().cloned().unwrap_or_default();
                            out.push((segs.clone(), UseLeaf::Name(name)));
                        } else {
                            out.push((segs.clone(), UseLeaf::Name(last)));
                        }
                    }
                    break;
                }
            }
        }
    }
}

/// Every elementary circle found by a depth-first search, one per strongly
/// connected component, as a closed walk (`[a, b, a]`).
fn cycles(edges: &BTreeMap<(String, String), String>) -> Vec<Vec<String>> {
    let mut adj: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        adj.entry(a).or_default().push(b);
        adj.entry(b).or_default();
    }
    // Tarjan's strongly connected components.
    struct St<'a> {
        adj: &'a BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        sccs: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(s: &mut St<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on.insert(v);
        for &w in &s.adj[v] {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on.remove(w);
                scc.push(w);
                if w == v {
                    break;
                }
            }
            s.sccs.push(scc);
        }
    }
    let mut st = St {
        adj: &adj,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        sccs: Vec::new(),
    };
    for &v in adj.keys() {
        if !st.index.contains_key(v) {
            visit(&mut st, v);
        }
    }
    let mut out = Vec::new();
    for scc in st.sccs.iter().filter(|s| s.len() > 1) {
        // A shortest way back to the start, inside the component.
        let inside: BTreeSet<&str> = scc.iter().copied().collect();
        let start = *scc.iter().min().unwrap();
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut back = None;
        while let Some(v) = queue.pop_front() {
            for &w in &adj[v] {
                if w == start {
                    back = Some(v);
                    break;
                }
                if inside.contains(w) && !prev.contains_key(w) {
                    prev.insert(w, v);
                    queue.push_back(w);
                }
            }
            if back.is_some() {
                break;
            }
        }
        let mut walk = vec![start.to_string()];
        let mut v = back.unwrap();
        while v != start {
            walk.push(v.to_string());
            v = prev[v];
        }
        walk.push(start.to_string());
        let n = walk.len();
        walk[1..n - 1].reverse();
        out.push(walk);
    }
    out
}
