//! The writer thread. The capture loop hands events over through a bounded queue and never
//! waits for the output: a slow disk, a stalled pipe or a full file system must not hold up the
//! loop that drains the kernel's ring buffer, or the ring would overflow and capture would lose
//! traffic instead. When the queue is full, events are dropped, counted, and reported by a loss
//! line that takes their place in the sequence.
//!
//! Alerts, loss lines and lifecycle events have a reserved lane: the last [`RESERVED`] places of
//! the queue take only them, so a flood that fills the queue with exchanges cannot drop the
//! alert about itself. They share the one queue with everything else, so the output keeps the
//! sequence order the hash chain and `verify` rely on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

use super::{Cause, Gap, Sink, SinkError};
use crate::event::Event;

/// Events waiting for the writer, at most. About 1 KiB each at worst: a few MiB of memory
/// buys seconds of a stalled output at thousands of events per second.
pub const QUEUE_EVENTS: usize = 8192;
/// Places of the queue, past its capacity for ordinary events, that only alerts, loss lines and
/// lifecycle events may take. Rules fire at most once per key and cooldown, so a flood of
/// alerts large enough to fill this too is itself bounded by `max_keys`.
pub const RESERVED: usize = 1024;
/// How often written lines are put on disk (fsync), besides at rotation and at the end.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Events written per batch before the batch is flushed.
const BATCH: usize = 4096;
/// How long the writer lets events gather after a batch: lines reach the output at most this
/// much later, and at 100,000 events per second the queue holds a few hundred meanwhile.
const GATHER: Duration = Duration::from_millis(2);

/// Counters shared with the writer thread, for heartbeats and the shutdown summary.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Lines in the output.
    pub written: AtomicU64,
    /// Events dropped because the queue was full.
    pub queue_full: AtomicU64,
    /// Events the output refused (disk full, I/O errors).
    pub write_failed: AtomicU64,
}

impl SinkStats {
    pub fn to_json(&self, depth: usize) -> serde_json::Value {
        serde_json::json!({
            "written": self.written.load(Ordering::Relaxed),
            "queue_depth": depth,
            "queue_capacity": QUEUE_EVENTS,
            "queue_full": self.queue_full.load(Ordering::Relaxed),
            "write_failed": self.write_failed.load(Ordering::Relaxed),
        })
    }
}

enum Msg {
    Event(Event),
    /// Events dropped before the queue, right after those already sent.
    Gap(Gap),
}

pub struct Writer {
    tx: Option<Sender<Msg>>,
    /// Ordinary events are taken while fewer than this many wait.
    capacity: usize,
    thread: Option<JoinHandle<Result<(), SinkError>>>,
    /// Dropped events not yet announced to the writer.
    gap: Option<Gap>,
    stats: Arc<SinkStats>,
}

impl Writer {
    pub fn spawn(sink: Sink, capacity: usize) -> std::io::Result<Self> {
        let (tx, rx) = bounded(capacity + RESERVED);
        let stats = Arc::new(SinkStats::default());
        let shared = stats.clone();
        let thread = std::thread::Builder::new()
            .name("observer-sink".into())
            .spawn(move || write_loop(sink, rx, &shared))?;
        Ok(Self {
            tx: Some(tx),
            capacity,
            thread: Some(thread),
            gap: None,
            stats,
        })
    }

    fn tx(&self) -> &Sender<Msg> {
        self.tx.as_ref().expect("the queue lives until finish")
    }

    /// Hands one event over without waiting. Fails only when the writer has stopped (its
    /// output was closed, or it failed for good).
    pub fn send(&mut self, ev: Event) -> Result<(), SinkError> {
        let seq = ev.meta().sequence;
        let limit = if reserved(&ev) {
            self.capacity + RESERVED
        } else {
            self.capacity
        };
        // Room is judged before anything is sent: an event that cannot go makes the pending
        // gap longer instead of sending it, so a long flood costs one loss line, not one per
        // dropped event, and the reserved places stay free for alerts. Only this thread sends,
        // so the room found here can only grow before the sends below.
        let need = 1 + usize::from(self.gap.is_some());
        if self.depth() + need > limit {
            self.drop_one(seq);
            return Ok(());
        }
        if let Some(g) = self.gap.take() {
            match self.tx().try_send(Msg::Gap(g)) {
                Ok(()) => {}
                Err(TrySendError::Full(Msg::Gap(g))) => {
                    self.gap = Some(g);
                    self.drop_one(seq);
                    return Ok(());
                }
                Err(TrySendError::Full(_)) => unreachable!("a gap was sent"),
                Err(TrySendError::Disconnected(_)) => return Err(self.stopped()),
            }
        }
        match self.tx().try_send(Msg::Event(ev)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.drop_one(seq);
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(self.stopped()),
        }
    }

