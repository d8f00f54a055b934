//! HTTP/1.x reassembly: turns the two byte streams of one connection into request/response
//! exchanges. This file owns the per-connection state machine; [`head`] parses message heads and
//! [`body`] follows body framing.
//!
//! Bytes come from the kernel in syscall-sized pieces, each possibly cut short (the kernel copies
//! a bounded prefix and reports the true length). Bodies are counted, never buffered; only message
//! heads are held, up to a cap. Anything that is not HTTP, or that loses framing, puts the stream
//! into resynchronisation: it waits for a piece that starts like a new message. Every such event
//! is counted, never guessed at.
//!
//! A request that asks to upgrade to `h2c` and is answered `101` ends HTTP/1.x here: the
//! request is handed over ([`H1Conn::take_upgraded`]) to be answered over HTTP/2.

mod body;
mod head;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use crate::http::credential::{CredentialNames, MAX_SECRET, RawCredential};
use crate::http::form::BodyKind;
use crate::http::message::{
    Exchange, HttpCounters, MAX_BODY_KEPT, MAX_FIELD, Request, Response, Side, Sizes, Text,
};
use body::{Chunk, MAX_CHUNK_LINE};
pub use head::{MAX_HEAD, looks_like_start};

/// Requests waiting for their response (pipelining) before the oldest is given up.
pub const MAX_PENDING: usize = 64;
/// Unpaired responses held until the pipeline takes them (after every piece): more than one
/// piece of the kernel's copy can frame.
pub const MAX_UNPAIRED: usize = 256;

/// A response whose request was not parsed: its head was cut by the kernel's copy before the
/// request line ended, it hid behind bytes that do not start a message, it was lost at a
/// capture hole, or the connection was seen from its middle. Only its status is known, which
/// is all the status rules (brute force on 401, the error spike) need: without it, padding a
/// request past the copy would hide it from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unpaired {
    pub status: u16,
    /// Monotonic time of its last byte.
    pub end_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Framing {
    /// Waiting for or reading a message head.
    Head,
    /// `n` body bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// The body ends when the connection closes.
    UntilClose,
    /// Framing lost: skip until a piece starts like a new message.
    Resync,
    /// The connection switched protocols; nothing more is parsed.
    Tunnel,
}

/// A message whose head is parsed and whose body is being counted.
#[derive(Clone, Debug)]
enum Partial {
    Request(Request),
    Response(Response),
}

#[derive(Debug)]
struct HalfStream {
    framing: Framing,
    head: Vec<u8>,
    head_start_ns: u64,
    /// Bytes of a chunk-size or trailer line.
    line: Vec<u8>,
    current: Option<Partial>,
    /// Keep a prefix of the current message's body in `body`.
    keep: bool,
    /// How a kept request body is read for a login.
    kind: Option<BodyKind>,
    /// The kept prefix of the current message's body, at most [`MAX_BODY_KEPT`] bytes.
    body: Vec<u8>,
    /// The body went on past what `body` holds (the cap, or bytes the kernel did not copy).
    body_cut: bool,
}

impl HalfStream {
    fn new() -> Self {
        Self {
            framing: Framing::Head,
            head: Vec::new(),
            head_start_ns: 0,
            line: Vec::new(),
            current: None,
            keep: false,
            kind: None,
            body: Vec::new(),
            body_cut: false,
        }
    }

    fn resync(&mut self, counters: &mut HttpCounters) {
        self.framing = Framing::Resync;
        self.head.clear();
        self.line.clear();
        self.current = None;
        self.forget_body();
        counters.resyncs += 1;
    }

    /// Starts a message whose body prefix is kept (or not), to be read as `kind`.
    fn keep_body(&mut self, keep: bool, kind: Option<BodyKind>) {
        self.forget_body();
        self.keep = keep;
        self.kind = kind;
    }

    fn forget_body(&mut self) {
        self.keep = false;
        self.kind = None;
        self.body.clear();
        self.body_cut = false;
    }

