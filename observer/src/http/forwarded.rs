//! Who a request came from behind reverse proxies: the trusted proxies (CIDR blocks), the
//! `X-Forwarded-For` and `Forwarded` (RFC 7239) values a request carried, kept bounded, and the
//! client they name when the peer that sent them is trusted.
//!
//! Part of HTTP parsing: imports nothing of the crate (never `capture`, `detect`, `event` or
//! `sink`). Everything here reads bytes an attacker may have written, so every walk is bounded
//! and nothing panics.

use std::net::{IpAddr, Ipv6Addr};

/// Bytes kept of each header family (all `X-Forwarded-For` values, all `Forwarded` values).
/// The right end is kept: proxies append, so the hops observer can trust are at the end.
pub const MAX_FORWARDED: usize = 2048;
/// Elements of a chain read from its right end: past that the chain is taken as too long.
pub const MAX_HOPS: usize = 32;
/// Most trusted proxy entries a configuration may hold.
pub const MAX_TRUSTED: usize = 1024;

/// A block of addresses: `10.0.0.0/8`, `fd00::/8`, or a bare address (`/32`, `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, host bits cleared.
    net: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or CIDR block (e.g. 10.0.0.0/8, 192.0.2.7, fd00::/8)")]
    Syntax(String),
    #[error("{value:?}: prefix length /{prefix} is longer than the {max} bits of the address")]
    Prefix {
        value: String,
        prefix: u32,
        max: u32,
    },
}

/// IPv4-mapped IPv6 addresses (a dual-stack socket's view of an IPv4 peer) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn bits(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn mask(prefix: u8, width: u32) -> u128 {
    let all = if width == 32 {
        u32::MAX as u128
    } else {
        u128::MAX
    };
    if prefix == 0 {
        0
    } else {
        all & !((1u128 << (width - prefix as u32)) - 1)
    }
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let t = s.trim();
        let syntax = || CidrError::Syntax(s.to_string());
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                (a, Some(p.parse::<u32>().map_err(|_| syntax())?))
            }
            None => (t, None),
        };
        let ip = canonical(addr.parse::<IpAddr>().map_err(|_| syntax())?);
        let (value, width) = bits(ip);
        let prefix = prefix.unwrap_or(width);
        if prefix > width {
            return Err(CidrError::Prefix {
                value: s.to_string(),
                prefix,
                max: width,
            });
        }
        let prefix = prefix as u8;
        let net = value & mask(prefix, width);
        let net = match ip {
            IpAddr::V4(_) => IpAddr::V4((net as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(net)),
        };
        Ok(Self { net, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.net.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        let (value, width) = bits(ip);
        let (net, _) = bits(self.net);
        value & mask(self.prefix, width) == net
    }
}

/// The peers whose forwarding headers are believed: CIDR blocks, and optionally every peer on
/// a Unix-domain socket (a proxy in front of a backend that listens on a socket path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    pub blocks: Vec<Cidr>,
    pub unix: bool,
}

impl TrustedProxies {
    /// Parses one `--trusted-proxy` value: a CIDR block, a bare address, or `unix`.
    pub fn add(&mut self, value: &str) -> Result<(), CidrError> {
        if value.trim().eq_ignore_ascii_case("unix") {
            self.unix = true;
            return Ok(());
        }
        let c: Cidr = value.parse()?;
        if !self.blocks.contains(&c) {
            self.blocks.push(c);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && !self.unix
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|c| c.contains(ip))
    }
}

/// One header family's values, in the order they came, joined as one list and cut to their
/// last [`MAX_FORWARDED`] bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    bytes: Vec<u8>,
    /// Bytes were dropped from the left: the first element kept may be a fragment.
    cut: bool,
}

