//! HTTP/2 frame headers (RFC 9113 §4.1): parsing them, and telling whether bytes observer
//! cannot place (a connection joined mid-way, the piece after a gap) start with frames.
//!
//! The plausibility test is strict on purpose: every frame header a piece holds whole must be
//! one a peer on that side could send (known type, defined flags only, the stream id and
//! length its type requires), so that HTTP/1.x bodies and other protocols are not taken for
//! HTTP/2.

use crate::http::message::Side;

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 9;
/// The client's connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// SETTINGS_MAX_FRAME_SIZE until the receiver announces one.
pub const DEFAULT_MAX_FRAME: u32 = 16_384;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    /// An extension type (ALTSVC, ORIGIN, PRIORITY_UPDATE...), skipped.
    Unknown(u8),
}

impl Kind {
    fn of(t: u8) -> Self {
        match t {
            0 => Self::Data,
            1 => Self::Headers,
            2 => Self::Priority,
            3 => Self::RstStream,
            4 => Self::Settings,
            5 => Self::PushPromise,
            6 => Self::Ping,
            7 => Self::GoAway,
            8 => Self::WindowUpdate,
            9 => Self::Continuation,
            t => Self::Unknown(t),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: Kind,
    pub flags: u8,
    pub stream: u32,
    /// The reserved bit before the stream id was set (no peer sets it).
    pub reserved: bool,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        let sid = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: Kind::of(b[3]),
            flags: b[4],
            stream: sid & 0x7fff_ffff,
            reserved: sid & 0x8000_0000 != 0,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// A frame a peer on `side` could send, no longer than `max_len`. Unknown types pass only
    /// when `unknown_ok` (after a known frame).
    pub fn plausible(&self, side: Side, max_len: u32, unknown_ok: bool) -> bool {
        let client = side == Side::Request;
        let on_stream = self.stream != 0;
        // Streams a client opens are odd; a server answers on them (and pushes on even ones).
        let client_stream = self.stream % 2 == 1;
        let only = |defined: u8| self.flags & !defined == 0;
        if self.reserved || self.len > max_len {
            return false;
        }
        match self.kind {
            Kind::Data => on_stream && (client_stream || !client) && only(END_STREAM | PADDED),
            Kind::Headers => {
                on_stream
                    && (client_stream || !client)
                    && only(END_STREAM | END_HEADERS | PADDED | PRIORITY)
            }
            Kind::Priority => on_stream && self.len == 5 && self.flags == 0,
            Kind::RstStream => on_stream && self.len == 4 && self.flags == 0,
            Kind::Settings => {
                !on_stream
                    && only(ACK)
                    && self.len.is_multiple_of(6)
                    && (!self.has(ACK) || self.len == 0)
            }
            Kind::PushPromise => {
                !client && client_stream && self.len >= 4 && only(END_HEADERS | PADDED)
            }
            Kind::Ping => !on_stream && self.len == 8 && only(ACK),
            Kind::GoAway => !on_stream && self.len >= 8 && self.flags == 0,
            Kind::WindowUpdate => self.len == 4 && self.flags == 0,
            Kind::Continuation => on_stream && only(END_HEADERS),
            Kind::Unknown(_) => unknown_ok,
        }
    }
}

/// True when `b` starts with frames a peer on `side` could send: at least one whole frame
/// header, and every frame header held whole is plausible (the first of a known type). The
/// last frame may run past the piece (a partial header at its end is not judged).
pub fn plausible_frames(side: Side, b: &[u8], max_len: u32) -> bool {
    let mut at = 0usize;
    let mut frames = 0;
    while let Some(h) = b.get(at..at + HEADER_LEN) {
        let Ok(h) = <&[u8; HEADER_LEN]>::try_from(h) else {
            return false;
        };
        let h = FrameHeader::parse(h);
        if !h.plausible(side, max_len, frames > 0) {
            return false;
        }
        frames += 1;
        at += HEADER_LEN + h.len as usize;
    }
    frames > 0
}

/// True when `b` starts with the whole connection preface.
pub fn starts_with_preface(b: &[u8]) -> bool {
    b.starts_with(PREFACE)
}

/// True when `b` (shorter than the preface) matches the preface as far as it goes and is long
/// enough not to be an HTTP/1.x method by chance.
pub fn preface_prefix(b: &[u8]) -> bool {
    b.len() >= 4 && b.len() < PREFACE.len() && PREFACE.starts_with(b)
}

/// Which side sent `b`, when it holds HTTP/2 frames that tell: the preface, or a HEADERS
/// frame whose block opens with a request's pseudo-header (`:method`, `:scheme`, `:path`,
/// `:authority` from the static table: what every encoder sends first) or a response's
/// `:status`, or a PUSH_PROMISE (servers only). For a connection observer did not see open,
/// whose role HTTP/1.x cannot tell; `None` when the frames do not say (SETTINGS, DATA, a block
/// that opens with a dynamic table reference).
pub fn side_hint(b: &[u8]) -> Option<Side> {
    if starts_with_preface(b) {
        return Some(Side::Request);
    }
    let mut at = 0usize;
    let mut frames = 0;
    while let Some(h) = b.get(at..at + HEADER_LEN) {
        let h = FrameHeader::parse(<&[u8; HEADER_LEN]>::try_from(h).ok()?);
        let payload = b.get(at + HEADER_LEN..)?;
        match h.kind {
            Kind::PushPromise if h.plausible(Side::Response, DEFAULT_MAX_FRAME, true) => {
                return Some(Side::Response);
            }
            Kind::Headers if h.plausible(Side::Response, DEFAULT_MAX_FRAME, true) => {
                let mut skip = usize::from(h.has(PRIORITY)) * 5;
                if h.has(PADDED) {
                    skip += 1;
                }
                // A table size update may come first; then the first field says.
                let mut block = payload.get(skip..)?;
                while let Some((&c, rest)) = block.split_first() {
                    if c & 0xe0 != 0x20 {
                        return field_side(c);
                    }
                    // A size update: a 5-bit prefix, continued while the high bit is set.
                    block = rest;
                    if c & 0x1f == 0x1f {
                        let more = block.iter().take_while(|&&b| b & 0x80 != 0).count();
                        block = block.get(more + 1..)?;
                    }
                }
                return None;
            }
            _ if !h.plausible(Side::Response, DEFAULT_MAX_FRAME, frames > 0) => return None,
            _ => {}
        }
        frames += 1;
        at += HEADER_LEN + h.len as usize;
    }
    None
}

/// The side whose first header field this first byte of a representation names: an indexed
/// field or a literal with an indexed name, static entries 1-7 (`:authority`, `:method`,
/// `:path`, `:scheme`) for a request, 8-14 (`:status`) for a response.
fn field_side(first: u8) -> Option<Side> {
    let index = if first & 0x80 != 0 {
        first & 0x7f
    } else if first & 0x40 != 0 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    match index {
        1..=7 => Some(Side::Request),
        8..=14 => Some(Side::Response),
        _ => None,
    }
}

#[cfg(test)]
mod side_tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }

