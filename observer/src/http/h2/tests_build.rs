//! Building HTTP/2 bytes for the tests: frames, header blocks (encoded by an independent HPACK
//! encoder, `httlib-hpack`), and the recordings of real peers in `testdata/`.

use httlib_hpack::Encoder;

use crate::http::{Exchange, HttpConn, Side};

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PUSH_PROMISE: u8 = 5;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in entries {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

/// The client's preface and an empty SETTINGS frame.
pub fn client_start() -> Vec<u8> {
    let mut b = super::PREFACE.to_vec();
    b.extend(settings(&[]));
    b
}

/// The server's SETTINGS and its ACK of the client's.
pub fn server_start() -> Vec<u8> {
    let mut b = settings(&[(3, 100)]);
    b.extend(frame(SETTINGS, 1, 0, &[]));
    b
}

/// One direction's HPACK encoder.
pub struct Enc(Encoder<'static>);

impl Enc {
    pub fn new() -> Self {
        Self(Encoder::default())
    }

    /// Fields indexed into the dynamic table where the encoder can, names and values
    /// Huffman-coded: what busy peers send.
    pub fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.with_flags(
            fields,
            Encoder::BEST_FORMAT
                | Encoder::WITH_INDEXING
                | Encoder::HUFFMAN_VALUE
                | Encoder::HUFFMAN_NAME,
        )
    }

    /// Fields as literals without indexing, not Huffman-coded.
    pub fn plain(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.with_flags(fields, 0)
    }

    pub fn with_flags(&mut self, fields: &[(&str, &str)], flags: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            let field = (n.as_bytes().to_vec(), v.as_bytes().to_vec(), flags);
            self.0.encode(field, &mut out).expect("encodes");
        }
        out
    }

    /// A dynamic table size update, to start a block with.
    pub fn resize(&mut self, size: u32) -> Vec<u8> {
        let mut out = Vec::new();
        self.0
            .update_max_dynamic_size(size, &mut out)
            .expect("encodes");
        out
    }
}

/// A request's header block fields.
pub fn get(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":scheme", "http".into()),
        (":authority", "api.test".into()),
        (":path", path.into()),
        ("user-agent", "test-client/1".into()),
    ]
}

pub fn fields<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(n, s)| (*n, s.as_str())).collect()
}

/// A response head with `status`.
pub fn status(code: u16) -> Vec<(&'static str, String)> {
    vec![
        (":status", code.to_string()),
        ("content-type", "text/plain".into()),
        ("server", "test-server".into()),
    ]
}

pub fn feed(c: &mut HttpConn, pieces: &[(Side, Vec<u8>)]) -> Vec<Exchange> {
    let mut out = Vec::new();
    for (i, (side, b)) in pieces.iter().enumerate() {
        c.on_data(*side, b, b.len() as u64, (i as u64 + 1) * 10, &mut out);
    }
    out
}

/// A recording of `relay.py`: one record per recv(), in order.
pub fn load(name: &str) -> Vec<(Side, Vec<u8>)> {
    let path = format!("{}/src/http/h2/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let side = match raw[at] {
            b'C' => Side::Request,
            b'S' => Side::Response,
            other => panic!("{path}: bad direction {other} at {at}"),
        };
        let len = u32::from_be_bytes(raw[at + 1..at + 5].try_into().unwrap()) as usize;
        out.push((side, raw[at + 5..at + 5 + len].to_vec()));
        at += 5 + len;
    }
    out
}
