//! Which reassembly a connection gets: HTTP/1.x stays HTTP/1.x whatever its bodies hold; the
//! preface, an `h2c` upgrade, or frames on a connection joined mid-way make it HTTP/2.

use super::h2::tests_build::{
    DATA, END_HEADERS, END_STREAM, Enc, HEADERS, client_start, frame, server_start, settings,
};
use super::*;
use crate::http::{Exchange, Side, Version};

const REQ: &[u8] = b"GET /users?id=1 HTTP/1.1\r\nHost: api\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

fn feed(c: &mut HttpConn, pieces: &[(Side, &[u8])]) -> Vec<Exchange> {
    let mut out = Vec::new();
    for (i, (side, b)) in pieces.iter().enumerate() {
        c.on_data(*side, b, b.len() as u64, i as u64, &mut out);
    }
    out
}

#[test]
fn http1_bodies_that_look_like_frames_do_not_switch() {
    // A response body holding HTTP/2 frames (a recording served over HTTP/1.1, say).
    let frames = [
        settings(&[(3, 100)]),
        frame(HEADERS, END_HEADERS, 1, &[0x88]),
    ]
    .concat();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        frames.len() * 3
    );
    let mut c = HttpConn::new();
    let out = feed(
        &mut c,
        &[
            (Side::Request, REQ),
            (Side::Response, head.as_bytes()),
            (Side::Response, &frames),
            (Side::Response, &frames),
            (Side::Response, &frames),
            (Side::Request, REQ),
            (Side::Response, RESP),
        ],
    );
    assert!(!c.is_h2());
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].response.sizes.body, frames.len() as u64 * 3);
    assert_eq!(out[1].request.version, Version::Http11);
}

#[test]
fn a_wrong_switch_on_a_joined_connection_eats_no_http1_exchange() {
    // Observer joined in the middle of an HTTP/1.1 body whose bytes look like frames.
    let frames = [settings(&[]), frame(DATA, 0, 1, b"xyz")].concat();
    let mut c = HttpConn::new();
    let mut out = feed(&mut c, &[(Side::Response, &frames)]);
    assert!(c.is_h2(), "tentatively");
    out.extend(feed(
        &mut c,
        &[(Side::Request, REQ), (Side::Response, RESP)],
    ));
    assert!(!c.is_h2());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request.target.value, "/users?id=1");
    assert_eq!(out[0].response.status, 200);
}

#[test]
fn a_joined_http2_connection_is_read_from_its_frames() {
    let mut server = Enc::new();
    let mut client = Enc::new();
    // Before observer: a first exchange indexes the fields.
    let fields = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/a"),
        (":authority", "h"),
    ];
    let _ = client.block(&fields);
    let _ = server.block(&[(":status", "401")]);
    let mut c = HttpConn::new();
    let req = frame(HEADERS, END_HEADERS | END_STREAM, 3, &client.block(&fields));
    let resp = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &server.block(&[(":status", "401")]),
    );
    let fresh = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        5,
        &client.plain(&[(":method", "POST"), (":path", "/b")]),
    );
    let fresh_resp = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        5,
        &server.plain(&[(":status", "201")]),
    );
    // Fields indexed after the join are known when referred to again.
    let after = [(":method", "PUT"), (":path", "/c"), ("x-trace", "t1")];
    let put1 = frame(HEADERS, END_HEADERS | END_STREAM, 7, &client.block(&after));
    let put2 = frame(HEADERS, END_HEADERS | END_STREAM, 9, &client.block(&after));
    assert!(put2.len() < 14, "the second refers to the first's entries");
    let ok7 = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        7,
        &server.block(&[(":status", "202")]),
    );
    let ok9 = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        9,
        &server.block(&[(":status", "202")]),
    );
    let out = feed(
        &mut c,
        &[
            (Side::Request, &req),
            (Side::Response, &resp),
            (Side::Request, &fresh),
            (Side::Response, &fresh_resp),
            (Side::Request, &[put1, put2].concat()),
            (Side::Response, &[ok7, ok9].concat()),
        ],
    );
    assert!(c.is_h2());
    let got: Vec<(&str, &str, u16, u16)> = out
        .iter()
        .map(|x| {
            (
                x.request.method.value.as_str(),
                x.request.target.value.as_str(),
                x.response.status,
                x.request.unknown_fields + x.response.unknown_fields,
            )
        })
        .collect();
    // Nothing invented: the indexed path, authority and status are unknown; the static
    // method decodes.
    assert_eq!(
        got,
        [
            ("GET", "", 0, 3),
            ("POST", "/b", 201, 0),
            ("PUT", "/c", 202, 0),
            ("PUT", "/c", 202, 0)
        ]
    );
}

