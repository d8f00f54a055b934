//! One direction's frames: the preface, frame headers held across pieces, payloads consumed
//! as they come (DATA never buffered beyond the body prefix a stream keeps, header blocks
//! collected up to a cap, control frames read from their first bytes), and what uncopied
//! bytes do inside a frame.

use super::frame::{
    END_HEADERS, END_STREAM, FrameHeader, HEADER_LEN, Kind, PADDED, PREFACE, PRIORITY,
};
use super::hpack::Decoder;
use super::{H2Conn, MAX_BLOCK, MAX_CONTROL};
use crate::http::message::{Exchange, Side};

/// Frames longer than this are not HTTP/2 (the 24-bit length field allows no more).
const MAX_FRAME_ANY: u32 = (1 << 24) - 1;
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reading {
    /// The client's connection preface, this many bytes of it matched.
    Preface(u8),
    /// A frame header (the bytes of it held are in [`Dir::hdr`]).
    Header,
    Payload(Payload),
    /// Framing lost: waiting for a piece that starts with frames.
    Lost,
}

/// What the payload bytes of a frame are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    Skip,
    Data,
    Block,
    Control,
}

/// The frame whose payload is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Payload {
    h: FrameHeader,
    use_: Use,
    /// Payload bytes still to come.
    left: u32,
    /// The pad length byte is still to come.
    pad_pending: bool,
    /// Bytes before the content still to come (priority fields, a promised stream id).
    prefix: u32,
    /// Content bytes still to come (DATA payload, header block fragment).
    content: u32,
}

/// A header block being collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BlockInfo {
    pub stream: u32,
    pub end_stream: bool,
    /// A PUSH_PROMISE's block: decoded for the table only.
    pub push: bool,
    /// Frame bytes (headers included) of HEADERS and CONTINUATION.
    pub wire: u64,
    pub start_ns: u64,
    pub broken: Option<Broken>,
}

/// Why a block cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Broken {
    OverCap,
    Cut,
}

/// One direction of the connection.
#[derive(Debug)]
pub(super) struct Dir {
    pub reading: Reading,
    hdr: [u8; HEADER_LEN],
    hdr_len: usize,
    /// The start of a control frame's payload.
    ctl: Vec<u8>,
    /// Part of the control frame's payload was not copied.
    ctl_cut: bool,
    pub block: Vec<u8>,
    pub block_info: Option<BlockInfo>,
    pub hpack: Decoder,
    /// SETTINGS_MAX_FRAME_SIZE the receiving side announced.
    pub max_frame: Option<u32>,
}

impl Dir {
    pub fn new(reading: Reading, hpack: Decoder) -> Self {
        Self {
            reading,
            hdr: [0; HEADER_LEN],
            hdr_len: 0,
            ctl: Vec::new(),
            ctl_cut: false,
            block: Vec::new(),
            block_info: None,
            hpack,
            max_frame: None,
        }
    }

    pub fn is_lost(&self) -> bool {
        self.reading == Reading::Lost
    }

    pub fn held_bytes(&self) -> usize {
        self.ctl.len() + self.block.len() + self.hpack.held_bytes()
    }

    /// Drops the block under way; true when there was one.
    pub fn drop_block(&mut self) -> bool {
        self.block.clear();
        self.block_info.take().is_some()
    }

    /// Framing lost: wait for frames; the table is out of step.
    pub fn lose(&mut self) {
        self.reading = Reading::Lost;
        self.hdr_len = 0;
        self.ctl.clear();
        self.drop_block();
        self.hpack.lose();
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Request => Side::Response,
        Side::Response => Side::Request,
    }
}

impl H2Conn {
    /// Consumes a prefix of `input`; returns how many bytes.
    pub(super) fn step(
        &mut self,
        side: Side,
        input: &[u8],
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) -> usize {
        let dir = self.dir_mut(side);
        match dir.reading {
            Reading::Preface(n) => {
                let want = PREFACE.get(n as usize..).unwrap_or_default();
                let m = want.len().min(input.len());
                if input.get(..m) != want.get(..m) {
                    self.lose_framing(side);
                    return input.len();
                }
                let n = n as usize + m;
                dir.reading = if n == PREFACE.len() {
                    Reading::Header
                } else {
                    Reading::Preface(n as u8)
                };
                m
            }
            Reading::Header => {
                let m = (HEADER_LEN - dir.hdr_len).min(input.len());
                dir.hdr[dir.hdr_len..dir.hdr_len + m].copy_from_slice(&input[..m]);
                dir.hdr_len += m;
                if dir.hdr_len == HEADER_LEN {
                    dir.hdr_len = 0;
                    let h = FrameHeader::parse(&dir.hdr);
                    self.frame_start(side, h, ts_ns, out);
                }
                m
            }
            Reading::Payload(p) => self.payload(side, p, input, ts_ns, out),
            Reading::Lost => input.len(),
        }
    }

