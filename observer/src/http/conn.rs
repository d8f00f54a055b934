//! One connection's reassembly, whatever version of HTTP it carries: HTTP/1.x until its bytes
//! say HTTP/2, then HTTP/2. The pipeline sees one type, [`HttpConn`].
//!
//! HTTP/2 is picked when the client's first bytes are the connection preface (cleartext by
//! prior knowledge, or the plaintext of TLS, where detection starts over after
//! [`HttpConn::restart_for_tls`]); when an HTTP/1.1 `Upgrade: h2c` request is answered `101`
//! (the request becomes stream 1); and when a connection joined mid-way has shown no HTTP/1.x
//! and a piece starts with plausible HTTP/2 frames. That last switch is tentative: until
//! HTTP/2 reassembly has produced something, a piece that starts like an HTTP/1.x message
//! switches back, so that HTTP/1.x traffic always wins.
//!
//! Imports nothing of the crate outside `http`.

use std::sync::Arc;

use super::credential::CredentialNames;
use super::h1::{H1Conn, Unpaired, looks_like_start};
use super::h2::{self, H2Conn};
use super::message::{Exchange, HttpCounters, Side};
use super::sniff::{self, Guess, Opening};

// HTTP/1.x, the usual case, stays inline as before; HTTP/2 state is boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Inner {
    H1(H1Conn),
    H2 {
        conn: Box<H2Conn>,
        /// Known to be HTTP/2 (preface, upgrade, or something reassembled): no switching back.
        confirmed: bool,
    },
}

/// Reassembly state of one connection.
#[derive(Debug)]
pub struct HttpConn {
    inner: Inner,
    /// The client's first bytes while they are a strict prefix of the HTTP/2 preface (a
    /// preface split across writes), with the time of their piece.
    held: Option<(Vec<u8>, u64)>,
    names: Arc<CredentialNames>,
    /// The first bytes each side sent (request side first), for [`HttpConn::guess`].
    openings: [Opening; 2],
    /// Counters of the reassembly a switch replaced.
    retired: HttpCounters,
    /// Everything this connection's reassembly counted, whichever version.
    pub counters: HttpCounters,
}

impl Default for HttpConn {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpConn {
    pub fn new() -> Self {
        Self::from_h1(H1Conn::new())
    }

    /// Reassembly that takes credentials from the headers and cookies `names` lists.
    pub fn with_names(names: Arc<CredentialNames>) -> Self {
        Self::from_h1(H1Conn::with_names(names))
    }

    fn from_h1(h1: H1Conn) -> Self {
        Self {
            names: h1.names(),
            inner: Inner::H1(h1),
            held: None,
            openings: [Opening::default(); 2],
            retired: HttpCounters::default(),
            counters: HttpCounters::default(),
        }
    }

    /// The most [`HttpConn::held_bytes`] can be.
    pub const MAX_HELD: usize = h2::PREFACE.len()
        + if H1Conn::MAX_HELD > H2Conn::MAX_HELD {
            H1Conn::MAX_HELD
        } else {
            H2Conn::MAX_HELD
        };

