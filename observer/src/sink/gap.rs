//! Gaps: runs of events, by `event.sequence`, that did not reach the output, and why. Counted
//! by the queue and the sink, reported by a loss line in their place.

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
    pub(super) fn new(seq: u64, cause: Cause) -> Self {
        let mut g = Gap {
            first: seq,
            last: seq,
            ..Gap::default()
        };
        g.count(cause, 1);
        g
    }

    pub(super) fn count(&mut self, cause: Cause, n: u64) {
        match cause {
            Cause::QueueFull => self.queue_full += n,
            Cause::WriteFailed => self.write_failed += n,
        }
    }

    /// Adds a run of events next to this one.
    pub(super) fn extend(&mut self, other: Gap) {
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
