//! The layout's invariants, checked by `cargo xtask test` before clippy: imports run down the
//! pipeline, and files stay small.
//!
//! - only `capture` uses aya (in the `observer` crate);
//! - `http`, `detect` and `event` never import `capture` or `sink`; `sink` never imports
//!   `detect`;
//! - the top-level modules of `observer/src` import each other without a cycle;
//! - no source file is longer than [`MAX_LINES`] lines.
//!
//! Imports are read from the source: every `crate::`, `super::` and `aya::` path outside
//! comments and string literals, `use` lines or not. A plain scan, no parser: good enough for
//! code that rustfmt keeps tidy. Owns this check only; imports nothing of the other xtask
//! modules.

mod cycles;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::bail;

use cycles::cycles;
use scan::scan_crate;

/// Longest source file allowed, in lines.
pub const MAX_LINES: usize = 600;

/// Source folders whose files are held to [`MAX_LINES`].
const SIZED: &[&str] = &[
    "observer/src",
    "observer-common/src",
    "observer-ebpf/src",
    "xtask/src",
    "tests/src",
];

/// The crate whose module graph is checked, and its source folder.
const CRATE_SRC: &str = "observer/src";

/// The only top-level module that may use aya.
const AYA_OWNER: &str = "capture";

/// (importer, imported): imports that would run up the pipeline.
const FORBIDDEN: &[(&str, &str)] = &[
    ("http", "capture"),
    ("http", "sink"),
    ("detect", "capture"),
    ("detect", "sink"),
    ("event", "capture"),
    ("event", "sink"),
    ("sink", "detect"),
];

/// One place a top-level module names another (or aya).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Site {
    file: PathBuf,
    line: usize,
}

/// importer → imported → where.
type Graph = BTreeMap<String, BTreeMap<String, Vec<Site>>>;

/// Checks the workspace at `root`; prints every violation and fails when there is one.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let problems = violations(root)?;
    if problems.is_empty() {
        println!("layout: imports run down the pipeline, no cycle, no file over {MAX_LINES} lines");
        return Ok(());
    }
    for p in &problems {
        eprintln!("layout: {p}");
    }
    bail!(
        "{} layout violation(s); README's \"How it works\" and the //! comment at the top of \
         each module say what it may import; split a long file by what its parts own",
        problems.len()
    )
}

/// Every violation in the workspace at `root`, one sentence each.
fn violations(root: &Path) -> io::Result<Vec<String>> {
    let mut out = long_files(root)?;
    let (graph, aya) = scan_crate(&root.join(CRATE_SRC))?;
    for site in aya.iter().filter(|(module, _)| module != AYA_OWNER) {
        let (module, at) = site;
        out.push(format!(
            "{}:{}: `{module}` uses aya; only `{AYA_OWNER}` may",
            shown(root, &at.file),
            at.line
        ));
    }
    for (from, to) in FORBIDDEN {
        if let Some(sites) = graph.get(*from).and_then(|m| m.get(*to)) {
            for at in sites {
                out.push(format!(
                    "{}:{}: `{from}` imports `{to}`, which it must never do",
                    shown(root, &at.file),
                    at.line
                ));
            }
        }
    }
    for cycle in cycles(&graph) {
        let (a, b) = (&cycle[0], &cycle[1]);
        let at = &graph[a][b][0];
        out.push(format!(
            "import cycle between top-level modules: {} (first edge at {}:{})",
            cycle.join(" → "),
            shown(root, &at.file),
            at.line
        ));
    }
    Ok(out)
}

fn shown(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Files of [`SIZED`] folders longer than [`MAX_LINES`].
fn long_files(root: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for dir in SIZED {
        for file in rust_files(&root.join(dir))? {
            let rel = shown(root, &file);
            let n = fs::read_to_string(&file)?.lines().count();
            if n > MAX_LINES {
                out.push(format!(
                    "{rel}: {n} lines, more than {MAX_LINES}: split it by what each part owns"
                ));
            }
        }
    }
    Ok(out)
}

/// `.rs` files under `dir`, sorted; none when it does not exist.
fn rust_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