    /// Bytes this connection holds: bounded whatever bytes arrive.
    pub fn held_bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |(b, _)| b.len())
            + match &self.inner {
                Inner::H1(c) => c.held_bytes(),
                Inner::H2 { conn, .. } => conn.held_bytes(),
            }
    }

    /// Moves the responses that had no request into `out` (call after each piece and close).
    pub fn take_unpaired(&mut self, out: &mut Vec<Unpaired>) {
        match &mut self.inner {
            Inner::H1(c) => c.take_unpaired(out),
            Inner::H2 { conn, .. } => conn.take_unpaired(out),
        }
    }

    /// Requests waiting for their response (HTTP/2: open streams).
    pub fn pending(&self) -> usize {
        match &self.inner {
            Inner::H1(c) => c.pending(),
            Inner::H2 { conn, .. } => conn.pending(),
        }
    }

    /// True once the connection switched to a protocol that is not parsed (WebSocket, CONNECT).
    pub fn is_tunnel(&self) -> bool {
        match &self.inner {
            Inner::H1(c) => c.is_tunnel(),
            Inner::H2 { conn, .. } => conn.is_tunnel(),
        }
    }

    /// True when the connection is read as HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self.inner, Inner::H2 { .. })
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
        self.openings[usize::from(side == Side::Response)].note(bytes);
        if side == Side::Request && matches!(self.inner, Inner::H1(_)) {
            if let Some((held, held_ns)) = self.held.take() {
                // The preface's first bytes came alone: see how this piece goes on.
                let joined = [held.as_slice(), bytes].concat();
                let extra = joined.len() as u64 - bytes.len() as u64;
                let short = joined.len() < h2::PREFACE.len();
                if short && h2::PREFACE.starts_with(&joined) && total_len == bytes.len() as u64 {
                    self.held = Some((joined, held_ns));
                    return;
                }
                if joined.starts_with(h2::PREFACE) {
                    return self.on_data(side, &joined, total_len + extra, ts_ns, out);
                }
                self.feed(side, &held, held.len() as u64, held_ns, out);
            } else if self.starts_preface(bytes) && total_len == bytes.len() as u64 {
                self.held = Some((bytes.to_vec(), ts_ns));
                return;
            }
        }
        self.feed(side, bytes, total_len, ts_ns, out);
    }

    /// A first piece of the client's that is a strict prefix of the preface, on a connection
    /// that has shown nothing yet.
    fn starts_preface(&self, bytes: &[u8]) -> bool {
        let Inner::H1(h1) = &self.inner else {
            return false;
        };
        !h1.seen_http()
            && h1.held_bytes() == 0
            && !bytes.is_empty()
            && bytes.len() < h2::PREFACE.len()
            && h2::PREFACE.starts_with(bytes)
    }

    fn feed(
        &mut self,
        side: Side,
        bytes: &[u8],
        total_len: u64,
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        match &mut self.inner {
            Inner::H1(h1) => {
                // Only a connection that has shown no HTTP/1.x yet can start over as HTTP/2.
                let preface = side == Side::Request
                    && !h1.seen_http()
                    && (h2::starts_with_preface(bytes) || h2::preface_prefix(bytes));
                if preface {
                    self.switch_to_h2(H2Conn::with_names(self.names.clone()), true);
                } else if !h1.seen_http()
                    && !looks_like_start(side, bytes)
                    && h2::plausible_frames(side, bytes, h2::DEFAULT_MAX_FRAME)
                {
                    self.switch_to_h2(H2Conn::joined(self.names.clone()), false);
                } else {
                    let used = h1.feed(side, bytes, total_len, ts_ns, out);
                    if let Some(up) = h1.take_upgraded() {
                        let h2 = H2Conn::upgraded(self.names.clone(), up);
                        self.switch_to_h2(h2, true);
                        let rest = bytes.get(used..).unwrap_or_default();
                        let rest_len = total_len.saturating_sub(used as u64);
                        if rest_len > 0 {
                            self.feed(side, rest, rest_len, ts_ns, out);
                        }
                        return;
                    }
                    self.sum();
                    return;
                }
                self.feed(side, bytes, total_len, ts_ns, out);
            }
            Inner::H2 { conn, confirmed } => {
                if !*confirmed {
                    if !bytes.is_empty()
                        && looks_like_start(side, bytes)
                        && !h2::preface_prefix(bytes)
                        && !h2::starts_with_preface(bytes)
                    {
                        // HTTP/1.x after all: the tentative switch is undone.
                        self.retired.add(&conn.counters);
                        self.inner = Inner::H1(H1Conn::with_names(self.names.clone()));
                        self.feed(side, bytes, total_len, ts_ns, out);
                        return;
                    }
                    if side == Side::Request && h2::starts_with_preface(bytes) {
                        *confirmed = true;
                    }
                }
                let before = out.len();
                conn.on_data(side, bytes, total_len, ts_ns, out);
                // A whole exchange (or a response) read as HTTP/2 settles it.
                if out.len() > before || conn.has_unpaired() {
                    *confirmed = true;
                }
                self.sum();
            }
        }
    }

    fn switch_to_h2(&mut self, conn: H2Conn, confirmed: bool) {
        let old = std::mem::replace(
            &mut self.inner,
            Inner::H2 {
                conn: Box::new(conn),
                confirmed,
            },
        );
        match old {
            Inner::H1(h1) => {
                let mut c = h1.counters;
                // Requests left waiting over HTTP/1.x get no answer.
                c.unanswered += h1.pending() as u64;
                self.retired.add(&c);
            }
            Inner::H2 { conn, .. } => self.retired.add(&conn.counters),
        }
    }

    /// The connection turned out to carry TLS: what was parsed so far was the handshake's
    /// ciphertext. Starts over, for the plaintext (which may be HTTP/2).
    pub fn restart_for_tls(&mut self) {
        let mut c = match &self.inner {
            Inner::H1(h1) => h1.counters,
            Inner::H2 { conn, .. } => conn.counters,
        };
        c.skipped_pieces = 0;
        self.retired.skipped_pieces = 0;
        self.retired.add(&c);
        self.held = None;
        self.openings = [Opening::default(); 2];
        self.inner = Inner::H1(H1Conn::with_names(self.names.clone()));
        self.sum();
    }

    /// What the connection seems to speak when it is not HTTP, from each side's first bytes.
    pub fn guess(&self) -> Guess {
        let [client, server] = &self.openings;
        sniff::guess(client.get(), server.get())
    }

    /// Records of this connection were lost before the next piece: a hole of unknown size, in
    /// either direction.
    pub fn on_lost(&mut self) {
        self.held = None;
        match &mut self.inner {
            Inner::H1(c) => c.on_lost(),
            Inner::H2 { conn, .. } => conn.on_lost(),
        }
        self.sum();
    }

    /// The connection closed: messages under way are finished or counted.
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        if let Some((held, held_ns)) = self.held.take() {
            self.feed(Side::Request, &held, held.len() as u64, held_ns, out);
        }
        match &mut self.inner {
            Inner::H1(c) => c.on_close(ts_ns, out),
            Inner::H2 { conn, .. } => conn.on_close(ts_ns, out),
        }
        self.sum();
    }

    /// `counters`: the retired reassembly's and the current one's.
    fn sum(&mut self) {
        let mut c = self.retired;
        c.add(match &self.inner {
            Inner::H1(h1) => &h1.counters,
            Inner::H2 { conn, .. } => &conn.counters,
        });
        self.counters = c;
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
