//! HTTP/1.x message heads: recognising a message start, finding a head's end, and parsing
//! request and response heads (whole, or cut short by the kernel's copy) into messages.

use super::body::BodyFraming;
use super::{Framing, H1Conn, Partial, Upgraded};
use crate::http::message::{Exchange, Request, Response, Side, Sizes, Text, Version};
use crate::http::request;

/// Largest message head held while waiting for its end.
pub const MAX_HEAD: usize = 32 * 1024;
const MAX_HEADERS: usize = 128;

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

impl H1Conn {
    pub(super) fn step_head(
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
        let mut r = request::new_request(
            &self.names,
            (
                Text::from_checked(method),
                target,
                Version::from_minor(version),
            ),
            None,
            headers.iter().map(|h| (h.name, h.value)),
        );
        r.sizes.head = head_bytes;
        r.start_ns = self.req.head_start_ns;
        r.end_ns = ts_ns;
        r
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
        let framing = match super::body::body_framing(req.headers, false) {
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
        let h2c = upgrade && names_h2c(req.headers);
        let request = self.new_request(
            (method, target, version),
            req.headers,
            head.len() as u64,
            ts_ns,
        );
        if upgrade {
            self.upgrade_asked = true;
            self.h2c_asked = h2c;
        }
        self.seen = true;
        // Bodies that may be a login form are kept (a prefix) to read the user name from.
        let kind = if matches!(framing, BodyFraming::None) {
            None
        } else {
            request::body_kind(req.headers.iter().map(|h| (h.name, h.value)))
        };
        self.req.keep_body(kind.is_some(), kind);
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
        self.seen = true;
        if (100..200).contains(&status) && status != 101 {
            // Informational (100 Continue, 103 Early Hints): the final response follows.
            return;
        }
        if status == 101 && self.h2c_asked && names_h2c(resp.headers) {
            // HTTP/2 from here on: the request that asked is answered on stream 1.
            if let Some(request) = self.pending.pop_front() {
                self.upgraded = Some(Upgraded {
                    request,
                    head_101: head.len() as u64,
                    start_ns: self.resp.head_start_ns,
                });
            }
            self.req.framing = Framing::Tunnel;
            self.resp.framing = Framing::Tunnel;
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
            super::body::body_framing(resp.headers, true)
        };
        if let BodyFraming::Invalid = framing {
            self.resync(Side::Response);
            return;
        }
        let response = Response {
            status,
            version: Version::from_minor(version),
            sizes: Sizes {
                head: head.len() as u64,
                ..Sizes::default()
            },
            start_ns: self.resp.head_start_ns,
            end_ns: ts_ns,
            incomplete: false,
            body_prefix: Vec::new(),
            unknown_fields: 0,
        };
        self.resp.keep_body(self.names.keep_response_body, None);
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
            self.h2c_asked = false;
        }
    }

    /// A request head longer than the kernel's copy: reported from its complete lines, flagged,
    /// and paired with its response. Where its body (if any) ends cannot be known, so the
    /// request side resynchronises on the next message. Returns false when even the request
    /// line was cut.
    pub(super) fn truncated_request_head(&mut self, gap: u64, ts_ns: u64) -> bool {
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
        self.seen = true;
        self.counters.truncated_heads += 1;
        self.push_pending(request);
        self.req.framing = Framing::Resync;
        self.req.line.clear();
        self.req.current = None;
        true
    }
}

/// True when an `Upgrade` header among `headers` names `h2c` (HTTP/2 over cleartext TCP).
fn names_h2c(headers: &[httparse::Header<'_>]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .flat_map(|h| h.value.split(|&c| c == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"h2c"))
}
