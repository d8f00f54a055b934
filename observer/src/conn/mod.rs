//! Connection tracking: which socket of which process a piece of bytes belongs to, who the peer
//! is, and which way requests flow.
//!
//! A connection is keyed by process and fd. File descriptors are reused as soon as they close, so
//! each connection also gets an id of its own (its generation) that is never reused in a run.
//! Memory is bounded: the table has a cap, and idle connections expire; both are counted.
//!
//! Owns the connection table and, in [`host`], the host lookups of endpoints and processes.
//! Holds each connection's HTTP state, so it may import `http`; it must not import `capture`,
//! `detect`, `event` or `sink` (addresses come from the leaf `addr`).

pub mod host;

use std::sync::Arc;

use observer_common::Direction;

use crate::addr::{Endpoints, Role};
use crate::http::{CredentialNames, HttpConn, HttpCounters, Side};

/// Connections tracked at once before the least recently used is dropped.
pub const MAX_CONNS: usize = 16384;
/// A connection with no traffic for this long is forgotten.
pub const IDLE_NS: u64 = 10 * 60 * 1_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: i32,
}

/// Which half of the conversation bytes moving in `direction` are, for a target in `role`.
pub fn side(role: Role, direction: Direction) -> Side {
    match (role, direction) {
        (Role::Server, Direction::Ingress) | (Role::Client, Direction::Egress) => Side::Request,
        _ => Side::Response,
    }
}

#[derive(Debug)]
pub struct Conn {
    /// Never reused within a run.
    pub id: u64,
    pub key: ConnKey,
    /// The thread that last moved bytes on it.
    pub last_tid: u32,
    /// `None` for a connection seen first in the middle (it existed before observer started)
    /// until its traffic shows which way requests flow.
    pub role: Option<Role>,
    pub endpoints: Endpoints,
    pub http: HttpConn,
    pub last_ns: u64,
    /// Left out by the port filter, or not HTTP: its bytes are dropped.
    pub ignored: bool,
    /// Exchanges it produced.
    pub exchanges: u64,
    /// Its plaintext comes from the OpenSSL probes; its syscalls move ciphertext.
    pub tls: bool,
    /// The kernel's count of this socket's lost records, as the last data record said: a
    /// record with another count follows a hole.
    pub losses_seen: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounters {
    pub opened: u64,
    /// Connections first seen through their traffic (opened before observer attached).
    pub adopted: u64,
    /// Dropped because the table was full.
    pub evicted: u64,
    /// Forgotten after [`IDLE_NS`] without traffic.
    pub expired: u64,
}

#[derive(Debug)]
pub struct ConnTable {
    /// Keyed by (process, fd) that the kernel hands out, not by anything traffic chooses, so a
    /// fast hash without flooding protection fits.
    /// Least recently used first, so making room is O(1): every access through
    /// [`ConnTable::get_mut`] counts as a use.
    conns: lru::LruCache<ConnKey, Conn, foldhash::fast::FixedState>,
    next_id: u64,
    names: Arc<CredentialNames>,
    /// The connection the last [`ConnTable::open`] evicted to make room, if any.
    last_evicted: Option<Conn>,
    pub counters: ConnCounters,
}

impl Default for ConnTable {
    fn default() -> Self {
        Self {
            conns: lru::LruCache::unbounded_with_hasher(foldhash::fast::FixedState::default()),
            next_id: 0,
            names: Arc::default(),
            last_evicted: None,
            counters: ConnCounters::default(),
        }
    }
}

impl ConnTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// New connections take credentials from the headers and cookies `names` lists.
    pub fn with_names(names: CredentialNames) -> Self {
        Self {
            names: Arc::new(names),
            ..Self::default()
        }
    }

