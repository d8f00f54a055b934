//! What a connection that is not HTTP speaks, guessed from the first bytes each side sent, for
//! the report that says observer does not decode it (a database driver, a cache, TLS it could
//! not hook, HTTP/3 over QUIC). A guess only names; nothing is parsed by it. Imports nothing
//! of the crate outside `http`.

/// Bytes of each side's opening kept for the guess.
pub const OPENING: usize = 16;

/// The first bytes one side of a connection sent, up to [`OPENING`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Opening {
    bytes: [u8; OPENING],
    len: u8,
}

impl Opening {
    /// Keeps the start of `piece` if nothing was kept yet.
    pub fn note(&mut self, piece: &[u8]) {
        if self.len == 0 && !piece.is_empty() {
            let n = piece.len().min(OPENING);
            self.bytes[..n].copy_from_slice(&piece[..n]);
            self.len = n as u8;
        }
    }

    pub fn get(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A protocol guessed from a connection's openings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Guess {
    Tls,
    Quic,
    Ssh,
    PostgreSql,
    MySql,
    Redis,
    MongoDb,
    Amqp,
    /// A `220` greeting from the server.
    SmtpOrFtp,
    UnknownText,
    UnknownBinary,
}

impl Guess {
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Guess::Tls => "TLS",
            Guess::Quic => "QUIC (HTTP/3)",
            Guess::Ssh => "SSH",
            Guess::PostgreSql => "PostgreSQL",
            Guess::MySql => "MySQL",
            Guess::Redis => "Redis (RESP)",
            Guess::MongoDb => "MongoDB",
            Guess::Amqp => "AMQP",
            Guess::SmtpOrFtp => "SMTP or FTP",
            Guess::UnknownText => "an unknown text protocol",
            Guess::UnknownBinary => "an unknown binary protocol",
        }
    }

    /// True when the bytes matched a protocol's signature, not just "text" or "binary".
    pub fn is_known(self) -> bool {
        !matches!(self, Guess::UnknownText | Guess::UnknownBinary)
    }
}

/// Guesses from what the client and the server sent first (either may be empty).
pub fn guess(client: &[u8], server: &[u8]) -> Guess {
    for side in [client, server] {
        if is_tls(side) {
            return Guess::Tls;
        }
        if is_quic(side) {
            return Guess::Quic;
        }
        if side.starts_with(b"SSH-") {
            return Guess::Ssh;
        }
    }
    if is_postgres(client) {
        return Guess::PostgreSql;
    }
    if is_mysql_greeting(server) {
        return Guess::MySql;
    }
    if is_resp(client) {
        return Guess::Redis;
    }
    if is_mongo(client) {
        return Guess::MongoDb;
    }
    if client.starts_with(b"AMQP") {
        return Guess::Amqp;
    }
    if server.starts_with(b"220 ") || server.starts_with(b"220-") {
        return Guess::SmtpOrFtp;
    }
    let seen = if client.is_empty() { server } else { client };
    if !seen.is_empty()
        && seen
            .iter()
            .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\r' || b == b'\n' || b == b'\t')
    {
        Guess::UnknownText
    } else {
        Guess::UnknownBinary
    }
}

/// A TLS record header: content type (alert, handshake, application data), version 3.x.
fn is_tls(b: &[u8]) -> bool {
    matches!(b, [0x15..=0x17, 0x03, 0x00..=0x04, ..])
}

/// A QUIC long-header packet (RFC 9000 §17.2) of a known version: version 1, 2, the drafts,
/// or a version negotiation.
fn is_quic(b: &[u8]) -> bool {
    let [first, v0, v1, v2, v3, ..] = *b else {
        return false;
    };
    let version = u32::from_be_bytes([v0, v1, v2, v3]);
    first & 0xC0 == 0xC0
        && (version == 1
            || version == 0x6b33_43cf
            || version & 0xffff_ff00 == 0xff00_0000
            || version == 0)
}

