//! Bytes to exchanges to events: a connection's data through HTTP reassembly, each exchange
//! made an event (its credential fingerprinted) and shown to the detector, in sequence.

use observer_common::Direction;

use super::Pipeline;
use crate::addr::Role;
use crate::capture::Meta;
use crate::conn::host::Host;
use crate::conn::{Conn, ConnKey};
use crate::detect::rules::{Detector, Facts};
use crate::event::{
    Clock, ConnView, Event, ExchangeContext, alert_event, exchange_event, forwarded_client,
};
use crate::http::{Side, Unpaired, looks_like_start};

/// Pieces of non-HTTP bytes after which a connection that never carried an exchange is
/// dropped, and the kernel side stops copying it.
const NON_HTTP_PIECES: u64 = 16;

impl<H: Host> Pipeline<H> {
    pub(super) fn data(
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
        let mut unpaired = Vec::new();
        conn.http.take_unpaired(&mut unpaired);
        conn.exchanges += done.len() as u64;
        if conn.exchanges == 0 && conn.http.counters.skipped_pieces >= NON_HTTP_PIECES {
            let (ends, guess) = (conn.endpoints.clone(), conn.http.guess());
            self.counters.non_http_connections += 1;
            self.counters.filtered_connections =
                self.counters.filtered_connections.saturating_sub(1);
            self.ignore(key);
            self.undecoded(meta.tgid, &ends, guess, meta.ts_ns, out);
        }
        if let (false, Some(conn)) = (unpaired.is_empty(), self.conns.get_mut(&key)) {
            let (id, ends) = (conn.id, conn.endpoints.clone());
            let view = match self.views.remove(&id) {
                Some(v) => v,
                None => self.view(role, &ends, meta.tgid),
            };
            self.unpaired_statuses(&unpaired, &view, out);
            self.views.insert(id, view);
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
    pub(super) fn emit_exchanges(
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
            redactor: &self.redactor,
        };
        for mut x in done.drain(..) {
            // The raw credential goes no further than this.
            let credential = x
                .request
                .credential
                .take()
                .and_then(|raw| self.fingerprinter.as_ref().map(|f| f.credential(&raw)));
            let verdict = self.classifier.classify(&x);
            // So does the user name of a login body: only its keyed hash is kept, and only
            // when the exchange was a login; otherwise the credential's user, if any.
            let body_user = x.request.login.user.take();
            let user_hash = match (&verdict.login, body_user, &self.fingerprinter) {
                (Some(_), Some(u), Some(f)) => Some(f.login_user(&u)),
                _ => credential.as_ref().and_then(|c| c.user_hash.clone()),
            };
            // The password of a login body is replaced by its keyed hash here, under the run's
            // in-memory key, and dropped (wiped): the hash goes to the rules and nowhere else.
            let password = match (&verdict.login, x.request.login.secret.take()) {
                (Some(_), Some(raw)) => self.detector.password_hash(raw.bytes()),
                _ => None,
            };
            self.next_sequence += 1;
            let mut ev = exchange_event(
                &x,
                &verdict,
                credential.as_ref(),
                user_hash.as_deref(),
                &ctx,
            );
            ev.meta_mut().sequence = self.next_sequence;
            // Behind a trusted proxy the client its headers name is the one rules count.
            let forwarded = self.forwarded(view, &x.request);
            if let Some(r) = &forwarded {
                forwarded_client(&mut ev, r);
            }
            // A trusted proxy's headers that name no one (cut, malformed, unknown) leave the
            // client unknown: the exchange counts for the service, never against the proxy.
            let named_no_one = forwarded.as_ref().is_some_and(|r| r.client.is_none());
            let source_ip = if named_no_one { None } else { source_ip };
            let client = forwarded.and_then(|r| r.client).map(|c| c.key());
            out.push(ev);
            self.counters.exchanges += 1;
            let facts = Facts {
                ts_ns: x.response.end_ns,
                sequence: self.next_sequence,
                status: crate::detect::grpc::effective_status(&x),
                login: verdict.login,
                user: user_hash.as_deref(),
                source_ip: client.as_deref().or(source_ip),
                credential: credential.as_ref().map(|c| c.fingerprint.as_str()),
                tool: verdict.tool,
                service: Some(&view.service),
                password: password.as_ref(),
            };
            let (d, seq) = (&mut self.detector, &mut self.next_sequence);
            detect(d, seq, (&self.clock, &self.run_id), &facts, out);
        }
    }

    /// Responses whose request was not parsed reach the status rules with the connection's
    /// source and service, and nothing else (no login, account or credential): they have no
    /// line of their own (sequence 0), and an alert over them says so by its samples.
    /// Behind a trusted proxy the source is the proxy, and the client its headers would have
    /// named is unknown: such responses count for the service only, never against the proxy.
    fn unpaired_statuses(&mut self, unpaired: &[Unpaired], view: &ConnView, out: &mut Vec<Event>) {
        let source_ip = match view.trusted_source {
            true => None,
            false => view.source.as_ref().and_then(|s| s.ip.as_deref()),
        };
        for u in unpaired {
            self.counters.unpaired_responses += 1;
            let facts = Facts {
                ts_ns: u.end_ns,
                sequence: 0,
                status: u.status,
                login: None,
                user: None,
                source_ip,
                credential: None,
                tool: None,
                service: Some(&view.service),
                password: None,
            };
            let (d, seq) = (&mut self.detector, &mut self.next_sequence);
            detect(d, seq, (&self.clock, &self.run_id), &facts, out);
        }
    }

    pub(super) fn finish(&mut self, mut conn: Conn, ts_ns: u64, out: &mut Vec<Event>) {
        let cached = self.views.remove(&conn.id);
        let mut done = Vec::new();
        conn.http.on_close(ts_ns, &mut done);
        let mut unpaired = Vec::new();
        conn.http.take_unpaired(&mut unpaired);
        self.http_closed.add(&conn.http.counters);
        // A connection too short to be dropped as not HTTP: reported when its bytes are a
        // protocol's that is known, not merely unparsed.
        let guess = conn.http.guess();
        if !conn.ignored
            && conn.exchanges == 0
            && done.is_empty()
            && conn.http.counters.skipped_pieces > 0
            && guess.is_known()
        {
            self.counters.non_http_connections += 1;
            self.undecoded(conn.key.tgid, &conn.endpoints, guess, ts_ns, out);
        }
        if let (Some(role), false) = (conn.role, unpaired.is_empty()) {
            let view = match &cached {
                Some(v) => v.clone(),
                None => self.view(role, &conn.endpoints, conn.key.tgid),
            };
            self.unpaired_statuses(&unpaired, &view, out);
        }
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

/// Shows one exchange's facts to the rules and emits the alerts they raise, in sequence.
fn detect(
    detector: &mut Detector,
    sequence: &mut u64,
    (clock, run_id): (&Clock, &str),
    facts: &Facts<'_>,
    out: &mut Vec<Event>,
) {
    for alert in detector.observe(facts) {
        *sequence += 1;
        let mut ev = alert_event(&alert, clock, run_id);
        ev.meta_mut().sequence = *sequence;
        out.push(ev);
    }
}

/// Which role a connection of unknown origin has, from a piece of its traffic.
fn infer_role(direction: Direction, bytes: &[u8]) -> Option<Role> {
    if bytes.len() < 5 {
        return None;
    }
    let request = looks_like_start(Side::Request, bytes);
    let response = bytes.starts_with(b"HTTP/");
    // Not HTTP/1.x: HTTP/2 frames may tell which side sent them (a connection that was open
    // before observer started and speaks HTTP/2 shows no start line ever).
    let (request, response) = match (request, response) {
        (false, false) => match crate::http::h2::side_hint(bytes) {
            Some(Side::Request) => (true, false),
            Some(Side::Response) => (false, true),
            None => (false, false),
        },
        known => known,
    };
    match (direction, request, response) {
        (Direction::Ingress, true, false) | (Direction::Egress, false, true) => Some(Role::Server),
        (Direction::Egress, true, false) | (Direction::Ingress, false, true) => Some(Role::Client),
        _ => None,
    }
}
