//! Connections of targets that carry something other than HTTP (a database or cache protocol,
//! TLS observer could not hook, HTTP/3 over QUIC): counted per process and protocol, and the
//! first of each reported as `sys_monitor_disabled` with the protocol's name, so that what
//! observer does not decode is never silent. DNS, which every process speaks, is counted
//! only; TLS is reported only for a process that had no `sys_monitor_disabled` yet (the TLS
//! scan's report, made first, already says why its ciphertext cannot be read).

use std::collections::HashMap;

use super::Pipeline;
use crate::addr::{Endpoints, SockAddr};
use crate::conn::host::Host;
use crate::event::{BlindProcess, Event, blind_event};
use crate::http::sniff::Guess;

/// (process, protocol) pairs counted at most; past it the counts start over (a pair may be
/// reported again: one more line, never a silence).
const MAX_PAIRS: usize = 4096;

/// Pairs listed in a heartbeat, most connections first.
const MAX_LISTED: usize = 32;

#[derive(Debug, Default)]
pub(super) struct Undecoded {
    /// Connections per (process, protocol), `None` standing for DNS.
    counts: HashMap<(u32, Option<Guess>), u64>,
    /// Processes that had a `sys_monitor_disabled`, whatever its reason.
    reported: std::collections::HashSet<u32>,
}

impl Undecoded {
    /// Counts one connection; true when it is the first of its pair and must be reported.
    fn note(&mut self, tgid: u32, guess: Option<Guess>) -> bool {
        if self.counts.len() >= MAX_PAIRS && !self.counts.contains_key(&(tgid, guess)) {
            self.counts.clear();
        }
        let n = self.counts.entry((tgid, guess)).or_insert(0);
        *n += 1;
        let explained = guess == Some(Guess::Tls) && self.reported.contains(&tgid);
        *n == 1 && guess.is_some() && !explained
    }

    /// Process `tgid` had a `sys_monitor_disabled` event.
    pub(super) fn note_report(&mut self, tgid: u32) {
        if self.reported.len() >= MAX_PAIRS {
            self.reported.clear();
        }
        self.reported.insert(tgid);
    }

    /// A process that exited or executed another program: its next use is reported anew.
    pub(super) fn forget(&mut self, tgid: u32) {
        self.counts.retain(|&(p, _), _| p != tgid);
        self.reported.remove(&tgid);
    }

    /// The heartbeat's list: `[{"pid", "protocol", "connections"}]`, the largest counts.
    pub(super) fn stats(&self) -> serde_json::Value {
        let mut pairs: Vec<_> = self.counts.iter().collect();
        pairs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.0.cmp(&b.0.0)));
        pairs
            .into_iter()
            .take(MAX_LISTED)
            .map(|(&(pid, guess), &n)| {
                serde_json::json!({
                    "pid": pid,
                    "protocol": guess.map_or("DNS", Guess::name),
                    "connections": n,
                })
            })
            .collect()
    }
}

fn port(a: &Option<SockAddr>) -> Option<u16> {
    match a {
        Some(SockAddr::Inet(s)) => Some(s.port()),
        _ => None,
    }
}

impl<H: Host> Pipeline<H> {
    /// A connection of process `tgid` found not to carry HTTP, with its protocol guessed.
    pub(super) fn undecoded(
        &mut self,
        tgid: u32,
        ends: &Endpoints,
        guess: Guess,
        ts_ns: u64,
        out: &mut Vec<Event>,
    ) {
        let dns = [port(&ends.local), port(&ends.peer)]
            .iter()
            .any(|p| matches!(p, Some(53 | 5353)));
        let guess = (!dns).then_some(guess);
        if !self.undecoded.note(tgid, guess) {
            return;
        }
        let Some(guess) = guess else {
            return;
        };
        let ports = match (port(&ends.local), port(&ends.peer)) {
            (Some(l), Some(p)) => format!(" (local port {l}, peer port {p})"),
            _ => String::new(),
        };
        let reason = format!(
            "a connection of the process{ports} speaks what looks like {}, not HTTP: observer \
             does not decode it and drops its bytes; this process's later such connections are \
             counted in the heartbeat's observer.stats.undecoded",
            guess.name()
        );
        tracing::warn!(pid = tgid, protocol = guess.name(), "{reason}");
        let info = self.process(tgid).clone();
        let ev = blind_event(
            self.clock.wall(ts_ns),
            &self.run_id,
            BlindProcess {
                pid: tgid,
                name: info.name.as_deref().map(str::to_string),
                executable: info.executable.as_deref().map(str::to_string),
            },
            reason,
        );
        out.push(self.stamp(ev));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pair_is_reported_once_and_dns_never() {
        let mut u = Undecoded::default();
        assert!(u.note(7, Some(Guess::Redis)));
        assert!(!u.note(7, Some(Guess::Redis)));
        assert!(u.note(7, Some(Guess::Tls)));
        assert!(u.note(8, Some(Guess::Redis)));
        assert!(!u.note(7, None));
        assert!(!u.note(7, None));
        let stats = u.stats();
        assert_eq!(stats[0]["pid"], 7);
        assert_eq!(stats[0]["connections"], 2);
        assert_eq!(stats.as_array().unwrap().len(), 4);
        u.forget(7);
        assert!(u.note(7, Some(Guess::Redis)));
        // TLS that a report already explained is counted only.
        u.note_report(9);
        assert!(!u.note(9, Some(Guess::Tls)));
        assert!(u.note(9, Some(Guess::MySql)));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut u = Undecoded::default();
        for pid in 0..(MAX_PAIRS as u32 * 3) {
            u.note(pid, Some(Guess::MySql));
        }
        assert!(u.counts.len() <= MAX_PAIRS);
        assert!(u.stats().as_array().unwrap().len() <= MAX_LISTED);
    }
}
