//! Reading imports from source: module paths of files, comments and literals stripped, and
//! every `crate::`, `super::`, `self::` and aya path with its line, resolved to the top-level
//! module it lands in.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::Path;

use super::{Graph, Site, rust_files};

/// The module path of a file under the crate's `src`: `conn/host.rs` is `[conn, host]`,
/// `conn/mod.rs` is `[conn]`, `lib.rs` and `main.rs` are `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if !matches!(stem, "mod" | "lib" | "main") {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// The top-level module graph of the crate at `src`, and where each top-level module uses aya.
pub(super) fn scan_crate(src: &Path) -> io::Result<(Graph, Vec<(String, Site)>)> {
    let mut graph = Graph::new();
    let mut aya = Vec::new();
    let tops: BTreeSet<String> = rust_files(src)?
        .iter()
        .filter_map(|f| module_path(src, f).first().cloned())
        .collect();
    for file in rust_files(src)? {
        let module = module_path(src, &file);
        let Some(top) = module.first().cloned() else {
            // lib.rs declares the modules; main.rs is another crate.
            continue;
        };
        let code = strip(&fs::read_to_string(&file)?);
        for (line, path) in paths(&code) {
            let site = Site {
                file: file.clone(),
                line,
            };
            if path[0] == "aya" || path[0].starts_with("aya_") {
                aya.push((top.clone(), site));
                continue;
            }
            let Some(target) = resolve(&module, &path) else {
                continue;
            };
            if target != top && tops.contains(&target) {
                graph
                    .entry(top.clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .push(site);
            }
        }
    }
    Ok((graph, aya))
}

/// The top-level module a path from a file of module `module` lands in, if it is one of the
/// crate's: `crate::a::..` is `a`; `super::` climbs from `module`; `self::` stays.
pub(super) fn resolve(module: &[String], path: &[String]) -> Option<String> {
    let mut here: Vec<String> = module.to_vec();
    let mut rest = path;
    match rest.first()?.as_str() {
        "crate" => {
            here.clear();
            rest = &rest[1..];
        }
        "super" | "self" => {
            while let Some(seg) = rest.first() {
                match seg.as_str() {
                    "super" => {
                        here.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    match here.first() {
        Some(top) => Some(top.clone()),
        None => rest.first().cloned(),
    }
}

/// Paths that start at `crate`, `super`, `self` or aya, with the line each is on. A group
/// (`crate::{a::X, b}`) yields one path per member.
pub(super) fn paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        let starts_word = is_ident(c) && (i == 0 || !is_ident(chars[i - 1]) && chars[i - 1] != ':');
        if !starts_word {
            i += 1;
            continue;
        }
        let word_end = ident_end(&chars, i);
        let word: String = chars[i..word_end].iter().collect();
        let root = matches!(word.as_str(), "crate" | "super" | "self")
            || word == "aya"
            || word.starts_with("aya_");
        if root && chars.get(word_end) == Some(&':') && chars.get(word_end + 1) == Some(&':') {
            let mut prefix = vec![word];
            let end = follow(&chars, word_end + 2, &mut prefix, line, &mut out);
            line += chars[i..end].iter().filter(|&&c| c == '\n').count();
            i = end;
        } else {
            i = word_end;
        }
    }
    out
}

/// Reads the rest of a path after `prefix::`, from `i`, pushing every complete path; returns
/// where it ended.
fn follow(
    chars: &[char],
    mut i: usize,
    prefix: &mut Vec<String>,
    line: usize,
    out: &mut Vec<(usize, Vec<String>)>,
) -> usize {
    loop {
        i = skip_space(chars, i);
        match chars.get(i) {
            Some('{') => {
                // A group: each member continues the prefix.
                i += 1;
                loop {
                    i = skip_space(chars, i);
                    match chars.get(i) {
                        None => return i,
                        Some('}') => return i + 1,
                        Some(',') => i += 1,
                        Some(_) => {
                            let mut member = prefix.clone();
                            let before = i;
                            i = follow(chars, i, &mut member, line, out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            Some(&c) if is_ident(c) => {
                let end = ident_end(chars, i);
                prefix.push(chars[i..end].iter().collect());
                i = end;
                if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
                    i += 2;
                    continue;
                }
                out.push((line, prefix.clone()));
                return i;
            }
            _ => {
                // `*` or the end of the path.
                out.push((line, prefix.clone()));
                return i;
            }
        }
    }
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn ident_end(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|&c| is_ident(c)) {
        i += 1;
    }
    i
}

/// The code without comments and without the contents of string and character literals, line
/// breaks kept (so line numbers stay right).
pub(super) fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let keep_newlines = |s: &[char], out: &mut String| {
        for &ch in s {
            if ch == '\n' {
                out.push('\n');
            }
        }
    };
    while i < c.len() {
        match (c[i], c.get(i + 1).copied()) {
            ('/', Some('/')) => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                let start = i;
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                keep_newlines(&c[start..i.min(c.len())], &mut out);
            }
            ('r', Some('"' | '#')) if raw_string_start(&c, i) => {
                // A raw string: r"..." or r#"..."#.
                let start = i;
                let mut j = i + 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    out.push(c[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                while j < c.len() {
                    if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                keep_newlines(&c[start..j.min(c.len())], &mut out);
                out.push_str("\"\"");
                i = j;
            }
            ('"', _) => {
                let start = i;
                i += 1;
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                keep_newlines(&c[start..i.min(c.len())], &mut out);
                out.push_str("\"\"");
            }
            ('\'', Some('\\')) => {
                // An escaped character literal.
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            ('\'', Some(_)) if c.get(i + 2) == Some(&'\'') => {
                i += 3;
                out.push_str("' '");
            }
            (ch, _) => {
                // Lifetimes and everything else.
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

/// True when the `r` at `i` begins a raw string (`r"`, `r#"`, `br"`), not an identifier.
fn raw_string_start(c: &[char], i: usize) -> bool {
    let before = |k: usize| i >= k && is_ident(c[i - k]);
    !before(1) || (c[i - 1] == 'b' && !before(2))
}
