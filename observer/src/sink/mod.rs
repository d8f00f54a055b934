//! Sinks: where events go, one JSON object per line, in the order the pipeline made them (and
//! gave them their `event.sequence`).
//!
//! Owns the end of the pipeline: the [`queue`] to the writer thread, [`file`] output and
//! rotation, [`pretty`] lines, the hash chain ([`integrity`]), forward-secure seals
//! ([`seal`]), the host's chain head and sealing key ([`state`]), their check ([`verify`]) and
//! the [`metrics`] endpoint. Reads `event`s only: must never import `detect`, `capture`, `conn` or
//! `http`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::event::{Clock, Event, Head, Unwritten, lifecycle_event};

mod file;
mod gap;
pub mod integrity;
pub mod metrics;
mod pretty;
mod queue;
pub mod seal;
pub mod state;
#[cfg(test)]
mod tests;
pub mod verify;
#[cfg(test)]
mod verify_tests;

pub use file::Rotation;
use file::{Out, open_private, rotate};
pub use gap::{Cause, Gap};
use integrity::{Chain, Start};
use pretty::pretty;
pub use queue::{QUEUE_EVENTS, SinkStats, Writer};
use seal::Sealer;
use state::HostState;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the output was closed by its reader")]
    Closed,
    #[error(transparent)]
    Open(#[from] crate::files::PrivateFileError),
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

/// How lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line, hash-chained: for machines.
    #[default]
    Json,
    /// One short line per event: for people at a terminal (no chain).
    Pretty,
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
    /// The host state: the chain head is saved there, and the sealing key.
    state: Option<HostState>,
    /// The head last saved in the state.
    saved_head: Option<String>,
    sealer: Option<Sealer>,
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
            state: None,
            saved_head: None,
            sealer: None,
        }
    }

    /// Saves the chain head in `state` from now on, and seals lines with its sealing key.
    pub fn with_state(mut self, mut state: HostState) -> Self {
        self.sealer = state.sealer.take();
        if let Some(s) = &mut self.sealer {
            // Forget the keys of epochs that passed while observer was not running.
            s.advance_to(s.now());
        }
        self.saved_head = state.head.as_ref().map(|h| h.head.clone());
        self.state = Some(state);
        if self.sealer.is_some() {
            self.save_state();
        }
        self
    }

    /// Seals lines with this sealer (and no state to save it in): for tests and replays.
    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// The chain head of the lines written, to save.
    fn written_head(&self) -> Option<crate::event::ChainPoint> {
        if self.committed.sequence() > 0 {
            return Some(self.committed.head());
        }
        match self.committed.start_point() {
            Start::Continue(p) => Some(p.clone()),
            Start::New(_) => None,
        }
    }

    fn save_state(&mut self) {
        let head = self.written_head();
        if let Some(st) = &self.state {
            match st.save(head.as_ref(), self.sealer.as_ref()) {
                Ok(()) => self.saved_head = head.map(|h| h.head),
                Err(e) => tracing::warn!("{e}; the next run may not continue this chain"),
            }
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

    pub fn emit(&mut self, mut event: Event) -> Result<(), SinkError> {
        // Encoded into a buffer kept from line to line: no allocation per event.
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        let r = self.emit_into(&mut event, &mut body);
        self.body = body;
        r
    }

    fn emit_into(&mut self, event: &mut Event, body: &mut Vec<u8>) -> Result<(), SinkError> {
        let seq = event.meta().sequence;
        if let Event::Lifecycle(l) = event
            && l.event.action == "sys_startup"
        {
            (l.observer.checkpoint, l.observer.new_chain) = self.start_fields();
        }
        let heartbeat = matches!(event, Event::Heartbeat(_));
        self.encode_into(event, body)?;
        let mut gap_body = self.unreported_gap_line()?;
        let mut need = self.sealed_len(body)
            + gap_body
                .as_ref()
                .map_or(0, |g| self.sealed_len(g.1.as_slice()));
        if heartbeat {
            // The head it will carry.
            need += 160;
        }
        if self.needs_rotation(need) {
            if self.flush_pending()? {
                self.rotate_now()?;
            } else {
                // What was pending joined the gap: its loss line must cover it too.
                gap_body = self.unreported_gap_line()?;
            }
        }
        self.checkpoint_new_file()?;
        if let Some((g_seq, g)) = gap_body {
            self.gap_pending = true;
            self.push_sealed(&g, g_seq, false);
        }
        if let Event::Heartbeat(h) = event {
            h.observer.head = Some(Head {
                chain: self.chain.head_hex(),
                sequence: self.chain.sequence(),
                epoch: self.sealer.as_ref().map(|s| s.epoch()),
            });
            body.clear();
            self.encode_into(event, body)?;
        }
        self.push_sealed(body, seq, true);
        Ok(())
    }

    /// What `sys_startup` says of where the chain starts: the checkpoint it continues from, or
    /// why it starts a new chain.
    pub fn start_fields(&self) -> (Option<crate::event::ChainPoint>, Option<String>) {
        if self.format != Format::Json {
            return (None, None);
        }
        match self.chain.start_point() {
            Start::Continue(p) => (Some(p.clone()), None),
            Start::New(why) => (None, Some(why.clone())),
        }
    }

    /// A file's first line, once the run has written lines: where the chain stands, so the
    /// file verifies on its own once older files are removed.
    fn checkpoint_new_file(&mut self) -> Result<(), SinkError> {
        let empty = matches!(self.out, Out::File { size: 0, .. }) && self.pending.is_empty();
        if !empty || self.format != Format::Json || self.chain.sequence() == 0 {
            return Ok(());
        }
        let mut ev = lifecycle_event(
            "sys_checkpoint",
            self.clock.wall(Clock::mono_now()),
            &self.run_id,
            Vec::new(),
            None,
        );
        let seq = self.chain.sequence();
        ev.meta_mut().sequence = seq;
        if let Event::Lifecycle(l) = &mut ev {
            l.observer.checkpoint = Some(self.chain.head());
        }
        let body = self.encode(&ev)?;
        self.push_sealed(&body, seq, false);
        Ok(())
    }

    /// The loss line for events not written (its sequence and body), if it is not already on
    /// its way.
    fn unreported_gap_line(&self) -> Result<Option<(u64, Vec<u8>)>, SinkError> {
        match self.gap {
            Some(g) if !self.gap_pending => Ok(Some((g.last, self.encode(&self.gap_line(g))?))),
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
            Format::Json if self.sealer.is_some() => Chain::SEAL_BYTES + Chain::TAG_BYTES,
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
            if g.first == 1 {
                // It takes the place of sys_startup too.
                (l.observer.checkpoint, l.observer.new_chain) = self.start_fields();
            }
        }
        // The line takes the place of the events it reports: the sequence runs on.
        ev.meta_mut().sequence = g.last;
        ev
    }

    /// Adds the line of `event.sequence` `seq` to the batch; `event` when it is one of the
    /// events given to the sink (not a loss line or checkpoint of its own).
    fn push_sealed(&mut self, body: &[u8], seq: u64, event: bool) {
        let mut evolved = false;
        match self.format {
            Format::Json => {
                evolved = self
                    .chain
                    .seal_into(body, seq, self.sealer.as_mut(), &mut self.pending)
            }
            Format::Pretty => self.pending.extend_from_slice(body),
        }
        if evolved {
            // The previous epoch's key leaves the state file now.
            self.save_state();
        }
        self.pending.push(b'\n');
        self.pending_lines += 1;
        if event {
            let s = seq;
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
        if self.state.is_some() && self.written_head().map(|h| h.head) != self.saved_head {
            self.save_state();
        }
        Ok(())
    }
}