    #[test]
    fn headers_tell_the_side_that_sent_them() {
        let settings = frame(4, 0, 0, &[]);
        // WINDOW_UPDATE then a request's HEADERS opening with `:method GET` (0x82).
        let mut req = frame(8, 0, 0, &[0, 0, 0x10, 0]);
        req.extend(frame(1, END_HEADERS, 5, &[0x82, 0x87, 0x04, 0x01, b'/']));
        assert_eq!(side_hint(&req), Some(Side::Request));
        // A table size update (0x3f 0xe1 0x1f) before `:status 200` (0x88).
        let resp = frame(1, END_HEADERS | END_STREAM, 5, &[0x3f, 0xe1, 0x1f, 0x88]);
        assert_eq!(side_hint(&resp), Some(Side::Response));
        // `:status` as a literal with its name indexed, never indexed (0x18) or incremental.
        assert_eq!(
            side_hint(&frame(1, END_HEADERS, 3, &[0x48, 0x03, b'4', b'0', b'1'])),
            Some(Side::Response)
        );
        assert_eq!(side_hint(PREFACE), Some(Side::Request));
        assert_eq!(side_hint(&settings), None);
        // A block opening with a dynamic table reference (index 62) says nothing.
        assert_eq!(side_hint(&frame(1, END_HEADERS, 7, &[0xbe])), None);
        assert_eq!(side_hint(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(side_hint(&frame(1, 0xff, 7, &[0x82])), None);
    }
}
