//! Socket bytes that move where observer cannot copy them: `splice` between a socket and a
//! pipe. The kernel side reports their byte counts in data records with nothing copied; this
//! says once per process that they exist, so the holes they leave in its exchanges are
//! explained. (`sendmmsg`/`recvmmsg` are counted the same way but not reported: glibc's
//! resolver sends every DNS query with them, on a connected UDP socket, and a report would
//! cry wolf for nearly every target.) Reads record layouts, not aya.

use std::collections::HashSet;

use observer_common::{DataEvent, EventKind, Syscall};

use super::tls::Blind;

/// Pairs remembered at most; past it the oldest knowledge is dropped and a process may be
/// reported again, which costs one more line, never a silence.
const MAX_REPORTED: usize = 4096;

#[derive(Debug, Default)]
pub struct UnseenPaths {
    /// (process, syscall id) already reported.
    reported: HashSet<(u32, u32)>,
}

impl UnseenPaths {
    /// Looks at one drained record; the first of its kind for a process is reported.
    pub fn note(&mut self, rec: &[u8], out: &mut Vec<Blind>) {
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(rec.get(at..at + 4)?.try_into().ok()?))
        };
        if rec.len() < DataEvent::HEADER || word(8) != Some(EventKind::Data as u32) {
            return;
        }
        let (Some(tgid), Some(syscall)) = (word(12), word(40)) else {
            return;
        };
        if syscall != Syscall::Splice as u32 {
            return;
        }
        let path = "splice";
        if self.reported.len() >= MAX_REPORTED {
            self.reported.clear();
        }
        if self.reported.insert((tgid, syscall)) {
            out.push(Blind {
                pid: tgid,
                reason: format!(
                    "the process moves socket bytes with {path}, which observer counts but \
                     cannot copy: exchanges on those connections have holes where those bytes \
                     were"
                ),
            });
        }
    }

    /// A process exited or executed a new program: a new use is worth a new report.
    pub fn forget(&mut self, pid: u32) {
        self.reported.retain(|&(p, _)| p != pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Meta, encode};
    use observer_common::Direction;

    fn record(tgid: u32, syscall: Syscall) -> Vec<u8> {
        let meta = Meta {
            ts_ns: 1,
            tgid,
            tid: tgid,
            fd: 4,
        };
        let mut rec = encode::data(&meta, Direction::Ingress, 100, &[]);
        rec[40..44].copy_from_slice(&(syscall as u32).to_ne_bytes());
        rec
    }

    #[test]
    fn one_report_per_process_and_path() {
        let mut u = UnseenPaths::default();
        let mut out = Vec::new();
        u.note(&record(7, Syscall::Splice), &mut out);
        u.note(&record(7, Syscall::Splice), &mut out);
        // A resolver's DNS queries are no reason for an alarm.
        u.note(&record(7, Syscall::MultiMessage), &mut out);
        u.note(&record(8, Syscall::Read), &mut out);
        u.note(&record(8, Syscall::Splice)[..30], &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].reason.contains("splice"));
        u.forget(7);
        u.note(&record(7, Syscall::Splice), &mut out);
        assert_eq!(out.len(), 2);
    }
}