#[test]
fn preface_after_tls_restart_and_split_preface() {
    let mut enc = Enc::new();
    let req = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &enc.plain(&[(":method", "GET"), (":path", "/tls")]),
    );
    let resp = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &Enc::new().plain(&[(":status", "204")]),
    );
    let start = client_start();
    for split in [0, 1, 3, 10, 23, 24] {
        let mut c = HttpConn::new();
        // Ciphertext of the handshake went through first.
        let mut out = feed(
            &mut c,
            &[(
                Side::Request,
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            )],
        );
        c.restart_for_tls();
        let (a, b) = start.split_at(split);
        let mut pieces: Vec<(Side, &[u8])> = vec![(Side::Request, a), (Side::Request, b)];
        pieces.retain(|(_, b)| !b.is_empty());
        let ss = server_start();
        pieces.extend([
            (Side::Response, &ss[..]),
            (Side::Request, &req[..]),
            (Side::Response, &resp[..]),
        ]);
        out.extend(feed(&mut c, &pieces));
        assert!(c.is_h2(), "split {split}");
        assert_eq!(out.len(), 1, "split {split}");
        assert_eq!(
            (out[0].request.target.value.as_str(), out[0].response.status),
            ("/tls", 204)
        );
        assert_eq!(c.counters.skipped_pieces, 0);
    }
}

#[test]
fn a_server_that_speaks_first_still_starts_from_the_preface() {
    // Over TLS nginx writes its SETTINGS before it reads the client's preface.
    let mut client = Enc::new();
    let mut server = Enc::new();
    let mut c = HttpConn::new();
    let mut pieces: Vec<(Side, Vec<u8>)> = vec![
        (Side::Response, server_start()),
        (Side::Request, client_start()),
    ];
    for s in [1u32, 3] {
        let req = client.block(&[
            (":method", "DELETE"),
            (":path", "/item/9"),
            (":authority", "h"),
        ]);
        pieces.push((
            Side::Request,
            frame(HEADERS, END_HEADERS | END_STREAM, s, &req),
        ));
        let resp = server.block(&[(":status", "403")]);
        pieces.push((
            Side::Response,
            frame(HEADERS, END_HEADERS | END_STREAM, s, &resp),
        ));
    }
    let mut out = Vec::new();
    for (i, (side, b)) in pieces.iter().enumerate() {
        c.on_data(*side, b, b.len() as u64, i as u64, &mut out);
    }
    // The second exchange refers to entries the first indexed: the tables are known.
    assert_eq!(out.len(), 2);
    for x in &out {
        assert_eq!(
            (x.request.method.value.as_str(), x.response.status),
            ("DELETE", 403)
        );
        assert_eq!(x.request.unknown_fields + x.response.unknown_fields, 0);
    }
    assert_eq!(c.counters.h2_unknown_references, 0);
}