    /// Counts event `seq` as dropped for a full queue, in the pending gap.
    fn drop_one(&mut self, seq: u64) {
        if self.stats.queue_full.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                "the output is slower than the traffic: events are dropped, counted and \
                 reported in the output"
            );
        }
        match self.gap.as_mut() {
            Some(g) => g.push(seq, Cause::QueueFull),
            None => self.gap = Some(Gap::new(seq, Cause::QueueFull)),
        }
    }

    /// Waits for room: for the last events of a run, when nothing is captured any more.
    pub fn send_waiting(&mut self, ev: Event) -> Result<(), SinkError> {
        if let Some(g) = self.gap.take()
            && self.tx().send(Msg::Gap(g)).is_err()
        {
            return Err(self.stopped());
        }
        if self.tx().send(Msg::Event(ev)).is_err() {
            return Err(self.stopped());
        }
        Ok(())
    }

    /// Events waiting in the queue.
    pub fn depth(&self) -> usize {
        self.tx.as_ref().map_or(0, |t| t.len())
    }

    pub fn stats(&self) -> Arc<SinkStats> {
        self.stats.clone()
    }

    /// Whether the writer has stopped on its own (a closed output or a fatal error).
    pub fn has_stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// The reason the writer stopped (after `has_stopped`).
    pub fn stopped(&mut self) -> SinkError {
        self.join().err().unwrap_or(SinkError::Closed)
    }

    fn join(&mut self) -> Result<(), SinkError> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Err(SinkError::Closed)),
            None => Ok(()),
        }
    }

    /// Writes everything queued, puts it on disk and stops the thread.
    pub fn finish(mut self) -> Result<(), SinkError> {
        self.join()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// Events that may take the reserved places: what says something went wrong, or that observer
/// started or stopped.
fn reserved(ev: &Event) -> bool {
    matches!(
        ev,
        Event::Alert(_) | Event::Loss(_) | Event::Lifecycle(_) | Event::Blind(_)
    )
}

fn write_loop(mut sink: Sink, rx: Receiver<Msg>, stats: &SinkStats) -> Result<(), SinkError> {
    let mut synced = Instant::now();
    let publish = |sink: &Sink| {
        stats.written.store(sink.written(), Ordering::Relaxed);
        stats
            .write_failed
            .store(sink.write_failed(), Ordering::Relaxed);
    };
    loop {
        match rx.recv_timeout(SYNC_EVERY) {
            Ok(first) => {
                handle(&mut sink, first)?;
                let mut taken = 1;
                for m in rx.try_iter().take(BATCH) {
                    handle(&mut sink, m)?;
                    taken += 1;
                }
                sink.flush()?;
                // Let the next events gather before waiting on the queue again: a writer
                // parked in `recv` must be woken by the sender, a futex call on both sides
                // for every event once the writer keeps up; sleeping here costs the capture
                // loop nothing and turns those wake-ups into one per batch. A full batch means
                // the writer is behind: no pause then.
                if taken <= BATCH {
                    std::thread::sleep(GATHER);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if synced.elapsed() >= SYNC_EVERY {
            sink.sync()?;
            synced = Instant::now();
        }
        publish(&sink);
    }
    let r = sink.sync();
    publish(&sink);
    r
}

fn handle(sink: &mut Sink, m: Msg) -> Result<(), SinkError> {
    match m {
        Msg::Event(ev) => sink.emit(ev),
        Msg::Gap(g) => sink.note_gap(g),
    }
}
