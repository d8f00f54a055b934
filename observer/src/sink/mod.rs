//! Sinks: where events go, one JSON object per line, in the order the pipeline made them (and
//! gave them their `event.sequence`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::event::{Clock, Event, Unwritten};

pub mod integrity;
pub mod metrics;
mod queue;
use integrity::Chain;
pub use queue::{QUEUE_EVENTS, SinkStats, Writer};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the output was closed by its reader")]
    Closed,
    #[error("cannot open output file {path}: {source}; check the directory exists and is writable")]
    Open { path: PathBuf, source: io::Error },
    #[error("writing an event failed: {0}")]
    Write(#[source] io::Error),
    #[error("encoding an event failed: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("rotating output file {path} failed: {source}")]
    Rotate { path: PathBuf, source: io::Error },
}

fn write_err(e: io::Error) -> SinkError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        SinkError::Closed
    } else {
        SinkError::Write(e)
    }
}

/// Size-based rotation of a file sink: `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2`, ...
/// and files past `keep` are removed. The hash chain runs on across files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

enum Out {
    Stream(Box<dyn Write + Send>),
    File {
        path: PathBuf,
        file: File,
        /// Bytes in the file that hold whole, written lines.
        size: u64,
        rotation: Option<Rotation>,
    },
}

fn open_private(path: &Path) -> Result<(File, u64), SinkError> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| SinkError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((f, size))
}

/// How lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line, hash-chained: for machines.
    #[default]
    Json,
    /// One short line per event: for people at a terminal (no chain).
    Pretty,
}

/// Why events did not reach the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The queue to the writer was full: the output is slower than the traffic.
    QueueFull,
    /// The output refused the write (disk full, I/O error).
    WriteFailed,
}

/// Events, by sequence, that were not written. Runs are contiguous because events are made,
/// queued and written in sequence order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gap {
    pub first: u64,
    pub last: u64,
    pub queue_full: u64,
    pub write_failed: u64,
}

impl Gap {
    fn new(seq: u64, cause: Cause) -> Self {
        let mut g = Gap {
            first: seq,
            last: seq,
            ..Gap::default()
        };
        g.count(cause, 1);
        g
    }

    fn count(&mut self, cause: Cause, n: u64) {
        match cause {
            Cause::QueueFull => self.queue_full += n,
            Cause::WriteFailed => self.write_failed += n,
        }
    }

    /// Adds a run of events next to this one.
    fn extend(&mut self, other: Gap) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.queue_full += other.queue_full;
        self.write_failed += other.write_failed;
    }

    /// Adds one more lost event right after the gap.
    pub fn push(&mut self, seq: u64, cause: Cause) {
        self.last = self.last.max(seq);
        self.count(cause, 1);
    }

    pub fn events(&self) -> u64 {
        self.queue_full + self.write_failed
    }
}

/// Writes events as lines. Lines are collected and written in batches (`flush`); a batch the
/// output refuses is taken back whole (the file is cut back to its last whole line and the hash
/// chain rewound), counted, and reported by a loss line that takes the place of the unwritten
/// events as soon as the output accepts writes again.
pub struct Sink {
    out: Out,
    /// The chain after the last line in `pending`.
    chain: Chain,
    /// The chain after the last line written.
    committed: Chain,
    format: Format,
    written: u64,
    pending: Vec<u8>,
    /// The line being encoded, kept for its capacity.
    body: Vec<u8>,
    /// Sequence numbers of the events in `pending` (a gap's loss line not included).
    pending_seqs: Option<(u64, u64)>,
    /// Events in `pending` (a gap's loss line not included).
    pending_events: u64,
    pending_lines: u64,
    /// Events not written and not yet reported.
    gap: Option<Gap>,
    /// Whether the gap's loss line is in `pending`.
    gap_pending: bool,
    unwritten_total: u64,
    write_failed: u64,
    run_id: String,
    clock: Clock,
}

impl Sink {
    pub fn stdout(chain: Chain) -> Self {
        Self::new(Box::new(io::stdout()), chain)
    }

