//! I/O observer cannot see: a target that moves bytes through io_uring submits them to the
//! kernel in shared rings, never through the read/write/send/recv system calls observer hooks.
//! Such a target is found by its ring (an `anon_inode:[io_uring]` file descriptor or mapping)
//! and reported once, so that its silence is never taken for "no traffic".
//!
//! Reads /proc only; owns the check and which processes were reported.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::tls::Blind;

/// File descriptors looked at per process and scan: rings are made early in a process's life,
/// so a server holding thousands of connections costs a bounded scan.
const MAX_FDS: usize = 4096;
/// What the kernel names a ring, in /proc/PID/fd links and /proc/PID/maps.
const RING: &[u8] = b"[io_uring]";

/// How often one process is looked at again: a look reads its fd table and its maps (megabytes
/// for a large runtime), on the thread that drains the ring.
const RECHECK: Duration = Duration::from_secs(30);

/// Which targets were reported (each at most once per process) and when each was looked at.
#[derive(Default)]
pub struct UringWatch {
    reported: HashSet<u32>,
    looked: HashMap<u32, Instant>,
}

impl UringWatch {
    /// A [`Blind`] the first time `pid` is seen holding an io_uring ring.
    pub fn scan(&mut self, pid: u32) -> Option<Blind> {
        if self.reported.contains(&pid)
            || self.looked.get(&pid).is_some_and(|t| t.elapsed() < RECHECK)
        {
            return None;
        }
        self.looked.insert(pid, Instant::now());
        if !holds_ring(pid) {
            return None;
        }
        self.reported.insert(pid);
        Some(Blind {
            pid,
            reason: "the process uses io_uring: bytes it moves through its rings bypass the \
                     system calls observer hooks, so its traffic there is not seen"
                .into(),
        })
    }

    /// The process exited (or a new one took its place): look at the next one afresh.
    pub fn forget(&mut self, pid: u32) {
        self.reported.remove(&pid);
        self.looked.remove(&pid);
    }
}

fn holds_ring(pid: u32) -> bool {
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in dir.take(MAX_FDS).flatten() {
            if let Ok(link) = std::fs::read_link(entry.path())
                && link.as_os_str().as_encoded_bytes().ends_with(RING)
            {
                return true;
            }
        }
    }
    // A ring whose descriptor was closed or registered away still has its mappings.
    std::fs::read(format!("/proc/{pid}/maps"))
        .is_ok_and(|maps| memchr::memmem::find(&maps, RING).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_without_a_ring_is_not_reported() {
        // Another process: this one's tests make rings in parallel.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let mut w = UringWatch::default();
        assert!(w.scan(child.id()).is_none());
        assert!(w.scan(u32::MAX).is_none(), "a gone process is not reported");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_process_with_a_ring_is_reported_once() {
        // io_uring_setup(2) with 4 entries; the ring stays open until the test ends.
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup reads and fills `params` (struct io_uring_params, 120 bytes).
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
        assert!(
            fd >= 0,
            "io_uring_setup failed ({}): this kernel refuses io_uring",
            std::io::Error::last_os_error()
        );
        let mut w = UringWatch::default();
        let b = w.scan(std::process::id()).expect("the ring is found");
        assert!(b.reason.contains("io_uring"));
        assert!(w.scan(std::process::id()).is_none(), "reported once");
        // SAFETY: closing the descriptor this test opened.
        unsafe { libc::close(fd as i32) };
    }
}
