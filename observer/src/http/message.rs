//! What HTTP reassembly yields, whatever the version: requests, responses and their pairing
//! into exchanges, the strings taken from traffic, the byte counts, and the counters of what
//! reassembly gave up on. Shared by `h1` and `h2`; imports nothing of the crate but
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

/// The HTTP version a message was sent in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Version {
    Http10,
    #[default]
    Http11,
    Http2,
}

impl Version {
    /// HTTP/1.x from its minor version (as `httparse` gives it): 0 is 1.0, anything else 1.1.
    pub fn from_minor(minor: u8) -> Self {
        if minor == 0 {
            Self::Http10
        } else {
            Self::Http11
        }
    }

    /// As ECS writes `http.version`: `1.0`, `1.1`, `2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "1.0",
            Self::Http11 => "1.1",
            Self::Http2 => "2",
        }
    }
}

/// Byte counts of one message on the wire.
///
/// For HTTP/2, `head` is the HEADERS and CONTINUATION frames of the message's stream in that
/// direction (informational responses and trailers included), 9-byte frame headers included;
/// `body_wire` its DATA frames, frame headers and padding included; `body` their payload
/// without padding. Connection-level frames (SETTINGS, PING, WINDOW_UPDATE...) belong to no
/// message.
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

/// A request.
///
/// Over HTTP/2 the method is `:method`, the target `:path` and the host `:authority` (the
/// `Host` header when it has none). A field whose HPACK representation referred to a dynamic
/// table entry observer never saw (inserted before it joined the connection, or in bytes the
/// kernel did not copy) is not known and is counted in `unknown_fields`; nothing is guessed
/// for it. Such a request is still reported with what is known: `method` and `target` are
/// empty when `:method` or `:path` was among the unknown fields. The event should print the
/// fields as they are (an empty method or path as empty, never a default) and flag the
/// exchange whenever `unknown_fields` is not 0, so that an investigator knows fields may be
/// missing (a credential or user agent, too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Text,
    /// The request target as sent (origin form: path and query).
    pub target: Text,
    pub version: Version,
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
    /// HTTP/2 header fields that could not be decoded (see the type's doc); 0 for HTTP/1.x.
    pub unknown_fields: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code; 0 when it is not known: over HTTP/2, `:status` was an HPACK reference
    /// to a dynamic table entry from before observer joined the connection (or from a header
    /// block it lost), and `unknown_fields` is then not 0; or the response had no `:status`.
    /// It is never guessed.
    pub status: u16,
    pub version: Version,
    pub sizes: Sizes,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The connection closed before the whole body its framing announced went through.
    pub incomplete: bool,
    /// The first bytes of the body (at most [`MAX_BODY_KEPT`], within what the kernel copied),
    /// kept only when login failure markers are configured; empty otherwise.
    pub body_prefix: Vec<u8>,
    /// HTTP/2 header fields of the response (trailers included) that could not be decoded:
    /// references to dynamic table entries observer never saw. 0 for HTTP/1.x.
    pub unknown_fields: u16,
}

/// What an HTTP/2 exchange with a `content-type: application/grpc*` request says of its gRPC
/// call. Classification into actions is left to `detect`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grpc {
    /// From `:path` (`/pkg.Service/Method`): `pkg.Service`; empty when the path is not of that
    /// form or was not known.
    pub service: Text,
    /// `Method`; empty likewise.
    pub method: Text,
    /// `grpc-status` from the trailers, or from a trailers-only response (the response
    /// HEADERS that end the stream); `None` when the call ended without one (reset, cut by the
    /// capture, or not decodable).
    pub status: Option<u32>,
    /// `grpc-message` as sent (percent-encoded, not decoded).
    pub message: Option<Text>,
    /// Length-prefixed messages the client sent, counted across DATA frames.
    pub requests: u32,
    /// Length-prefixed messages the server sent (more than one for a streaming call).
    pub responses: u32,
    /// Bytes the kernel did not copy hid a message prefix: the counts stopped there and are
    /// lower bounds.
    pub counts_lost: bool,
}

/// One request with its response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub request: Request,
    pub response: Response,
    /// Set for gRPC calls (HTTP/2 only); boxed, as most exchanges have none.
    pub grpc: Option<Box<Grpc>>,
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
    /// HTTP/2 streams dropped (the oldest first) because too many were open on a connection;
    /// a response on one of them later reaches the status rules only.
    pub h2_streams_over_cap: u64,
    /// HTTP/2 header blocks longer than observer holds (or whose fields decode to more than
    /// it keeps): the block is skipped and, when skipped undecoded, its direction's HPACK
    /// table is taken as out of step (as after a gap).
    pub h2_header_blocks_over_cap: u64,
    /// HPACK references to dynamic table entries observer never saw (inserted before it joined
    /// or in lost bytes): fields reported as unknown.
    pub h2_unknown_references: u64,
    /// Header blocks that did not decode on a table thought to be in step (an index past the
    /// table, bad Huffman or integer, a size update past the peer's limit): the table is then
    /// taken as out of step.
    pub h2_hpack_errors: u64,
    /// Dynamic table size updates above observer's cap: references past what it keeps become
    /// unknown.
    pub h2_tables_capped: u64,
    /// Times a direction lost HTTP/2 framing (bytes the kernel did not copy or lost records hid
    /// frame headers, or bytes that are not frames): it resynchronises at the next piece that
    /// starts with plausible frame headers, its HPACK table out of step.
    pub h2_framing_lost: u64,
    /// HTTP/2 header blocks cut by bytes the kernel did not copy: undecodable, the table taken
    /// as out of step.
    pub h2_header_blocks_lost: u64,
    /// PUSH_PROMISE frames (counted; their header blocks only keep the table in step, pushed
    /// responses are not reported).
    pub h2_push_promises: u64,
    pub h2_rst_streams: u64,
    pub h2_goaways: u64,
    /// Frames of types HTTP/2 does not define (extensions), skipped.
    pub h2_unknown_frames: u64,
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
        self.h2_streams_over_cap += o.h2_streams_over_cap;
        self.h2_header_blocks_over_cap += o.h2_header_blocks_over_cap;
        self.h2_unknown_references += o.h2_unknown_references;
        self.h2_hpack_errors += o.h2_hpack_errors;
        self.h2_tables_capped += o.h2_tables_capped;
        self.h2_framing_lost += o.h2_framing_lost;
        self.h2_header_blocks_lost += o.h2_header_blocks_lost;
        self.h2_push_promises += o.h2_push_promises;
        self.h2_rst_streams += o.h2_rst_streams;
        self.h2_goaways += o.h2_goaways;
        self.h2_unknown_frames += o.h2_unknown_frames;
    }
}
