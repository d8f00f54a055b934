//! What HTTP reassembly yields, whatever the version: requests, responses and their pairing
//! into exchanges, the strings taken from traffic, the byte counts, and the counters of what
//! reassembly gave up on. Shared by `h1` and a future `h2`; imports nothing of the crate but
//! [`super::credential`], [`super::form`] and [`super::forwarded`].

use super::credential::RawCredential;
use super::form::LoginFields;
use super::forwarded::ForwardedHeaders;

/// Longest string kept from a traffic field (method, target, header value).
pub const MAX_FIELD: usize = 2048;
/// Longest prefix of a body kept: a request body read for a login's user name, a response body
/// searched for a login failure marker. Bodies are otherwise counted, never kept.
pub const MAX_BODY_KEPT: usize = 2048;

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
    /// What the body says of a login (user name and password until hashed).
    pub login: LoginFields,
    /// `X-Forwarded-For` and `Forwarded` as sent (bounded), read only when the peer is a
    /// trusted proxy; `None` when the request had neither.
    pub forwarded: Option<Box<ForwardedHeaders>>,
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
    /// The first bytes of the body (at most [`MAX_BODY_KEPT`], within what the kernel copied),
    /// kept only when login failure markers are configured; empty otherwise.
    pub body_prefix: Vec<u8>,
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
    /// Bodies longer than the [`MAX_BODY_KEPT`] bytes kept of them: read from their prefix.
    pub bodies_capped: u64,
    /// Responses with no request that the status rules never saw (too many in one piece).
    pub unpaired_dropped: u64,
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
        self.bodies_capped += o.bodies_capped;
        self.unpaired_dropped += o.unpaired_dropped;
    }
}
