//! HTTP/1.x reassembly: turns the two byte streams of one connection into request/response
//! exchanges.
//!
//! Bytes come from the kernel in syscall-sized pieces, each possibly cut short (the kernel copies
//! a bounded prefix and reports the true length). Bodies are counted, never buffered; only message
//! heads are held, up to a cap. Anything that is not HTTP, or that loses framing, puts the stream
//! into resynchronisation: it waits for a piece that starts like a new message. Every such event
//! is counted, never guessed at.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use crate::identity::{CredentialNames, RawCredential};

/// Largest message head held while waiting for its end.
pub const MAX_HEAD: usize = 32 * 1024;
/// Requests waiting for their response (pipelining) before the oldest is given up.
pub const MAX_PENDING: usize = 64;
/// Longest string kept from a traffic field (method, target, header value).
pub const MAX_FIELD: usize = 2048;
const MAX_HEADERS: usize = 128;
const MAX_CHUNK_LINE: usize = 4096;

/// Which half of the conversation a piece of bytes belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// A string taken from traffic: lossily decoded and capped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Text {
    pub value: String,
    /// The original was longer than [`MAX_FIELD`] bytes or was not valid UTF-8.
    pub altered: bool,
}

impl Text {
    pub fn from_bytes(b: &[u8]) -> Self {
        let capped = &b[..b.len().min(MAX_FIELD)];
        // Valid UTF-8 is the rule: the strict check is several times faster than the lossy
        // decoder, which only runs for the exceptions.
        let (value, lossy) = match std::str::from_utf8(capped) {
            Ok(s) => (s.to_owned(), false),
            Err(_) => (String::from_utf8_lossy(capped).into_owned(), true),
        };
        Self {
            value,
            altered: lossy || b.len() > MAX_FIELD,
        }
    }

    /// As [`Text::from_bytes`], for text the parser has already checked to be UTF-8.
    pub fn from_checked(s: &str) -> Self {
        if s.len() <= MAX_FIELD {
            Self {
                value: s.to_owned(),
                altered: false,
            }
        } else {
            Self::from_bytes(s.as_bytes())
        }
    }
}

/// Byte counts of one message on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    /// Head bytes (start line, headers, blank line).
    pub head: u64,
    /// Body bytes on the wire, chunk framing included.
    pub body_wire: u64,
    /// Body payload bytes (chunk framing excluded).
    pub body: u64,
}

impl Sizes {
    pub fn total(&self) -> u64 {
        self.head + self.body_wire
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Text,
    /// The request target as sent (origin form: path and query).
    pub target: Text,
    /// Minor version of HTTP/1.x.
    pub version: u8,
    pub host: Option<Text>,
    pub user_agent: Option<Text>,
    pub sizes: Sizes,
    /// Monotonic time of the first and last byte.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Body bytes were counted but not seen (the kernel copied a prefix only).
    pub incomplete_copy: bool,
    /// The head was longer than what the kernel copied: fields after the cut are missing.
    pub head_truncated: bool,
    /// The credential the request carried, until the pipeline fingerprints it.
    pub credential: Option<RawCredential>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub version: u8,
    pub sizes: Sizes,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The connection closed before the whole body its framing announced went through.
    pub incomplete: bool,
}

/// One request with its response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub request: Request,
    pub response: Response,
}

impl Exchange {
    /// From the first request byte to the last response byte.
    pub fn duration_ns(&self) -> u64 {
        self.response.end_ns.saturating_sub(self.request.start_ns)
    }
}

/// What reassembly gave up on, per connection; summed by the pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpCounters {
    /// Pieces of bytes skipped while waiting for a message start (non-HTTP or lost framing).
    pub skipped_pieces: u64,
    /// Times a stream lost framing and had to resynchronise.
    pub resyncs: u64,
    /// Heads longer than [`MAX_HEAD`], or cut by the kernel's copy and unreadable.
    pub heads_too_long: u64,
    /// Request heads cut by the kernel's copy, reported from their first lines.
    pub truncated_heads: u64,
    /// Responses with no request to pair with (e.g. a connection seen from its middle).
    pub orphan_responses: u64,
    /// Requests dropped because too many waited for responses.
    pub pending_overflow: u64,
    /// Requests still waiting for a response when the connection closed.
    pub unanswered: u64,
    /// Holes where the kernel lost records of this connection (ring buffer full).
    pub capture_holes: u64,
    /// Requests dropped at such a hole: their response could no longer be told apart.
    pub dropped_at_holes: u64,
}

