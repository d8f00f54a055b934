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
