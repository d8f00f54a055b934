//! Userspace's copy of which sockets the kernel's socket table holds for each target process,
//! so that the table can be emptied of a process's sockets in O(its sockets) when it exits,
//! executes a new program or closes a range of descriptors, instead of walking every key of
//! the kernel map. Pure bookkeeping: knows record layouts, not aya.
//!
//! The kernel adds sockets on accept/connect and removes them on close (and dup2/dup3 over
//! them); the book follows those records as they are drained. A record lost to a full ring can
//! leave a socket in the kernel's table that the book does not know: [`Capture`] then sweeps
//! the table once, by key.
//!
//! [`Capture`]: super::Capture

use std::collections::{BTreeSet, HashMap};

use observer_common::{EventHeader, EventKind};

/// Sockets per process, as the kernel's table holds them.
#[derive(Debug, Default)]
pub struct SocketBook {
    by_process: HashMap<u32, BTreeSet<i32>>,
}

impl SocketBook {
    pub fn add(&mut self, tgid: u32, fd: i32) {
        self.by_process.entry(tgid).or_default().insert(fd);
    }

    pub fn remove(&mut self, tgid: u32, fd: i32) {
        if let Some(fds) = self.by_process.get_mut(&tgid) {
            fds.remove(&fd);
            if fds.is_empty() {
                self.by_process.remove(&tgid);
            }
        }
    }

    /// Every socket of a process, taken out of the book.
    pub fn take_process(&mut self, tgid: u32) -> Vec<i32> {
        self.by_process
            .remove(&tgid)
            .map(|fds| fds.into_iter().collect())
            .unwrap_or_default()
    }

    /// The sockets of a process with descriptors in `first..=last`, taken out of the book.
    pub fn take_range(&mut self, tgid: u32, first: u32, last: u32) -> Vec<i32> {
        let Some(fds) = self.by_process.get_mut(&tgid) else {
            return Vec::new();
        };
        let lo = i32::try_from(first).unwrap_or(i32::MAX);
        let hi = i32::try_from(last).unwrap_or(i32::MAX);
        if lo > hi {
            return Vec::new();
        }
        let inside: Vec<i32> = fds.range(lo..=hi).copied().collect();
        for fd in &inside {
            fds.remove(fd);
        }
        if fds.is_empty() {
            self.by_process.remove(&tgid);
        }
        inside
    }

    /// The sockets of a process that are not among `open` (its socket descriptors now), taken
    /// out of the book.
    pub fn take_missing(&mut self, tgid: u32, open: &[i32]) -> Vec<i32> {
        let Some(fds) = self.by_process.get_mut(&tgid) else {
            return Vec::new();
        };
        let gone: Vec<i32> = fds
            .iter()
            .copied()
            .filter(|fd| !open.contains(fd))
            .collect();
        for fd in &gone {
            fds.remove(fd);
        }
        if fds.is_empty() {
            self.by_process.remove(&tgid);
        }
        gone
    }

    /// Follows what one drained record says the kernel did to its socket table. For a
    /// close_range, returns the process and the sockets inside the range, which the kernel
    /// could not remove itself.
    pub fn follow(&mut self, rec: &[u8]) -> Option<(u32, Vec<i32>)> {
        let h = header(rec)?;
        match EventKind::from_u32(h.kind) {
            Some(EventKind::Accept | EventKind::Connect) => self.add(h.tgid, h.fd),
            Some(EventKind::Close) => self.remove(h.tgid, h.fd),
            Some(EventKind::CloseRange) => {
                let last = u32::from_ne_bytes(rec.get(24..28)?.try_into().ok()?);
                return Some((h.tgid, self.take_range(h.tgid, h.fd as u32, last)));
            }
            _ => {}
        }
        None
    }

    /// Sockets in the book, all processes together.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_process.values().map(BTreeSet::len).sum()
    }
}

fn header(rec: &[u8]) -> Option<EventHeader> {
    let word = |at: usize| -> Option<[u8; 4]> { rec.get(at..at + 4)?.try_into().ok() };
    Some(EventHeader {
        ts_ns: 0,
        kind: u32::from_ne_bytes(word(8)?),
        tgid: u32::from_ne_bytes(word(12)?),
        tid: u32::from_ne_bytes(word(16)?),
        fd: i32::from_ne_bytes(word(20)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Meta, encode};

    fn meta(tgid: u32, fd: i32) -> Meta {
        Meta {
            ts_ns: 1,
            tgid,
            tid: tgid,
            fd,
        }
    }

    #[test]
    fn follows_accepts_and_closes_per_process() {
        let mut b = SocketBook::default();
        b.follow(&encode::conn(&meta(7, 5), 3, &[]));
        b.follow(&encode::conn(&meta(7, 6), -1, &[]));
        b.follow(&encode::conn(&meta(8, 5), 3, &[]));
        b.follow(&encode::close(&meta(7, 5)));
        assert_eq!(b.len(), 2);
        assert_eq!(b.take_process(7), vec![6]);
        assert_eq!(b.take_process(7), Vec::<i32>::new());
        assert_eq!(b.len(), 1);
        // Records too short to carry a header change nothing.
        assert_eq!(b.follow(&[0u8; 10]), None);
        assert_eq!(b.len(), 1);
        b.add(8, 9);
        b.add(8, 70);
        let range = encode::close_range(&meta(8, 6), 69);
        assert_eq!(b.follow(&range), Some((8, vec![9])));
        assert_eq!(b.follow(&range[..26]), None);
        assert_eq!(b.take_process(8), vec![5, 70]);
    }

    #[test]
    fn ranges_and_survivors() {
        let mut b = SocketBook::default();
        for fd in [3, 4, 10, 11, 100] {
            b.add(1, fd);
        }
        assert_eq!(b.take_range(1, 4, 10), vec![4, 10]);
        assert_eq!(b.take_range(1, 20, 5), Vec::<i32>::new());
        // `last` beyond any descriptor (close_range(3, ~0U)).
        assert_eq!(b.take_missing(1, &[3, 100]), vec![11]);
        assert_eq!(b.take_range(1, 0, u32::MAX), vec![3, 100]);
        assert_eq!(b.len(), 0);
    }
}
