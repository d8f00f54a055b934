//! Connection bookkeeping of the pipeline: endpoints of new connections (from the record, the
//! host, or the listening socket), the port filter, and the per-connection views and process
//! details it caches.

use super::{MAX_CACHED, Pipeline};
use crate::addr::{Endpoints, Role, SockAddr};
use crate::capture::Meta;
use crate::conn::ConnKey;
use crate::conn::host::{Host, ProcessInfo};
use crate::event::{ConnView, Event};

impl<H: Host> Pipeline<H> {
    pub(super) fn process(&mut self, tgid: u32) -> &ProcessInfo {
        if !self.processes.contains_key(&tgid) {
            if self.processes.len() >= MAX_CACHED {
                self.processes.clear();
            }
            let info = self.host.process(tgid);
            self.processes.insert(tgid, info);
        }
        &self.processes[&tgid]
    }

    /// The shared view of a connection's exchanges.
    pub(super) fn view(&mut self, role: Role, ends: &Endpoints, tgid: u32) -> Box<ConnView> {
        let name = self.process(tgid).name.as_deref();
        let mut view = Box::new(ConnView::new(role, ends, name));
        self.mark_trusted(&mut view, role, ends);
        view
    }

    pub(super) fn accepted_endpoints(
        &mut self,
        meta: &Meta,
        listen_fd: i32,
        peer: Option<SockAddr>,
    ) -> Endpoints {
        if let Some(live) = self.host.endpoints(meta.tgid, meta.fd)
            && (peer.is_none() || live.peer == peer)
        {
            return live;
        }
        if peer.is_some() {
            self.counters.late_address_lookups += 1;
        }
        // The fd closed (or was reused) before we looked: the listening socket still knows the
        // local address.
        let key = ConnKey {
            tgid: meta.tgid,
            fd: listen_fd,
        };
        if !self.listeners.contains_key(&key) {
            if self.listeners.len() >= MAX_CACHED {
                self.listeners.clear();
            }
            let local = self
                .host
                .endpoints(meta.tgid, listen_fd)
                .and_then(|e| e.local);
            self.listeners.insert(key, local);
        }
        let local = self.listeners[&key].clone();
        Endpoints { local, peer }
    }

    pub(super) fn connected_endpoints(&mut self, meta: &Meta, peer: Option<SockAddr>) -> Endpoints {
        match self.host.endpoints(meta.tgid, meta.fd) {
            // A connect still in progress has no peer yet; its local address is already bound.
            Some(live) if live.peer.is_none() || live.peer == peer || peer.is_none() => Endpoints {
                local: live.local,
                peer: peer.or(live.peer),
            },
            Some(_) => {
                self.counters.late_address_lookups += 1;
                Endpoints { local: None, peer }
            }
            None => Endpoints { local: None, peer },
        }
    }

    pub(super) fn open(&mut self, meta: Meta, role: Role, ends: Endpoints, out: &mut Vec<Event>) {
        let key = ConnKey {
            tgid: meta.tgid,
            fd: meta.fd,
        };
        let keep = self.wanted(&ends);
        let replaced = self.conns.open(key, meta.tid, Some(role), ends, meta.ts_ns);
        self.forget_evicted();
        if let Some(old) = replaced {
            self.finish(old, meta.ts_ns, out);
        }
        if keep {
            // Now, while the process surely runs: a short-lived client (curl) is often gone by
            // the time its exchange completes.
            self.process(meta.tgid);
        } else {
            self.filter_out(key);
        }
    }

    pub(super) fn wanted(&self, ends: &Endpoints) -> bool {
        self.ports.is_empty() || ends.has_port(&self.ports)
    }

    /// Drops a connection's bytes from now on and tells the kernel side to stop copying them.
    pub(super) fn ignore(&mut self, key: ConnKey) {
        if let Some(c) = self.conns.get_mut(&key) {
            c.ignored = true;
        }
        self.untracked.push(key);
    }

    pub(super) fn filter_out(&mut self, key: ConnKey) {
        self.counters.filtered_connections += 1;
        self.ignore(key);
    }

    /// Drops the view of the connection the table just evicted, if it did, keeping its HTTP
    /// counters in the totals (its losses and drops are still reported).
    pub(super) fn forget_evicted(&mut self) {
        if let Some(c) = self.conns.take_evicted() {
            self.views.remove(&c.id);
            let mut counters = c.http.counters;
            // Requests still waiting for their answers go unanswered, and are counted so.
            counters.unanswered += c.http.pending() as u64;
            self.http_closed.add(&counters);
        }
    }
}
