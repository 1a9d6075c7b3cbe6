//! The source tree's shape, checked: dependencies between the top-level modules of `src/`
//! point one way (down the order below, which `docs/design.md` draws as the file map), the
//! log's file layer knows nothing of the pipeline above it, and no source file outgrows
//! [`MAX_FILE_LINES`] (its unit tests aside).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules ("rooms") of `src/`, bottom first. A room may use only rooms
/// before it. A new room must be placed here, and in docs/design.md's map.
const ORDER: &[&str] = &[
    // Leaves.
    "lsn",
    "error",
    "sync",
    "clock",
    "layout",
    "bytes",
    "keys",
    "limits",
    "seal",
    "config",
    "histogram",
    // The log: the group-commit pipeline over the log's files.
    "wal",
    // LMDB and the in-memory state over it.
    "ends",
    "overlay",
    "catalog",
    "snapshots",
    "spill",
    "store",
    // The engine's jobs, then transactions, operations and the handle.
    "engine",
    "txn",
    "typed",
    "ops",
    "db",
    // Read-only inspection for tools; repair of a damaged database, which reads with it;
    // the loom models' entry (loom builds only).
    "inspect",
    "repair",
    "loom_support",
];

/// The longest a source file may be, its `#[cfg(test)]` module aside.
const MAX_FILE_LINES: usize = 800;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Rooms by name, with their files: `src/NAME.rs` or everything under `src/NAME/`.
fn rooms() -> BTreeMap<String, Vec<PathBuf>> {
    let mut rooms = BTreeMap::new();
    for entry in std::fs::read_dir(src()).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .expect("UTF-8 names");
        if name == "lib" {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path.clone());
        } else {
            continue;
        }
        rooms.insert(name.to_owned(), files);
    }
    rooms
}

/// The text without comments (line comments, doc comments and block comments).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else {
            let ch = rest.chars().next().expect("not empty");
            out.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
    }
    out
}

/// The first segments of every `crate::` path in `code`, `crate::{a, b::c}` groups included.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut heads = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `walmdb_crate::` or the like
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        heads.insert(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(ch);
                }
            }
            heads.insert(first_ident(&item));
        } else {
            heads.insert(first_ident(rest));
        }
    }
    heads.remove("");
    heads
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn dependencies_between_top_level_modules_point_down() {
    let rooms = rooms();
    let rank: BTreeMap<&str, usize> = ORDER.iter().enumerate().map(|(i, r)| (*r, i)).collect();
    let unplaced: Vec<&String> = rooms
        .keys()
        .filter(|r| !rank.contains_key(r.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "place these modules in ORDER (tests/architecture.rs) and in docs/design.md: {unplaced:?}"
    );
    let mut upward = Vec::new();
    let mut edges = 0;
    for (room, files) in &rooms {
        for file in files {
            let text = std::fs::read_to_string(file).expect("a readable source file");
            for used in crate_paths(&code(&text)) {
                let Some(&to) = rank.get(used.as_str()) else {
                    continue; // a re-export of lib.rs (`crate::Result`), or a macro
                };
                if used == *room {
                    continue;
                }
                edges += 1;
                if to > rank[room.as_str()] {
                    upward.push(format!(
                        "{room} -> {used} (in {})",
                        file.strip_prefix(src()).unwrap_or(file).display()
                    ));
                }
            }
        }
    }
    assert!(
        edges > 20,
        "the scan found only {edges} dependencies: is it reading src/?"
    );
    assert!(
        upward.is_empty(),
        "dependencies that point up the order of tests/architecture.rs:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_log_files_know_nothing_of_the_pipeline_above_them() {
    let mut files = Vec::new();
    rust_files(&src().join("wal").join("log"), &mut files);
    assert!(!files.is_empty());
    let mut offenders = Vec::new();
    for file in files {
        let text = code(&std::fs::read_to_string(&file).expect("a readable source file"));
        for (i, _) in text.match_indices("crate::wal::") {
            if !text[i + "crate::wal::".len()..].starts_with("log") {
                offenders.push(file.display().to_string());
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "src/wal/log/ uses the pipeline: {offenders:?}"
    );
}

#[test]
fn no_source_file_outgrows_the_limit() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        // Unit tests at the bottom of a file do not count.
        let code_part = text.split("\n#[cfg(test)]\nmod tests").next().unwrap_or("");
        let lines = code_part.lines().count();
        if lines > MAX_FILE_LINES {
            long.push(format!("{} ({lines} lines)", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "source files over {MAX_FILE_LINES} lines (split them by job): {long:?}"
    );
}

#[test]
fn the_scanner_reads_groups_and_skips_comments() {
    let text =
        "use crate::{a::X, b, c::{d, e}};\n// crate::f\nfn g() { crate::h::i(); }\n/* crate::j */";
    let heads = crate_paths(&code(text));
    let want: BTreeSet<String> = ["a", "b", "c", "h"].iter().map(|s| s.to_string()).collect();
    assert_eq!(heads, want);
}
