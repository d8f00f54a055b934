//! `observer verify`: reads log files oldest first and checks, line by line, the sequence, the
//! hash chain, the links between runs and files (`sys_startup` and `sys_checkpoint` say where
//! the chain stood), the seals when a verification key is given, and that the log ends with
//! `sys_shutdown` (unless it is live) and reaches an expected head. It names the first line
//! that breaks any of them, and says from where to where the log is proven.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::integrity::{Unsealed, genesis, link, unseal};
use super::seal::{VerifyKey, unix_now};

/// Longest line `verify` reads.
const MAX_LINE: usize = 1 << 20;
/// Chain values of the current run remembered, to tell a run that continues from an earlier
/// line of the run before it (an abrupt stop) from one that continues from nothing in the log.
const RECENT: usize = 1 << 16;

/// What to check besides the chain.
#[derive(Default)]
pub struct Options<'a> {
    /// The integrity key the chain was written with (`run --integrity-key`).
    pub key: Option<&'a [u8]>,
    /// The log is live: it may end without `sys_shutdown`.
    pub open: bool,
    /// Accept runs that start a new chain after earlier runs, and runs that continue from an
    /// earlier line of the previous run (the host state was lost, or observer stopped
    /// abruptly).
    pub accept_restart: bool,
    /// Check every line's seal with this key.
    pub verify_key: Option<VerifyKey>,
    /// Fail unless some line has this chain value.
    pub expect_head: Option<[u8; 32]>,
}

/// A line of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub file: PathBuf,
    /// 1-based.
    pub line: u64,
    pub sequence: u64,
    pub run_id: String,
    pub timestamp: String,
    /// The seal's epoch, when the line is sealed.
    pub epoch: Option<u64>,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} (run {}, event.sequence {}, {})",
            self.file.display(),
            self.line,
            self.run_id,
            self.sequence,
            self.timestamp
        )
    }
}

/// Where verification failed, and how far the log was proven before it.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based.
    pub line: u64,
    pub what: String,
    pub proven: Option<Box<Place>>,
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
    /// Where the verified history begins, and how (a new chain, a checkpoint, ...).
    pub begins: Option<(Place, String)>,
    /// The last line: the log is proven up to here.
    pub last: Option<Place>,
    /// Things verify accepted that a reader should know.
    pub notes: Vec<String>,
    pub sealed: u64,
    pub unsealed: u64,
    /// Whether seals were checked (a verification key was given).
    pub seals_checked: bool,
    /// Runs written by versions before checkpoints: their links to other runs are unchecked.
    pub legacy_runs: u64,
    /// Runs whose last line is not `sys_shutdown`.
    pub unfinished_runs: Vec<String>,
    /// The line whose chain value is the expected head.
    pub head_reached: Option<Place>,
}

struct Verifier<'a> {
    opts: Options<'a>,
    sum: Summary,
    prev: Option<[u8; 32]>,
    run: String,
    run_legacy: bool,
    last_seq: u64,
    last_action: String,
    recent: VecDeque<(u64, [u8; 32])>,
    last_epoch: Option<u64>,
}

/// A checkpoint as a line carries it.
struct Point {
    head: [u8; 32],
    run_id: String,
    sequence: u64,
}

fn point(v: &Value) -> Option<Point> {
    let c = &v["observer"]["checkpoint"];
    let mut head = [0u8; 32];
    hex::decode_to_slice(c["head"].as_str()?, &mut head).ok()?;
    Some(Point {
        head,
        run_id: c["run_id"].as_str()?.to_string(),
        sequence: c["sequence"].as_u64()?,
    })
}

fn short(h: &[u8; 32]) -> String {
    hex::encode(&h[..6])
}

/// Seconds since the Unix epoch of an RFC 3339 timestamp.
pub fn unix_seconds(ts: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp()).ok()
}

