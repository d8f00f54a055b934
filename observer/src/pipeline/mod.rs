//! The userspace pipeline after capture: connection tracking → HTTP reassembly → classification
//! → events. Plain synchronous code, the same live and on recordings.

use std::collections::HashMap;

use observer_common::{Direction, ProcChange};
use serde_json::json;

use crate::addr::{Endpoints, Role, SockAddr};
use crate::capture::{CaptureEvent, Meta};
use crate::conn::host::{Host, ProcessInfo};
use crate::conn::{Conn, ConnKey, ConnTable};
use crate::detect::identity::Fingerprinter;
use crate::detect::rules::{DetectConfig, Detector, Facts};
use crate::event::{Clock, ConnView, Event, ExchangeContext, alert_event, exchange_event};
use crate::http::{CredentialNames, HttpCounters, Side, looks_like_start};

/// Processes and listening sockets whose details are cached.
const MAX_CACHED: usize = 4096;
/// Pieces of non-HTTP bytes after which a connection that never carried an exchange is
/// dropped, and the kernel side stops copying it.
const NON_HTTP_PIECES: u64 = 16;

pub struct Pipeline<H: Host> {
    host: H,
    clock: Clock,
    run_id: std::sync::Arc<str>,
    conns: ConnTable,
    /// What every exchange of a connection shares, made at its first exchange and kept for the
    /// rest, by connection id; dropped with the connection.
    views: HashMap<u64, Box<ConnView>>,
    processes: HashMap<u32, ProcessInfo>,
    /// Local address of listening sockets, for accepted connections whose fd was already gone
    /// when its addresses were looked up.
    listeners: HashMap<ConnKey, Option<SockAddr>>,
    /// Counters of connections already closed.
    http_closed: HttpCounters,
    pub counters: PipelineCounters,
    scratch: Vec<crate::http::Exchange>,
    /// Only connections with one of these ports (all when empty).
    ports: Vec<u16>,
    /// Sockets the port filter left out, for the kernel side to stop copying.
    untracked: Vec<ConnKey>,
    /// Without one, credentials are not reported (replay without the host key).
    fingerprinter: Option<Fingerprinter>,
    detector: Detector,
    /// `event.sequence` of the last event made: gap-free per run.
    next_sequence: u64,
    /// Userspace caps that bit, as last reported in a loss event.
    reported_caps: [u64; CAPS.len()],
}

/// Userspace limits whose bites are reported as losses: what each drops.
const CAPS: [&str; 5] = [
    // Connections dropped because the table was full.
    "connections_evicted",
    // Requests dropped because too many waited for a response on one connection.
    "pending_overflow",
    // Message heads longer than the parser holds.
    "heads_too_long",
    // Requests dropped where the kernel lost records of their connection.
    "dropped_at_holes",
    // Detection keys (sources, credentials) dropped because a rule's table was full.
    "detection_keys_evicted",
];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    pub records: u64,
    /// Records that could not be decoded (never expected from the kernel; possible in files).
    pub decode_errors: u64,
    pub exchanges: u64,
    /// Pieces on a connection of unknown role that did not show which way requests flow.
    pub unassigned_pieces: u64,
    /// Connections left out by the port filter.
    pub filtered_connections: u64,
    /// Connections dropped as not HTTP (database protocols, TLS, garbage).
    pub non_http_connections: u64,
    /// Connections whose socket was already closed or reused when its addresses were looked
    /// up; their local address comes from the listening socket or is left out.
    pub late_address_lookups: u64,
    /// Connections whose plaintext came from the OpenSSL probes.
    pub tls_connections: u64,
}

impl<H: Host> Pipeline<H> {
    pub fn new(host: H, clock: Clock, run_id: String) -> Self {
        Self {
            host,
            clock,
            run_id: run_id.into(),
            conns: ConnTable::new(),
            views: HashMap::new(),
            processes: HashMap::new(),
            listeners: HashMap::new(),
            http_closed: HttpCounters::default(),
            counters: PipelineCounters::default(),
            scratch: Vec::new(),
            ports: Vec::new(),
            untracked: Vec::new(),
            fingerprinter: None,
            detector: Detector::new(DetectConfig::default()),
            next_sequence: 0,
            reported_caps: [0; CAPS.len()],
        }
    }

