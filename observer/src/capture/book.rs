//! Userspace's copy of which sockets the kernel's socket table holds for each target process,
//! so that the table can be emptied of a process's sockets in O(its sockets) when it exits,
//! executes a new program or closes a range of descriptors, instead of walking every key of
//! the kernel map. Pure bookkeeping: knows record layouts, not aya.
//!
//! The kernel adds sockets on accept/connect and removes them on close (and dup2/dup3 over
//! them); the book follows those records as they are drained, and learns a socket from its
//! data records too when the record of its accept was lost. Each entry keeps the socket's
//! identity, the `since_ns` of the kernel's entry (the timestamp of its accept or connect
//! record), so that userspace, acting a little later, removes only the entry it means and not
//! a new socket's on the same descriptor.

use std::collections::{BTreeMap, HashMap};

use observer_common::EventKind;

/// Which kernel entry a socket of the book is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The kernel's `since_ns`: the accept or connect record's timestamp, or 0 for a socket
    /// userspace added itself.
    Since(u64),
    /// Learned from a data record: any entry at that descriptor is this socket's.
    Unknown,
}

impl Identity {
    /// Whether a kernel entry with this `since_ns` is the one the book means.
    pub fn matches(self, since_ns: u64) -> bool {
        match self {
            Self::Since(s) => s == since_ns,
            Self::Unknown => true,
        }
    }
}

/// Sockets per process, as the kernel's table holds them.
#[derive(Debug, Default)]
pub struct SocketBook {
    by_process: HashMap<u32, BTreeMap<i32, Identity>>,
}

/// What a drained record asks of the kernel's table, which the kernel could not do itself:
/// sockets a close_range closed, or that the process had when it executed a new program
/// (those marked close-on-exec are closed; the others are adopted again once observer has
/// looked at its descriptors).
#[derive(Debug, PartialEq, Eq)]
pub struct RangeClosed {
    pub tgid: u32,
    /// The tracked sockets concerned, now out of the book.
    pub sockets: Vec<(i32, Identity)>,
    /// The record still goes on to the rest of observer (an exec's does; a close_range's is
    /// replaced by the closes).
    pub pass_on: bool,
}

impl SocketBook {
    pub fn add(&mut self, tgid: u32, fd: i32, id: Identity) {
        self.by_process.entry(tgid).or_default().insert(fd, id);
    }

    pub fn remove(&mut self, tgid: u32, fd: i32) -> Option<Identity> {
        let fds = self.by_process.get_mut(&tgid)?;
        let id = fds.remove(&fd);
        if fds.is_empty() {
            self.by_process.remove(&tgid);
        }
        id
    }

    /// Every socket of a process, taken out of the book.
    pub fn take_process(&mut self, tgid: u32) -> Vec<(i32, Identity)> {
        self.by_process
            .remove(&tgid)
            .map(|fds| fds.into_iter().collect())
            .unwrap_or_default()
    }

    /// The sockets of a process with descriptors in `first..=last`, taken out of the book.
    pub fn take_range(&mut self, tgid: u32, first: u32, last: u32) -> Vec<(i32, Identity)> {
        let Some(fds) = self.by_process.get_mut(&tgid) else {
            return Vec::new();
        };
        let lo = i32::try_from(first).unwrap_or(i32::MAX);
        let hi = i32::try_from(last).unwrap_or(i32::MAX);
        if lo > hi {
            return Vec::new();
        }
        let inside: Vec<(i32, Identity)> = fds.range(lo..=hi).map(|(&f, &i)| (f, i)).collect();
        for (fd, _) in &inside {
            fds.remove(fd);
        }
        if fds.is_empty() {
            self.by_process.remove(&tgid);
        }
        inside
    }

