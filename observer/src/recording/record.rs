//! Recordings: the raw capture stream of a run, with everything the pipeline asked the host, so
//! that `observer replay` runs the same userspace pipeline without privileges and yields the same
//! events.
//!
//! Format: a magic line, a JSON header line, then entries of `tag: u8, len: u32 LE, payload`.
//! A kernel record is followed by the host answers its handling needed, in the order asked.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::addr::Endpoints;
use crate::capture::CaptureReport;
use crate::conn::host::{Host, ProcessInfo};

const MAGIC: &[u8] = b"OBSERVER-RECORDING 2\n";
/// Format 1 differs in one field of data records: the socket's records lost since the one
/// before, where format 2 has the kernel's running count. Read and converted.
const MAGIC_1: &[u8] = b"OBSERVER-RECORDING 1\n";
/// Largest entry accepted when reading: kernel records are under 5 KiB, answers small.
const MAX_ENTRY: usize = 1 << 20;

const TAG_KERNEL: u8 = 1;
const TAG_ENDPOINTS: u8 = 2;
const TAG_PROCESS: u8 = 3;
const TAG_TICK: u8 = 4;
const TAG_BLIND: u8 = 5;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub run_id: String,
    /// Realtime minus monotonic, nanoseconds, as a string (i128).
    pub clock_offset_ns: String,
    pub version: String,
    /// The processes targeted at start, as `sys_startup` lists them.
    #[serde(default)]
    pub targets: Vec<u32>,
    /// Monotonic time of `sys_startup`.
    #[serde(default)]
    pub started_ns: u64,
    /// `observer.config_hash` of the recorded run's `sys_startup`.
    #[serde(default)]
    pub config_hash: Option<String>,
    /// Where the recorded run's chain started (`sys_startup`'s `observer.checkpoint`), so a
    /// replay chains its lines as the live run did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_from: Option<crate::event::ChainPoint>,
    /// `observer.capture` of the recorded run's `sys_startup`: the kernel it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureReport>,
    /// Or why it started a new chain (`observer.new_chain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_chain: Option<String>,
}

/// Periodic maintenance of the live loop: replayed at the same point of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    pub now_ns: u64,
    /// Kernel-side losses since the previous tick, by counter name.
    pub losses: Vec<(String, u64)>,
    /// observer's own resource use, when this tick made a heartbeat.
    #[serde(default)]
    pub heartbeat: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Kernel(Vec<u8>),
    Endpoints(Option<Endpoints>),
    Process(ProcessInfo),
    Tick(Tick),
    Blind(Blind),
}

/// A target whose TLS observer could not hook, as found live: replayed as the same
/// `sys_monitor_disabled` event at the same place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blind {
    pub now_ns: u64,
    pub pid: u32,
    pub name: Option<String>,
    pub executable: Option<String>,
    pub reason: String,
}

