//! Tamper evidence: every line carries `observer.chain`, a SHA-256 (HMAC-SHA256 with an
//! integrity key) over the previous line's chain value and this line, so a deleted, inserted,
//! reordered, modified or truncated line breaks the chain at a place `observer verify`
//! ([`super::verify`]) names. The chain runs on across files and across runs: a run starts from
//! the last head of the previous run on the host (kept in the state file, [`super::state`]),
//! and `sys_startup` and each file's first line (`sys_checkpoint`) say where it stood.
//! With a sealing key ([`super::seal`]) each line also carries `observer.seal`.
//!
//! The chain value is the last field of the `observer` object, which is the last field of every
//! event, with the seal just before it, so the line without them is recovered byte for byte:
//! no re-serialisation is involved.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::seal::Sealer;
use crate::event::ChainPoint;

pub(super) const FIELD: &str = ",\"chain\":\"";
pub(super) const SEAL_FIELD: &str = ",\"seal\":{\"epoch\":";
pub(super) const TAG_FIELD: &str = ",\"tag\":\"";
pub(super) const HEX: usize = 64;

/// Where a run's chain starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// From the genesis value of the run id, for this reason (no state, a replay, ...).
    New(String),
    /// From the last line of an earlier run.
    Continue(ChainPoint),
}

/// The hash state of a run's output.
#[derive(Clone)]
pub struct Chain {
    prev: [u8; 32],
    key: Option<Vec<u8>>,
    run_id: String,
    /// `event.sequence` of the last line chained.
    seq: u64,
    start: Start,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chain({})", hex::encode(self.prev))
    }
}

pub(super) fn genesis(run_id: &str) -> [u8; 32] {
    Sha256::digest(format!("observer-chain-v1:{run_id}").as_bytes()).into()
}

pub(super) fn link(key: Option<&[u8]>, prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
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
    /// A new chain, from the run id's genesis value.
    pub fn new(run_id: &str, key: Option<Vec<u8>>) -> Self {
        Self::start(
            run_id,
            key,
            Start::New("no earlier chain head was given".into()),
        )
    }

    pub fn start(run_id: &str, key: Option<Vec<u8>>, start: Start) -> Self {
        let prev = match &start {
            Start::Continue(p) => {
                let mut h = [0u8; 32];
                match hex::decode_to_slice(&p.head, &mut h) {
                    Ok(()) => h,
                    Err(_) => return Self::new(run_id, key),
                }
            }
            Start::New(_) => genesis(run_id),
        };
        Self {
            prev,
            key,
            run_id: run_id.to_string(),
            seq: 0,
            start,
        }
    }

    /// Bytes `seal_into` adds to a line without a seal.
    pub const SEAL_BYTES: usize = FIELD.len() + HEX + 1;
    /// Bytes a seal adds, at most.
    pub const TAG_BYTES: usize = SEAL_FIELD.len() + 20 + TAG_FIELD.len() + HEX + 2;

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn start_point(&self) -> &Start {
        &self.start
    }

    /// `event.sequence` of the last line chained (0 before the first).
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// The chain value of the last line, and where it is.
    pub fn head(&self) -> ChainPoint {
        match (&self.start, self.seq) {
            (Start::Continue(p), 0) => p.clone(),
            _ => ChainPoint {
                head: hex::encode(self.prev),
                run_id: self.run_id.clone(),
                sequence: self.seq,
            },
        }
    }

    /// The chain value of the last line.
    pub fn head_hex(&self) -> String {
        hex::encode(self.prev)
    }

    /// Adds the chain field to one serialised event (which must end with `}}`).
    pub fn seal(&mut self, json: &str) -> String {
        let mut out = Vec::with_capacity(json.len() + Self::SEAL_BYTES);
        let seq = serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v["event"]["sequence"].as_u64())
            .unwrap_or(self.seq + 1);
        self.seal_into(json.as_bytes(), seq, None, &mut out);
        String::from_utf8(out).expect("UTF-8 in, UTF-8 out")
    }

    /// Appends `json` (the line of `event.sequence` `seq`) with its seal, when there is a
    /// sealer, and its chain field to `out`. True when the sealing key evolved.
    pub fn seal_into(
        &mut self,
        json: &[u8],
        seq: u64,
        sealer: Option<&mut Sealer>,
        out: &mut Vec<u8>,
    ) -> bool {
        debug_assert!(json.ends_with(b"}}"), "observer must be the last object");
        let next = link(self.key.as_deref(), &self.prev, json);
        self.prev = next;
        self.seq = seq;
        let mut hex = [0u8; HEX];
        out.extend_from_slice(&json[..json.len() - 2]);
        let mut evolved = false;
        if let Some(s) = sealer {
            let (epoch, tag, moved) = s.seal(&next);
            evolved = moved;
            hex::encode_to_slice(tag, &mut hex).expect("64 hex digits for 32 bytes");
            out.extend_from_slice(SEAL_FIELD.as_bytes());
            out.extend_from_slice(epoch.to_string().as_bytes());
            out.extend_from_slice(TAG_FIELD.as_bytes());
            out.extend_from_slice(&hex);
            out.extend_from_slice(b"\"}");
        }
        hex::encode_to_slice(next, &mut hex).expect("64 hex digits for 32 bytes");
        out.extend_from_slice(FIELD.as_bytes());
        out.extend_from_slice(&hex);
        out.extend_from_slice(b"\"}}");
        evolved
    }
}

/// A line taken apart: what was chained, its seal (epoch, tag) and its chain value.
pub(super) struct Unsealed {
    pub body: String,
    pub seal: Option<(u64, [u8; 32])>,
    pub chain: [u8; 32],
}

/// Splits a line into the chained body, its seal and its chain value.
pub(super) fn unseal(line: &str) -> Option<Unsealed> {
    let tail = line.strip_suffix("\"}}")?;
    let at = tail.len().checked_sub(HEX)?;
    let hex_part = tail.get(at..)?;
    let mut head = tail.get(..at)?.strip_suffix(FIELD)?;
    let mut chain = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut chain).ok()?;
    let mut seal = None;
    if let Some(rest) = head.strip_suffix("\"}") {
        let at = rest.len().checked_sub(HEX)?;
        if let Some(before) = rest.get(..at).and_then(|b| b.strip_suffix(TAG_FIELD)) {
            let mut tag = [0u8; 32];
            hex::decode_to_slice(rest.get(at..)?, &mut tag).ok()?;
            let digits = before.len()
                - before
                    .bytes()
                    .rev()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
            let epoch = before.get(digits..)?.parse().ok()?;
            head = before.get(..digits)?.strip_suffix(SEAL_FIELD)?;
            seal = Some((epoch, tag));
        }
    }
    Some(Unsealed {
        body: format!("{head}}}}}"),
        seal,
        chain,
    })
}

/// The chain value, run and sequence of the last line of the log file at `path`, when it is a
/// line of observer's. After an abrupt stop the state file may hold an older head of the same
/// run (it is saved once a second): the run that follows continues from the line actually
/// written last, so verify finds nothing missing.
pub fn last_line(path: &Path) -> Option<ChainPoint> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let from = len.saturating_sub(1 << 20);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut tail = Vec::new();
    f.take(1 << 20).read_to_end(&mut tail).ok()?;
    let text = std::str::from_utf8(tail.strip_suffix(b"\n")?).ok()?;
    let line = text.rsplit('\n').next()?;
    let un = unseal(line)?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(ChainPoint {
        head: hex::encode(un.chain),
        run_id: v["observer"]["run_id"].as_str()?.to_string(),
        sequence: v["event"]["sequence"].as_u64()?,
    })
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
