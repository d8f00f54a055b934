//! Sinks: where events go, one JSON object per line, in the order the pipeline made them (and
//! gave them their `event.sequence`).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::event::Event;
use crate::integrity::Chain;

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
    Stream(BufWriter<Box<dyn Write + Send>>),
    File {
        path: PathBuf,
        file: BufWriter<File>,
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

pub struct Sink {
    out: Out,
    chain: Chain,
    format: Format,
    written: u64,
    line: String,
}

impl Sink {
    pub fn stdout(chain: Chain) -> Self {
        Self::new(Box::new(io::stdout()), chain)
    }

    /// Appends to `path`, creating it readable by its owner only: events describe who did what.
    pub fn file(path: &Path, rotation: Option<Rotation>, chain: Chain) -> Result<Self, SinkError> {
        let (f, size) = open_private(path)?;
        Ok(Self {
            out: Out::File {
                path: path.to_path_buf(),
                file: BufWriter::with_capacity(64 * 1024, f),
                size,
                rotation,
            },
            chain,
            format: Format::Json,
            written: 0,
            line: String::with_capacity(1024),
        })
    }

    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    pub fn new(out: Box<dyn Write + Send>, chain: Chain) -> Self {
        Self {
            out: Out::Stream(BufWriter::with_capacity(64 * 1024, out)),
            chain,
            format: Format::Json,
            written: 0,
            line: String::with_capacity(1024),
        }
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn emit(&mut self, event: Event) -> Result<(), SinkError> {
        self.line.clear();
        match self.format {
            Format::Json => {
                let json = serde_json::to_string(&event)?;
                self.line.push_str(&self.chain.seal(&json));
            }
            Format::Pretty => self.line.push_str(&pretty(&serde_json::to_value(&event)?)),
        }
        self.line.push('\n');
        match &mut self.out {
            Out::Stream(w) => w.write_all(self.line.as_bytes()).map_err(write_err)?,
            Out::File {
                path,
                file,
                size,
                rotation,
            } => {
                if let Some(r) = rotation
                    && *size > 0
                    && *size + self.line.len() as u64 > r.max_bytes
                {
                    file.flush().map_err(write_err)?;
                    rotate(path, r.keep)?;
                    let (f, s) = open_private(path)?;
                    *file = BufWriter::with_capacity(64 * 1024, f);
                    *size = s;
                }
                file.write_all(self.line.as_bytes()).map_err(write_err)?;
                *size += self.line.len() as u64;
            }
        }
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        match &mut self.out {
            Out::Stream(w) => w.flush().map_err(write_err),
            Out::File { file, .. } => file.flush().map_err(write_err),
        }
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