/// Checks log files given oldest first (rotated files before the current one).
pub fn verify(paths: &[PathBuf], opts: Options<'_>) -> Result<Summary, Problem> {
    let mut v = Verifier {
        sum: Summary {
            seals_checked: opts.verify_key.is_some(),
            ..Summary::default()
        },
        opts,
        prev: None,
        run: String::new(),
        run_legacy: false,
        last_seq: 0,
        last_action: String::new(),
        recent: VecDeque::new(),
        last_epoch: None,
    };
    for path in paths {
        v.file(path)?;
    }
    v.finish()
}

impl Verifier<'_> {
    fn problem(&self, file: &Path, line: u64, what: String) -> Problem {
        Problem {
            file: file.to_path_buf(),
            line,
            what,
            proven: self.sum.last.clone().map(Box::new),
        }
    }

    fn file(&mut self, path: &Path) -> Result<(), Problem> {
        let f = File::open(path).map_err(|e| self.problem(path, 0, format!("cannot open: {e}")))?;
        let mut r = BufReader::new(f);
        let mut n = 0u64;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read = r
                .by_ref()
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|e| self.problem(path, n + 1, format!("cannot read: {e}")))?;
            if read == 0 {
                return Ok(());
            }
            n += 1;
            if buf.last() != Some(&b'\n') {
                return Err(self.problem(path, n, "truncated: the line does not end".into()));
            }
            buf.pop();
            let line = std::str::from_utf8(&buf)
                .map_err(|_| self.problem(path, n, "not UTF-8".into()))?
                .to_string();
            self.line(path, n, &line)
                .map_err(|what| self.problem(path, n, what))?;
        }
    }

    fn line(&mut self, file: &Path, n: u64, line: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
        let seq = v["event"]["sequence"].as_u64().ok_or("no event.sequence")?;
        let run_id = v["observer"]["run_id"]
            .as_str()
            .ok_or("no observer.run_id")?
            .to_string();
        let un = unseal(line).ok_or("no observer.chain as last field")?;
        let action = v["event"]["action"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let place = Place {
            file: file.to_path_buf(),
            line: n,
            sequence: seq,
            run_id: run_id.clone(),
            timestamp: v["@timestamp"].as_str().unwrap_or_default().to_string(),
            epoch: un.seal.map(|s| s.0),
        };
        // A loss line of unwritten events stands for the sequence numbers it names.
        let u = &v["observer"]["unwritten"];
        let stands_from = match (u["first_sequence"].as_u64(), u["last_sequence"].as_u64()) {
            (Some(first), Some(last)) if last == seq && first <= last && first > 0 => Some(first),
            _ => None,
        };
        let first_of_line = stands_from.unwrap_or(seq);
        let expected_prev = if action == "sys_checkpoint" {
            self.checkpoint(&v, &place)?
        } else if first_of_line == 1 {
            if action != "sys_startup" && stands_from.is_none() {
                return Err("a run must start with sys_startup".into());
            }
            self.run_start(&v, &place)?
        } else {
            let Some(p) = self.prev else {
                return Err(format!(
                    "the log starts at event.sequence {seq} without a checkpoint: earlier lines \
                     are missing (give every kept file, oldest first)"
                ));
            };
            if run_id != self.run {
                return Err(format!("run {run_id} appears inside run {}", self.run));
            }
            if first_of_line != self.last_seq + 1 {
                return Err(format!(
                    "event.sequence goes from {} to {seq}: lines were deleted, inserted or \
                     reordered here",
                    self.last_seq
                ));
            }
            p
        };
        if link(self.opts.key, &expected_prev, un.body.as_bytes()) != un.chain {
            return Err(if self.opts.key.is_none() && self.prev.is_none() {
                "observer.chain does not match: the line was modified (or the log was written \
                 with an integrity key: pass --integrity-key)"
                    .into()
            } else {
                "observer.chain does not match: this line, or the one before it, was modified"
                    .into()
            });
        }
        if action == "heartbeat"
            && let Some(h) = v["observer"]["head"]["chain"].as_str()
            && h != hex::encode(expected_prev)
        {
            return Err("observer.head is not the chain value of the line before it".into());
        }
        self.check_seal(&un, &place.timestamp)?;
        if self.opts.expect_head == Some(un.chain) {
            self.sum.head_reached = Some(place.clone());
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, un.chain));
        self.prev = Some(un.chain);
        self.last_seq = seq;
        self.last_action = action;
        self.sum.lines += 1;
        self.sum.last = Some(place);
        Ok(())
    }

    /// The first line of a run: where its chain starts from, checked against the line before.
    fn run_start(&mut self, v: &Value, place: &Place) -> Result<[u8; 32], String> {
        let run_id = &place.run_id;
        let new_chain = v["observer"]["new_chain"].as_str();
        let cp = point(v);
        let before = self.prev;
        let previous_run = std::mem::replace(&mut self.run, run_id.clone());
        let previous_legacy = self.run_legacy;
        let finished = self.last_action == "sys_shutdown";
        self.run_legacy = cp.is_none() && new_chain.is_none();
        self.sum.runs += 1;
        let start = match (&cp, before) {
            (Some(cp), Some(p)) if cp.head == p => {
                if !finished {
                    self.sum.notes.push(format!(
                        "run {previous_run} ended without sys_shutdown (it stopped abruptly); \
                         run {run_id} continues from its last line, so none of its lines is \
                         missing"
                    ));
                }
                cp.head
            }
            (Some(cp), Some(_)) => {
                let found = cp.run_id == previous_run
                    && self
                        .recent
                        .iter()
                        .any(|&(s, h)| s == cp.sequence && h == cp.head);
                if !found {
                    return Err(format!(
                        "run {run_id} continues from event.sequence {} of run {} (chain {}…), \
                         which is not the line before it (event.sequence {} of run \
                         {previous_run}): a run was deleted, duplicated, reordered or replayed \
                         here, or lines were cut",
                        cp.sequence,
                        cp.run_id,
                        short(&cp.head),
                        self.last_seq
                    ));
                }
                let msg = format!(
                    "run {run_id} continues from event.sequence {} of run {previous_run}, but \
                     that run goes on to event.sequence {}: those lines were written after \
                     observer last saved its state and it stopped abruptly, or they were added",
                    cp.sequence, self.last_seq
                );
                if !self.opts.accept_restart {
                    return Err(format!("{msg}; --accept-restart accepts it"));
                }
                self.sum.notes.push(msg);
                cp.head
            }
            (Some(cp), None) => {
                self.sum.begins = Some((
                    place.clone(),
                    format!(
                        "run {run_id}, which continues from event.sequence {} of run {} (not \
                         in these files)",
                        cp.sequence, cp.run_id
                    ),
                ));
                cp.head
            }
            (None, before) => {
                let why = match new_chain {
                    Some(why) => format!("starts a new chain ({why})"),
                    None => {
                        self.sum.legacy_runs += 1;
                        "was written by an earlier version of observer, which did not link runs"
                            .to_string()
                    }
                };
                match before {
                    None => {
                        self.sum.begins =
                            Some((place.clone(), format!("run {run_id}, which {why}")))
                    }
                    Some(_) if self.run_legacy && previous_legacy => {}
                    Some(_) if previous_legacy => self.sum.notes.push(format!(
                        "run {run_id} {why} after runs of an earlier version of observer (an \
                         upgrade): nothing links it to them"
                    )),
                    Some(_) => {
                        let msg = format!(
                            "run {run_id} {why} after earlier runs: the host's state file was \
                             lost or deleted, or runs were spliced in here"
                        );
                        if !self.opts.accept_restart {
                            return Err(format!("{msg}; --accept-restart accepts it"));
                        }
                        self.sum.notes.push(msg);
                    }
                }
                genesis(run_id)
            }
        };
        if before.is_some() && !finished {
            self.sum.unfinished_runs.push(previous_run);
        }
        self.recent.clear();
        Ok(start)
    }

    /// A file's first line after rotation: it says where the chain stood.
    fn checkpoint(&mut self, v: &Value, place: &Place) -> Result<[u8; 32], String> {
        let cp = point(v).ok_or("sys_checkpoint without observer.checkpoint")?;
        if cp.run_id != place.run_id || cp.sequence != place.sequence {
            return Err("the checkpoint names another run or sequence than its own line".into());
        }
        match self.prev {
            Some(p) => {
                if place.run_id != self.run || place.sequence != self.last_seq || cp.head != p {
                    return Err(format!(
                        "the checkpoint continues from event.sequence {} of run {} (chain {}…), \
                         but the line before it is event.sequence {} of run {}: lines or files \
                         are missing or out of order here",
                        cp.sequence,
                        cp.run_id,
                        short(&cp.head),
                        self.last_seq,
                        self.run
                    ));
                }
            }
            None => {
                self.run = place.run_id.clone();
                self.run_legacy = false;
                self.sum.begins = Some((
                    place.clone(),
                    format!(
                        "a checkpoint of run {} after event.sequence {} (older files were \
                         removed or not given)",
                        cp.run_id, cp.sequence
                    ),
                ));
            }
        }
        Ok(cp.head)
    }

    fn check_seal(&mut self, un: &Unsealed, timestamp: &str) -> Result<(), String> {
        let Some((epoch, tag)) = un.seal else {
            if let Some(vk) = &self.opts.verify_key {
                if self.sum.sealed > 0 {
                    return Err(
                        "the line is not sealed, though earlier lines are: its seal was removed \
                         or the line was forged"
                            .into(),
                    );
                }
                if unix_seconds(timestamp).is_none_or(|t| t > vk.schedule.start) {
                    return Err(
                        "the line is not sealed, though it is dated after the sealing key was \
                         made: its seal was removed or the line was forged"
                            .into(),
                    );
                }
            }
            self.sum.unsealed += 1;
            return Ok(());
        };
        if let Some(last) = self.last_epoch
            && epoch < last
        {
            return Err(format!(
                "sealed in epoch {epoch} after a line of epoch {last}: lines or runs were \
                 reordered or spliced in"
            ));
        }
        if let Some(vk) = &mut self.opts.verify_key {
            let now = vk.schedule.epoch_at(unix_now());
            if epoch > now + 1 {
                return Err(format!(
                    "sealed in epoch {epoch}, which has not begun (it is epoch {now})"
                ));
            }
            if vk.tag(epoch, &un.chain) != tag {
                return Err(format!(
                    "observer.seal does not match for epoch {epoch}: the line was forged or \
                     modified (or the log was sealed under another verification key)"
                ));
            }
        }
        self.last_epoch = Some(epoch);
        self.sum.sealed += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<Summary, Problem> {
        let Some(last) = self.sum.last.clone() else {
            return Err(Problem {
                file: PathBuf::new(),
                line: 0,
                what: "the log holds no line".into(),
                proven: None,
            });
        };
        let end = |what: String| Problem {
            file: last.file.clone(),
            line: last.line,
            what,
            proven: Some(Box::new(last.clone())),
        };
        if self.last_action != "sys_shutdown" {
            if !self.opts.open {
                return Err(end(format!(
                    "the log ends at event.sequence {} of run {} without sys_shutdown: its last \
                     lines were cut, or observer stopped abruptly (pass --open if it is still \
                     writing this log)",
                    last.sequence, last.run_id
                )));
            }
            self.sum.unfinished_runs.push(self.run.clone());
        }
        if let Some(h) = self.opts.expect_head
            && self.sum.head_reached.is_none()
        {
            return Err(end(format!(
                "the log does not reach the expected head {}: lines after the head were cut, or \
                 the head is of another log",
                hex::encode(h)
            )));
        }
        if self.sum.seals_checked && self.sum.sealed == 0 {
            return Err(end(
                "a verification key was given but no line is sealed: the seals were removed, \
                 or the log was written without a sealing state"
                    .into(),
            ));
        }
        Ok(self.sum)
    }
}