    fn frame_start(&mut self, side: Side, h: FrameHeader, ts_ns: u64, out: &mut Vec<Exchange>) {
        let max = self.dir(side).max_frame.unwrap_or(MAX_FRAME_ANY);
        if !h.plausible(side, max, true) {
            self.lose_framing(side);
            return;
        }
        // A block under way continues only with CONTINUATION frames of its stream.
        let open = self.dir(side).block_info.map(|b| b.stream);
        match (h.kind, open) {
            (Kind::Continuation, Some(s)) if s == h.stream => {}
            (Kind::Continuation, _) => {
                // The rest of a block whose start went unseen (or another stream's): its
                // fragment may have changed the table.
                let dir = self.dir_mut(side);
                dir.drop_block();
                dir.hpack.lose();
                self.counters.h2_hpack_errors += 1;
                self.skip(side, h);
                return;
            }
            (_, Some(_)) => self.broken_sequence(side),
            _ => {}
        }
        let wire = (HEADER_LEN as u64) + u64::from(h.len);
        let mut use_ = Use::Skip;
        let mut prefix = 0;
        match h.kind {
            Kind::Data => {
                use_ = Use::Data;
                self.data_start(side, h.stream, wire, ts_ns);
            }
            Kind::Headers | Kind::PushPromise => {
                use_ = Use::Block;
                let push = h.kind == Kind::PushPromise;
                if push {
                    self.counters.h2_push_promises += 1;
                    prefix = 4;
                } else if h.has(PRIORITY) {
                    prefix = 5;
                }
                let dir = self.dir_mut(side);
                dir.block.clear();
                dir.block_info = Some(BlockInfo {
                    stream: h.stream,
                    end_stream: !push && h.has(END_STREAM),
                    push,
                    wire,
                    start_ns: ts_ns,
                    broken: None,
                });
            }
            Kind::Continuation => {
                use_ = Use::Block;
                if let Some(b) = self.dir_mut(side).block_info.as_mut() {
                    b.wire += wire;
                }
            }
            Kind::Settings | Kind::RstStream | Kind::GoAway => {
                use_ = Use::Control;
                let dir = self.dir_mut(side);
                dir.ctl.clear();
                dir.ctl_cut = false;
            }
            Kind::Unknown(_) => self.counters.h2_unknown_frames += 1,
            Kind::Priority | Kind::Ping | Kind::WindowUpdate => {}
        }
        let padded =
            h.has(PADDED) && matches!(h.kind, Kind::Data | Kind::Headers | Kind::PushPromise);
        let p = Payload {
            h,
            use_,
            left: h.len,
            pad_pending: padded,
            prefix,
            content: if padded {
                0
            } else {
                h.len.saturating_sub(prefix)
            },
        };
        self.dir_mut(side).reading = Reading::Payload(p);
        if h.len == 0 {
            self.frame_end(side, h, ts_ns, out);
        }
    }

    /// Skips a frame's payload, whatever it is.
    fn skip(&mut self, side: Side, h: FrameHeader) {
        self.dir_mut(side).reading = if h.len == 0 {
            Reading::Header
        } else {
            Reading::Payload(Payload {
                h,
                use_: Use::Skip,
                left: h.len,
                pad_pending: false,
                prefix: 0,
                content: 0,
            })
        };
    }

    /// A header block was not continued as HTTP/2 requires: it is lost, and with it the
    /// table's step.
    fn broken_sequence(&mut self, side: Side) {
        let dir = self.dir_mut(side);
        if dir.drop_block() {
            dir.hpack.lose();
            self.counters.h2_hpack_errors += 1;
        }
    }

    fn payload(
        &mut self,
        side: Side,
        mut p: Payload,
        input: &[u8],
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) -> usize {
        let mut used = 0;
        while p.left > 0 {
            let rest = input.get(used..).unwrap_or_default();
            let Some(&first) = rest.first() else {
                break;
            };
            let n = if p.pad_pending {
                p.pad_pending = false;
                // Padding and prefix past the payload: the frame is malformed, read as padding.
                p.content = (p.left - 1)
                    .saturating_sub(p.prefix)
                    .saturating_sub(first.into());
                1
            } else if p.prefix > 0 {
                // A prefix longer than the payload (a malformed frame) ends with it.
                let n = p.prefix.min(rest.len() as u32).min(p.left);
                p.prefix -= n;
                n
            } else if p.content > 0 {
                let n = p.content.min(rest.len() as u32);
                p.content -= n;
                self.content(side, &p, &rest[..n as usize]);
                n
            } else {
                p.left.min(rest.len() as u32)
            };
            p.left -= n;
            used += n as usize;
        }
        self.dir_mut(side).reading = Reading::Payload(p);
        if p.left == 0 {
            self.frame_end(side, p.h, ts_ns, out);
        }
        used
    }

