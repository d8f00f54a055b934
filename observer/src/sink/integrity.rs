//! Tamper evidence: every line carries `observer.chain`, a SHA-256 (HMAC-SHA256 with an
//! integrity key) over the previous line's chain value and this line, so a deleted, inserted,
//! reordered, modified or truncated line breaks the chain at a place `observer verify` names.
//!
//! The chain value is the last field of the `observer` object, which is the last field of every
//! event, so the line without it is recovered byte for byte: no re-serialisation is involved.
//! Without a key, anyone who can rewrite the whole log can recompute the chain; with a key kept
//! away from the log's host, they cannot.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const FIELD: &str = ",\"chain\":\"";
const HEX: usize = 64;
/// Longest line `verify` reads.
const MAX_LINE: usize = 1 << 20;

/// The hash state of a run's output.
#[derive(Clone)]
pub struct Chain {
    prev: [u8; 32],
    key: Option<Vec<u8>>,
    run_id: String,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chain({})", hex::encode(self.prev))
    }
}

fn genesis(run_id: &str) -> [u8; 32] {
    Sha256::digest(format!("observer-chain-v1:{run_id}").as_bytes()).into()
}

fn link(key: Option<&[u8]>, prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    match key {
        Some(k) => {
            let mut m = Hmac::<Sha256>::new_from_slice(k).expect("HMAC takes any key length");
            m.update(prev);
            m.update(body);
            m.finalize().into_bytes().into()
        }
        None => {
            let mut h = Sha256::new();
            h.update(prev);
            h.update(body);
            h.finalize().into()
        }
    }
}

impl Chain {
    pub fn new(run_id: &str, key: Option<Vec<u8>>) -> Self {
        Self {
            prev: genesis(run_id),
            key,
            run_id: run_id.to_string(),
        }
    }

    /// Bytes `seal` adds to a line.
    pub const SEAL_BYTES: usize = FIELD.len() + HEX + 1;

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Adds the chain field to one serialised event (which must end with `}}`).
    pub fn seal(&mut self, json: &str) -> String {
        let mut out = Vec::with_capacity(json.len() + Self::SEAL_BYTES);
        self.seal_into(json.as_bytes(), &mut out);
        String::from_utf8(out).expect("UTF-8 in, UTF-8 out")
    }

    /// Appends `json` with the chain field added to `out`.
    pub fn seal_into(&mut self, json: &[u8], out: &mut Vec<u8>) {
        debug_assert!(json.ends_with(b"}}"), "observer must be the last object");
        let next = link(self.key.as_deref(), &self.prev, json);
        self.prev = next;
        let mut hex = [0u8; HEX];
        hex::encode_to_slice(next, &mut hex).expect("64 hex digits for 32 bytes");
        out.extend_from_slice(&json[..json.len() - 2]);
        out.extend_from_slice(FIELD.as_bytes());
        out.extend_from_slice(&hex);
        out.extend_from_slice(b"\"}}");
    }
}

/// Reads an integrity key file: at least 16 bytes, not readable by others.
pub fn load_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read integrity key {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "integrity key {} is readable by others; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let key = std::fs::read(path)
        .with_context(|| format!("cannot read integrity key {}", path.display()))?;
    if key.len() < 16 {
        anyhow::bail!(
            "integrity key {} has {} bytes; use at least 16 random bytes \
             (`head -c 32 /dev/urandom > KEY`)",
            path.display(),
            key.len()
        );
    }
    Ok(key)
}

/// Where verification failed.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based.
    pub line: u64,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.what)
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub runs: u64,
    /// Runs whose last line is not `sys_shutdown`: still running, stopped abruptly, or their
    /// last lines were removed.
    pub unfinished_runs: Vec<String>,
}

/// Splits a line into the sealed body and its chain value.
fn unseal(line: &str) -> Option<(String, [u8; 32])> {
    let tail = line.strip_suffix("\"}}")?;
    let at = tail.len().checked_sub(HEX)?;
    let hex_part = tail.get(at..)?;
    let head = tail.get(..at)?.strip_suffix(FIELD)?;
    let mut chain = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut chain).ok()?;
    Some((format!("{head}}}}}"), chain))
}