    /// Appends to `path`, creating it readable by its owner only: events describe who did what.
    pub fn file(path: &Path, rotation: Option<Rotation>, chain: Chain) -> Result<Self, SinkError> {
        let (file, size) = open_private(path)?;
        Ok(Self::with_out(
            Out::File {
                path: path.to_path_buf(),
                file,
                size,
                rotation,
            },
            chain,
        ))
    }

    pub fn new(out: Box<dyn Write + Send>, chain: Chain) -> Self {
        Self::with_out(Out::Stream(out), chain)
    }

    fn with_out(out: Out, chain: Chain) -> Self {
        Self {
            out,
            committed: chain.clone(),
            run_id: chain.run_id().to_string(),
            chain,
            format: Format::Json,
            written: 0,
            pending: Vec::with_capacity(64 * 1024),
            body: Vec::with_capacity(2048),
            pending_seqs: None,
            pending_events: 0,
            pending_lines: 0,
            gap: None,
            gap_pending: false,
            unwritten_total: 0,
            write_failed: 0,
            clock: Clock::now(),
        }
    }

    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The clock that dates the sink's own loss lines.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Events that could not be written, reported or not.
    pub fn unwritten(&self) -> u64 {
        self.unwritten_total
    }

    /// Events the output refused (not those dropped before the sink).
    pub fn write_failed(&self) -> u64 {
        self.write_failed
    }

    /// Events that could not be written and are not reported yet.
    pub fn pending_gap(&self) -> Option<Gap> {
        self.gap
    }

    /// Notes events that were dropped before they reached the sink; they follow every event
    /// the sink was given so far.
    pub fn note_gap(&mut self, gap: Gap) -> Result<(), SinkError> {
        self.unwritten_total += gap.events();
        if self.gap_pending {
            // The loss line in `pending` covers an earlier run of events; write it (and what
            // follows it) first, or merge everything into one run if that fails.
            self.flush_pending()?;
        }
        match &mut self.gap {
            Some(g) => g.extend(gap),
            None => self.gap = Some(gap),
        }
        Ok(())
    }

    pub fn emit(&mut self, event: Event) -> Result<(), SinkError> {
        // Encoded into a buffer kept from line to line: no allocation per event.
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        let r = self.emit_into(&event, &mut body);
        self.body = body;
        r
    }

    fn emit_into(&mut self, event: &Event, body: &mut Vec<u8>) -> Result<(), SinkError> {
        let seq = event.meta().sequence;
        self.encode_into(event, body)?;
        let mut gap_body = self.unreported_gap_line()?;
        let need = self.sealed_len(body) + gap_body.as_ref().map_or(0, |g| self.sealed_len(g));
        if self.needs_rotation(need) {
            if self.flush_pending()? {
                self.rotate_now()?;
            } else {
                // What was pending joined the gap: its loss line must cover it too.
                gap_body = self.unreported_gap_line()?;
            }
        }
        if let Some(g) = gap_body {
            self.gap_pending = true;
            self.push_sealed(&g, None);
        }
        self.push_sealed(body, Some(seq));
        Ok(())
    }

    /// The loss line for events not written, if it is not already on its way.
    fn unreported_gap_line(&self) -> Result<Option<Vec<u8>>, SinkError> {
        match self.gap {
            Some(g) if !self.gap_pending => Ok(Some(self.encode(&self.gap_line(g))?)),
            _ => Ok(None),
        }
    }

    fn encode(&self, event: &Event) -> Result<Vec<u8>, SinkError> {
        let mut out = Vec::new();
        self.encode_into(event, &mut out)?;
        Ok(out)
    }

    fn encode_into(&self, event: &Event, out: &mut Vec<u8>) -> Result<(), SinkError> {
        match self.format {
            Format::Json => serde_json::to_writer(&mut *out, event)?,
            Format::Pretty => {
                out.extend_from_slice(pretty(&serde_json::to_value(event)?).as_bytes())
            }
        }
        Ok(())
    }

