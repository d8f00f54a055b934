//! The userspace pipeline after capture: connection tracking → HTTP reassembly → classification
//! → events. Plain synchronous code, the same live and on recordings.
//!
//! This file holds the pipeline and its periodic work (losses, heartbeats, statistics);
//! [`conns`] the connection bookkeeping, [`exchanges`] the way from bytes to events. Joins every
//! stage after capture's decoding; must never import `sink`, `run` or `cli`.

mod client;
mod conns;
mod exchanges;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_login;
#[cfg(test)]
mod tests_proxy;
#[cfg(test)]
mod tests_spread;
mod undecoded;

use std::collections::HashMap;

use observer_common::ProcChange;
use serde_json::json;

use crate::addr::{Endpoints, Role, SockAddr};
use crate::capture::CaptureEvent;
use crate::conn::host::{Host, ProcessInfo};
use crate::conn::{ConnKey, ConnTable};
use crate::detect::Classifier;
use crate::detect::identity::Fingerprinter;
use crate::detect::login::LoginConfig;
use crate::detect::rules::{DetectConfig, Detector};
use crate::event::{Clock, ConnView, Event, Redactor, alert_event};
use crate::http::{CredentialNames, HttpCounters, TrustedProxies};

/// Processes and listening sockets whose details are cached.
const MAX_CACHED: usize = 4096;

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
    classifier: Classifier,
    detector: Detector,
    /// Peers whose forwarding headers name the client.
    proxies: TrustedProxies,
    /// What paths and queries lose before they are written.
    redactor: Redactor,
    /// `event.sequence` of the last event made: gap-free per run.
    next_sequence: u64,
    /// Userspace caps that bit, as last reported in a loss event.
    reported_caps: [u64; CAPS.len()],
    /// Connections that carry something other than HTTP, per process and protocol.
    undecoded: undecoded::Undecoded,
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
    /// Responses whose request was not parsed, shown to the status rules only.
    pub unpaired_responses: u64,
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
    /// Processes that became targets after the start (forked by a target, or found in a target
    /// cgroup) and targets that exited.
    pub processes_forked: u64,
    pub processes_joined: u64,
    pub processes_exited: u64,
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
            classifier: Classifier::default(),
            detector: Detector::new(DetectConfig::default()),
            proxies: TrustedProxies::default(),
            redactor: Redactor::default(),
            next_sequence: 0,
            reported_caps: [0; CAPS.len()],
            undecoded: undecoded::Undecoded::default(),
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

    /// Tells login attempts by these routes.
    pub fn with_login(mut self, login: LoginConfig) -> Self {
        self.classifier.login = login;
        self
    }

    pub fn with_detection(mut self, cfg: DetectConfig) -> Self {
        self.classifier.tools = cfg.attack_tools.clone();
        self.detector = Detector::new(cfg);
        self
    }

    /// Redacts paths and queries with the user's token formats too.
    pub fn with_redaction(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
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
                ref local,
            } => {
                let ends = match (peer, local) {
                    // Both read from the kernel's socket at the accept: nothing to look up.
                    (Some(p), Some(l)) => Endpoints {
                        local: Some(l.clone()),
                        peer: Some(p.clone()),
                    },
                    _ => self.accepted_endpoints(&meta, listen_fd, peer.clone()),
                };
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
                socket_losses,
                tls,
            } => {
                let key = ConnKey {
                    tgid: meta.tgid,
                    fd: meta.fd,
                };
                let known = match self.conns.get_mut(&key) {
                    Some(conn) => {
                        if conn.losses_seen != socket_losses {
                            // Higher: records were lost since the last one. Lower: the
                            // kernel's entry is a new socket's on the same descriptor, whose
                            // accept was lost too.
                            conn.losses_seen = socket_losses;
                            conn.http.on_lost();
                        }
                        true
                    }
                    None => false,
                };
                self.data(meta, direction, total_len, bytes, tls, out);
                // A connection first seen through this record starts from the kernel's count
                // as it stands: losses before it are no hole inside what is seen.
                if !known && let Some(conn) = self.conns.get_mut(&key) {
                    conn.losses_seen = socket_losses;
                }
            }
            CaptureEvent::Process {
                meta,
                change: ProcChange::Exit,
                ..
            } => {
                self.counters.processes_exited += 1;
                for conn in self.conns.forget_process(meta.tgid) {
                    self.finish(conn, meta.ts_ns, out);
                }
                self.processes.remove(&meta.tgid);
                self.listeners.retain(|k, _| k.tgid != meta.tgid);
                self.undecoded.forget(meta.tgid);
                self.host.forget(meta.tgid);
            }
            CaptureEvent::Process {
                meta,
                change: ProcChange::Exec,
                ..
            } => {
                // A new program: its name and executable are looked up again. Descriptors it
                // closed on exec come as close records once userspace has looked.
                self.processes.remove(&meta.tgid);
                self.undecoded.forget(meta.tgid);
                self.host.forget(meta.tgid);
            }
            CaptureEvent::CloseRange { meta, last } => {
                let first = meta.fd as u32;
                self.listeners.retain(|k, _| {
                    k.tgid != meta.tgid
                        || !u32::try_from(k.fd).is_ok_and(|fd| (first..=last).contains(&fd))
                });
                for conn in self.conns.close_range(meta.tgid, first, last) {
                    self.finish(conn, meta.ts_ns, out);
                }
            }
            CaptureEvent::Process {
                change: ProcChange::Fork,
                ..
            } => self.counters.processes_forked += 1,
            CaptureEvent::Process {
                change: ProcChange::Join,
                ..
            } => self.counters.processes_joined += 1,
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
                "bodies_capped": http.bodies_capped,
                "unpaired_dropped": http.unpaired_dropped,
                "unpaired_responses": self.counters.unpaired_responses,
                "h2_streams_over_cap": http.h2_streams_over_cap,
                "h2_header_blocks_over_cap": http.h2_header_blocks_over_cap,
                "h2_unknown_references": http.h2_unknown_references,
                "h2_hpack_errors": http.h2_hpack_errors,
                "h2_tables_capped": http.h2_tables_capped,
                "h2_framing_lost": http.h2_framing_lost,
                "h2_header_blocks_lost": http.h2_header_blocks_lost,
                "h2_push_promises": http.h2_push_promises,
                "h2_rst_streams": http.h2_rst_streams,
                "h2_goaways": http.h2_goaways,
                "h2_unknown_frames": http.h2_unknown_frames,
            },
            "late_address_lookups": self.counters.late_address_lookups,
            "tls_connections": self.counters.tls_connections,
            "processes": {
                "forked": self.counters.processes_forked,
                "joined": self.counters.processes_joined,
                "exited": self.counters.processes_exited,
            },
            "detection": {
                "alerts": self.detector.counters.alerts,
                "suppressed": self.detector.counters.suppressed,
                "evicted_keys": self.detector.counters.evicted,
            },
            "filtered_connections": self.counters.filtered_connections,
            "non_http_connections": self.counters.non_http_connections,
            "undecoded": self.undecoded.stats(),
        })
    }

    /// Gives an event made outside the pipeline (lifecycle, loss) its place in the sequence.
    pub fn stamp(&mut self, mut ev: Event) -> Event {
        if let Event::Blind(b) = &ev {
            self.undecoded.note_report(b.process.pid);
        }
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
}