    /// Content bytes of the current frame.
    fn content(&mut self, side: Side, p: &Payload, bytes: &[u8]) {
        match p.use_ {
            Use::Data => self.data_bytes(side, p.h.stream, bytes),
            Use::Block => {
                let dir = self.dir_mut(side);
                let Some(info) = dir.block_info.as_mut() else {
                    return;
                };
                if info.broken.is_some() {
                    return;
                }
                if dir.block.len() + bytes.len() > MAX_BLOCK {
                    info.broken = Some(Broken::OverCap);
                    dir.block.clear();
                } else {
                    dir.block.extend_from_slice(bytes);
                }
            }
            Use::Control => {
                let dir = self.dir_mut(side);
                let room = MAX_CONTROL.saturating_sub(dir.ctl.len());
                dir.ctl.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            Use::Skip => {}
        }
    }

    fn frame_end(&mut self, side: Side, h: FrameHeader, ts_ns: u64, out: &mut Vec<Exchange>) {
        self.dir_mut(side).reading = Reading::Header;
        match h.kind {
            Kind::Data if h.has(END_STREAM) => self.end_message(side, h.stream, ts_ns, out),
            Kind::Headers | Kind::PushPromise | Kind::Continuation if h.has(END_HEADERS) => {
                self.block_end(side, ts_ns, out);
            }
            Kind::Settings if !h.has(super::frame::ACK) => self.settings(side),
            Kind::RstStream => {
                self.counters.h2_rst_streams += 1;
                self.reset(h.stream, ts_ns, out);
            }
            Kind::GoAway => {
                self.counters.h2_goaways += 1;
                let dir = self.dir(side);
                if let (false, Some(b)) = (dir.ctl_cut, dir.ctl.get(..4)) {
                    let last = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff;
                    self.go_away(side, last);
                }
            }
            _ => {}
        }
    }

    /// SETTINGS from `side` bound what the other side sends: its HPACK table and its frames.
    fn settings(&mut self, side: Side) {
        let dir = self.dir(side);
        if dir.ctl_cut {
            return;
        }
        let entries: Vec<(u16, u32)> = dir
            .ctl
            .chunks_exact(6)
            .map(|e| {
                (
                    u16::from_be_bytes([e[0], e[1]]),
                    u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                )
            })
            .collect();
        let peer = self.dir_mut(other(side));
        for (id, value) in entries {
            match id {
                SETTINGS_HEADER_TABLE_SIZE => peer.hpack.announce(value),
                SETTINGS_MAX_FRAME_SIZE => {
                    let v = value.clamp(super::frame::DEFAULT_MAX_FRAME, MAX_FRAME_ANY);
                    peer.max_frame = Some(peer.max_frame.map_or(v, |m| m.max(v)));
                }
                _ => {}
            }
        }
    }

    /// Accounts for `gap` bytes the kernel moved but did not copy. Inside a frame's payload
    /// they are skipped (DATA counted, a header block lost); past it they hide frame headers.
    pub(super) fn gap(&mut self, side: Side, gap: u64, ts_ns: u64, out: &mut Vec<Exchange>) {
        let Reading::Payload(mut p) = self.dir(side).reading else {
            self.lose_framing(side);
            return;
        };
        let n = gap.min(u64::from(p.left)) as u32;
        let mut rest = n;
        if rest > 0 && p.pad_pending {
            // The pad length went unseen: the rest of the payload is taken as content.
            p.pad_pending = false;
            rest -= 1;
            p.left -= 1;
            p.content = p.left.saturating_sub(p.prefix);
        }
        let k = p.prefix.min(rest);
        p.prefix -= k;
        rest -= k;
        let hidden = p.content.min(rest);
        p.content -= hidden;
        rest -= hidden;
        // What is left of the gap in this frame is padding.
        p.left -= k + hidden + rest;
        if hidden > 0 {
            match p.use_ {
                Use::Data => self.data_gap(side, p.h.stream, hidden.into()),
                Use::Block => {
                    if let Some(b) = self.dir_mut(side).block_info.as_mut() {
                        b.broken = Some(Broken::Cut);
                    }
                }
                Use::Control => self.dir_mut(side).ctl_cut = true,
                Use::Skip => {}
            }
        }
        self.dir_mut(side).reading = Reading::Payload(p);
        if p.left == 0 {
            self.frame_end(side, p.h, ts_ns, out);
        }
        if gap > u64::from(n) {
            // The gap runs past this frame: the next frame header went unseen.
            self.lose_framing(side);
        }
    }
}