    /// Payload bytes of the current body, in order: kept up to the cap, which is counted once
    /// per body when it bites.
    fn body_bytes(&mut self, bytes: &[u8], counters: &mut HttpCounters) {
        if !self.keep || self.body_cut || bytes.is_empty() {
            return;
        }
        let room = MAX_BODY_KEPT - self.body.len();
        if bytes.len() > room {
            self.body_cut = true;
            counters.bodies_capped += 1;
        }
        self.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Body bytes the kernel moved but did not copy: what follows is no longer contiguous.
    fn body_gap(&mut self) {
        self.body_cut = true;
    }

    fn sizes_mut(&mut self) -> Option<&mut Sizes> {
        match self.current.as_mut()? {
            Partial::Request(r) => Some(&mut r.sizes),
            Partial::Response(r) => Some(&mut r.sizes),
        }
    }

    fn add_body(&mut self, wire: u64, payload: u64) {
        if let Some(s) = self.sizes_mut() {
            s.body_wire += wire;
            s.body += payload;
        }
    }
}

/// A request that upgraded its connection to HTTP/2 (`Upgrade: h2c` answered `101`): it is
/// answered on stream 1.
#[derive(Debug)]
pub struct Upgraded {
    pub request: Request,
    /// Bytes of the `101` response head, counted with stream 1's response.
    pub head_101: u64,
    /// When the `101` began.
    pub start_ns: u64,
}

/// Reassembly state of one connection.
#[derive(Debug)]
pub struct H1Conn {
    req: HalfStream,
    resp: HalfStream,
    pending: VecDeque<Request>,
    /// A request asked to switch protocols; its response decides.
    upgrade_asked: bool,
    /// ... and it asked for `h2c`.
    h2c_asked: bool,
    /// The request that switched the connection to HTTP/2, until taken.
    upgraded: Option<Upgraded>,
    /// A message head was parsed on this connection: it carries HTTP/1.x.
    seen: bool,
    names: Arc<CredentialNames>,
    /// Responses with no request, until [`H1Conn::take_unpaired`].
    unpaired: Vec<Unpaired>,
    pub counters: HttpCounters,
}

impl Default for H1Conn {
    fn default() -> Self {
        Self::new()
    }
}

/// The default credential names, shared by every connection that was given none.
pub(crate) fn default_names() -> Arc<CredentialNames> {
    static NAMES: OnceLock<Arc<CredentialNames>> = OnceLock::new();
    NAMES
        .get_or_init(|| Arc::new(CredentialNames::default()))
        .clone()
}

impl H1Conn {
    pub fn new() -> Self {
        Self::with_names(default_names())
    }

    /// Reassembly that takes credentials from the headers and cookies `names` lists.
    pub fn with_names(names: Arc<CredentialNames>) -> Self {
        Self {
            req: HalfStream::new(),
            resp: HalfStream::new(),
            pending: VecDeque::new(),
            upgrade_asked: false,
            h2c_asked: false,
            upgraded: None,
            seen: false,
            names,
            unpaired: Vec::new(),
            counters: HttpCounters::default(),
        }
    }

    /// Bytes this connection holds (heads and lines being collected, requests waiting for
    /// their response): bounded whatever bytes arrive.
    pub fn held_bytes(&self) -> usize {
        let text = |t: &Option<Text>| t.as_ref().map_or(0, |t| t.value.len());
        self.req.head.len()
            + self.resp.head.len()
            + self.req.line.len()
            + self.resp.line.len()
            + self.req.body.len()
            + self.resp.body.len()
            + self
                .pending
                .iter()
                .map(|r| {
                    r.method.value.len()
                        + r.target.value.len()
                        + r.login.user.as_ref().map_or(0, |u| u.bytes().len())
                        + r.credential.as_ref().map_or(0, RawCredential::len)
                        + r.login.secret.as_ref().map_or(0, |p| p.len())
                        + text(&r.host)
                        + text(&r.user_agent)
                })
                .sum::<usize>()
    }

