//! HTTP/2 reassembly: turns the two byte streams of one connection into one exchange per
//! stream, with the same fields HTTP/1.x yields. This file owns the per-connection state and
//! what happens at gaps, holes and close; [`read`] follows the frames of one direction,
//! [`stream`] turns header blocks and DATA into requests and responses, [`hpack`] and
//! [`table`] decode header blocks, [`frame`] parses frame headers and [`grpc`] reads gRPC calls.
//!
//! Bytes come in syscall-sized pieces, each possibly cut short (the kernel copies a bounded
//! prefix and reports the true length). Uncopied bytes inside a DATA payload are only counted;
//! uncopied bytes that hide frame headers lose that direction's framing: counted, its HPACK
//! table taken as out of step (everything in it unknown, as on a join), the messages whose end
//! could have been hidden closed out and flagged, and reading starts again at the next piece
//! that starts with plausible frame headers. Nothing is guessed across a gap. Memory is
//! bounded: streams, header blocks, dynamic tables and kept body prefixes all have caps,
//! counted when they bite.

mod frame;
mod grpc;
mod hpack;
mod read;
mod stream;
mod table;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_build;
#[cfg(test)]
mod tests_cut;
#[cfg(test)]
mod tests_hpack;
#[cfg(test)]
mod tests_real;

use std::sync::Arc;

use crate::http::credential::{CredentialNames, MAX_SECRET};
use crate::http::forwarded::MAX_FORWARDED;
use crate::http::h1::{MAX_UNPAIRED, Unpaired, Upgraded};
use crate::http::message::{Exchange, HttpCounters, MAX_BODY_KEPT, MAX_FIELD, Side};

pub use frame::{
    DEFAULT_MAX_FRAME, PREFACE, plausible_frames, preface_prefix, side_hint, starts_with_preface,
};
use hpack::{Decoder, HeaderList, MAX_DECODED};
use read::Dir;
use stream::Stream;
pub use table::MAX_TABLE;

/// Streams tracked per connection; past it the oldest is dropped (counted).
pub const MAX_STREAMS: usize = 128;
/// Largest header block (HEADERS and its CONTINUATION frames) held for decoding.
pub const MAX_BLOCK: usize = 16 * 1024;
/// Bytes of a control frame's payload read (SETTINGS entries, RST_STREAM, GOAWAY's fixed part).
const MAX_CONTROL: usize = 256;
/// The most one stream holds: method, target, host and user agent (text decoded lossily may
/// triple), the credential, a login's user and password, forwarding headers, the kept body
/// prefixes of both directions, and a gRPC call's names and message.
const MAX_PER_STREAM: usize =
    7 * 3 * MAX_FIELD + MAX_SECRET + 2 * MAX_BODY_KEPT + 2 * MAX_FORWARDED + 2 * MAX_BODY_KEPT;

/// Reassembly state of one HTTP/2 connection.
#[derive(Debug)]
pub struct H2Conn {
    req: Dir,
    resp: Dir,
    /// Oldest first.
    streams: Vec<Stream>,
    names: Arc<CredentialNames>,
    /// Responses with no request, until [`H2Conn::take_unpaired`].
    unpaired: Vec<Unpaired>,
    /// The fields of the block being handled (kept for its allocation).
    list: HeaderList,
    /// The highest stream id a client's request opened.
    last_client_stream: u32,
    /// A header block was decoded: the connection is past its start.
    blocks_seen: bool,
    pub counters: HttpCounters,
}

impl Default for H2Conn {
    fn default() -> Self {
        Self::new()
    }
}

impl H2Conn {
    /// A connection seen from its start, taking credentials by the default names.
    pub fn new() -> Self {
        Self::with_names(crate::http::h1::default_names())
    }

    /// A connection seen from its start (the client's preface is to come first).
    pub fn with_names(names: Arc<CredentialNames>) -> Self {
        Self {
            req: Dir::new(read::Reading::Preface(0), Decoder::fresh()),
            resp: Dir::new(read::Reading::Header, Decoder::fresh()),
            streams: Vec::new(),
            names,
            unpaired: Vec::new(),
            list: HeaderList::default(),
            last_client_stream: 0,
            blocks_seen: false,
            counters: HttpCounters::default(),
        }
    }

    /// A connection joined mid-way: both directions wait for a piece that starts with frames,
    /// and every dynamic table entry is unknown.
    pub fn joined(names: Arc<CredentialNames>) -> Self {
        let mut c = Self::with_names(names);
        c.req = Dir::new(read::Reading::Lost, Decoder::joined());
        c.resp = Dir::new(read::Reading::Lost, Decoder::joined());
        c
    }

    /// A connection an HTTP/1.1 request upgraded (`Upgrade: h2c`, answered `101`): that
    /// request is stream 1, already sent (its version stays 1.1, as it was sent; its response's
    /// is 2); the client's preface comes next.
    pub fn upgraded(names: Arc<CredentialNames>, up: Upgraded) -> Self {
        let mut c = Self::with_names(names);
        c.last_client_stream = 1;
        c.streams.push(Stream::upgraded(up));
        c
    }

    /// Bytes this connection holds: bounded by [`H2Conn::MAX_HELD`] whatever bytes arrive.
    pub fn held_bytes(&self) -> usize {
        self.req.held_bytes()
            + self.resp.held_bytes()
            + self.list.held_bytes()
            + self.streams.iter().map(Stream::held_bytes).sum::<usize>()
    }