impl HttpCounters {
    pub fn add(&mut self, o: &HttpCounters) {
        self.skipped_pieces += o.skipped_pieces;
        self.resyncs += o.resyncs;
        self.heads_too_long += o.heads_too_long;
        self.truncated_heads += o.truncated_heads;
        self.orphan_responses += o.orphan_responses;
        self.pending_overflow += o.pending_overflow;
        self.unanswered += o.unanswered;
        self.capture_holes += o.capture_holes;
        self.dropped_at_holes += o.dropped_at_holes;
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line.
    Size,
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Trailer lines up to the blank line.
    Trailers,
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
}

impl HalfStream {
    fn new() -> Self {
        Self {
            framing: Framing::Head,
            head: Vec::new(),
            head_start_ns: 0,
            line: Vec::new(),
            current: None,
        }
    }

    fn resync(&mut self, counters: &mut HttpCounters) {
        self.framing = Framing::Resync;
        self.head.clear();
        self.line.clear();
        self.current = None;
        counters.resyncs += 1;
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

/// Reassembly state of one connection.
#[derive(Debug)]
pub struct HttpConn {
    req: HalfStream,
    resp: HalfStream,
    pending: VecDeque<Request>,
    /// A request asked to switch protocols; its response decides.
    upgrade_asked: bool,
    names: Arc<CredentialNames>,
    pub counters: HttpCounters,
}

impl Default for HttpConn {
    fn default() -> Self {
        Self::new()
    }
}

fn default_names() -> Arc<CredentialNames> {
    static NAMES: OnceLock<Arc<CredentialNames>> = OnceLock::new();
    NAMES
        .get_or_init(|| Arc::new(CredentialNames::default()))
        .clone()
}

/// True when `b` could be the beginning of a message of this side.
pub fn looks_like_start(side: Side, b: &[u8]) -> bool {
    match side {
        Side::Response => {
            let n = b.len().min(5);
            b[..n] == b"HTTP/"[..n]
        }
        Side::Request => {
            // A method token of upper-case letters (and '-', as in M-SEARCH) then a space.
            for (i, &c) in b.iter().enumerate().take(21) {
                if c == b' ' {
                    return i > 0;
                }
                if !(c.is_ascii_uppercase() || c == b'-') {
                    return false;
                }
            }
            b.len() < 21
        }
    }
}

fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    // Built once: building a searcher costs more than searching a typical head.
    static HEAD_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    let start = from.saturating_sub(3);
    HEAD_END.find(&buf[start..]).map(|p| start + p + 4)
}

enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    UntilClose,
    Invalid,
}

fn body_framing(headers: &[httparse::Header<'_>], until_close_allowed: bool) -> BodyFraming {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked framing applies when chunked is the last coding.
            let last = h.value.rsplit(|&c| c == b',').next().unwrap_or_default();
            chunked =
                std::str::from_utf8(last).is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // Not UTF-8 is not a number either.
            let v = std::str::from_utf8(h.value).unwrap_or("x");
            match v.trim().parse::<u64>() {
                Ok(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return BodyFraming::Invalid,
            }
        }
    }
    if chunked {
        BodyFraming::Chunked
    } else if let Some(n) = length {
        if n == 0 {
            BodyFraming::None
        } else {
            BodyFraming::Length(n)
        }
    } else if until_close_allowed {
        BodyFraming::UntilClose
    } else {
        BodyFraming::None
    }
}

fn header_text(headers: &[httparse::Header<'_>], name: &str) -> Option<Text> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| Text::from_bytes(h.value))
}

impl HttpConn {
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
            names,
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
            + self
                .pending
                .iter()
                .map(|r| {
                    r.method.value.len()
                        + r.target.value.len()
                        + text(&r.host)
                        + text(&r.user_agent)
                })
                .sum::<usize>()
    }

    /// Requests waiting for their response.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The most [`HttpConn::held_bytes`] can be.
    pub const MAX_HELD: usize = 2 * MAX_HEAD + 2 * MAX_CHUNK_LINE + MAX_PENDING * 4 * MAX_FIELD;

    /// True once the connection switched to another protocol.
    pub fn is_tunnel(&self) -> bool {
        self.req.framing == Framing::Tunnel
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
        let gap = total_len.saturating_sub(bytes.len() as u64);
        let half = match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        };
        match half.framing {
            Framing::Tunnel => return,
            Framing::Resync => {
                if !bytes.is_empty() && looks_like_start(side, bytes) {
                    half.framing = Framing::Head;
                } else {
                    self.counters.skipped_pieces += 1;
                    return;
                }
            }
            _ => {}
        }
        let mut input = bytes;
        while !input.is_empty() {
            let used = self.step(side, input, ts_ns, out);
            input = &input[used..];
            let half = self.half(side);
            if matches!(half.framing, Framing::Resync | Framing::Tunnel) {
                break;
            }
        }
        if gap > 0 {
            self.skip(side, gap, ts_ns, out);
        }
    }