    /// HTTP counters of the open connections, summed.
    pub fn open_http_counters(&self) -> HttpCounters {
        let mut sum = HttpCounters::default();
        for (_, c) in self.conns.iter() {
            sum.add(&c.http.counters);
        }
        sum
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Starts tracking a connection the kernel saw open. A connection still tracked under the
    /// same key (its close was lost) is returned so its pending state can be finished.
    pub fn open(
        &mut self,
        key: ConnKey,
        tid: u32,
        role: Option<Role>,
        endpoints: Endpoints,
        now_ns: u64,
    ) -> Option<Conn> {
        let replaced = self.conns.pop(&key);
        self.last_evicted = None;
        if replaced.is_none() {
            self.make_room();
        }
        self.next_id += 1;
        self.counters.opened += 1;
        self.conns.put(
            key,
            Conn {
                id: self.next_id,
                key,
                last_tid: tid,
                role,
                endpoints,
                http: HttpConn::with_names(self.names.clone()),
                last_ns: now_ns,
                ignored: false,
                exchanges: 0,
                tls: false,
                losses_seen: 0,
            },
        );
        replaced
    }

    /// The connection the last [`ConnTable::open`] dropped to make room, for whoever keeps
    /// something per connection and so that its counters still reach the totals.
    pub fn take_evicted(&mut self) -> Option<Conn> {
        self.last_evicted.take()
    }

    pub fn get_mut(&mut self, key: &ConnKey) -> Option<&mut Conn> {
        self.conns.get_mut(key)
    }

    /// Counts a connection adopted from its traffic.
    pub fn note_adopted(&mut self) {
        self.counters.adopted += 1;
    }

    pub fn close(&mut self, key: &ConnKey) -> Option<Conn> {
        self.conns.pop(key)
    }

    /// Removes connections idle since before `now_ns - IDLE_NS`, returning them.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Conn> {
        let cutoff = now_ns.saturating_sub(IDLE_NS);
        let stale: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.last_ns < cutoff)
            .map(|(k, _)| *k)
            .collect();
        self.counters.expired += stale.len() as u64;
        stale.iter().filter_map(|k| self.conns.pop(k)).collect()
    }

    /// Removes the connections of `tgid` with descriptors in `first..=last` (close_range, as a
    /// recording may hold it; live, capture hands over one close per socket instead), returning
    /// them.
    pub fn close_range(&mut self, tgid: u32, first: u32, last: u32) -> Vec<Conn> {
        let inside = |fd: i32| u32::try_from(fd).is_ok_and(|fd| (first..=last).contains(&fd));
        let keys: Vec<ConnKey> = self
            .conns
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| k.tgid == tgid && inside(k.fd))
            .collect();
        keys.iter().filter_map(|k| self.conns.pop(k)).collect()
    }

    /// Forgets every connection of a process that exited.
    pub fn forget_process(&mut self, tgid: u32) -> Vec<Conn> {
        let keys: Vec<ConnKey> = self
            .conns
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| k.tgid == tgid)
            .collect();
        keys.iter().filter_map(|k| self.conns.pop(k)).collect()
    }

    fn make_room(&mut self) {
        if self.conns.len() < MAX_CONNS {
            return;
        }
        if let Some((_, oldest)) = self.conns.pop_lru() {
            self.last_evicted = Some(oldest);
            self.counters.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fd: i32) -> ConnKey {
        ConnKey { tgid: 1, fd }
    }

    #[test]
    fn reused_fd_gets_a_new_id() {
        let mut t = ConnTable::new();
        assert!(
            t.open(key(3), 0, Some(Role::Server), Endpoints::default(), 0)
                .is_none()
        );
        let first = t.get_mut(&key(3)).unwrap().id;
        let old = t.open(key(3), 0, Some(Role::Server), Endpoints::default(), 1);
        assert_eq!(old.unwrap().id, first);
        assert_ne!(t.get_mut(&key(3)).unwrap().id, first);
    }

    #[test]
    fn table_is_bounded() {
        let mut t = ConnTable::new();
        for fd in 0..(MAX_CONNS as i32 + 10) {
            t.open(key(fd), 0, None, Endpoints::default(), fd as u64);
        }
        assert_eq!(t.len(), MAX_CONNS);
        assert_eq!(t.counters.evicted, 10);
        // The oldest went first, and each one evicted is handed over, counters and all.
        assert!(t.get_mut(&key(0)).is_none());
        assert!(t.get_mut(&key(MAX_CONNS as i32 + 9)).is_some());
        let last = t.take_evicted().expect("the last open evicted one");
        assert_eq!(last.key, key(9));
        assert!(t.take_evicted().is_none());
    }

    #[test]
    fn a_connection_in_use_is_not_the_one_evicted() {
        let mut t = ConnTable::new();
        t.open(key(0), 0, None, Endpoints::default(), 0);
        for fd in 1..MAX_CONNS as i32 {
            t.open(key(fd), 0, None, Endpoints::default(), fd as u64);
            if fd % 1000 == 0 {
                // Traffic on the first connection keeps it recent.
                assert!(t.get_mut(&key(0)).is_some());
            }
        }
        t.open(key(-1), 0, None, Endpoints::default(), u64::MAX);
        assert!(t.get_mut(&key(0)).is_some(), "the busy connection stays");
        assert_eq!(t.take_evicted().map(|c| c.key), Some(key(1)));
    }

    #[test]
    fn idle_connections_expire() {
        let mut t = ConnTable::new();
        t.open(key(1), 0, None, Endpoints::default(), 0);
        t.open(key(2), 0, None, Endpoints::default(), IDLE_NS + 5);
        let gone = t.expire(IDLE_NS + 10);
        assert_eq!(gone.len(), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.counters.expired, 1);
    }

    #[test]
    fn roles_map_directions_to_sides() {
        assert_eq!(side(Role::Server, Direction::Ingress), Side::Request);
        assert_eq!(side(Role::Server, Direction::Egress), Side::Response);
        assert_eq!(side(Role::Client, Direction::Egress), Side::Request);
        assert_eq!(side(Role::Client, Direction::Ingress), Side::Response);
    }
}