impl Chain {
    fn push(&mut self, value: &[u8]) {
        if !self.bytes.is_empty() {
            self.bytes.push(b',');
        }
        // Only the tail of a huge value can fit; never hold more than the bound plus one byte.
        let room = MAX_FORWARDED + 1;
        let value = if value.len() > room {
            self.cut = true;
            self.bytes.clear();
            &value[value.len() - room..]
        } else {
            value
        };
        self.bytes.extend_from_slice(value);
        if self.bytes.len() > MAX_FORWARDED {
            let extra = self.bytes.len() - MAX_FORWARDED;
            self.bytes.drain(..extra);
            self.cut = true;
        }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && !self.cut
    }
}

/// The forwarding headers of one request, as sent (bounded); read only when the peer is
/// trusted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardedHeaders {
    pub x_forwarded_for: Chain,
    pub forwarded: Chain,
}

impl ForwardedHeaders {
    /// Keeps `value` when `name` is one of the forwarding headers.
    pub fn note(&mut self, name: &str, value: &[u8]) {
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            self.x_forwarded_for.push(value);
        } else if name.eq_ignore_ascii_case("forwarded") {
            self.forwarded.push(value);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.x_forwarded_for.is_empty() && self.forwarded.is_empty()
    }

    /// Bytes held (at most twice [`MAX_FORWARDED`]).
    pub fn held_bytes(&self) -> usize {
        self.x_forwarded_for.bytes.len() + self.forwarded.bytes.len()
    }

    /// The forwarding headers among a request's `(name, value)` headers; `None` (and nothing
    /// allocated) when it has none, as most requests.
    pub fn from_headers<'a>(
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Option<Box<Self>> {
        let mut f: Option<Box<Self>> = None;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("x-forwarded-for")
                || name.eq_ignore_ascii_case("forwarded")
            {
                f.get_or_insert_default().note(name, value);
            }
        }
        f
    }
}

/// Which header named the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    XForwardedFor,
    Forwarded,
}

impl Header {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

/// The client a chain names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientId {
    Addr {
        ip: IpAddr,
        port: Option<u16>,
    },
    /// An RFC 7239 obfuscated identifier (`_hidden`), which a trusted proxy uses to tell clients
    /// apart without disclosing their addresses.
    Obfuscated(String),
}

impl ClientId {
    /// The client as detection counts it: its address, or its obfuscated identifier.
    pub fn key(&self) -> String {
        match self {
            Self::Addr { ip, .. } => ip.to_string(),
            Self::Obfuscated(id) => id.clone(),
        }
    }
}

/// Why the client is a trusted hop rather than an untrusted address of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Every address was trusted: the client is the left-most one.
    AllTrusted,
    /// A trusted hop said it did not know (`unknown`, or a `Forwarded` element without `for`).
    Unknown,
    /// A trusted hop wrote something that is not an address.
    Malformed,
    /// The chain went on past [`MAX_HOPS`] elements or [`MAX_FORWARDED`] bytes.
    TooLong,
    /// The request head was longer than the kernel copied: a proxy that appends its own line
    /// at the end of the head may have been cut off, leaving only what the client wrote.
    Truncated,
}

impl Stop {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllTrusted => "all_trusted",
            Self::Unknown => "unknown",
            Self::Malformed => "malformed",
            Self::TooLong => "too_long",
            Self::Truncated => "truncated",
        }
    }
}

/// The client a trusted peer's headers name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// `None` when the chain named no one beyond the peer (its first element was not usable).
    pub client: Option<ClientId>,
    pub header: Header,
    /// Elements of the chain read, from the right, up to and including the client's.
    pub hops: usize,
    /// Set when the chain stopped on a trusted hop (the client is then that hop, or the peer).
    pub stop: Option<Stop>,
}

/// One element of a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hop {
    Addr(IpAddr, Option<u16>),
    Obfuscated(String),
    Unknown,
    Malformed,
    /// The left-most element of a chain cut to its last bytes: a fragment.
    Cut,
}

