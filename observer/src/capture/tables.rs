//! The kernel tables userspace keeps in step: targets added (and refused when the table is
//! full), sockets added and removed with the book of which process holds which, the sweep
//! after lost records, and the count of entries for heartbeats. Part of `capture`, on aya.

use observer_common::{LossCounter, SocketState, socket_key};

use super::{Capture, CaptureError};

/// Entries of the kernel tables that can fill, and their sizes, for heartbeats and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableUsage {
    pub targets: u32,
    pub targets_max: u32,
    pub sockets: u32,
    pub sockets_max: u32,
}

/// Size of the kernel's socket table (the programs' `SOCKETS` map).
pub const SOCKETS_MAX: u32 = 65536;
/// Default size of the kernel's target table; `--max-targets` sets another.
pub const TARGETS_MAX: u32 = 4096;

impl Capture {
    /// Stops copying the traffic of one socket.
    pub fn remove_socket(&mut self, tgid: u32, fd: i32) {
        self.book.remove(tgid, fd);
        let _ = self.sockets.remove(&socket_key(tgid, fd as u32));
    }

    /// Forgets a process that exited, and its sockets: O(its sockets), from the book.
    pub fn remove_process(&mut self, tgid: u32) {
        let _ = self.targets.remove(&tgid);
        for fd in self.book.take_process(tgid) {
            let _ = self.sockets.remove(&socket_key(tgid, fd as u32));
        }
    }

    /// Forgets the sockets of a process that are not among `open`, its socket descriptors now
    /// (after it executed a new program); returns them.
    pub fn remove_closed(&mut self, tgid: u32, open: &[i32]) -> Vec<i32> {
        let gone = self.book.take_missing(tgid, open);
        for &fd in &gone {
            let _ = self.sockets.remove(&socket_key(tgid, fd as u32));
        }
        gone
    }

    /// Once a second: when records were lost since the last look, some accepts may have gone
    /// unseen, so their sockets are in the kernel's table but not in the book; one walk of the
    /// table removes those of processes that are no longer targets.
    pub fn sweep_if_needed(&mut self) {
        let ring = self.losses()[LossCounter::RingFull as usize];
        if ring == self.swept_at_ring_losses {
            return;
        }
        self.swept_at_ring_losses = ring;
        let stale: Vec<u64> = self
            .sockets
            .keys()
            .filter_map(Result::ok)
            .filter(|k| self.targets.get(&((k >> 32) as u32), 0).is_err())
            .collect();
        if !stale.is_empty() {
            tracing::debug!(
                "removed {} sockets of exited processes from the kernel's table",
                stale.len()
            );
        }
        for k in stale {
            let _ = self.sockets.remove(&k);
        }
    }

    /// Counts the entries of the target and socket tables (one map walk each).
    pub fn count_tables(&mut self) -> TableUsage {
        let n = |c: usize| u32::try_from(c).unwrap_or(u32::MAX);
        self.tables.targets = n(self.targets.keys().filter(Result::is_ok).count());
        self.tables.sockets = n(self.sockets.keys().filter(Result::is_ok).count());
        self.tables
    }

    /// The table usage last counted by [`Capture::count_tables`].
    pub fn tables(&self) -> TableUsage {
        self.tables
    }

    /// Watches a process. A full table is counted with the kernel's own refusals
    /// ([`LossCounter::TargetTableFull`]) and said by [`CaptureError::TargetTableFull`].
    pub fn add_target(&mut self, tgid: u32) -> Result<(), CaptureError> {
        match self.targets.insert(tgid, 0, 0) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::E2BIG) =>
            {
                self.targets_refused += 1;
                Err(CaptureError::TargetTableFull {
                    max: self.tables.targets_max,
                    pid: tgid,
                })
            }
            Err(source) => Err(CaptureError::Map {
                map: "TARGETS",
                source,
            }),
        }
    }

    /// Tracks a socket that existed before the programs were attached.
    pub fn add_socket(&mut self, tgid: u32, fd: i32) -> Result<(), CaptureError> {
        self.sockets
            .insert(socket_key(tgid, fd as u32), SocketState::default(), 0)
            .map_err(|source| CaptureError::Map {
                map: "SOCKETS",
                source,
            })?;
        self.book.add(tgid, fd);
        Ok(())
    }
}