impl Blind {
    pub fn event(&self, clock: &crate::event::Clock, run_id: &str) -> crate::event::Event {
        crate::event::blind_event(
            clock.wall(self.now_ns),
            run_id,
            crate::event::BlindProcess {
                pid: self.pid,
                name: self.name.clone(),
                executable: self.executable.clone(),
            },
            self.reason.clone(),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Create(#[from] crate::files::PrivateFileError),
    #[error("not an observer recording (bad magic line)")]
    Magic,
    #[error("damaged recording: {0}")]
    Damaged(String),
}

pub struct Writer {
    out: BufWriter<File>,
}

impl Writer {
    pub fn create(path: &Path, header: &Header) -> Result<Self, RecordError> {
        // Recordings hold raw traffic, secrets included: owner-only, never appended to.
        let f = crate::files::open_private(path, crate::files::Mode::Truncate)?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        out.write_all(MAGIC)?;
        serde_json::to_writer(&mut out, header).map_err(io::Error::other)?;
        out.write_all(b"\n")?;
        Ok(Self { out })
    }

    fn entry(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
        self.out.write_all(&[tag])?;
        self.out.write_all(&(payload.len() as u32).to_le_bytes())?;
        self.out.write_all(payload)
    }

    pub fn write(&mut self, e: &Entry) -> io::Result<()> {
        match e {
            Entry::Kernel(b) => self.entry(TAG_KERNEL, b),
            Entry::Endpoints(x) => self.entry(
                TAG_ENDPOINTS,
                &serde_json::to_vec(x).map_err(io::Error::other)?,
            ),
            Entry::Process(x) => self.entry(
                TAG_PROCESS,
                &serde_json::to_vec(x).map_err(io::Error::other)?,
            ),
            Entry::Tick(x) => {
                self.entry(TAG_TICK, &serde_json::to_vec(x).map_err(io::Error::other)?)
            }
            Entry::Blind(x) => {
                self.entry(TAG_BLIND, &serde_json::to_vec(x).map_err(io::Error::other)?)
            }
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

pub struct Reader<R: Read> {
    input: R,
    pub header: Header,
    /// For a format-1 recording: each socket's running count of lost records, summed from its
    /// per-record counts; `None` for the current format.
    v1_losses: Option<HashMap<(u32, i32), u32>>,
}

/// Sockets whose format-1 loss counts are kept at most; past it the counts start again (one
/// spurious hole at worst).
const V1_SOCKETS: usize = 65536;

/// Rewrites a format-1 kernel record in place as format 2 would hold it.
fn convert_v1(rec: &mut [u8], sums: &mut HashMap<(u32, i32), u32>) {
    use observer_common::{DataEvent, EventKind};
    let word = |rec: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(rec.get(at..at + 4)?.try_into().ok()?))
    };
    let (Some(kind), Some(tgid), Some(fd)) = (word(rec, 8), word(rec, 12), word(rec, 20)) else {
        return;
    };
    let key = (tgid, fd as i32);
    match EventKind::from_u32(kind) {
        Some(EventKind::Data) if rec.len() >= DataEvent::HEADER => {
            let delta = word(rec, 44).unwrap_or(0);
            if sums.len() >= V1_SOCKETS && !sums.contains_key(&key) {
                sums.clear();
            }
            let sum = sums.entry(key).or_insert(0);
            *sum = sum.wrapping_add(delta);
            rec[44..48].copy_from_slice(&sum.to_ne_bytes());
        }
        Some(EventKind::Accept | EventKind::Connect | EventKind::Close) => {
            sums.remove(&key);
        }
        _ => {}
    }
}

impl Reader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        Self::new(BufReader::new(File::open(path)?))
    }
}

impl<R: Read> Reader<R> {
    pub fn new(mut input: R) -> Result<Self, RecordError> {
        let mut magic = vec![0u8; MAGIC.len()];
        input
            .read_exact(&mut magic)
            .map_err(|_| RecordError::Magic)?;
        let v1_losses = if magic == MAGIC {
            None
        } else if magic == MAGIC_1 {
            Some(HashMap::new())
        } else {
            return Err(RecordError::Magic);
        };
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            input.read_exact(&mut b)?;
            if b[0] == b'\n' {
                break;
            }
            line.push(b[0]);
            if line.len() > 64 * 1024 {
                return Err(RecordError::Damaged("header line too long".into()));
            }
        }
        let header = serde_json::from_slice(&line)
            .map_err(|e| RecordError::Damaged(format!("header: {e}")))?;
        Ok(Self {
            input,
            header,
            v1_losses,
        })
    }

    /// The next entry; `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, RecordError> {
        let mut head = [0u8; 5];
        match self.input.read_exact(&mut head[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        self.input
            .read_exact(&mut head[1..])
            .map_err(|_| RecordError::Damaged("truncated entry".into()))?;
        let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
        if len > MAX_ENTRY {
            return Err(RecordError::Damaged(format!("entry of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        self.input
            .read_exact(&mut payload)
            .map_err(|_| RecordError::Damaged("truncated entry".into()))?;
        let json = |what: &str, e: serde_json::Error| RecordError::Damaged(format!("{what}: {e}"));
        Ok(Some(match head[0] {
            TAG_KERNEL => {
                if let Some(sums) = self.v1_losses.as_mut() {
                    convert_v1(&mut payload, sums);
                }
                Entry::Kernel(payload)
            }
            TAG_ENDPOINTS => Entry::Endpoints(
                serde_json::from_slice(&payload).map_err(|e| json("endpoints", e))?,
            ),
            TAG_PROCESS => {
                Entry::Process(serde_json::from_slice(&payload).map_err(|e| json("process", e))?)
            }
            TAG_TICK => Entry::Tick(serde_json::from_slice(&payload).map_err(|e| json("tick", e))?),
            TAG_BLIND => {
                Entry::Blind(serde_json::from_slice(&payload).map_err(|e| json("blind", e))?)
            }
            t => return Err(RecordError::Damaged(format!("unknown entry tag {t}"))),
        }))
    }
}

/// Wraps a host and, when recording, logs every answer it gives.
pub struct RecordingHost<H: Host> {
    inner: H,
    log: Option<Vec<Entry>>,
}

impl<H: Host> RecordingHost<H> {
    pub fn new(inner: H, recording: bool) -> Self {
        Self {
            inner,
            log: recording.then(Vec::new),
        }
    }

    /// Answers given since the last call.
    pub fn take_log(&mut self) -> Vec<Entry> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

impl<H: Host> Host for RecordingHost<H> {
    fn endpoints(&mut self, tgid: u32, fd: i32) -> Option<Endpoints> {
        let a = self.inner.endpoints(tgid, fd);
        if let Some(log) = &mut self.log {
            log.push(Entry::Endpoints(a.clone()));
        }
        a
    }

    fn process(&mut self, tgid: u32) -> ProcessInfo {
        let a = self.inner.process(tgid);
        if let Some(log) = &mut self.log {
            log.push(Entry::Process(a.clone()));
        }
        a
    }

    fn forget(&mut self, tgid: u32) {
        self.inner.forget(tgid);
    }
}

/// Answers from a recording, in the order they were given live.
#[derive(Debug, Default)]
pub struct ReplayHost {
    answers: VecDeque<Entry>,
    /// Questions asked with no recorded answer (a recording from another version).
    pub unanswered: u64,
}

impl ReplayHost {
    pub fn push(&mut self, e: Entry) {
        self.answers.push_back(e);
    }
}

impl Host for ReplayHost {
    fn endpoints(&mut self, _tgid: u32, _fd: i32) -> Option<Endpoints> {
        match self.answers.pop_front() {
            Some(Entry::Endpoints(a)) => a,
            _ => {
                self.unanswered += 1;
                None
            }
        }
    }

    fn process(&mut self, _tgid: u32) -> ProcessInfo {
        match self.answers.pop_front() {
            Some(Entry::Process(a)) => a,
            _ => {
                self.unanswered += 1;
                ProcessInfo::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::SockAddr;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("observer-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.rec");
        let header = Header {
            run_id: "r".into(),
            clock_offset_ns: "-5".into(),
            version: "0".into(),
            targets: vec![1],
            started_ns: 3,
            config_hash: Some("ab".into()),
            chain_from: None,
            capture: None,
            new_chain: Some("a test".into()),
        };
        let entries = vec![
            Entry::Kernel(vec![1, 2, 3]),
            Entry::Endpoints(Some(Endpoints {
                local: Some(SockAddr::Inet("127.0.0.1:80".parse().unwrap())),
                peer: Some(SockAddr::Unix("/run/x".into())),
            })),
            Entry::Endpoints(None),
            Entry::Process(ProcessInfo {
                name: Some("nginx".into()),
                executable: None,
                container: None,
            }),
            Entry::Tick(Tick {
                now_ns: 9,
                losses: vec![("ring_full".into(), 2)],
                heartbeat: None,
            }),
            Entry::Blind(Blind {
                now_ns: 10,
                pid: 7,
                name: Some("server".into()),
                executable: None,
                reason: "Go's crypto/tls".into(),
            }),
        ];
        let mut w = Writer::create(&path, &header).unwrap();
        for e in &entries {
            w.write(e).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.header, header);
        let mut got = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            got.push(e);
        }
        assert_eq!(got, entries);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A format-1 recording's per-record loss counts are read as the running count the
    /// pipeline now expects, starting again for each new socket on a descriptor.
    #[test]
    fn format_1_loss_counts_are_summed() {
        use crate::capture::{Meta, encode};
        use observer_common::Direction;
        let m = |fd| Meta {
            ts_ns: 1,
            tgid: 4,
            tid: 4,
            fd,
        };
        let rec = |fd, lost| encode::data_after_losses(&m(fd), Direction::Ingress, 1, b"x", lost);
        let mut data = MAGIC_1.to_vec();
        data.extend_from_slice(b"{\"run_id\":\"r\",\"clock_offset_ns\":\"0\",\"version\":\"0\"}\n");
        for r in [
            rec(5, 0),
            rec(5, 2),
            rec(5, 0),
            rec(6, 1),
            rec(5, 1),
            encode::conn(&m(5), 3, &[]),
            rec(5, 0),
        ] {
            data.push(TAG_KERNEL);
            data.extend_from_slice(&(r.len() as u32).to_le_bytes());
            data.extend_from_slice(&r);
        }
        let mut r = Reader::new(&data[..]).unwrap();
        let mut counts = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            if let Entry::Kernel(k) = e
                && let Ok(crate::capture::CaptureEvent::Data { socket_losses, .. }) =
                    crate::capture::decode(&k)
            {
                counts.push(socket_losses);
            }
        }
        assert_eq!(counts, vec![0, 2, 2, 1, 3, 0]);
    }

    #[test]
    fn damaged_recordings_are_errors_not_panics() {
        assert!(matches!(Reader::new(&b"nope"[..]), Err(RecordError::Magic)));
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(b"{\"run_id\":\"r\",\"clock_offset_ns\":\"0\",\"version\":\"0\"}\n");
        data.extend_from_slice(&[9, 1, 0, 0, 0, 0]);
        let mut r = Reader::new(&data[..]).unwrap();
        assert!(r.next_entry().is_err());
        let mut data2 = MAGIC.to_vec();
        data2
            .extend_from_slice(b"{\"run_id\":\"r\",\"clock_offset_ns\":\"0\",\"version\":\"0\"}\n");
        data2.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0x7f]);
        let mut r = Reader::new(&data2[..]).unwrap();
        assert!(r.next_entry().is_err());
    }
}