    /// Moves the responses that had no request into `out` (call after each piece and close).
    pub fn take_unpaired(&mut self, out: &mut Vec<Unpaired>) {
        out.append(&mut self.unpaired);
    }

    /// Requests waiting for their response.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The most [`H1Conn::held_bytes`] can be.
    pub const MAX_HELD: usize = 2 * MAX_HEAD
        + 2 * MAX_CHUNK_LINE
        + 2 * MAX_BODY_KEPT
        + MAX_PENDING * (4 * MAX_FIELD + 2 * MAX_BODY_KEPT + MAX_SECRET);
    // A login's password is a copy from the body kept (at most MAX_BODY_KEPT); the unpaired
    // responses (MAX_UNPAIRED of 16 bytes) are fixed-size and not counted.

    /// True once the connection switched to another protocol.
    pub fn is_tunnel(&self) -> bool {
        self.req.framing == Framing::Tunnel
    }

    /// The names credentials are taken by.
    pub fn names(&self) -> Arc<CredentialNames> {
        self.names.clone()
    }

    /// True once a message head was parsed: the connection carries HTTP/1.x.
    pub fn seen_http(&self) -> bool {
        self.seen
    }

    /// The request that upgraded the connection to HTTP/2, once: what follows the `101` on
    /// both sides is HTTP/2.
    pub fn take_upgraded(&mut self) -> Option<Upgraded> {
        self.upgraded.take()
    }

    /// Feeds one syscall's worth of bytes: `bytes` were copied, `total_len` were moved.
    pub fn on_data(
        &mut self,
        side: Side,
        bytes: &[u8],
        total_len: u64,
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        self.feed(side, bytes, total_len, ts_ns, out);
    }

    /// As [`H1Conn::on_data`]; returns how many of `bytes` were read as HTTP/1.x, which is
    /// fewer than all of them only when the connection switched protocols within the piece.
    pub fn feed(
        &mut self,
        side: Side,
        bytes: &[u8],
        total_len: u64,
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) -> usize {
        let gap = total_len.saturating_sub(bytes.len() as u64);
        let half = match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        };
        match half.framing {
            Framing::Tunnel => return 0,
            Framing::Resync => {
                if !bytes.is_empty() && looks_like_start(side, bytes) {
                    half.framing = Framing::Head;
                } else {
                    self.counters.skipped_pieces += 1;
                    return bytes.len();
                }
            }
            _ => {}
        }
        let mut input = bytes;
        while !input.is_empty() {
            let used = self.step(side, input, ts_ns, out);
            input = &input[used..];
            let half = self.half(side);
            if half.framing == Framing::Tunnel {
                return bytes.len() - input.len();
            }
            if half.framing == Framing::Resync {
                break;
            }
        }
        if gap > 0 {
            self.skip(side, gap, ts_ns, out);
        }
        bytes.len()
    }

    /// The connection turned out to carry TLS: what was parsed so far was the handshake's
    /// ciphertext. Starts over, for the plaintext.
    pub fn restart_for_tls(&mut self) {
        self.req = HalfStream::new();
        self.resp = HalfStream::new();
        self.pending.clear();
        self.upgrade_asked = false;
        self.h2c_asked = false;
        self.upgraded = None;
        self.seen = false;
        self.counters.skipped_pieces = 0;
    }

    /// Records of this connection were lost before the next piece (the kernel's ring buffer was
    /// full): a hole of unknown size, in either direction. Half-read messages and requests
    /// waiting for an answer can no longer be paired safely, so they are dropped (and counted)
    /// and both directions start again at the next piece that begins a message: a wrong
    /// pairing would report a status the request never got.
    pub fn on_lost(&mut self) {
        if self.is_tunnel() {
            return;
        }
        self.counters.capture_holes += 1;
        self.counters.dropped_at_holes += self.pending.len() as u64
            + u64::from(matches!(self.req.current, Some(Partial::Request(_))));
        self.pending.clear();
        self.upgrade_asked = false;
        self.h2c_asked = false;
        self.req.resync(&mut self.counters);
        self.resp.resync(&mut self.counters);
    }

