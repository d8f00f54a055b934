//! HTTP/1.x body framing: which framing a head announces (length, chunked, until close), and
//! counting body bytes through it, chunk lines included, and through the bytes the kernel moved
//! but did not copy. Bodies are counted, never kept.

use super::{Framing, H1Conn, Partial};
use crate::http::message::{Exchange, Side};

pub(super) const MAX_CHUNK_LINE: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Reading a chunk-size line.
    Size,
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Trailer lines up to the blank line.
    Trailers,
}

pub(super) enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    UntilClose,
    Invalid,
}

pub(super) fn body_framing(
    headers: &[httparse::Header<'_>],
    until_close_allowed: bool,
) -> BodyFraming {
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

impl H1Conn {
    pub(super) fn start_body(
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

    pub(super) fn step_chunked(
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
            half.body_bytes(&input[..n as usize], counters);
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
    pub(super) fn skip(&mut self, side: Side, gap: u64, ts_ns: u64, out: &mut Vec<Exchange>) {
        let counters = &mut self.counters;
        let half = match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        };
        match half.framing.clone() {
            Framing::Length(remaining) => {
                let n = remaining.min(gap);
                half.add_body(n, n);
                half.body_gap();
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
                half.body_gap();
                half.framing = Framing::Chunked(if gap == remaining {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(remaining - gap)
                });
            }
            Framing::UntilClose => {
                half.add_body(gap, gap);
                half.body_gap();
            }
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
}