    /// Follows what one drained record says the kernel did to its socket table. A close_range
    /// comes back as the sockets inside the range, which the kernel could not remove itself.
    pub fn follow(&mut self, rec: &[u8]) -> Option<RangeClosed> {
        let word = |at: usize| -> Option<[u8; 4]> { rec.get(at..at + 4)?.try_into().ok() };
        let kind = EventKind::from_u32(u32::from_ne_bytes(word(8)?))?;
        let tgid = u32::from_ne_bytes(word(12)?);
        let fd = i32::from_ne_bytes(word(20)?);
        match kind {
            EventKind::Accept | EventKind::Connect => {
                let ts: [u8; 8] = rec.get(0..8)?.try_into().ok()?;
                self.add(tgid, fd, Identity::Since(u64::from_ne_bytes(ts)));
            }
            EventKind::Data => {
                let known = self
                    .by_process
                    .get(&tgid)
                    .is_some_and(|fds| fds.contains_key(&fd));
                if !known {
                    self.add(tgid, fd, Identity::Unknown);
                }
            }
            EventKind::Close => {
                self.remove(tgid, fd);
            }
            EventKind::CloseRange => {
                let last = u32::from_ne_bytes(word(24)?);
                return Some(RangeClosed {
                    tgid,
                    sockets: self.take_range(tgid, fd as u32, last),
                    pass_on: false,
                });
            }
            EventKind::Process => {
                let change = u32::from_ne_bytes(word(24)?);
                if change == observer_common::ProcChange::Exec as u32 {
                    return Some(RangeClosed {
                        tgid,
                        sockets: self.take_process(tgid),
                        pass_on: true,
                    });
                }
            }
        }
        None
    }

    /// Sockets in the book, all processes together.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_process.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Meta, encode};
    use observer_common::Direction;

    fn meta(tgid: u32, fd: i32, ts: u64) -> Meta {
        Meta {
            ts_ns: ts,
            tgid,
            tid: tgid,
            fd,
        }
    }

    #[test]
    fn follows_accepts_closes_and_data_per_process() {
        let mut b = SocketBook::default();
        b.follow(&encode::conn(&meta(7, 5, 10), 3, &[]));
        b.follow(&encode::conn(&meta(7, 6, 11), -1, &[]));
        b.follow(&encode::conn(&meta(8, 5, 12), 3, &[]));
        b.follow(&encode::close(&meta(7, 5, 13)));
        // The accept of this one was lost: its traffic makes it known.
        b.follow(&encode::data(&meta(7, 9, 14), Direction::Ingress, 1, b"x"));
        // A data record of a known socket keeps its identity.
        b.follow(&encode::data(&meta(7, 6, 15), Direction::Ingress, 1, b"x"));
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.take_process(7),
            vec![(6, Identity::Since(11)), (9, Identity::Unknown)]
        );
        assert_eq!(b.take_process(7), Vec::new());
        assert_eq!(b.len(), 1);
        // Records too short to carry a header change nothing.
        assert_eq!(b.follow(&[0u8; 10]), None);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn ranges_come_back_with_their_identities() {
        let mut b = SocketBook::default();
        for (fd, ts) in [(3, 1), (4, 2), (10, 3), (11, 4), (100, 5)] {
            b.add(1, fd, Identity::Since(ts));
        }
        let range = encode::close_range(&meta(1, 4, 9), 10);
        assert_eq!(
            b.follow(&range),
            Some(RangeClosed {
                tgid: 1,
                sockets: vec![(4, Identity::Since(2)), (10, Identity::Since(3))],
                pass_on: false,
            })
        );
        assert_eq!(b.follow(&range[..26]), None);
        assert_eq!(b.take_range(1, 20, 5), Vec::new());
        // close_range(3, ~0U).
        assert_eq!(b.take_range(1, 3, u32::MAX).len(), 3);
        assert_eq!(b.len(), 0);
        // An exec hands back every socket the process had.
        b.add(2, 7, Identity::Since(1));
        b.add(2, 8, Identity::Unknown);
        let exec = encode::process(&meta(2, -1, 3), observer_common::ProcChange::Exec, 2);
        assert_eq!(b.follow(&exec).map(|c| c.sockets.len()), Some(2));
        let fork = encode::process(&meta(2, -1, 3), observer_common::ProcChange::Fork, 5);
        assert_eq!(b.follow(&fork), None);
    }

    #[test]
    fn identities_tell_a_reused_descriptor() {
        assert!(Identity::Since(5).matches(5));
        assert!(!Identity::Since(5).matches(6));
        assert!(Identity::Unknown.matches(6));
    }
}