    /// The connection turned out to carry TLS: what was parsed so far was the handshake's
    /// ciphertext. Starts over, for the plaintext.
    pub fn restart_for_tls(&mut self) {
        self.req = HalfStream::new();
        self.resp = HalfStream::new();
        self.pending.clear();
        self.upgrade_asked = false;
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
                let half = self.half(side);
                half.add_body(n, n);
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
                let half = self.half(side);
                half.add_body(n, n);
                if let Some(Partial::Response(r)) = half.current.as_mut() {
                    r.end_ns = ts_ns;
                }
                input.len()
            }
            Framing::Resync | Framing::Tunnel => input.len(),
        }
    }

    fn step_head(
        &mut self,
        side: Side,
        input: &[u8],
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) -> usize {
        let counters = &mut self.counters;
        let half = match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        };
        if half.head.is_empty() {
            if !looks_like_start(side, input) {
                half.resync(counters);
                counters.skipped_pieces += 1;
                return input.len();
            }
            half.head_start_ns = ts_ns;
            // The usual case: the whole head in one piece, parsed where it lies.
            if let Some(end) = find_head_end(&input[..input.len().min(MAX_HEAD)], 0) {
                match side {
                    Side::Request => self.parse_request_head(&input[..end], ts_ns),
                    Side::Response => self.parse_response_head(&input[..end], ts_ns, out),
                }
                return end;
            }
        }
        let old = half.head.len();
        let take = input.len().min(MAX_HEAD - old);
        half.head.extend_from_slice(&input[..take]);
        let Some(end) = find_head_end(&half.head, old) else {
            if half.head.len() >= MAX_HEAD {
                counters.heads_too_long += 1;
                half.resync(counters);
            } else if half.head.len() < 24 && !looks_like_start(side, &half.head) {
                // Tiny first pieces pass the check tentatively; recheck once more arrived.
                half.resync(counters);
            }
            return take;
        };
        let used = end - old;
        let mut buf = std::mem::take(&mut half.head);
        match side {
            Side::Request => self.parse_request_head(&buf[..end], ts_ns),
            Side::Response => self.parse_response_head(&buf[..end], ts_ns, out),
        }
        // Keep the allocation for the next head.
        buf.clear();
        let half = self.half(side);
        if half.head.is_empty() {
            half.head = buf;
        }
        used
    }

    /// A request from its parsed start line and headers; `head_bytes` long on the wire.
    fn new_request(
        &self,
        (method, target, version): (&str, &str, u8),
        headers: &[httparse::Header<'_>],
        head_bytes: u64,
        ts_ns: u64,
    ) -> Request {
        Request {
            method: Text::from_checked(method),
            target: Text::from_checked(target),
            version,
            host: header_text(headers, "host"),
            user_agent: header_text(headers, "user-agent"),
            sizes: Sizes {
                head: head_bytes,
                ..Sizes::default()
            },
            start_ns: self.req.head_start_ns,
            end_ns: ts_ns,
            incomplete_copy: false,
            head_truncated: false,
            credential: self
                .names
                .extract(headers.iter().map(|h| (h.name, h.value))),
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

    fn parse_request_head(&mut self, head: &[u8], ts_ns: u64) {
        // Uninitialised: filling 128 empty headers per request would cost more than parsing.
        let mut headers =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(head, &mut headers) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => {
                self.resync(Side::Request);
                return;
            }
        }
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            self.resync(Side::Request);
            return;
        };
        let framing = match body_framing(req.headers, false) {
            BodyFraming::Invalid => {
                self.resync(Side::Request);
                return;
            }
            f => f,
        };
        let upgrade = method.eq_ignore_ascii_case("CONNECT")
            || req
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
        let request = self.new_request(
            (method, target, version),
            req.headers,
            head.len() as u64,
            ts_ns,
        );
        if upgrade {
            self.upgrade_asked = true;
        }
        self.start_body(
            Side::Request,
            Partial::Request(request),
            framing,
            ts_ns,
            &mut Vec::new(),
        );
    }

    fn parse_response_head(&mut self, head: &[u8], ts_ns: u64, out: &mut Vec<Exchange>) {
        // Uninitialised, as for requests.
        let mut headers =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            head,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => {
                self.resync(Side::Response);
                return;
            }
        }
        let (Some(status), Some(version)) = (resp.code, resp.version) else {
            self.resync(Side::Response);
            return;
        };
        if (100..200).contains(&status) && status != 101 {
            // Informational (100 Continue, 103 Early Hints): the final response follows.
            return;
        }
        let request_is = |m: &str| {
            self.pending
                .front()
                .is_some_and(|r| r.method.value.eq_ignore_ascii_case(m))
        };
        let (is_head, is_connect) = (request_is("HEAD"), request_is("CONNECT"));
        let switches = status == 101 || (is_connect && (200..300).contains(&status));
        let framing = if is_head || status == 204 || status == 304 || switches {
            BodyFraming::None
        } else {
            body_framing(resp.headers, true)
        };
        if let BodyFraming::Invalid = framing {
            self.resync(Side::Response);
            return;
        }
        let response = Response {
            status,
            version,
            sizes: Sizes {
                head: head.len() as u64,
                ..Sizes::default()
            },
            start_ns: self.resp.head_start_ns,
            end_ns: ts_ns,
            incomplete: false,
        };
        self.start_body(
            Side::Response,
            Partial::Response(response),
            framing,
            ts_ns,
            out,
        );
        if switches {
            self.req.framing = Framing::Tunnel;
            self.resp.framing = Framing::Tunnel;
        } else if self.upgrade_asked && self.pending.is_empty() {
            self.upgrade_asked = false;
        }
    }

    fn start_body(
        &mut self,
        side: Side,
        msg: Partial,
        framing: BodyFraming,
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        let half = self.half(side);
        half.current = Some(msg);
        half.framing = match framing {
            BodyFraming::None | BodyFraming::Invalid => {
                self.finish_message(side, ts_ns, out);
                return;
            }
            BodyFraming::Length(n) => Framing::Length(n),
            BodyFraming::Chunked => Framing::Chunked(Chunk::Size),
            BodyFraming::UntilClose => Framing::UntilClose,
        };
    }

    fn step_chunked(
        &mut self,
        side: Side,
        state: Chunk,
        input: &[u8],
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) -> usize {
        let counters = &mut self.counters;
        let half = match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        };
        if let Chunk::Data(remaining) = state {
            let n = remaining.min(input.len() as u64);
            half.add_body(n, n);
            half.framing = Framing::Chunked(if n == remaining {
                Chunk::DataEnd
            } else {
                Chunk::Data(remaining - n)
            });
            return n as usize;
        }
        // Line-oriented states: collect up to the end of the line.
        let (used, complete) = match memchr::memchr(b'\n', input) {
            Some(p) => (p + 1, true),
            None => (input.len(), false),
        };
        half.add_body(used as u64, 0);
        if half.line.len() + used > MAX_CHUNK_LINE {
            half.resync(counters);
            return used;
        }
        half.line.extend_from_slice(&input[..used]);
        if !complete {
            return used;
        }
        let line = std::mem::take(&mut half.line);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        match state {
            Chunk::Size => {
                let digits = text.split(|&c| c == b';').next().unwrap_or_default();
                let parsed = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
                match parsed {
                    Some(0) => half.framing = Framing::Chunked(Chunk::Trailers),
                    Some(n) => half.framing = Framing::Chunked(Chunk::Data(n)),
                    None => half.resync(counters),
                }
            }
            Chunk::DataEnd => {
                if text.is_empty() {
                    half.framing = Framing::Chunked(Chunk::Size);
                } else {
                    half.resync(counters);
                }
            }
            Chunk::Trailers => {
                if text.is_empty() {
                    self.finish_message(side, ts_ns, out);
                }
            }
            Chunk::Data(_) => unreachable!("handled above"),
        }
        used
    }

    /// Accounts for `gap` bytes the kernel moved but did not copy.
    fn skip(&mut self, side: Side, gap: u64, ts_ns: u64, out: &mut Vec<Exchange>) {
        let counters = &mut self.counters;
        let half = match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        };
        match half.framing.clone() {
            Framing::Length(remaining) => {
                let n = remaining.min(gap);
                half.add_body(n, n);
                if let Some(Partial::Request(r)) = half.current.as_mut() {
                    r.incomplete_copy = true;
                }
                if n == remaining {
                    self.finish_message(side, ts_ns, out);
                    if gap > remaining {
                        // The next message began in bytes that were not copied.
                        self.resync(side);
                    }
                } else {
                    half.framing = Framing::Length(remaining - n);
                }
            }
            Framing::Chunked(Chunk::Data(remaining)) if gap <= remaining => {
                half.add_body(gap, gap);
                half.framing = Framing::Chunked(if gap == remaining {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(remaining - gap)
                });
            }
            Framing::UntilClose => half.add_body(gap, gap),
            Framing::Resync | Framing::Tunnel => {}
            Framing::Head if half.head.is_empty() => {
                // Nothing of a message was seen; the uncopied bytes start one we cannot read.
                half.resync(counters);
            }
            Framing::Head | Framing::Chunked(_) => {
                let in_head = matches!(half.framing, Framing::Head);
                if in_head && side == Side::Request && self.truncated_request_head(gap, ts_ns) {
                    return;
                }
                self.counters.heads_too_long += u64::from(in_head);
                self.resync(side);
            }
        }
    }

    /// A request head longer than the kernel's copy: reported from its complete lines, flagged,
    /// and paired with its response. Where its body (if any) ends cannot be known, so the
    /// request side resynchronises on the next message. Returns false when even the request
    /// line was cut.
    fn truncated_request_head(&mut self, gap: u64, ts_ns: u64) -> bool {
        let seen = std::mem::take(&mut self.req.head);
        let Some(last) = seen.windows(2).rposition(|w| w == b"\r\n") else {
            return false;
        };
        let mut head = seen[..last + 2].to_vec();
        head.extend_from_slice(b"\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(_)) = req.parse(&head) else {
            return false;
        };
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return false;
        };
        let mut request = self.new_request(
            (method, target, version),
            req.headers,
            seen.len() as u64 + gap,
            ts_ns,
        );
        request.incomplete_copy = true;
        request.head_truncated = true;
        self.counters.truncated_heads += 1;
        self.push_pending(request);
        self.req.framing = Framing::Resync;
        self.req.line.clear();
        self.req.current = None;
        true
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
        match msg {
            Partial::Request(mut r) => {
                r.end_ns = ts_ns;
                self.push_pending(r);
            }
            Partial::Response(mut r) => {
                r.end_ns = r.end_ns.max(ts_ns);
                match self.pending.pop_front() {
                    Some(request) => out.push(Exchange {
                        request,
                        response: r,
                    }),
                    None => self.counters.orphan_responses += 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(conn: &mut HttpConn, pieces: &[(Side, &[u8])]) -> Vec<Exchange> {
        let mut out = Vec::new();
        for (i, (side, b)) in pieces.iter().enumerate() {
            conn.on_data(*side, b, b.len() as u64, i as u64 * 10, &mut out);
        }
        out
    }

    const REQ: &[u8] = b"GET /users?id=1 HTTP/1.1\r\nHost: api\r\nUser-Agent: curl/8\r\n\r\n";
    const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn a_capture_hole_never_pairs_a_response_with_the_wrong_request() {
        let mut c = HttpConn::new();
        let mut out = Vec::new();
        // The response to /a was lost: /b's request comes after the hole.
        c.on_data(Side::Request, b"GET /a HTTP/1.1\r\n\r\n", 18, 1, &mut out);
        c.on_lost();
        c.on_data(Side::Request, b"GET /b HTTP/1.1\r\n\r\n", 18, 2, &mut out);
        let resp_b = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        c.on_data(Side::Response, resp_b, resp_b.len() as u64, 3, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request.target.value, "/b");
        assert_eq!(out[0].response.status, 404);
        // The request for /c was lost: its response, after the hole, is nobody's.
        c.on_lost();
        c.on_data(Side::Response, RESP, RESP.len() as u64, 4, &mut out);
        c.on_data(Side::Request, REQ, REQ.len() as u64, 5, &mut out);
        c.on_data(Side::Response, RESP, RESP.len() as u64, 6, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].request.target.value, "/users?id=1");
        assert_eq!(c.counters.capture_holes, 2);
        assert_eq!(c.counters.dropped_at_holes, 1);
        assert_eq!(c.counters.orphan_responses, 1);
    }

    #[test]
    fn simple_exchange() {
        let mut c = HttpConn::new();
        let out = feed_all(&mut c, &[(Side::Request, REQ), (Side::Response, RESP)]);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!(e.request.method.value, "GET");
        assert_eq!(e.request.target.value, "/users?id=1");
        assert_eq!(e.request.user_agent.as_ref().unwrap().value, "curl/8");
        assert_eq!(e.request.sizes.total(), REQ.len() as u64);
        assert_eq!(e.response.status, 200);
        assert_eq!(e.response.sizes.total(), RESP.len() as u64);
        assert_eq!(e.response.sizes.body, 5);
        assert_eq!(e.duration_ns(), 10);
    }

    #[test]
    fn keep_alive_and_post_body_split_anywhere() {
        let post = b"POST /login HTTP/1.1\r\nContent-Length: 11\r\n\r\nuser=alice!";
        let resp401 = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
        let mut stream_req = Vec::new();
        stream_req.extend_from_slice(REQ);
        stream_req.extend_from_slice(post);
        for cut in 1..stream_req.len() {
            let mut c = HttpConn::new();
            let (a, b) = stream_req.split_at(cut);
            let mut out = Vec::new();
            c.on_data(Side::Request, a, a.len() as u64, 0, &mut out);
            c.on_data(Side::Request, b, b.len() as u64, 1, &mut out);
            c.on_data(Side::Response, RESP, RESP.len() as u64, 2, &mut out);
            c.on_data(Side::Response, resp401, resp401.len() as u64, 3, &mut out);
            assert_eq!(out.len(), 2, "cut at {cut}");
            assert_eq!(out[1].request.method.value, "POST");
            assert_eq!(out[1].request.sizes.body, 11);
            assert_eq!(out[1].response.status, 401);
        }
    }

    #[test]
    fn uncopied_body_bytes_keep_framing() {
        let mut c = HttpConn::new();
        let mut out = Vec::new();
        c.on_data(Side::Request, REQ, REQ.len() as u64, 0, &mut out);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n";
        let mut piece = head.to_vec();
        piece.extend_from_slice(&[b'x'; 100]);
        // The kernel copied the head and 100 body bytes of a 10,000-byte body in one write.
        c.on_data(
            Side::Response,
            &piece,
            (head.len() + 10000) as u64,
            5,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].response.sizes.body, 10000);
        // The next exchange still parses.
        let out2 = feed_all(&mut c, &[(Side::Request, REQ), (Side::Response, RESP)]);
        assert_eq!(out2.len(), 1);
    }

    #[test]
    fn request_head_longer_than_the_copy_is_reported_truncated() {
        let mut c = HttpConn::new();
        let mut out = Vec::new();
        let mut head =
            b"GET /big HTTP/1.1\r\nUser-Agent: t\r\nAuthorization: Bearer tok\r\nX-Pad: ".to_vec();
        head.extend(std::iter::repeat_n(b'p', 6000));
        head.extend_from_slice(b"\r\n\r\n");
        // The kernel copied 4096 bytes of the write.
        c.on_data(Side::Request, &head[..4096], head.len() as u64, 1, &mut out);
        c.on_data(Side::Response, RESP, RESP.len() as u64, 2, &mut out);
        assert_eq!(out.len(), 1);
        let r = &out[0].request;
        assert!(r.head_truncated);
        assert_eq!(r.target.value, "/big");
        assert_eq!(r.sizes.head, head.len() as u64);
        assert!(r.credential.is_some());
        // The connection goes on.
        let out2 = feed_all(&mut c, &[(Side::Request, REQ), (Side::Response, RESP)]);
        assert_eq!(out2.len(), 1);
    }

    #[test]
    fn non_http_is_skipped_without_exchanges() {
        let mut c = HttpConn::new();
        let tls = [0x16u8, 3, 1, 0, 0x50, 1, 0, 0];
        let out = feed_all(
            &mut c,
            &[
                (Side::Request, &tls),
                (Side::Response, b"\x16\x03\x03garbage"),
                (Side::Request, b"\0\0\0\x08PGSQL"),
            ],
        );
        assert!(out.is_empty());
        assert!(c.counters.skipped_pieces >= 3);
    }

    #[test]
    fn head_and_204_have_no_body() {
        let mut c = HttpConn::new();
        let out = feed_all(
            &mut c,
            &[
                (Side::Request, b"HEAD / HTTP/1.1\r\n\r\n"),
                (
                    Side::Response,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n",
                ),
                (Side::Request, b"DELETE /x HTTP/1.1\r\n\r\n"),
                (Side::Response, b"HTTP/1.1 204 No Content\r\n\r\n"),
            ],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].response.sizes.body, 0);
        assert_eq!(out[1].response.status, 204);
    }

    #[test]
    fn chunked_response_with_trailers() {
        let mut c = HttpConn::new();
        let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n";
        for cut in 1..body.len() {
            let mut c2 = HttpConn::new();
            let (a, b) = body.split_at(cut);
            let out = feed_all(
                &mut c2,
                &[
                    (Side::Request, REQ),
                    (Side::Response, a),
                    (Side::Response, b),
                ],
            );
            assert_eq!(out.len(), 1, "cut {cut}");
            assert_eq!(out[0].response.sizes.body, 11);
            assert_eq!(out[0].response.sizes.total(), body.len() as u64);
        }
        let out = feed_all(&mut c, &[(Side::Request, REQ), (Side::Response, body)]);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn body_until_close() {
        let mut c = HttpConn::new();
        let mut out = feed_all(
            &mut c,
            &[
                (Side::Request, b"GET / HTTP/1.0\r\n\r\n"),
                (Side::Response, b"HTTP/1.0 200 OK\r\n\r\nsome"),
                (Side::Response, b" more"),
            ],
        );
        assert!(out.is_empty());
        c.on_close(99, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].response.sizes.body, 9);
    }

    #[test]
    fn response_cut_by_close_is_reported_incomplete() {
        let mut c = HttpConn::new();
        let mut out = feed_all(
            &mut c,
            &[
                (Side::Request, REQ),
                (
                    Side::Response,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
                ),
            ],
        );
        assert!(out.is_empty());
        c.on_close(50, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].response.incomplete);
        assert_eq!(out[0].response.sizes.body, 7);
        assert_eq!(c.counters.unanswered, 0);
    }

    #[test]
    fn continue_then_final_response() {
        let mut c = HttpConn::new();
        let out = feed_all(
            &mut c,
            &[
                (
                    Side::Request,
                    b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
                ),
                (Side::Response, b"HTTP/1.1 100 Continue\r\n\r\n"),
                (Side::Request, b"abc"),
                (
                    Side::Response,
                    b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
                ),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].response.status, 201);
    }

    #[test]
    fn pipelined_requests_pair_in_order() {
        let mut c = HttpConn::new();
        let reqs = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let resps = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nb";
        let out = feed_all(&mut c, &[(Side::Request, reqs), (Side::Response, resps)]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].request.target.value, "/a");
        assert_eq!(out[1].request.target.value, "/b");
        assert_eq!(out[1].response.status, 404);
    }

    #[test]
    fn upgrade_stops_parsing() {
        let mut c = HttpConn::new();
        let out = feed_all(
            &mut c,
            &[
                (
                    Side::Request,
                    b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                ),
                (
                    Side::Response,
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                ),
                (Side::Request, b"GET /not-http HTTP/1.1\r\n\r\n"),
                (Side::Response, RESP),
            ],
        );
        assert_eq!(out.len(), 1);
        assert!(c.is_tunnel());
    }

    #[test]
    fn mid_stream_start_resyncs_cleanly() {
        let mut c = HttpConn::new();
        // Observer attached in the middle of a response body.
        let out = feed_all(
            &mut c,
            &[
                (Side::Response, b"tail of an old body"),
                (Side::Request, REQ),
                (Side::Response, RESP),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].response.status, 200);
    }

    #[test]
    fn bad_content_length_is_not_guessed() {
        let mut c = HttpConn::new();
        let out = feed_all(
            &mut c,
            &[
                (
                    Side::Request,
                    b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcde",
                ),
                (Side::Response, RESP),
            ],
        );
        assert!(out.is_empty());
        assert!(c.counters.resyncs >= 1);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        struct Spec {
            method: &'static str,
            req_body: usize,
            req_chunked: bool,
            status: u16,
            resp_body: usize,
            resp_chunked: bool,
        }

        fn spec() -> impl Strategy<Value = Spec> {
            (
                prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD"]),
                0usize..3000,
                any::<bool>(),
                prop::sample::select(vec![200u16, 201, 204, 301, 400, 401, 403, 404, 500]),
                0usize..5000,
                any::<bool>(),
            )
                .prop_map(
                    |(method, req_body, req_chunked, status, resp_body, resp_chunked)| Spec {
                        method,
                        req_body: if method == "GET" || method == "HEAD" {
                            0
                        } else {
                            req_body
                        },
                        req_chunked,
                        status,
                        resp_body: if method == "HEAD" || status == 204 {
                            0
                        } else {
                            resp_body
                        },
                        resp_chunked,
                    },
                )
        }

        fn body(out: &mut Vec<u8>, len: usize, chunked: bool) {
            if chunked {
                let mut left = len;
                while left > 0 {
                    let n = left.min(777);
                    out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                    out.extend(std::iter::repeat_n(b'z', n));
                    out.extend_from_slice(b"\r\n");
                    left -= n;
                }
                out.extend_from_slice(b"0\r\n\r\n");
            } else {
                out.extend(std::iter::repeat_n(b'z', len));
            }
        }

        fn streams(specs: &[Spec]) -> (Vec<u8>, Vec<u8>) {
            let (mut req, mut resp) = (Vec::new(), Vec::new());
            for (i, s) in specs.iter().enumerate() {
                let framing = |chunked: bool, len: usize| {
                    if chunked {
                        "Transfer-Encoding: chunked\r\n".to_string()
                    } else {
                        format!("Content-Length: {len}\r\n")
                    }
                };
                let rc = s.req_chunked && s.req_body > 0;
                req.extend_from_slice(
                    format!(
                        "{} /r/{i} HTTP/1.1\r\nHost: h\r\n{}\r\n",
                        s.method,
                        framing(rc, s.req_body)
                    )
                    .as_bytes(),
                );
                body(&mut req, s.req_body, rc);
                let pc = s.resp_chunked && s.status != 204 && s.method != "HEAD";
                let len_header = if s.status == 204 {
                    String::new()
                } else {
                    framing(pc, s.resp_body)
                };
                resp.extend_from_slice(
                    format!("HTTP/1.1 {} X\r\n{len_header}\r\n", s.status).as_bytes(),
                );
                body(&mut resp, s.resp_body, pc);
            }
            (req, resp)
        }

        fn feed(
            stream: &[u8],
            cuts: &[usize],
            side: Side,
            c: &mut HttpConn,
            out: &mut Vec<Exchange>,
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|x| x % (stream.len() + 1)).collect();
            points.sort_unstable();
            let mut last = 0;
            for p in points.into_iter().chain([stream.len()]) {
                if p > last {
                    c.on_data(side, &stream[last..p], (p - last) as u64, 0, out);
                    last = p;
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// However the streams are cut into syscalls, the same exchanges come out.
            #[test]
            fn cuts_do_not_change_exchanges(
                specs in prop::collection::vec(spec(), 1..8),
                req_cuts in prop::collection::vec(any::<usize>(), 0..40),
                resp_cuts in prop::collection::vec(any::<usize>(), 0..40),
            ) {
                let (req, resp) = streams(&specs);
                let mut whole = HttpConn::new();
                let mut expected = Vec::new();
                whole.on_data(Side::Request, &req, req.len() as u64, 0, &mut expected);
                whole.on_data(Side::Response, &resp, resp.len() as u64, 0, &mut expected);
                prop_assert_eq!(expected.len(), specs.len());
                for (x, s) in expected.iter().zip(&specs) {
                    prop_assert_eq!(x.request.method.value.as_str(), s.method);
                    prop_assert_eq!(x.request.sizes.body, s.req_body as u64);
                    prop_assert_eq!(x.response.status, s.status);
                    prop_assert_eq!(x.response.sizes.body, s.resp_body as u64);
                }
                let mut cut = HttpConn::new();
                let mut got = Vec::new();
                feed(&req, &req_cuts, Side::Request, &mut cut, &mut got);
                feed(&resp, &resp_cuts, Side::Response, &mut cut, &mut got);
                prop_assert_eq!(got, expected);
            }

            /// Arbitrary bytes never panic and never grow memory past its bound.
            #[test]
            fn garbage_is_bounded(pieces in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..600), 0u64..5000), 0..60)) {
                let mut c = HttpConn::new();
                let mut out = Vec::new();
                for (req, bytes, extra) in pieces {
                    let side = if req { Side::Request } else { Side::Response };
                    c.on_data(side, &bytes, bytes.len() as u64 + extra, 0, &mut out);
                    prop_assert!(c.held_bytes() <= HttpConn::MAX_HELD);
                    prop_assert!(c.pending() <= MAX_PENDING);
                }
            }
        }
    }

    #[test]
    fn text_is_capped_and_flagged() {
        let t = Text::from_bytes(&vec![b'a'; MAX_FIELD + 10]);
        assert_eq!(t.value.len(), MAX_FIELD);
        assert!(t.altered);
        let t = Text::from_bytes(b"/\xff\xfe");
        assert!(t.altered);
        assert!(!Text::from_bytes(b"/ok").altered);
        let long = "é".repeat(MAX_FIELD);
        assert_eq!(Text::from_checked(&long), Text::from_bytes(long.as_bytes()));
        assert_eq!(Text::from_checked("/ok"), Text::from_bytes(b"/ok"));
    }
}