/// The client of a request whose peer is trusted: the right-most untrusted address of
/// `X-Forwarded-For` or, when the request has none, of `Forwarded`. `None` when it carried
/// neither, or only empty ones (the client is then the peer).
pub fn resolve(h: &ForwardedHeaders, trusted: &TrustedProxies) -> Option<Resolution> {
    let (header, hops) = if !h.x_forwarded_for.is_empty() {
        let c = &h.x_forwarded_for;
        (Header::XForwardedFor, xff_hops(&c.bytes, c.cut))
    } else if !h.forwarded.is_empty() {
        let c = &h.forwarded;
        (Header::Forwarded, forwarded_hops(&c.bytes, c.cut))
    } else {
        return None;
    };
    if hops.is_empty() {
        // Present but empty (`X-Forwarded-For: ,`): names no one, as if absent.
        return None;
    }
    // The farthest trusted hop reached, for a chain that stops before an untrusted address.
    let mut farthest: Option<(IpAddr, Option<u16>)> = None;
    let mut stop = None;
    let mut read = 0;
    for (i, hop) in hops.iter().take(MAX_HOPS).enumerate() {
        read = i + 1;
        match hop {
            Hop::Addr(ip, port) if trusted.trusts(*ip) => farthest = Some((*ip, *port)),
            Hop::Addr(ip, port) => {
                return Some(Resolution {
                    client: Some(ClientId::Addr {
                        ip: *ip,
                        port: *port,
                    }),
                    header,
                    hops: read,
                    stop: None,
                });
            }
            Hop::Obfuscated(id) => {
                return Some(Resolution {
                    client: Some(ClientId::Obfuscated(id.clone())),
                    header,
                    hops: read,
                    stop: None,
                });
            }
            Hop::Unknown => {
                stop = Some(Stop::Unknown);
                break;
            }
            Hop::Malformed => {
                stop = Some(Stop::Malformed);
                break;
            }
            Hop::Cut => {
                stop = Some(Stop::TooLong);
                break;
            }
        }
    }
    let stop = stop.unwrap_or(if hops.len() > MAX_HOPS {
        // Elements were left unread: the chain is longer than observer reads.
        Stop::TooLong
    } else {
        Stop::AllTrusted
    });
    Some(Resolution {
        // Not even one address read: the client is the peer, and the event says why.
        client: farthest.map(|(ip, port)| ClientId::Addr { ip, port }),
        header,
        hops: read,
        stop: Some(stop),
    })
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !matches!(c, b' ' | b'\t'));
    let end = b.iter().rposition(|c| !matches!(c, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &b[s..=e],
        _ => &[],
    }
}

fn port(b: &[u8]) -> Option<u16> {
    if b.is_empty() || b.len() > 5 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// An address with an optional port: `192.0.2.7`, `192.0.2.7:4711`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`, and, when `bare_v6`, `2001:db8::1` (as `X-Forwarded-For` writes it).
fn node(b: &[u8], bare_v6: bool) -> Option<(IpAddr, Option<u16>)> {
    let s = std::str::from_utf8(b).ok()?;
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = addr.parse().ok()?;
        let port = match after {
            "" => None,
            p => Some(port(p.strip_prefix(':')?.as_bytes())?),
        };
        return Some((canonical(IpAddr::V6(ip)), port));
    }
    if let Ok(ip) = s.parse::<std::net::Ipv4Addr>() {
        return Some((IpAddr::V4(ip), None));
    }
    if let Some((addr, p)) = s.rsplit_once(':')
        && let Ok(ip) = addr.parse::<std::net::Ipv4Addr>()
    {
        return Some((IpAddr::V4(ip), Some(port(p.as_bytes())?)));
    }
    if bare_v6 && let Ok(ip) = s.parse::<Ipv6Addr>() {
        return Some((canonical(IpAddr::V6(ip)), None));
    }
    None
}

/// The elements of a comma-separated list, right-most first, at most [`MAX_HOPS`]; empty
/// elements are skipped (RFC 9110 lists allow them). When the chain was cut, its left-most
/// element is a fragment and reads as `None`. One more than [`MAX_HOPS`] is returned, to tell a
/// chain that goes on.
fn elements_from_right(spans: Vec<&[u8]>, cut: bool) -> Vec<Option<&[u8]>> {
    spans
        .into_iter()
        .enumerate()
        .rev()
        .filter_map(|(i, e)| {
            let e = trim(e);
            if cut && i == 0 {
                return Some(None);
            }
            (!e.is_empty()).then_some(Some(e))
        })
        .take(MAX_HOPS + 1)
        .collect()
}

