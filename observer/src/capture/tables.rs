//! The kernel tables userspace keeps in step: targets added (and refused when the table is
//! full), sockets added and removed with the book of which process holds which, the sweep
//! after lost records, and the count of entries for heartbeats. Part of `capture`, on aya.

use observer_common::{LossCounter, SocketState, socket_key};

use super::book::{Identity, RangeClosed};
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
    /// Removes the kernel's entry for a socket if it is still the one the book means (the
    /// descriptor may hold a new socket by now, which the kernel tracks already).
    fn forget(&mut self, tgid: u32, fd: i32, id: Identity) {
        let key = socket_key(tgid, fd as u32);
        match self.sockets.get(&key, 0) {
            Ok(state) if id.matches(state.since_ns) => {
                let _ = self.sockets.remove(&key);
            }
            _ => {}
        }
    }

    /// Stops copying the traffic of one socket.
    pub fn remove_socket(&mut self, tgid: u32, fd: i32) {
        let id = self.book.remove(tgid, fd).unwrap_or(Identity::Unknown);
        self.forget(tgid, fd, id);
    }

    /// Forgets a process that exited, and its sockets: O(its sockets), from the book.
    pub fn remove_process(&mut self, tgid: u32) {
        let _ = self.targets.remove(&tgid);
        self.remove_sockets_of(tgid);
    }

    /// Forgets every socket of a process (it executed a new program, which closed those marked
    /// close-on-exec; the survivors are adopted again); returns their descriptors.
    pub fn remove_sockets_of(&mut self, tgid: u32) -> Vec<i32> {
        let gone = self.book.take_process(tgid);
        for &(fd, id) in &gone {
            self.forget(tgid, fd, id);
        }
        gone.into_iter().map(|(fd, _)| fd).collect()
    }

    /// Once a second: when records were lost since the last look, some accepts may have gone
    /// unseen, and a socket that moved no bytes since is in the kernel's table but not in the
    /// book; one walk of the table removes those of processes that are no longer targets.
    pub fn sweep_if_needed(&mut self) {
        let ring = self.losses()[LossCounter::RingFull as usize];
        // At most once a minute: the walk costs two syscalls per entry, on the thread that
        // drains the ring, and losses come in bursts.
        if ring == self.swept_at_ring_losses
            || self
                .swept_at
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60))
        {
            return;
        }
        self.swept_at_ring_losses = ring;
        self.swept_at = Some(std::time::Instant::now());
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

    /// Tracks a socket that existed before the programs were attached, or that a process had
    /// when it was found (a fork, a cgroup join, an exec). An entry the kernel made already is
    /// kept as it is: its loss count and TLS mark must not start again.
    pub fn add_socket(&mut self, tgid: u32, fd: i32) -> Result<(), CaptureError> {
        const BPF_NOEXIST: u64 = 1;
        match self.sockets.insert(
            socket_key(tgid, fd as u32),
            SocketState::default(),
            BPF_NOEXIST,
        ) {
            Ok(()) => self.book.add(tgid, fd, Identity::Since(0)),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                let id = match self.sockets.get(&socket_key(tgid, fd as u32), 0) {
                    Ok(state) => Identity::Since(state.since_ns),
                    Err(_) => Identity::Unknown,
                };
                self.book.add(tgid, fd, id);
            }
            Err(source) => {
                return Err(CaptureError::Map {
                    map: "SOCKETS",
                    source,
                });
            }
        }
        Ok(())
    }

    /// Applies a close_range to the kernel's table: the sockets the book had inside the range
    /// leave it; returns their descriptors.
    pub(super) fn close_range(sockets: &mut super::SocketMap, closed: &RangeClosed) -> Vec<i32> {
        let mut fds = Vec::with_capacity(closed.sockets.len());
        for &(fd, id) in &closed.sockets {
            let key = socket_key(closed.tgid, fd as u32);
            if let Ok(state) = sockets.get(&key, 0)
                && id.matches(state.since_ns)
            {
                let _ = sockets.remove(&key);
            }
            fds.push(fd);
        }
        fds
    }
}