    /// The most [`H2Conn::held_bytes`] can be.
    pub const MAX_HELD: usize =
        2 * (MAX_CONTROL + MAX_BLOCK + MAX_TABLE) + MAX_DECODED + MAX_STREAMS * MAX_PER_STREAM;
    // Unpaired responses (MAX_UNPAIRED of 16 bytes) are fixed-size and not counted, as in h1.

    /// Moves the responses that had no request into `out` (call after each piece and close).
    pub fn take_unpaired(&mut self, out: &mut Vec<Unpaired>) {
        out.append(&mut self.unpaired);
    }

    /// True when responses with no request wait for [`H2Conn::take_unpaired`].
    pub fn has_unpaired(&self) -> bool {
        !self.unpaired.is_empty()
    }

    /// Requests waiting for their response (open streams).
    pub fn pending(&self) -> usize {
        self.streams.len()
    }

    /// HTTP/2 never hands the connection to another protocol.
    pub fn is_tunnel(&self) -> bool {
        false
    }

    /// True once a request or response went through: the connection is HTTP/2.
    pub fn seen_http(&self) -> bool {
        self.blocks_seen
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
        self.flush_closed(out);
        let gap = total_len.saturating_sub(bytes.len() as u64);
        if self.dir(side).is_lost() && !bytes.is_empty() && !self.resync(side, bytes) {
            self.counters.skipped_pieces += 1;
            return;
        }
        let mut input = bytes;
        while !input.is_empty() && !self.dir(side).is_lost() {
            let used = self.step(side, input, ts_ns, out);
            input = input.get(used..).unwrap_or_default();
        }
        if gap > 0 && !self.dir(side).is_lost() {
            self.gap(side, gap, ts_ns, out);
        }
        self.flush_closed(out);
    }

    /// The connection carried TLS and the plaintext starts now: start over, from the preface.
    pub fn restart_for_tls(&mut self) {
        let counters = self.counters;
        *self = Self::with_names(self.names.clone());
        self.counters = counters;
        self.counters.skipped_pieces = 0;
    }

    /// Records of this connection were lost (either direction, any size): both directions
    /// lose framing. Streams keep their ids, so requests still pair with their responses.
    /// Responses under way are closed out, and reported with the next piece (or the close).
    pub fn on_lost(&mut self) {
        self.counters.capture_holes += 1;
        self.lose_framing(Side::Request);
        self.lose_framing(Side::Response);
    }

    /// The connection closed: responses under way are reported, flagged incomplete; requests
    /// with no response are counted as unanswered.
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        self.flush_closed(out);
        for mut s in std::mem::take(&mut self.streams) {
            let done = s.resp_done;
            match s.response.as_mut() {
                Some(r) => {
                    r.incomplete |= !done;
                    self.finish(s, ts_ns, out);
                }
                None => self.counters.unanswered += 1,
            }
        }
    }

    fn dir(&self, side: Side) -> &Dir {
        match side {
            Side::Request => &self.req,
            Side::Response => &self.resp,
        }
    }

    fn dir_mut(&mut self, side: Side) -> &mut Dir {
        match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        }
    }

    /// A direction without framing looks at a piece: does it start with frames (or, from a
    /// client, the preface)?
    fn resync(&mut self, side: Side, bytes: &[u8]) -> bool {
        if side == Side::Request && (starts_with_preface(bytes) || preface_prefix(bytes)) {
            self.req.reading = read::Reading::Preface(0);
            if !self.blocks_seen && self.streams.is_empty() {
                // Only a connection's start has a preface: nothing was indexed before.
                self.req.hpack = Decoder::fresh();
                self.resp.hpack = Decoder::fresh();
            }
            return true;
        }
        let max = self.dir(side).max_frame.unwrap_or(DEFAULT_MAX_FRAME);
        if plausible_frames(side, bytes, max) {
            self.dir_mut(side).reading = read::Reading::Header;
            return true;
        }
        false
    }

    /// Framing is lost in `side`: counted; the block under way is lost and the table taken as
    /// out of step; messages of that side whose end may have gone by unseen are closed out
    /// (responses are reported by [`H2Conn::flush_closed`]).
    fn lose_framing(&mut self, side: Side) {
        let counters = &mut self.counters;
        let dir = match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        };
        if dir.is_lost() {
            // Nothing was read since it was lost: nothing more to close out.
            return;
        }
        counters.h2_framing_lost += 1;
        if dir.drop_block() {
            counters.h2_header_blocks_lost += 1;
        }
        dir.lose();
        for s in &mut self.streams {
            match side {
                Side::Request if !s.req_done => {
                    s.request.incomplete_copy = true;
                    s.finish_request(&self.names, s.request.end_ns);
                }
                Side::Response => {
                    if let Some(r) = s.response.as_mut() {
                        r.incomplete = true;
                        s.closed = true;
                    }
                }
                Side::Request => {}
            }
        }
    }

    /// Reports the responses a loss of framing closed out.
    fn flush_closed(&mut self, out: &mut Vec<Exchange>) {
        if !self.streams.iter().any(|s| s.closed) {
            return;
        }
        let (closed, open): (Vec<Stream>, Vec<Stream>) = std::mem::take(&mut self.streams)
            .into_iter()
            .partition(|s| s.closed);
        self.streams = open;
        for s in closed {
            let end = s.response.as_ref().map_or(0, |r| r.end_ns);
            self.finish(s, end, out);
        }
    }

    /// A response with no request: its status reaches the status rules when known.
    fn unpaired(&mut self, status: u16, end_ns: u64) {
        self.counters.orphan_responses += 1;
        if self.unpaired.len() < MAX_UNPAIRED {
            self.unpaired.push(Unpaired { status, end_ns });
        } else {
            self.counters.unpaired_dropped += 1;
        }
    }
}
