//! HTTP/2 streams: a request from the client's header block, its body counted (a prefix kept
//! for a login), the response from the server's blocks (informational ones skipped, trailers
//! read), and the exchange once the response ends or the stream is reset.

use super::grpc::{self, Messages};
use super::hpack::{BlockStats, HeaderList};
use super::read::Broken;
use super::{H2Conn, MAX_STREAMS};
use crate::http::credential::{CredentialNames, RawCredential};
use crate::http::form::BodyKind;
use crate::http::h1::Upgraded;
use crate::http::message::{
    Exchange, Grpc, HttpCounters, MAX_BODY_KEPT, Request, Response, Side, Sizes, Text, Version,
};
use crate::http::request;

/// The first bytes of a body, kept to read a login from or search for failure markers.
#[derive(Debug, Default)]
struct Kept {
    keep: bool,
    buf: Vec<u8>,
    /// The body went on past what `buf` holds (the cap, or bytes the kernel did not copy).
    cut: bool,
}

impl Kept {
    fn bytes(&mut self, b: &[u8], counters: &mut HttpCounters) {
        if !self.keep || self.cut || b.is_empty() {
            return;
        }
        let room = MAX_BODY_KEPT - self.buf.len();
        if b.len() > room {
            self.cut = true;
            counters.bodies_capped += 1;
        }
        self.buf.extend_from_slice(&b[..b.len().min(room)]);
    }
}

/// A gRPC call under way.
#[derive(Debug)]
struct Call {
    info: Grpc,
    requests: Messages,
    responses: Messages,
}

#[derive(Debug)]
pub(super) struct Stream {
    id: u32,
    pub request: Request,
    /// The client ended its side (or it was closed out).
    pub req_done: bool,
    req_body: Kept,
    kind: Option<BodyKind>,
    pub response: Option<Response>,
    /// Head bytes and start of responses before the final one (1xx, the 101 of an upgrade).
    resp_head: u64,
    resp_start_ns: Option<u64>,
    resp_body: Kept,
    call: Option<Box<Call>>,
    /// Closed out by a loss of framing: reported with the next piece.
    pub closed: bool,
    /// The server ended its side while the client's was still open (a server may answer
    /// before it reads a request body, as nginx's `return` does): the exchange waits for the
    /// client's end, so the body it sends is counted.
    pub resp_done: bool,
    /// Reset by the server after its whole answer, the client's side still open.
    pub reset: bool,
}

impl Stream {
    pub fn upgraded(up: Upgraded) -> Self {
        Self {
            id: 1,
            request: up.request,
            req_done: true,
            req_body: Kept::default(),
            kind: None,
            response: None,
            resp_head: up.head_101,
            resp_start_ns: Some(up.start_ns),
            resp_body: Kept::default(),
            call: None,
            closed: false,
            resp_done: false,
            reset: false,
        }
    }

    pub fn held_bytes(&self) -> usize {
        let text = |t: &Option<Text>| t.as_ref().map_or(0, |t| t.value.len());
        let r = &self.request;
        r.method.value.len()
            + r.target.value.len()
            + text(&r.host)
            + text(&r.user_agent)
            + r.credential.as_ref().map_or(0, RawCredential::len)
            + r.login.user.as_ref().map_or(0, |u| u.bytes().len())
            + r.login.secret.as_ref().map_or(0, |p| p.len())
            + r.forwarded.as_ref().map_or(0, |f| f.held_bytes())
            + self.req_body.buf.len()
            + self.resp_body.buf.len()
            + self.call.as_ref().map_or(0, |c| {
                c.info.service.value.len() + c.info.method.value.len() + text(&c.info.message)
            })
    }

    /// The client's side ended at `end_ns`: a kept body is read for a login.
    pub fn finish_request(&mut self, names: &CredentialNames, end_ns: u64) {
        self.req_done = true;
        self.request.end_ns = end_ns;
        let body = std::mem::take(&mut self.req_body);
        if let (Some(kind), false) = (self.kind, body.buf.is_empty()) {
            self.request.login = names.fields.read(kind, &body.buf, !body.cut);
        }
    }
}

/// The fields a request or response is built from; the others are skipped.
fn wanted(names: &CredentialNames, side: Side, name: &[u8]) -> bool {
    match side {
        Side::Request => {
            name.first() == Some(&b':')
                || matches!(
                    name,
                    b"host"
                        | b"user-agent"
                        | b"content-type"
                        | b"authorization"
                        | b"cookie"
                        | b"x-forwarded-for"
                        | b"forwarded"
                )
                || names
                    .api_key_headers
                    .iter()
                    .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
        }
        Side::Response => matches!(name, b":status" | b"grpc-status" | b"grpc-message"),
    }
}

