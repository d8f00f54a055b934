//! Sinks: where events go, one JSON object per line, in the order the pipeline made them (and
//! gave them their `event.sequence`).

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::event::Event;

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
}

fn write_err(e: io::Error) -> SinkError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        SinkError::Closed
    } else {
        SinkError::Write(e)
    }
}

pub struct Sink {
    out: BufWriter<Box<dyn Write + Send>>,
    written: u64,
    line: Vec<u8>,
}

impl Sink {
    pub fn stdout() -> Self {
        Self::new(Box::new(io::stdout()))
    }

    /// Appends to `path`, creating it readable by its owner only: events describe who did what.
    pub fn file(path: &Path) -> Result<Self, SinkError> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| SinkError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self::new(Box::new(f)))
    }

    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: BufWriter::with_capacity(64 * 1024, out),
            written: 0,
            line: Vec::with_capacity(1024),
        }
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn emit(&mut self, event: Event) -> Result<(), SinkError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, &event)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line).map_err(write_err)?;
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::lifecycle_event;
    use std::sync::{Arc, Mutex};

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
        let mut sink = Sink::new(Box::new(buf.clone()));
        for i in 1..=3 {
            let mut ev = lifecycle_event("sys_startup", "t".into(), "r", vec![1], None);
            ev.meta_mut().sequence = i;
            sink.emit(ev).unwrap();
        }
        sink.flush().unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["sequence"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn file_sink_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("observer-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut sink = Sink::file(&path).unwrap();
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