fn xff_hops(b: &[u8], cut: bool) -> Vec<Hop> {
    let spans: Vec<&[u8]> = b.split(|c| *c == b',').collect();
    elements_from_right(spans, cut)
        .into_iter()
        .map(|e| match e {
            None => Hop::Cut,
            Some(e) if e.eq_ignore_ascii_case(b"unknown") => Hop::Unknown,
            Some(e) => match node(e, true) {
                Some((ip, port)) => Hop::Addr(ip, port),
                None => Hop::Malformed,
            },
        })
        .collect()
}

/// Splits `b` at `sep` outside quoted strings. The last piece holds an unterminated quoted
/// string, if any, which then reads as malformed.
fn split_unquoted(b: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &c) in b.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && c == b'\\' {
            escaped = true;
        } else if c == b'"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&b[start..i]);
            start = i + 1;
        }
    }
    out.push(&b[start..]);
    out
}

/// A token or a quoted string (RFC 9110), unquoted; `None` when it is neither.
fn value(b: &[u8]) -> Option<Vec<u8>> {
    let Some(inner) = b.strip_prefix(b"\"") else {
        let token = |c: &u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:[]".contains(c);
        return (!b.is_empty() && b.iter().all(token)).then(|| b.to_vec());
    };
    let inner = inner.strip_suffix(b"\"")?;
    let mut out = Vec::with_capacity(inner.len());
    let mut it = inner.iter();
    while let Some(&c) = it.next() {
        match c {
            b'\\' => out.push(*it.next()?),
            b'"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// One `Forwarded` element (`for=...;proto=...;by=...`): what its `for` says.
fn forwarded_hop(e: &[u8]) -> Hop {
    let mut node_value = None;
    for pair in split_unquoted(e, b';') {
        let pair = trim(pair);
        if pair.is_empty() {
            continue;
        }
        let Some(eq) = pair.iter().position(|c| *c == b'=') else {
            return Hop::Malformed;
        };
        let Some(v) = value(trim(&pair[eq + 1..])) else {
            return Hop::Malformed;
        };
        if trim(&pair[..eq]).eq_ignore_ascii_case(b"for") {
            if node_value.is_some() {
                // A parameter may appear once per element: two `for`s name no one.
                return Hop::Malformed;
            }
            node_value = Some(v);
        }
    }
    let Some(v) = node_value else {
        return Hop::Unknown;
    };
    if v.eq_ignore_ascii_case(b"unknown") {
        return Hop::Unknown;
    }
    if v.first() == Some(&b'_') {
        let name = v.split(|c| *c == b':').next().unwrap_or_default();
        let ok = name.len() > 1
            && name.len() <= 64
            && name
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c));
        return match (ok, std::str::from_utf8(name)) {
            (true, Ok(n)) => Hop::Obfuscated(n.to_string()),
            _ => Hop::Malformed,
        };
    }
    // Addresses in `Forwarded` bracket IPv6; an obfuscated port (`:_x`) says nothing.
    let v = match v.windows(2).rposition(|w| w == b":_") {
        Some(i) if v[..i].ends_with(b"]") || !v[..i].contains(&b':') => &v[..i],
        _ => &v[..],
    };
    match node(v, false) {
        Some((ip, port)) => Hop::Addr(ip, port),
        None => Hop::Malformed,
    }
}

fn forwarded_hops(b: &[u8], cut: bool) -> Vec<Hop> {
    elements_from_right(split_unquoted(b, b','), cut)
        .into_iter()
        .map(|e| e.map_or(Hop::Cut, forwarded_hop))
        .collect()
}

#[cfg(test)]
#[path = "forwarded_tests.rs"]
mod tests;