/// Checks log files given oldest first (rotated files before the current one).
pub fn verify(paths: &[PathBuf], key: Option<&[u8]>) -> Result<Summary, Problem> {
    let mut sum = Summary::default();
    let mut prev: Option<[u8; 32]> = None;
    let mut run = String::new();
    let mut last_seq = 0u64;
    let mut last_action = String::new();
    for path in paths {
        let problem = |line: u64, what: String| Problem {
            file: path.clone(),
            line,
            what,
        };
        let f = File::open(path).map_err(|e| problem(0, format!("cannot open: {e}")))?;
        let mut r = BufReader::new(f);
        let mut n = 0u64;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read = r
                .by_ref()
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|e| problem(n + 1, format!("cannot read: {e}")))?;
            if read == 0 {
                break;
            }
            n += 1;
            if buf.last() != Some(&b'\n') {
                return Err(problem(n, "truncated: the line does not end".into()));
            }
            buf.pop();
            let line = std::str::from_utf8(&buf).map_err(|_| problem(n, "not UTF-8".into()))?;
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| problem(n, format!("not a JSON object: {e}")))?;
            let seq = v["event"]["sequence"]
                .as_u64()
                .ok_or_else(|| problem(n, "no event.sequence".into()))?;
            let run_id = v["observer"]["run_id"]
                .as_str()
                .ok_or_else(|| problem(n, "no observer.run_id".into()))?
                .to_string();
            let (body, chain) =
                unseal(line).ok_or_else(|| problem(n, "no observer.chain as last field".into()))?;
            let action = v["event"]["action"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            // A loss line of unwritten events stands for the sequence numbers it names.
            let u = &v["observer"]["unwritten"];
            let stands_from = match (u["first_sequence"].as_u64(), u["last_sequence"].as_u64()) {
                (Some(first), Some(last)) if last == seq && first <= last && first > 0 => {
                    Some(first)
                }
                _ => None,
            };
            let first_of_line = stands_from.unwrap_or(seq);
            let expected_prev = if first_of_line == 1 {
                if action != "sys_startup" && stands_from.is_none() {
                    return Err(problem(n, "a run must start with sys_startup".into()));
                }
                if prev.is_some() && last_action != "sys_shutdown" {
                    sum.unfinished_runs.push(run.clone());
                }
                sum.runs += 1;
                run = run_id.clone();
                genesis(&run_id)
            } else {
                let Some(p) = prev else {
                    return Err(problem(
                        n,
                        format!(
                            "the log starts at event.sequence {seq}: earlier lines are missing \
                             (give every rotated file, oldest first)"
                        ),
                    ));
                };
                if run_id != run {
                    return Err(problem(n, format!("run {run_id} appears inside run {run}")));
                }
                if first_of_line != last_seq + 1 {
                    return Err(problem(
                        n,
                        format!(
                            "event.sequence goes from {last_seq} to {seq}: lines were deleted, \
                             inserted or reordered here"
                        ),
                    ));
                }
                p
            };
            if link(key, &expected_prev, body.as_bytes()) != chain {
                return Err(problem(
                    n,
                    if key.is_none() && seq == 1 {
                        "observer.chain does not match: the line was modified (or the log was \
                         written with an integrity key: pass --integrity-key)"
                            .into()
                    } else {
                        "observer.chain does not match: this line, or the one before it, was \
                         modified"
                            .into()
                    },
                ));
            }
            prev = Some(chain);
            last_seq = seq;
            last_action = action;
            sum.lines += 1;
        }
    }
    if prev.is_some() && last_action != "sys_shutdown" {
        sum.unfinished_runs.push(run);
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(key: Option<Vec<u8>>, n: u64, run: &str) -> Vec<String> {
        let mut c = Chain::new(run, key);
        (1..=n)
            .map(|i| {
                let action = match i {
                    1 => "sys_startup",
                    x if x == n => "sys_shutdown",
                    _ => "http_request",
                };
                let body = format!(
                    r#"{{"event":{{"action":"{action}","sequence":{i}}},"url":{{"path":"/p{i}"}},"observer":{{"run_id":"{run}"}}}}"#
                );
                c.seal(&body)
            })
            .collect()
    }

    fn check(lines: &[String], key: Option<&[u8]>) -> Result<Summary, Problem> {
        let dir = std::env::temp_dir().join(format!(
            "observer-chain-{}-{}",
            std::process::id(),
            lines.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        let r = verify(std::slice::from_ref(&path), key);
        std::fs::remove_dir_all(&dir).unwrap();
        r
    }

    #[test]
    fn intact_logs_verify() {
        let lines = log(None, 6, "r1");
        let s = check(&lines, None).unwrap();
        assert_eq!(s.lines, 6);
        assert_eq!(s.runs, 1);
        assert!(s.unfinished_runs.is_empty());
        let mut two = lines.clone();
        two.extend(log(None, 3, "r2"));
        assert_eq!(check(&two, None).unwrap().runs, 2);
    }

    #[test]
    fn every_kind_of_tampering_is_named() {
        let lines = log(None, 6, "r1");
        let mut deleted = lines.clone();
        deleted.remove(3);
        assert_eq!(check(&deleted, None).unwrap_err().line, 4);
        let mut reordered = lines.clone();
        reordered.swap(2, 3);
        assert_eq!(check(&reordered, None).unwrap_err().line, 3);
        let mut modified = lines.clone();
        modified[2] = modified[2].replace("/p3", "/p9");
        assert_eq!(check(&modified, None).unwrap_err().line, 3);
        let mut inserted = lines.clone();
        inserted.insert(2, lines[1].clone());
        assert_eq!(check(&inserted, None).unwrap_err().line, 3);
        // A forged line with a recomputed chain still breaks the next one.
        let mut forged = lines.clone();
        let mut c = Chain::new("r1", None);
        for l in &lines[..2] {
            c.seal(&unseal(l).unwrap().0);
        }
        let body = unseal(&lines[2]).unwrap().0.replace("/p3", "/evil");
        forged[2] = c.seal(&body);
        assert_eq!(check(&forged, None).unwrap_err().line, 4);
        let dir = std::env::temp_dir().join(format!("observer-trunc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let text = lines.join("\n");
        std::fs::write(&path, &text[..text.len() - 10]).unwrap();
        let e = verify(std::slice::from_ref(&path), None).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.what.contains("truncated"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keyed_chains_need_the_key() {
        let key = b"0123456789abcdef0123".to_vec();
        let lines = log(Some(key.clone()), 4, "r1");
        assert!(check(&lines, Some(&key)).is_ok());
        assert!(check(&lines, None).is_err());
        assert!(check(&lines, Some(b"another key 1234")).is_err());
    }

    #[test]
    fn deleted_tail_shows_as_unfinished_run() {
        let mut lines = log(None, 5, "r1");
        lines.pop();
        assert_eq!(check(&lines, None).unwrap().unfinished_runs, vec!["r1"]);
    }
}