/// A PostgreSQL startup message (protocol 3.0) or its SSL/GSS encryption request.
fn is_postgres(b: &[u8]) -> bool {
    let [l0, l1, l2, l3, c0, c1, c2, c3, ..] = *b else {
        return false;
    };
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    let code = u32::from_be_bytes([c0, c1, c2, c3]);
    (8..=10_000).contains(&len) && matches!(code, 0x0003_0000 | 80_877_103 | 80_877_104)
}

/// A MySQL server's handshake packet: 3-byte length, sequence 0, protocol version 10.
fn is_mysql_greeting(b: &[u8]) -> bool {
    matches!(b, [_, _, 0, 0, 0x0a, ..])
}

/// A Redis command as RESP: `*<count>\r\n$`.
fn is_resp(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"*") else {
        return false;
    };
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    digits > 0
        && rest[digits..].starts_with(b"\r\n")
        && rest.get(digits + 2).is_none_or(|&c| c == b'$')
}

/// A MongoDB wire message: little-endian length, then at offset 12 OP_MSG or OP_QUERY.
fn is_mongo(b: &[u8]) -> bool {
    let [l0, l1, l2, l3, _, _, _, _, _, _, _, _, o0, o1, o2, o3, ..] = *b else {
        return false;
    };
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    let op = u32::from_le_bytes([o0, o1, o2, o3]);
    (16..=48 << 20).contains(&len) && matches!(op, 2013 | 2004)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_named_from_their_first_bytes() {
        let cases: &[(&[u8], &[u8], Guess)] = &[
            (b"\x16\x03\x01\x02\x00\x01", b"", Guess::Tls),
            (b"", b"\x17\x03\x03\x00\x20", Guess::Tls),
            (b"\xc3\x00\x00\x00\x01\x08abcdefgh", b"", Guess::Quic),
            (b"\xcf\x6b\x33\x43\xcf\x08", b"", Guess::Quic),
            (b"SSH-2.0-OpenSSH_9.2\r\n", b"", Guess::Ssh),
            (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", b"", Guess::PostgreSql),
            (
                b"\x00\x00\x00\x54\x00\x03\x00\x00user\0",
                b"",
                Guess::PostgreSql,
            ),
            (b"", b"\x4a\x00\x00\x00\x0a8.0.36\0", Guess::MySql),
            (b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n", Guess::Redis),
            (
                b"\x3a\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00",
                b"",
                Guess::MongoDb,
            ),
            (b"AMQP\x00\x00\x09\x01", b"", Guess::Amqp),
            (b"", b"220 mail.example ESMTP\r\n", Guess::SmtpOrFtp),
            (b"HELLO there\r\n", b"", Guess::UnknownText),
            (b"\x00\x01\x02\xff", b"", Guess::UnknownBinary),
            (b"", b"", Guess::UnknownBinary),
        ];
        for &(client, server, want) in cases {
            assert_eq!(guess(client, server), want, "{client:?} / {server:?}");
        }
    }

    #[test]
    fn an_opening_keeps_the_first_piece_only() {
        let mut o = Opening::default();
        o.note(b"");
        o.note(b"*1\r\n$4\r\nPING\r\n-and much more than sixteen bytes");
        o.note(b"\x16\x03\x01");
        assert_eq!(o.get(), b"*1\r\n$4\r\nPING\r\n-a");
        assert_eq!(guess(o.get(), b""), Guess::Redis);
    }

    #[test]
    fn text_that_is_nearly_a_signature_stays_unknown() {
        assert_eq!(guess(b"*ab\r\n", b""), Guess::UnknownText);
        assert_eq!(guess(b"\xc3\x12\x34\x56\x78", b""), Guess::UnknownBinary);
        assert_eq!(
            guess(b"\x00\x00\x00\x08\x00\x01\x00\x00", b""),
            Guess::UnknownBinary
        );
    }
}