/// `:status` as a number, when it is three digits.
fn status_of(list: &HeaderList) -> Option<u16> {
    let v = list.get(":status")?;
    if v.len() != 3 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

impl H2Conn {
    fn stream_index(&self, id: u32) -> Option<usize> {
        self.streams.iter().rposition(|s| s.id == id)
    }

    /// A DATA frame of `wire` bytes (header and padding included) begins.
    pub(super) fn data_start(&mut self, side: Side, id: u32, wire: u64, ts_ns: u64) {
        let Some(i) = self.stream_index(id) else {
            return;
        };
        let s = &mut self.streams[i];
        match side {
            Side::Request if !s.req_done => {
                s.request.sizes.body_wire += wire;
                s.request.end_ns = ts_ns;
            }
            Side::Response => {
                if let Some(r) = s.response.as_mut() {
                    r.sizes.body_wire += wire;
                    r.end_ns = ts_ns;
                }
            }
            Side::Request => {}
        }
    }

    /// DATA payload bytes (padding excluded).
    pub(super) fn data_bytes(&mut self, side: Side, id: u32, b: &[u8]) {
        let Some(i) = self.stream_index(id) else {
            return;
        };
        let s = &mut self.streams[i];
        let counters = &mut self.counters;
        match side {
            Side::Request if !s.req_done => {
                s.request.sizes.body += b.len() as u64;
                s.req_body.bytes(b, counters);
                if let Some(c) = s.call.as_mut() {
                    c.requests.bytes(b);
                }
            }
            Side::Response if s.response.is_some() => {
                if let Some(r) = s.response.as_mut() {
                    r.sizes.body += b.len() as u64;
                }
                s.resp_body.bytes(b, counters);
                if let Some(c) = s.call.as_mut() {
                    c.responses.bytes(b);
                }
            }
            _ => {}
        }
    }

    /// `n` DATA payload bytes the kernel did not copy.
    pub(super) fn data_gap(&mut self, side: Side, id: u32, n: u64) {
        let Some(i) = self.stream_index(id) else {
            return;
        };
        let s = &mut self.streams[i];
        match side {
            Side::Request if !s.req_done => {
                s.request.sizes.body += n;
                s.request.incomplete_copy = true;
                s.req_body.cut = true;
                if let Some(c) = s.call.as_mut() {
                    c.requests.gap(n);
                }
            }
            Side::Response if s.response.is_some() => {
                if let Some(r) = s.response.as_mut() {
                    r.sizes.body += n;
                }
                s.resp_body.cut = true;
                if let Some(c) = s.call.as_mut() {
                    c.responses.gap(n);
                }
            }
            _ => {}
        }
    }

    /// A frame with END_STREAM: that side of the stream is done.
    pub(super) fn end_message(&mut self, side: Side, id: u32, ts_ns: u64, out: &mut Vec<Exchange>) {
        let Some(i) = self.stream_index(id) else {
            return;
        };
        match side {
            Side::Request => {
                let s = &mut self.streams[i];
                if !s.req_done {
                    s.finish_request(&self.names, ts_ns);
                }
                if s.resp_done {
                    let s = self.streams.remove(i);
                    self.finish(s, 0, out);
                }
            }
            Side::Response => {
                let s = &mut self.streams[i];
                if let (Some(r), false) = (s.response.as_mut(), s.req_done) {
                    r.end_ns = r.end_ns.max(ts_ns);
                    s.resp_done = true;
                    return;
                }
                let s = self.streams.remove(i);
                if s.response.is_some() {
                    self.finish(s, ts_ns, out);
                } else {
                    // Its response head went by unseen.
                    self.counters.dropped_at_holes += 1;
                }
            }
        }
    }

    /// RST_STREAM: a response under way is reported, flagged incomplete; a request with none
    /// is counted as unanswered.
    pub(super) fn reset(&mut self, id: u32, ts_ns: u64, out: &mut Vec<Exchange>) {
        let Some(i) = self.stream_index(id) else {
            return;
        };
        if self.streams[i].resp_done && !self.streams[i].req_done {
            // Answered, then reset before the client's end: what the client sent before the
            // reset reached it is still on its way (and counted when it comes), so the stream
            // waits for the client's end, its next stream, or the close.
            self.streams[i].reset = true;
            return;
        }
        let mut s = self.streams.remove(i);
        let done = s.resp_done;
        match s.response.as_mut() {
            Some(r) => {
                // A reset after the whole answer (a server refusing the rest of an upload it
                // did not need) leaves the answer complete.
                r.incomplete |= !done;
                self.finish(s, ts_ns, out);
            }
            None => self.counters.unanswered += 1,
        }
    }

    /// Reports the streams reset after their whole answer.
    fn finish_reset(&mut self, out: &mut Vec<Exchange>) {
        while let Some(i) = self.streams.iter().position(|s| s.reset) {
            let s = self.streams.remove(i);
            self.finish(s, 0, out);
        }
    }

    /// GOAWAY from the server: the client's streams past `last` were not processed.
    pub(super) fn go_away(&mut self, side: Side, last: u32) {
        if side != Side::Response {
            return;
        }
        let before = self.streams.len();
        self.streams
            .retain(|s| s.id <= last || s.response.is_some());
        self.counters.unanswered += (before - self.streams.len()) as u64;
    }

    /// Reports a stream's exchange; its response ended at `end_ns`.
    pub(super) fn finish(&mut self, mut s: Stream, end_ns: u64, out: &mut Vec<Exchange>) {
        if !s.req_done {
            let end = s.request.end_ns;
            s.finish_request(&self.names, end);
        }
        let Some(mut response) = s.response.take() else {
            return;
        };
        response.end_ns = response.end_ns.max(end_ns);
        if s.resp_body.keep {
            response.body_prefix = std::mem::take(&mut s.resp_body.buf);
        }
        let grpc = s.call.take().map(|c| {
            let mut info = c.info;
            info.requests = c.requests.count;
            info.responses = c.responses.count;
            info.counts_lost = c.requests.lost || c.responses.lost;
            Box::new(info)
        });
        out.push(Exchange {
            request: s.request,
            response,
            grpc,
        });
    }

    /// A header block ended: decoded (or given up on) and applied to its stream.
    pub(super) fn block_end(&mut self, side: Side, ts_ns: u64, out: &mut Vec<Exchange>) {
        let dir = self.dir_mut(side);
        let Some(info) = dir.block_info.take() else {
            return;
        };
        let block = std::mem::take(&mut dir.block);
        let mut list = std::mem::take(&mut self.list);
        list.clear();
        let decoded = match info.broken {
            Some(broken) => {
                match broken {
                    Broken::OverCap => self.counters.h2_header_blocks_over_cap += 1,
                    Broken::Cut => self.counters.h2_header_blocks_lost += 1,
                }
                self.dir_mut(side).hpack.lose();
                false
            }
            None => {
                let mut stats = BlockStats::default();
                let names = &self.names;
                let wanted = |n: &[u8]| wanted(names, side, n);
                let hpack = match side {
                    Side::Request => &mut self.req.hpack,
                    Side::Response => &mut self.resp.hpack,
                };
                let r = hpack.decode(&block, &mut list, &mut stats, &wanted);
                self.counters.h2_unknown_references += stats.unknown_refs;
                self.counters.h2_tables_capped += stats.capped;
                self.counters.h2_hpack_errors += u64::from(r.is_err());
                self.counters.h2_header_blocks_over_cap += u64::from(list.capped);
                self.blocks_seen = true;
                true
            }
        };
        // Keep the allocation for the next block.
        let dir = self.dir_mut(side);
        if dir.block.is_empty() {
            dir.block = block;
            dir.block.clear();
        }
        if !info.push {
            // A block that could not be read still says its stream sent a head: the exchange
            // is reported, its fields unknown, rather than dropped (streams are paired by id,
            // so nothing else is put in doubt).
            if !decoded {
                list.unknown = list.unknown.max(1);
            }
            match side {
                Side::Request => {
                    if info.stream > self.last_client_stream {
                        // The client opened its next stream: those reset after their answer
                        // have all their client bytes counted that they will get.
                        self.finish_reset(out);
                    }
                    self.request_block(&list, info.stream, info.wire, info.start_ns, ts_ns)
                }
                Side::Response => {
                    self.response_block(&list, info.stream, info.wire, info.start_ns, ts_ns)
                }
            }
        }
        list.clear();
        self.list = list;
        if info.end_stream {
            self.end_message(side, info.stream, ts_ns, out);
        }
    }

    fn request_block(&mut self, list: &HeaderList, id: u32, wire: u64, start_ns: u64, ts_ns: u64) {
        if let Some(i) = self.stream_index(id) {
            // Trailers of a request.
            let s = &mut self.streams[i];
            if !s.req_done {
                s.request.sizes.head += wire;
                s.request.unknown_fields = s.request.unknown_fields.saturating_add(list.unknown);
                s.request.end_ns = ts_ns;
            }
            return;
        }
        let pseudo = [":method", ":path", ":scheme", ":authority"]
            .iter()
            .any(|n| list.get(n).is_some());
        // A block with no known pseudo-header on a stream never seen is a request only when it
        // opens a new stream (its pseudo-headers unknown); else the trailers of an old one.
        let opens = id > self.last_client_stream;
        if id.is_multiple_of(2) || !(pseudo || list.unknown > 0 && opens) {
            return;
        }
        self.last_client_stream = self.last_client_stream.max(id);
        let method = list
            .get(":method")
            .map(Text::from_bytes)
            .unwrap_or_default();
        let path = list
            .get(":path")
            .or_else(|| {
                (method.value == "CONNECT")
                    .then(|| list.get(":authority"))
                    .flatten()
            })
            .unwrap_or_default();
        let target = String::from_utf8_lossy(path);
        let authority = list.get(":authority").map(Text::from_bytes);
        // The fields are walked several times (credential carriers, host, user agent...):
        // their names are checked as text once.
        let headers: Vec<(&str, &[u8])> = list.iter().collect();
        let mut r = request::new_request(
            &self.names,
            (method, &target, Version::Http2),
            authority,
            headers.iter().copied(),
        );
        r.target.altered |= std::str::from_utf8(path).is_err();
        r.sizes = Sizes {
            head: wire,
            ..Sizes::default()
        };
        r.start_ns = start_ns;
        r.end_ns = ts_ns;
        r.unknown_fields = list.unknown;
        let ct = list.get("content-type");
        let call = grpc::is_grpc(ct).then(|| {
            Box::new(Call {
                info: grpc::call(path),
                requests: Messages::default(),
                responses: Messages::default(),
            })
        });
        let kind = request::body_kind(headers.iter().copied());
        if self.streams.len() >= MAX_STREAMS {
            self.streams.remove(0);
            self.counters.h2_streams_over_cap += 1;
        }
        self.streams.push(Stream {
            id,
            request: r,
            req_done: false,
            req_body: Kept {
                keep: kind.is_some(),
                ..Kept::default()
            },
            kind,
            response: None,
            resp_head: 0,
            resp_start_ns: None,
            resp_body: Kept::default(),
            call,
            closed: false,
            resp_done: false,
            reset: false,
        });
    }

    fn response_block(&mut self, list: &HeaderList, id: u32, wire: u64, start_ns: u64, ts_ns: u64) {
        if id.is_multiple_of(2) {
            // A pushed response: not reported.
            return;
        }
        let status = status_of(list);
        let Some(i) = self.stream_index(id) else {
            // Its request went by unseen (before observer joined, in a gap, or dropped at the
            // cap): only a known final status is worth the status rules.
            if let Some(st) = status.filter(|s| *s >= 200) {
                self.unpaired(st, ts_ns);
            }
            return;
        };
        let keep_body = self.names.keep_response_body;
        let s = &mut self.streams[i];
        match s.response.as_mut() {
            None => {
                s.resp_head += wire;
                let start = *s.resp_start_ns.get_or_insert(start_ns);
                if status.is_some_and(|st| st < 200) {
                    // Informational (100 Continue, 103 Early Hints): the final response follows.
                    return;
                }
                s.response = Some(Response {
                    status: status.unwrap_or(0),
                    version: Version::Http2,
                    sizes: Sizes {
                        head: s.resp_head,
                        ..Sizes::default()
                    },
                    start_ns: start,
                    end_ns: ts_ns,
                    incomplete: false,
                    body_prefix: Vec::new(),
                    unknown_fields: list.unknown,
                });
                s.resp_body.keep = keep_body;
            }
            Some(r) => {
                // Trailers (or, after a response whose status was unknown, perhaps the final
                // head after an informational one: a known final status is taken).
                r.sizes.head += wire;
                r.unknown_fields = r.unknown_fields.saturating_add(list.unknown);
                r.end_ns = ts_ns;
                if let (0, Some(st)) = (r.status, status.filter(|s| *s >= 200)) {
                    r.status = st;
                }
            }
        }
        if let Some(c) = s.call.as_mut() {
            grpc::status_from(&mut c.info, list);
        }
    }
}