    fn sealed_len(&self, body: &[u8]) -> u64 {
        let chain = match self.format {
            Format::Json => Chain::SEAL_BYTES,
            Format::Pretty => 0,
        };
        (body.len() + chain + 1) as u64
    }

    fn needs_rotation(&self, more: u64) -> bool {
        match &self.out {
            Out::File {
                size,
                rotation: Some(r),
                ..
            } => {
                let now = *size + self.pending.len() as u64;
                now > 0 && now + more > r.max_bytes
            }
            _ => false,
        }
    }

    fn gap_line(&self, g: Gap) -> Event {
        let mut sink = serde_json::Map::new();
        if g.queue_full > 0 {
            sink.insert("queue_full".into(), g.queue_full.into());
        }
        if g.write_failed > 0 {
            sink.insert("write_failed".into(), g.write_failed.into());
        }
        let mut loss = serde_json::Map::new();
        loss.insert("sink".into(), sink.into());
        let mut ev =
            crate::event::loss_event(self.clock.wall(Clock::mono_now()), &self.run_id, loss);
        if let Event::Loss(l) = &mut ev {
            l.observer.unwritten = Some(Unwritten {
                first_sequence: g.first,
                last_sequence: g.last,
            });
        }
        // The line takes the place of the events it reports: the sequence runs on.
        ev.meta_mut().sequence = g.last;
        ev
    }

    fn push_sealed(&mut self, body: &[u8], seq: Option<u64>) {
        match self.format {
            Format::Json => self.chain.seal_into(body, &mut self.pending),
            Format::Pretty => self.pending.extend_from_slice(body),
        }
        self.pending.push(b'\n');
        self.pending_lines += 1;
        if let Some(s) = seq {
            self.pending_events += 1;
            self.pending_seqs = Some(match self.pending_seqs {
                Some((first, _)) => (first, s),
                None => (s, s),
            });
        }
    }

    fn rotate_now(&mut self) -> Result<(), SinkError> {
        if let Out::File {
            path,
            file,
            size,
            rotation: Some(r),
        } = &mut self.out
        {
            // What was written stays: the closed file is complete.
            let _ = file.sync_data();
            if let Err(e) = rotate(path, r.keep) {
                tracing::warn!("{e}; writing on in the same file");
                return Ok(());
            }
            let (f, s) = open_private(path)?;
            *file = f;
            *size = s;
        }
        Ok(())
    }

    /// Counts events `first..=last` (`n` of them) as unwritten.
    fn lose(&mut self, first: u64, last: u64, n: u64) {
        self.unwritten_total += n;
        self.write_failed += n;
        let g = Gap {
            first,
            last,
            write_failed: n,
            queue_full: 0,
        };
        match &mut self.gap {
            Some(existing) => existing.extend(g),
            None => self.gap = Some(g),
        }
    }

    /// Writes what is pending. Ok(false) when the output refused it: then nothing of it is in
    /// the output and its events are counted in the gap.
    fn flush_pending(&mut self) -> Result<bool, SinkError> {
        if self.pending.is_empty() {
            return Ok(true);
        }
        let result = match &mut self.out {
            Out::Stream(w) => w.write_all(&self.pending).and_then(|_| w.flush()),
            Out::File { file, size, .. } => {
                let r = file.write_all(&self.pending);
                if r.is_ok() {
                    *size += self.pending.len() as u64;
                } else {
                    // Cut a partly written batch back to the last whole line, so the log
                    // stays verifiable and the lines can be reported as unwritten.
                    let _ = file.set_len(*size);
                }
                r
            }
        };
        match result {
            Ok(()) => {
                self.written += self.pending_lines;
                self.committed = self.chain.clone();
                if self.gap_pending {
                    if let Some(g) = self.gap.take() {
                        tracing::warn!(
                            events = g.events(),
                            first_sequence = g.first,
                            last_sequence = g.last,
                            "writing works again; the events that could not be written are \
                             reported in the output"
                        );
                    }
                    self.gap_pending = false;
                }
                self.clear_pending();
                Ok(true)
            }
            Err(e) => {
                let e = write_err(e);
                if matches!(e, SinkError::Closed) {
                    return Err(e);
                }
                if self.gap.is_none() {
                    tracing::warn!(
                        "{e}; observer keeps running, counts the events it cannot write and \
                         reports them when writing works again"
                    );
                }
                self.chain = self.committed.clone();
                self.gap_pending = false;
                if let Some((first, last)) = self.pending_seqs {
                    self.lose(first, last, self.pending_events);
                }
                self.clear_pending();
                Ok(false)
            }
        }
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_seqs = None;
        self.pending_events = 0;
        self.pending_lines = 0;
    }