    /// The connection closed: a body delimited by close ends here; a response cut short is
    /// still reported (its head went through), flagged incomplete.
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        for side in [Side::Request, Side::Response] {
            let half = self.half(side);
            match half.framing {
                Framing::UntilClose => self.finish_message(side, ts_ns, out),
                Framing::Length(_) | Framing::Chunked(_) => {
                    if let Some(Partial::Response(r)) = half.current.as_mut() {
                        r.incomplete = true;
                        self.finish_message(side, ts_ns, out);
                    }
                }
                _ => {}
            }
        }
        self.counters.unanswered += self.pending.len() as u64;
        self.pending.clear();
    }

    fn resync(&mut self, side: Side) {
        let half = match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        };
        half.resync(&mut self.counters);
    }

    fn half(&mut self, side: Side) -> &mut HalfStream {
        match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        }
    }

    /// Consumes a prefix of `input`; returns how many bytes.
    fn step(&mut self, side: Side, input: &[u8], ts_ns: u64, out: &mut Vec<Exchange>) -> usize {
        let framing = self.half(side).framing.clone();
        match framing {
            Framing::Head => self.step_head(side, input, ts_ns, out),
            Framing::Length(remaining) => {
                let n = remaining.min(input.len() as u64);
                let counters = &mut self.counters;
                let half = match side {
                    Side::Request => &mut self.req,
                    Side::Response => &mut self.resp,
                };
                half.add_body(n, n);
                half.body_bytes(&input[..n as usize], counters);
                if n == remaining {
                    self.finish_message(side, ts_ns, out);
                } else {
                    half.framing = Framing::Length(remaining - n);
                }
                n as usize
            }
            Framing::Chunked(state) => self.step_chunked(side, state, input, ts_ns, out),
            Framing::UntilClose => {
                let n = input.len() as u64;
                let counters = &mut self.counters;
                let half = match side {
                    Side::Request => &mut self.req,
                    Side::Response => &mut self.resp,
                };
                half.add_body(n, n);
                half.body_bytes(input, counters);
                if let Some(Partial::Response(r)) = half.current.as_mut() {
                    r.end_ns = ts_ns;
                }
                input.len()
            }
            Framing::Resync | Framing::Tunnel => input.len(),
        }
    }

    /// Queues a request for its response; the oldest is given up (and counted) when too many
    /// wait.
    fn push_pending(&mut self, r: Request) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            self.counters.pending_overflow += 1;
        }
        self.pending.push_back(r);
    }

    fn finish_message(&mut self, side: Side, ts_ns: u64, out: &mut Vec<Exchange>) {
        let half = self.half(side);
        half.framing = if half.framing == Framing::Tunnel {
            Framing::Tunnel
        } else {
            Framing::Head
        };
        let Some(msg) = half.current.take() else {
            return;
        };
        let kept = half.keep.then(|| std::mem::take(&mut half.body));
        let (kind, whole) = (half.kind, !half.body_cut);
        half.forget_body();
        match msg {
            Partial::Request(mut r) => {
                r.end_ns = ts_ns;
                if let (Some(kind), Some(body)) = (kind, kept.as_deref())
                    && !body.is_empty()
                {
                    r.login = self.names.fields.read(kind, body, whole);
                }
                self.push_pending(r);
            }
            Partial::Response(mut r) => {
                r.end_ns = r.end_ns.max(ts_ns);
                r.body_prefix = kept.unwrap_or_default();
                match self.pending.pop_front() {
                    Some(request) => out.push(Exchange {
                        request,
                        response: r,
                        grpc: None,
                    }),
                    None => {
                        self.counters.orphan_responses += 1;
                        if self.unpaired.len() < MAX_UNPAIRED {
                            self.unpaired.push(Unpaired {
                                status: r.status,
                                end_ns: r.end_ns,
                            });
                        } else {
                            self.counters.unpaired_dropped += 1;
                        }
                    }
                }
            }
        }
    }
}