#[test]
fn h2c_upgrade_answers_the_request_on_stream_1() {
    let mut c = HttpConn::new();
    let up = b"GET /chat HTTP/1.1\r\nHost: api\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nAuthorization: Bearer up-tok\r\n\r\n";
    let switching =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
    // The server writes the 101, its SETTINGS and the answer at once.
    let answer = frame(
        HEADERS,
        END_HEADERS,
        1,
        &Enc::new().plain(&[(":status", "401")]),
    );
    let body = frame(DATA, END_STREAM, 1, b"denied");
    let server = [&switching[..], &settings(&[]), &answer, &body].concat();
    let mut enc = Enc::new();
    let next = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &enc.block(&[(":method", "GET"), (":path", "/next")]),
    );
    let next_resp = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &Enc::new().plain(&[(":status", "200")]),
    );
    let out = feed(
        &mut c,
        &[
            (Side::Request, up),
            (Side::Response, &server),
            (Side::Request, &client_start()),
            (Side::Request, &next),
            (Side::Response, &next_resp),
        ],
    );
    assert!(c.is_h2());
    assert_eq!(out.len(), 2);
    let x = &out[0];
    assert_eq!(
        (x.request.target.value.as_str(), x.request.version),
        ("/chat", Version::Http11)
    );
    assert!(x.request.credential.is_some());
    assert_eq!(
        (x.response.status, x.response.version),
        (401, Version::Http2)
    );
    assert_eq!(
        x.response.sizes.head,
        (switching.len() + answer.len()) as u64
    );
    assert_eq!(x.response.sizes.body, 6);
    assert_eq!(
        (out[1].request.target.value.as_str(), out[1].response.status),
        ("/next", 200)
    );
}

#[test]
fn websocket_upgrades_still_tunnel() {
    let mut c = HttpConn::new();
    let out = feed(
        &mut c,
        &[
            (
                Side::Request,
                b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            ),
            (
                Side::Response,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            ),
            (Side::Request, &client_start()),
        ],
    );
    assert_eq!(out.len(), 1);
    assert!(c.is_tunnel());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// HTTP/1.x traffic cut anywhere, after garbage or not, gives what HTTP/1.x reassembly
        /// alone gives: the connection never switches.
        #[test]
        fn http1_never_switches(
            n in 1usize..6,
            body in prop::collection::vec(any::<u8>(), 0..3000),
            lead in prop::collection::vec(any::<u8>(), 0..64),
            cuts in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            let mut req = Vec::new();
            let mut resp = lead.clone();
            for i in 0..n {
                req.extend_from_slice(format!("POST /r/{i} HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
                req.extend_from_slice(&body);
                resp.extend_from_slice(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
                resp.extend_from_slice(&body);
            }
            let pieces = |b: &[u8]| {
                let mut pts: Vec<usize> = cuts.iter().map(|c| c % (b.len() + 1)).collect();
                pts.sort_unstable();
                pts.push(b.len());
                let mut last = 0;
                let mut v = Vec::new();
                for p in pts {
                    if p > last {
                        v.push(b[last..p].to_vec());
                        last = p;
                    }
                }
                v
            };
            let mut h1 = H1Conn::new();
            let mut conn = HttpConn::new();
            let (mut want, mut got) = (Vec::new(), Vec::new());
            for (side, stream) in [(Side::Request, &req), (Side::Response, &resp)] {
                for p in pieces(stream) {
                    h1.on_data(side, &p, p.len() as u64, 0, &mut want);
                    conn.on_data(side, &p, p.len() as u64, 0, &mut got);
                    prop_assert!(conn.held_bytes() <= HttpConn::MAX_HELD);
                }
            }
            prop_assert_eq!(got, want);
        }

        /// Arbitrary pieces after a preface: no panic, memory within its bound.
        #[test]
        fn h2_garbage_is_bounded(pieces in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..700), 0u64..3000, any::<bool>()), 0..60)) {
            let mut c = HttpConn::new();
            let mut out = Vec::new();
            c.on_data(Side::Request, &client_start(), 33, 0, &mut out);
            for (req, bytes, extra, lost) in pieces {
                let side = if req { Side::Request } else { Side::Response };
                if lost {
                    c.on_lost();
                }
                c.on_data(side, &bytes, bytes.len() as u64 + extra, 0, &mut out);
                prop_assert!(c.held_bytes() <= HttpConn::MAX_HELD);
                prop_assert!(c.pending() <= crate::http::MAX_STREAMS);
            }
            c.on_close(1, &mut out);
        }
    }
}