    /// Writes the pending lines. Only a closed output is an error: a refused write is counted
    /// and reported later.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.flush_pending().map(|_| ())
    }

    /// Flushes, then asks the kernel to put the file on disk.
    pub fn sync(&mut self) -> Result<(), SinkError> {
        self.flush()?;
        if let Out::File { file, .. } = &self.out {
            let _ = file.sync_data();
        }
        Ok(())
    }
}

/// A field for a terminal: control characters and quotes escaped, so traffic cannot move the
/// cursor, clear the screen or fake another line.
fn term(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.escape_debug().to_string(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn endpoint(v: &serde_json::Value) -> String {
    match (v["ip"].as_str(), v["port"].as_u64(), v["address"].as_str()) {
        (Some(ip), Some(p), _) if ip.contains(':') => format!("[{ip}]:{p}"),
        (Some(ip), Some(p), _) => format!("{ip}:{p}"),
        (None, Some(p), _) => format!("*:{p}"),
        (_, _, Some(a)) => term(&serde_json::Value::String(a.into())),
        _ => "?".into(),
    }
}

/// One human line per event.
fn pretty(e: &serde_json::Value) -> String {
    let ts = e["@timestamp"].as_str().unwrap_or_default();
    let action = term(&e["event"]["action"]);
    let seq = &e["event"]["sequence"];
    if e.get("http").is_some() {
        let ms = e["event"]["duration"].as_u64().unwrap_or(0) as f64 / 1e6;
        let who = match e["user"]["hash"].as_str() {
            Some(h) => format!(" user {}", &h[..h.len().min(8)]),
            None => String::new(),
        };
        let query = match e["url"]["query"].as_str() {
            Some(q) => format!("?{}", q.escape_debug()),
            None => String::new(),
        };
        format!(
            "{ts} #{seq} {} → {} {} {}{query} {} {action} {}B/{}B {ms:.1}ms {}[{}] {}{who}",
            endpoint(&e["source"]),
            endpoint(&e["destination"]),
            term(&e["http"]["request"]["method"]),
            term(&e["url"]["path"]),
            e["http"]["response"]["status_code"],
            e["http"]["request"]["bytes"],
            e["http"]["response"]["bytes"],
            term(&e["process"]["name"]),
            e["process"]["pid"],
            term(&e["observer"]["role"]),
        )
    } else if e["event"]["kind"] == "alert" {
        let a = &e["observer"]["alert"];
        format!(
            "{ts} #{seq} ALERT {} ({action}) {}={}: {} in {} s, threshold {}{}",
            term(&e["rule"]["name"]),
            term(&a["key"]["field"]),
            term(&a["key"]["value"]),
            a["count"],
            a["window_seconds"],
            a["threshold"],
            match a["suppressed"].as_u64() {
                Some(n) => format!(" (summary: {n} more during cooldown)"),
                None => String::new(),
            }
        )
    } else {
        let detail = match action.as_str() {
            "loss" => format!("LOST {}", e["observer"]["loss"]),
            "heartbeat" => {
                let m = &e["observer"]["metrics"];
                format!(
                    "exchanges {} open connections {} rss {} KiB",
                    m["exchanges"], m["connections"]["open"], m["process"]["rss_kib"]
                )
            }
            _ => format!("run {}", term(&e["observer"]["run_id"])),
        };
        format!("{ts} #{seq} {action} {detail}")
    }
}

/// Shifts `path` to `path.1`, `path.1` to `path.2`, ..., dropping what is past `keep`.
fn rotate(path: &Path, keep: u32) -> Result<(), SinkError> {
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    let err = |source| SinkError::Rotate {
        path: path.to_path_buf(),
        source,
    };
    if keep == 0 {
        return std::fs::remove_file(path).map_err(err);
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1)).map_err(err)?;
        }
    }
    std::fs::rename(path, numbered(1)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::lifecycle_event;
    use std::sync::{Arc, Mutex};

    fn sequences(text: &str) -> Vec<u64> {
        text.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["sequence"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_line_per_event_in_order() {
        let buf = Shared::default();
        let mut sink = Sink::new(Box::new(buf.clone()), Chain::new("r", None));
        for i in 1..=3 {
            let mut ev = lifecycle_event("sys_startup", "t".into(), "r", vec![1], None);
            ev.meta_mut().sequence = i;
            sink.emit(ev).unwrap();
        }
        sink.flush().unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let seqs = sequences(&text);
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    /// An output that refuses writes while `fail` is set, like a full disk.
    #[derive(Clone, Default)]
    struct Flaky {
        buf: Arc<Mutex<Vec<u8>>>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }
    impl Write for Flaky {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.buf.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Flaky {
        fn set_failing(&self, on: bool) {
            self.fail.store(on, std::sync::atomic::Ordering::Relaxed);
        }
        fn text(&self) -> String {
            String::from_utf8(self.buf.lock().unwrap().clone()).unwrap()
        }
        fn lines(&self) -> Vec<serde_json::Value> {
            self.text()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
        fn verify(
            &self,
            name: &str,
        ) -> Result<crate::sink::integrity::Summary, crate::sink::integrity::Problem> {
            let dir = std::env::temp_dir().join(format!("observer-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("log");
            std::fs::write(&path, self.buf.lock().unwrap().as_slice()).unwrap();
            let r = crate::sink::integrity::verify(std::slice::from_ref(&path), None);
            std::fs::remove_dir_all(&dir).unwrap();
            r
        }
    }

    fn numbered(seq: u64, last: bool) -> Event {
        let action = match (seq, last) {
            (1, _) => "sys_startup",
            (_, true) => "sys_shutdown",
            _ => "sys_monitor",
        };
        let mut ev = lifecycle_event(action, "t".into(), "r", vec![], None);
        ev.meta_mut().sequence = seq;
        ev
    }

    #[test]
    fn refused_writes_are_counted_and_reported_in_their_place() {
        let out = Flaky::default();
        let mut sink = Sink::new(Box::new(out.clone()), Chain::new("r", None));
        sink.emit(numbered(1, false)).unwrap();
        sink.emit(numbered(2, false)).unwrap();
        sink.flush().unwrap();
        out.set_failing(true);
        sink.emit(numbered(3, false)).unwrap();
        sink.emit(numbered(4, false)).unwrap();
        sink.flush().unwrap();
        sink.emit(numbered(5, false)).unwrap();
        sink.flush().unwrap();
        assert_eq!(sink.unwritten(), 3);
        assert_eq!(sink.written(), 2);
        out.set_failing(false);
        sink.emit(numbered(6, false)).unwrap();
        sink.emit(numbered(7, true)).unwrap();
        sink.flush().unwrap();
        let lines = out.lines();
        let seqs = sequences(&out.text());
        assert_eq!(seqs, vec![1, 2, 5, 6, 7]);
        let loss = &lines[2]["observer"];
        assert_eq!(lines[2]["event"]["action"], "loss");
        assert_eq!(loss["loss"]["sink"]["write_failed"], 3);
        assert_eq!(loss["unwritten"]["first_sequence"], 3);
        assert_eq!(loss["unwritten"]["last_sequence"], 5);
        assert_eq!(out.verify("refused").unwrap().lines, 5);
        // Without the loss line the hole is tampering.
        let text = out.text();
        let cut: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| l)
            .collect();
        *out.buf.lock().unwrap() = (cut.join("\n") + "\n").into_bytes();
        let e = out.verify("refused-cut").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn drops_before_the_sink_and_refused_writes_make_one_report() {
        let out = Flaky::default();
        let mut sink = Sink::new(Box::new(out.clone()), Chain::new("r", None));
        sink.emit(numbered(1, false)).unwrap();
        sink.note_gap(Gap::new(2, Cause::QueueFull)).unwrap();
        sink.note_gap(Gap::new(3, Cause::QueueFull)).unwrap();
        out.set_failing(true);
        sink.emit(numbered(4, false)).unwrap();
        sink.flush().unwrap();
        sink.note_gap(Gap::new(5, Cause::QueueFull)).unwrap();
        out.set_failing(false);
        sink.emit(numbered(6, false)).unwrap();
        sink.emit(numbered(7, true)).unwrap();
        sink.flush().unwrap();
        let lines = out.lines();
        let seqs = sequences(&out.text());
        // Event 1 was pending when the output failed, so it is part of the report too.
        assert_eq!(seqs, vec![5, 6, 7]);
        let loss = &lines[0]["observer"];
        assert_eq!(loss["loss"]["sink"]["queue_full"], 3);
        assert_eq!(loss["loss"]["sink"]["write_failed"], 2);
        assert_eq!(loss["unwritten"]["first_sequence"], 1);
        assert_eq!(sink.unwritten(), 5);
        assert_eq!(out.verify("merged").unwrap().lines, 3);
    }

    #[test]
    fn rotation_bounds_files_and_keeps_the_chain() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("observer-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let rotation = Rotation {
            max_bytes: 2000,
            keep: 3,
        };
        let mut sink = Sink::file(&path, Some(rotation), Chain::new("run-x", None)).unwrap();
        for i in 1..=40 {
            let action = if i == 1 {
                "sys_startup"
            } else {
                "sys_shutdown"
            };
            let mut ev = lifecycle_event(action, "t".into(), "run-x", vec![], None);
            ev.meta_mut().sequence = i;
            sink.emit(ev).unwrap();
        }
        sink.flush().unwrap();
        let files: Vec<PathBuf> = (1..=3)
            .rev()
            .map(|n| PathBuf::from(format!("{}.{n}", path.display())))
            .chain([path.clone()])
            .collect();
        for f in &files {
            let m = std::fs::metadata(f).unwrap();
            assert!(m.len() <= 2000, "{f:?} is {} bytes", m.len());
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
        }
        assert!(!PathBuf::from(format!("{}.4", path.display())).exists());
        // The kept files verify as one continuous log from wherever they start.
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        let seqs = sequences(&text);
        assert_eq!(*seqs.last().unwrap(), 40);
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "nothing lost across rotations"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pretty_lines_escape_traffic() {
        let v = serde_json::json!({
            "@timestamp": "t", "event": {"action": "http_request", "sequence": 7, "duration": 1500000, "kind": "event"},
            "http": {"request": {"method": "GET", "bytes": 10}, "response": {"status_code": 200, "bytes": 20}},
            "url": {"path": "/a\r\nFAKE 200\u{1b}[2J"},
            "source": {"ip": "::1", "port": 5}, "destination": {"port": 80},
            "process": {"name": "py", "pid": 3}, "observer": {"role": "server"}
        });
        let line = pretty(&v);
        assert!(
            !line.contains('\n') && !line.contains('\r') && !line.contains('\u{1b}'),
            "{line}"
        );
        assert!(line.contains("[::1]:5 → *:80 GET /a\\r\\nFAKE"), "{line}");
        assert!(
            line.contains("200 http_request 10B/20B 1.5ms py[3] server"),
            "{line}"
        );
    }

    #[test]
    fn file_sink_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("observer-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut sink = Sink::file(&path, None, Chain::new("r", None)).unwrap();
        sink.emit(lifecycle_event(
            "sys_startup",
            "t".into(),
            "r",
            vec![],
            None,
        ))
        .unwrap();
        sink.flush().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
