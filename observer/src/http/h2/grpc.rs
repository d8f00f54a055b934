//! gRPC over HTTP/2: which call a stream is (service and method from `:path`), how it ended
//! (`grpc-status`, `grpc-message`), and how many length-prefixed messages each side sent,
//! counted across DATA frames without holding them.

use crate::http::message::{Grpc, Text};

use super::hpack::HeaderList;

/// True for the content types gRPC uses (`application/grpc`, `application/grpc+proto`,
/// `application/grpc-web`...).
pub fn is_grpc(content_type: Option<&[u8]>) -> bool {
    content_type
        .is_some_and(|ct| ct.len() >= 16 && ct[..16].eq_ignore_ascii_case(b"application/grpc"))
}

/// A call from its `:path`, `/pkg.Service/Method`.
pub fn call(path: &[u8]) -> Grpc {
    let rest = path.strip_prefix(b"/").unwrap_or_default();
    let (service, method) = match rest.iter().position(|&c| c == b'/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], &[][..]),
    };
    Grpc {
        service: Text::from_bytes(service),
        method: Text::from_bytes(method),
        ..Grpc::default()
    }
}

/// Takes `grpc-status` and `grpc-message` from a response header block (trailers, or the
/// headers of a trailers-only response).
pub fn status_from(g: &mut Grpc, list: &HeaderList) {
    if let Some(v) = list.get("grpc-status") {
        g.status = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
    }
    if let Some(v) = list.get("grpc-message") {
        g.message = Some(Text::from_bytes(v));
    }
}

/// Counts the messages of one direction: a 5-byte prefix (compressed flag, 4-byte length)
/// then that many bytes, possibly split across DATA frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Messages {
    /// Messages begun.
    pub count: u32,
    /// Bytes of the current prefix read (0 when none is being read).
    prefix: u8,
    /// The length being read from the prefix.
    len: u32,
    /// Message bytes still to come.
    left: u64,
    /// A gap hid a prefix: counting stopped.
    pub lost: bool,
}

impl Messages {
    pub fn bytes(&mut self, mut b: &[u8]) {
        while !self.lost && !b.is_empty() {
            if self.left > 0 {
                let n = self.left.min(b.len() as u64);
                self.left -= n;
                b = b.get(n as usize..).unwrap_or_default();
                continue;
            }
            let Some((&c, rest)) = b.split_first() else {
                break;
            };
            b = rest;
            if self.prefix == 0 {
                self.count = self.count.saturating_add(1);
            } else {
                self.len = self.len << 8 | u32::from(c);
            }
            self.prefix += 1;
            if self.prefix == 5 {
                self.left = u64::from(self.len);
                self.prefix = 0;
                self.len = 0;
            }
        }
    }

    /// `n` payload bytes the kernel did not copy: within a message they are skipped; if they
    /// may hold a prefix, counting stops.
    pub fn gap(&mut self, n: u64) {
        if self.prefix == 0 && n <= self.left {
            self.left -= n;
        } else if n > 0 {
            self.lost = true;
        }
    }
}