    /// Fingerprints credentials under this key.
    pub fn with_fingerprinter(mut self, f: Fingerprinter) -> Self {
        self.fingerprinter = Some(f);
        self
    }

    /// Takes credentials from these headers and cookies.
    pub fn with_credential_names(mut self, names: CredentialNames) -> Self {
        self.conns = ConnTable::with_names(names);
        self
    }

    pub fn with_detection(mut self, cfg: DetectConfig) -> Self {
        self.detector = Detector::new(cfg);
        self
    }

    /// Keeps only connections with one of `ports` at either end (all when empty).
    pub fn with_ports(mut self, ports: Vec<u16>) -> Self {
        self.ports = ports;
        self
    }

    /// Sockets left out by the port filter since the last call.
    pub fn take_untracked(&mut self) -> Vec<ConnKey> {
        std::mem::take(&mut self.untracked)
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Processes one capture record, appending the events it completes to `out`.
    pub fn handle(&mut self, ev: &CaptureEvent<'_>, out: &mut Vec<Event>) {
        self.counters.records += 1;
        match *ev {
            CaptureEvent::Accept {
                meta,
                listen_fd,
                ref peer,
            } => {
                let ends = self.accepted_endpoints(&meta, listen_fd, peer.clone());
                self.open(meta, Role::Server, ends, out);
            }
            CaptureEvent::Connect {
                meta,
                ref peer,
                ref local,
            } => {
                let ends = match local {
                    // The kernel saw both ends: nothing to look up.
                    Some(l) => Endpoints {
                        local: Some(l.clone()),
                        peer: peer.clone(),
                    },
                    None => self.connected_endpoints(&meta, peer.clone()),
                };
                self.open(meta, Role::Client, ends, out);
            }
            CaptureEvent::Data {
                meta,
                direction,
                total_len,
                bytes,
                lost_before,
                tls,
            } => {
                if lost_before > 0
                    && let Some(conn) = self.conns.get_mut(&ConnKey {
                        tgid: meta.tgid,
                        fd: meta.fd,
                    })
                {
                    conn.http.on_lost();
                }
                self.data(meta, direction, total_len, bytes, tls, out)
            }
            CaptureEvent::Process {
                meta,
                change: ProcChange::Exit,
                ..
            } => {
                for conn in self.conns.forget_process(meta.tgid) {
                    self.finish(conn, meta.ts_ns, out);
                }
                self.processes.remove(&meta.tgid);
                self.listeners.retain(|k, _| k.tgid != meta.tgid);
                self.host.forget(meta.tgid);
            }
            CaptureEvent::Process { .. } => {}
            CaptureEvent::Close { meta } => {
                let key = ConnKey {
                    tgid: meta.tgid,
                    fd: meta.fd,
                };
                self.listeners.remove(&key);
                if let Some(conn) = self.conns.close(&key) {
                    self.finish(conn, meta.ts_ns, out);
                }
            }
        }
    }

    /// Decodes and handles one raw ring-buffer record. Returns the process change it reports
    /// (what changed, and the process), for the kernel side to act on.
    pub fn handle_raw(&mut self, rec: &[u8], out: &mut Vec<Event>) -> Option<(ProcChange, u32)> {
        match crate::capture::decode(rec) {
            Ok(ev) => {
                tracing::trace!(?ev, "record");
                self.handle(&ev, out);
                match ev {
                    CaptureEvent::Process { meta, change, pid } => Some((
                        change,
                        if change == ProcChange::Fork {
                            pid
                        } else {
                            meta.tgid
                        },
                    )),
                    _ => None,
                }
            }
            Err(e) => {
                self.counters.decode_errors += 1;
                tracing::debug!("skipping a record: {e}");
                None
            }
        }
    }

    /// Periodic work, live and in replay alike: report what the kernel side lost (by counter),
    /// forget idle connections, end detection cooldowns.
    pub fn maintain(&mut self, now_ns: u64, losses: &[(String, u64)], out: &mut Vec<Event>) {
        let total: u64 = losses.iter().map(|(_, n)| n).sum();
        let mut loss = serde_json::Map::new();
        if total > 0 {
            tracing::warn!(?losses, "the kernel side lost records");
            self.note_loss(now_ns, total);
            let mut kernel = serde_json::Map::new();
            for (name, n) in losses {
                kernel.insert(name.clone(), json!(n));
            }
            loss.insert("kernel".into(), serde_json::Value::Object(kernel));
        }
        let mut userspace = serde_json::Map::new();
        for (i, now) in self.caps().into_iter().enumerate() {
            if now > self.reported_caps[i] {
                userspace.insert(CAPS[i].into(), json!(now - self.reported_caps[i]));
                self.reported_caps[i] = now;
            }
        }
        if !userspace.is_empty() {
            tracing::warn!(?userspace, "observer's own limits dropped data");
            loss.insert("userspace".into(), serde_json::Value::Object(userspace));
        }
        if !loss.is_empty() {
            let ev = crate::event::loss_event(self.clock.wall(now_ns), &self.run_id, loss);
            out.push(self.stamp(ev));
        }
        self.expire(now_ns, out);
        self.tick(now_ns, out);
    }

    /// A heartbeat: every counter so far and `process`, observer's own resource use.
    pub fn heartbeat(&mut self, now_ns: u64, process: serde_json::Value, out: &mut Vec<Event>) {
        let mut metrics = self.stats();
        metrics["process"] = process;
        let ev = crate::event::heartbeat_event(self.clock.wall(now_ns), &self.run_id, metrics);
        out.push(self.stamp(ev));
    }

    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    /// Forgets connections idle for too long; call now and then.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        for conn in self.conns.expire(now_ns) {
            self.finish(conn, now_ns, out);
        }
    }

    /// HTTP counters of every connection, closed or open.
    fn http_counters(&self) -> HttpCounters {
        let mut http = self.http_closed;
        http.add(&self.conns.open_http_counters());
        http
    }

    /// Totals of the userspace caps, in the order of [`CAPS`].
    fn caps(&self) -> [u64; CAPS.len()] {
        let http = self.http_counters();
        [
            self.conns.counters.evicted,
            http.pending_overflow,
            http.heads_too_long,
            http.dropped_at_holes,
            self.detector.counters.evicted,
        ]
    }

    /// Totals for health reporting.
    pub fn stats(&self) -> serde_json::Value {
        let http = self.http_counters();
        let c = &self.conns.counters;
        json!({
            "records": self.counters.records,
            "decode_errors": self.counters.decode_errors,
            "exchanges": self.counters.exchanges,
            "connections": {
                "open": self.conns.len(),
                "opened": c.opened,
                "adopted": c.adopted,
                "evicted": c.evicted,
                "expired": c.expired,
            },
            "http": {
                "skipped_pieces": http.skipped_pieces + self.counters.unassigned_pieces,
                "resyncs": http.resyncs,
                "heads_too_long": http.heads_too_long,
                "truncated_heads": http.truncated_heads,
                "orphan_responses": http.orphan_responses,
                "pending_overflow": http.pending_overflow,
                "unanswered": http.unanswered,
                "capture_holes": http.capture_holes,
                "dropped_at_holes": http.dropped_at_holes,
            },
            "late_address_lookups": self.counters.late_address_lookups,
            "tls_connections": self.counters.tls_connections,
            "detection": {
                "alerts": self.detector.counters.alerts,
                "suppressed": self.detector.counters.suppressed,
                "evicted_keys": self.detector.counters.evicted,
            },
            "filtered_connections": self.counters.filtered_connections,
            "non_http_connections": self.counters.non_http_connections,
        })
    }

    fn process(&mut self, tgid: u32) -> &ProcessInfo {
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
    fn view(&mut self, role: Role, ends: &Endpoints, tgid: u32) -> Box<ConnView> {
        let name = self.process(tgid).name.as_deref();
        Box::new(ConnView::new(role, ends, name))
    }

    fn accepted_endpoints(
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

    fn connected_endpoints(&mut self, meta: &Meta, peer: Option<SockAddr>) -> Endpoints {
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

    fn open(&mut self, meta: Meta, role: Role, ends: Endpoints, out: &mut Vec<Event>) {
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

    fn wanted(&self, ends: &Endpoints) -> bool {
        self.ports.is_empty() || ends.has_port(&self.ports)
    }

    /// Drops a connection's bytes from now on and tells the kernel side to stop copying them.
    fn ignore(&mut self, key: ConnKey) {
        if let Some(c) = self.conns.get_mut(&key) {
            c.ignored = true;
        }
        self.untracked.push(key);
    }

    fn filter_out(&mut self, key: ConnKey) {
        self.counters.filtered_connections += 1;
        self.ignore(key);
    }

    fn data(
        &mut self,
        meta: Meta,
        direction: Direction,
        total_len: u64,
        bytes: &[u8],
        tls: bool,
        out: &mut Vec<Event>,
    ) {
        let key = ConnKey {
            tgid: meta.tgid,
            fd: meta.fd,
        };
        if self.conns.get_mut(&key).is_none() {
            // A connection that existed before observer attached.
            let ends = self.host.endpoints(meta.tgid, meta.fd).unwrap_or_default();
            let keep = self.wanted(&ends);
            self.conns.open(key, meta.tid, None, ends, meta.ts_ns);
            self.forget_evicted();
            self.conns.note_adopted();
            if !keep {
                self.filter_out(key);
            }
        }
        let conn = self.conns.get_mut(&key).expect("just inserted");
        if conn.ignored {
            return;
        }
        if tls != conn.tls {
            if !tls {
                // Ciphertext that slipped through before the kernel side knew (a record in
                // flight): never parsed.
                return;
            }
            // The first plaintext: what came before was the TLS handshake.
            conn.tls = true;
            conn.http.restart_for_tls();
            self.counters.tls_connections += 1;
        }
        conn.last_ns = meta.ts_ns;
        conn.last_tid = meta.tid;
        let role = match conn.role {
            Some(r) => r,
            None => match infer_role(direction, bytes) {
                Some(r) => {
                    conn.role = Some(r);
                    r
                }
                None => {
                    self.counters.unassigned_pieces += 1;
                    return;
                }
            },
        };
        let side = crate::conn::side(role, direction);
        let mut done = std::mem::take(&mut self.scratch);
        conn.http
            .on_data(side, bytes, total_len, meta.ts_ns, &mut done);
        conn.exchanges += done.len() as u64;
        if conn.exchanges == 0 && conn.http.counters.skipped_pieces >= NON_HTTP_PIECES {
            self.counters.non_http_connections += 1;
            self.counters.filtered_connections =
                self.counters.filtered_connections.saturating_sub(1);
            self.ignore(key);
        }
        if !done.is_empty() {
            let conn = self.conns.get_mut(&key).expect("still tracked");
            let (id, tls) = (conn.id, conn.tls);
            let view = match self.views.remove(&id) {
                Some(v) => v,
                None => {
                    let ends = conn.endpoints.clone();
                    self.view(role, &ends, meta.tgid)
                }
            };
            self.emit_exchanges(&mut done, role, id, &view, tls, meta.tgid, meta.tid, out);
            if self.conns.get_mut(&key).is_some() {
                self.views.insert(id, view);
            }
        }
        self.scratch = done;
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_exchanges(
        &mut self,
        done: &mut Vec<crate::http::Exchange>,
        role: Role,
        connection_id: u64,
        view: &ConnView,
        tls: bool,
        tgid: u32,
        tid: u32,
        out: &mut Vec<Event>,
    ) {
        self.process(tgid);
        let process = &self.processes[&tgid];
        let source_ip = view.source.as_ref().and_then(|s| s.ip.as_deref());
        let ctx = ExchangeContext {
            role,
            connection_id,
            view,
            tls,
            tgid,
            tid,
            process,
            run_id: &self.run_id,
            clock: &self.clock,
        };
        for mut x in done.drain(..) {
            // The raw credential goes no further than this.
            let credential = x
                .request
                .credential
                .take()
                .and_then(|raw| self.fingerprinter.as_ref().map(|f| f.credential(&raw)));
            self.next_sequence += 1;
            let mut ev = exchange_event(&x, credential.as_ref(), &ctx);
            ev.meta_mut().sequence = self.next_sequence;
            out.push(ev);
            self.counters.exchanges += 1;
            let facts = Facts {
                ts_ns: x.response.end_ns,
                sequence: self.next_sequence,
                status: x.response.status,
                source_ip,
                credential: credential.as_ref().map(|c| c.fingerprint.as_str()),
                service: Some(&view.service),
            };
            for alert in self.detector.observe(&facts) {
                self.next_sequence += 1;
                let mut ev = alert_event(&alert, &self.clock, &self.run_id);
                ev.meta_mut().sequence = self.next_sequence;
                out.push(ev);
            }
        }
    }

    /// Gives an event made outside the pipeline (lifecycle, loss) its place in the sequence.
    pub fn stamp(&mut self, mut ev: Event) -> Event {
        self.next_sequence += 1;
        ev.meta_mut().sequence = self.next_sequence;
        ev
    }

    /// Ends detection cooldowns that are over; call now and then.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        for alert in self.detector.tick(now_ns) {
            let ev = alert_event(&alert, &self.clock, &self.run_id);
            out.push(self.stamp(ev));
        }
    }

    /// Records losses so alerts over the same time say their counts may be low.
    pub fn note_loss(&mut self, now_ns: u64, n: u64) {
        self.detector.note_loss(now_ns, n);
    }

    /// Drops the view of the connection the table just evicted, if it did.
    fn forget_evicted(&mut self) {
        if let Some(id) = self.conns.take_evicted() {
            self.views.remove(&id);
        }
    }

    fn finish(&mut self, mut conn: Conn, ts_ns: u64, out: &mut Vec<Event>) {
        let cached = self.views.remove(&conn.id);
        let mut done = Vec::new();
        conn.http.on_close(ts_ns, &mut done);
        self.http_closed.add(&conn.http.counters);
        if let (Some(role), false) = (conn.role, done.is_empty()) {
            let (tgid, tid) = (conn.key.tgid, conn.last_tid);
            let view = match cached {
                Some(v) => v,
                None => self.view(role, &conn.endpoints, tgid),
            };
            self.emit_exchanges(&mut done, role, conn.id, &view, conn.tls, tgid, tid, out);
        }
    }
}

/// Which role a connection of unknown origin has, from a piece of its traffic.
fn infer_role(direction: Direction, bytes: &[u8]) -> Option<Role> {
    if bytes.len() < 5 {
        return None;
    }
    let request = looks_like_start(Side::Request, bytes);
    let response = bytes.starts_with(b"HTTP/");
    match (direction, request, response) {
        (Direction::Ingress, true, false) | (Direction::Egress, false, true) => Some(Role::Server),
        (Direction::Egress, true, false) | (Direction::Ingress, false, true) => Some(Role::Client),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{decode, encode};
    use crate::conn::host::NoHost;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn meta(fd: i32, ts: u64) -> Meta {
        Meta {
            ts_ns: ts,
            tgid: 42,
            tid: 43,
            fd,
        }
    }

    /// A data record whose bytes were all copied.
    fn data(m: Meta, d: Direction, bytes: &[u8]) -> Vec<u8> {
        encode::data(&m, d, bytes.len() as u64, bytes)
    }

    fn run(records: &[Vec<u8>]) -> Vec<serde_json::Value> {
        let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "run".into());
        let mut out = Vec::new();
        for r in records {
            p.handle(&decode(r).unwrap(), &mut out);
        }
        out.iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }

    #[test]
    fn userspace_caps_that_bite_are_reported_as_losses_once() {
        let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "run".into());
        let mut out = Vec::new();
        let peer = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
        let mut feed = |p: &mut Pipeline<NoHost>, rec: Vec<u8>| {
            p.handle(&decode(&rec).unwrap(), &mut out);
        };
        feed(
            &mut p,
            encode::conn(&meta(7, 1), 3, &encode::sockaddr_in(peer)),
        );
        feed(&mut p, data(meta(7, 2), Direction::Ingress, b"GET /"));
        let filler = vec![b'a'; 4000];
        for i in 0..10 {
            feed(&mut p, data(meta(7, 3 + i), Direction::Ingress, &filler));
        }
        let mut out = Vec::new();
        p.maintain(100, &[], &mut out);
        p.maintain(200, &[], &mut out);
        let losses: Vec<serde_json::Value> = out
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .filter(|e| e["event"]["action"] == "loss")
            .collect();
        assert_eq!(losses.len(), 1, "{losses:?}");
        assert_eq!(
            losses[0]["observer"]["loss"]["userspace"]["heads_too_long"],
            1
        );
        assert_eq!(
            p.stats()["http"]["heads_too_long"],
            1,
            "open connections count"
        );
    }

    #[test]
    fn accepted_connection_yields_server_exchange_with_addresses() {
        let peer = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
        let events = run(&[
            encode::conn(&meta(7, 1), 3, &encode::sockaddr_in(peer)),
            data(
                meta(7, 2),
                Direction::Ingress,
                b"POST /login?password=hunter2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            ),
            data(
                meta(7, 5),
                Direction::Egress,
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
            ),
            encode::close(&meta(7, 6)),
        ]);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e["event"]["action"], "authn_login_fail");
        assert_eq!(e["http"]["request"]["method"], "POST");
        assert_eq!(e["http"]["response"]["status_code"], 401);
        assert_eq!(e["url"]["path"], "/login");
        assert_eq!(e["url"]["query"], "password=REDACTED");
        assert_eq!(e["source"]["ip"], "127.0.0.1");
        assert_eq!(e["source"]["port"], 40000);
        assert_eq!(e["observer"]["role"], "server");
        assert_eq!(e["process"]["pid"], 42);
        assert_eq!(e["event"]["duration"], 3);
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn preexisting_connection_role_is_inferred() {
        let events = run(&[
            // Middle of an old response first: skipped.
            data(meta(9, 1), Direction::Egress, b"older"),
            data(meta(9, 2), Direction::Egress, b"GET /x HTTP/1.1\r\n\r\n"),
            data(
                meta(9, 3),
                Direction::Ingress,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ),
        ]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["observer"]["role"], "client");
    }

    #[test]
    fn port_filter_keeps_only_named_ports() {
        let mut p =
            Pipeline::new(NoHost, Clock::with_offset(0), "run".into()).with_ports(vec![8080]);
        let mut out = Vec::new();
        let to = |port| encode::sockaddr_in(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let req = b"GET / HTTP/1.1\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        for (fd, port) in [(5, 9090), (6, 8080)] {
            // The target is a client connecting to `port`.
            let recs = [
                encode::conn(&meta(fd, 1), -1, &to(port)),
                data(meta(fd, 2), Direction::Egress, req),
                data(meta(fd, 3), Direction::Ingress, resp),
            ];
            for r in &recs {
                p.handle(&decode(r).unwrap(), &mut out);
            }
        }
        assert_eq!(out.len(), 1);
        let e = serde_json::to_value(&out[0]).unwrap();
        assert_eq!(e["destination"]["port"], 8080);
        assert_eq!(p.take_untracked(), vec![ConnKey { tgid: 42, fd: 5 }]);
    }

    #[test]
    fn non_http_connections_are_dropped_after_a_few_pieces() {
        let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "run".into());
        let mut out = Vec::new();
        let recs: Vec<Vec<u8>> = std::iter::once(encode::conn(&meta(5, 1), 3, &[]))
            .chain((0..20).map(|i| {
                data(
                    meta(5, i + 2),
                    Direction::Ingress,
                    b"\x16\x03\x01\x02\x00tls",
                )
            }))
            .collect();
        for r in &recs {
            p.handle(&decode(r).unwrap(), &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(p.take_untracked(), vec![ConnKey { tgid: 42, fd: 5 }]);
        assert_eq!(p.counters.non_http_connections, 1);
    }

    #[test]
    fn process_exit_forgets_its_connections() {
        let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "run".into());
        let mut out = Vec::new();
        let recs = [
            encode::conn(&meta(5, 1), 3, &[]),
            encode::process(&meta(-1, 2), ProcChange::Exit, 42),
        ];
        for r in &recs {
            p.handle(&decode(r).unwrap(), &mut out);
        }
        assert_eq!(p.stats()["connections"]["open"], 0);
    }

    #[test]
    fn reused_fd_does_not_mix_connections() {
        let peer = encode::sockaddr_in(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));
        let events = run(&[
            encode::conn(&meta(5, 1), 3, &peer),
            data(meta(5, 2), Direction::Ingress, b"GET /a HTTP/1.1\r\n\r\n"),
            // close lost; the fd is accepted again
            encode::conn(&meta(5, 3), 3, &peer),
            data(
                meta(5, 4),
                Direction::Egress,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ),
        ]);
        assert!(
            events.is_empty(),
            "a response on a new connection pairs with nothing"
        );
    }
}
