//! Hand-built HTTP/2 conversations through `HttpConn`: frame features (CONTINUATION, padding,
//! priority, trailers, resets, GOAWAY, pushes, settings), gRPC, and what gaps, holes and caps do.

use super::tests_build::*;
use crate::http::{Exchange, HttpConn, Side, Version};

pub(super) const REQ: Side = Side::Request;
pub(super) const RESP: Side = Side::Response;

/// A client and a server, each with its encoder, writing into one connection.
pub(super) struct Peers {
    pub(super) conn: HttpConn,
    pub(super) client: Enc,
    pub(super) server: Enc,
    pub(super) out: Vec<Exchange>,
    ts: u64,
}

impl Peers {
    pub(super) fn new() -> Self {
        let mut p = Self {
            conn: HttpConn::new(),
            client: Enc::new(),
            server: Enc::new(),
            out: Vec::new(),
            ts: 0,
        };
        p.send(REQ, &client_start());
        p.send(RESP, &server_start());
        p
    }

    pub(super) fn send(&mut self, side: Side, b: &[u8]) {
        self.send_cut(side, b, b.len());
    }

    /// `b` moved, only its first `copied` bytes copied.
    pub(super) fn send_cut(&mut self, side: Side, b: &[u8], copied: usize) {
        self.ts += 10;
        self.conn
            .on_data(side, &b[..copied], b.len() as u64, self.ts, &mut self.out);
    }

    pub(super) fn request(&mut self, stream: u32, path: &str, end: bool) -> Vec<u8> {
        let block = self.client.block(&fields(&get(path)));
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        frame(HEADERS, flags, stream, &block)
    }

    pub(super) fn response(&mut self, stream: u32, code: u16, end: bool) -> Vec<u8> {
        let block = self.server.block(&fields(&status(code)));
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        frame(HEADERS, flags, stream, &block)
    }
}

#[test]
fn one_stream_is_one_exchange_with_h1_fields() {
    let mut p = Peers::new();
    let req = p.request(1, "/users?id=7", true);
    p.send(REQ, &req);
    let resp = p.response(1, 200, false);
    let body = frame(DATA, END_STREAM, 1, b"hello");
    p.send(RESP, &[resp.clone(), body].concat());
    assert_eq!(p.out.len(), 1);
    let x = &p.out[0];
    assert!(p.conn.is_h2());
    assert_eq!(x.request.method.value, "GET");
    assert_eq!(x.request.target.value, "/users?id=7");
    assert_eq!(x.request.host.as_ref().unwrap().value, "api.test");
    assert_eq!(
        x.request.user_agent.as_ref().unwrap().value,
        "test-client/1"
    );
    assert_eq!(x.request.version, Version::Http2);
    assert_eq!(x.request.sizes.head, req.len() as u64);
    assert_eq!(x.request.sizes.total(), req.len() as u64);
    assert_eq!(x.response.status, 200);
    assert_eq!(x.response.sizes.head, resp.len() as u64);
    assert_eq!((x.response.sizes.body_wire, x.response.sizes.body), (14, 5));
    assert_eq!((x.request.start_ns, x.response.end_ns), (30, 40));
    assert_eq!(
        (x.request.unknown_fields, x.response.unknown_fields),
        (0, 0)
    );
    assert!(x.grpc.is_none());
    assert_eq!(p.conn.pending(), 0);
}

#[test]
fn credentials_logins_and_forwarding_are_read_as_h1_reads_them() {
    let mut p = Peers::new();
    let mut f = get("/login?api_key=k123");
    f[0].1 = "POST".into();
    f.push(("content-type", "application/x-www-form-urlencoded".into()));
    f.push(("cookie", "theme=dark".into()));
    f.push(("cookie", "session=s3cr3t".into()));
    f.push(("x-forwarded-for", "203.0.113.9".into()));
    let block = p.client.block(&fields(&f));
    p.send(REQ, &frame(HEADERS, END_HEADERS, 1, &block));
    p.send(REQ, &frame(DATA, 0, 1, b"username=alice&pass"));
    p.send(REQ, &frame(DATA, END_STREAM, 1, b"word=hunter2"));
    let resp = p.response(1, 401, true);
    p.send(RESP, &resp);
    let r = &p.out[0].request;
    // The query credential wins over the cookie (as h1), and is redacted from the target.
    assert_eq!(r.target.value, "/login?api_key=REDACTED");
    let cred = r.credential.as_ref().unwrap();
    assert_eq!(
        (cred.kind, cred.secret()),
        (crate::http::CredentialKind::Query, &b"k123"[..])
    );
    assert_eq!(r.login.user.as_ref().unwrap().bytes(), b"alice");
    assert_eq!(r.login.secret.as_ref().unwrap().bytes(), b"hunter2");
    assert!(r.forwarded.is_some());
    assert_eq!(r.sizes.body, 31);
    assert_eq!(p.out[0].response.status, 401);
}

#[test]
fn continuation_padding_and_priority() {
    let mut p = Peers::new();
    let block = p.client.plain(&fields(&get("/a/long/path")));
    let (a, rest) = block.split_at(7);
    let (b, c) = rest.split_at(5);
    // HEADERS padded (3 bytes) with priority fields, then two CONTINUATION frames.
    let mut first = vec![3u8, 0x80, 0, 0, 0, 16];
    first.extend_from_slice(a);
    first.extend_from_slice(&[0, 0, 0]);
    let frames = [
        frame(HEADERS, PADDED | PRIORITY_FLAG | END_STREAM, 1, &first),
        frame(CONTINUATION, 0, 1, b),
        frame(CONTINUATION, END_HEADERS, 1, c),
    ];
    p.send(REQ, &frames.concat());
    let resp = p.response(1, 200, false);
    // DATA padded with 10 bytes.
    let mut padded = vec![10u8];
    padded.extend_from_slice(b"body");
    padded.extend_from_slice(&[0; 10]);
    let data = frame(DATA, PADDED | END_STREAM, 1, &padded);
    p.send(RESP, &[resp, data.clone()].concat());
    let x = &p.out[0];
    assert_eq!(x.request.target.value, "/a/long/path");
    assert_eq!(x.request.sizes.head, frames.concat().len() as u64);
    assert_eq!(x.response.sizes.body, 4);
    assert_eq!(x.response.sizes.body_wire, data.len() as u64);
}

#[test]
fn informational_responses_and_trailers_count_in_the_head() {
    let mut p = Peers::new();
    let req = p.request(1, "/", true);
    p.send(REQ, &req);
    let early = p.response(1, 103, false);
    let head = p.response(1, 200, false);
    let data = frame(DATA, 0, 1, b"abc");
    let trailers = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &p.server.block(&[("x-checksum", "99")]),
    );
    p.send(
        RESP,
        &[early.clone(), head.clone(), data, trailers.clone()].concat(),
    );
    let x = &p.out[0];
    assert_eq!(x.response.status, 200);
    assert_eq!(
        x.response.sizes.head,
        (early.len() + head.len() + trailers.len()) as u64
    );
    assert_eq!(x.response.sizes.body, 3);
}

#[test]
fn grpc_calls_carry_service_status_and_message_counts() {
    let mut p = Peers::new();
    let call = |p: &mut Peers, stream: u32, method: &str| {
        let path = format!("/shop.v1.Cart/{method}");
        let f = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path.as_str()),
            (":authority", "cart:50051"),
            ("content-type", "application/grpc+proto"),
            ("te", "trailers"),
        ];
        let block = p.client.block(&f);
        frame(HEADERS, END_HEADERS, stream, &block)
    };
    // A server-streaming call: one request message, three responses split across frames.
    let h = call(&mut p, 1, "Watch");
    let msg = [0u8, 0, 0, 0, 3, b'a', b'b', b'c'];
    p.send(REQ, &[h, frame(DATA, END_STREAM, 1, &msg)].concat());
    let head = frame(
        HEADERS,
        END_HEADERS,
        1,
        &p.server
            .block(&[(":status", "200"), ("content-type", "application/grpc")]),
    );
    let three = [msg, msg, msg].concat();
    let (x, y) = three.split_at(10); // the second prefix is split across DATA frames
    let trailers = p
        .server
        .block(&[("grpc-status", "0"), ("grpc-message", "")]);
    p.send(
        RESP,
        &[
            head,
            frame(DATA, 0, 1, x),
            frame(DATA, 0, 1, y),
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &trailers),
        ]
        .concat(),
    );
    // A trailers-only answer: the status in the response HEADERS that end the stream.
    let h = call(&mut p, 3, "Checkout");
    p.send(REQ, &[h, frame(DATA, END_STREAM, 3, &msg)].concat());
    let only = p.server.block(&[
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "16"),
        ("grpc-message", "token%20expired"),
    ]);
    p.send(RESP, &frame(HEADERS, END_HEADERS | END_STREAM, 3, &only));
    assert_eq!(p.out.len(), 2);
    let g = p.out[0].grpc.as_ref().unwrap();
    assert_eq!(
        (g.service.value.as_str(), g.method.value.as_str()),
        ("shop.v1.Cart", "Watch")
    );
    assert_eq!(
        (g.status, g.requests, g.responses, g.counts_lost),
        (Some(0), 1, 3, false)
    );
    let g = p.out[1].grpc.as_ref().unwrap();
    assert_eq!(g.method.value, "Checkout");
    assert_eq!(g.status, Some(16));
    assert_eq!(g.message.as_ref().unwrap().value, "token%20expired");
    assert_eq!((g.requests, g.responses), (1, 0));
    assert_eq!(p.out[1].response.status, 200);
}

#[test]
fn resets_and_goaway() {
    let mut p = Peers::new();
    for s in [1, 3, 5, 7] {
        let r = p.request(s, &format!("/s{s}"), true);
        p.send(REQ, &r);
    }
    // Stream 1 reset after its head: reported, incomplete. Stream 3 reset before any answer.
    let head = p.response(1, 200, false);
    p.send(RESP, &head);
    p.send(RESP, &frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
    p.send(REQ, &frame(RST_STREAM, 0, 3, &[0, 0, 0, 8]));
    // GOAWAY: the server processed nothing past stream 5.
    p.send(RESP, &frame(GOAWAY, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0]));
    let r5 = p.response(5, 503, true);
    p.send(RESP, &r5);
    assert_eq!(p.out.len(), 2);
    assert!(p.out[0].response.incomplete);
    assert_eq!(p.out[1].response.status, 503);
    let c = p.conn.counters;
    assert_eq!((c.h2_rst_streams, c.h2_goaways, c.unanswered), (2, 1, 2));
    assert_eq!(p.conn.pending(), 0);
}

#[test]
fn push_promises_are_counted_and_keep_the_table_in_step() {
    let mut p = Peers::new();
    let req = p.request(1, "/", true);
    p.send(REQ, &req);
    // The promise's block indexes entries the response block then refers to.
    let promised = p.server.block(&[
        (":method", "GET"),
        (":path", "/style.css"),
        ("x-pushed-by", "edge"),
    ]);
    let mut pp = vec![0, 0, 0, 2];
    pp.extend(promised);
    let mut f = status(200);
    f.push(("x-pushed-by", "edge".into()));
    let head = p.server.block(&fields(&f));
    let pushed = p.server.block(&[(":status", "200")]);
    p.send(
        RESP,
        &[
            frame(PUSH_PROMISE, END_HEADERS, 1, &pp),
            frame(HEADERS, END_HEADERS, 1, &head),
            frame(HEADERS, END_HEADERS | END_STREAM, 2, &pushed),
            frame(DATA, END_STREAM, 1, b"<html>"),
        ]
        .concat(),
    );
    assert_eq!(p.out.len(), 1, "the pushed response is not reported");
    assert_eq!(p.out[0].response.unknown_fields, 0);
    let c = p.conn.counters;
    assert_eq!(
        (c.h2_push_promises, c.h2_hpack_errors, c.orphan_responses),
        (1, 0, 0)
    );
}

#[test]
fn settings_bound_the_table_and_size_updates_follow_them() {
    let mut p = Peers::new();
    // The client allows the server's table 256 bytes; the server shrinks to it and indexes.
    p.send(REQ, &settings(&[(1, 256), (5, 32768)]));
    p.send(RESP, &frame(SETTINGS, 1, 0, &[]));
    for (s, code) in [(1, 201), (3, 202), (5, 201)] {
        let r = p.request(s, "/x", true);
        p.send(REQ, &r);
        let mut block = if s == 1 { p.server.resize(256) } else { vec![] };
        let mut f = status(code);
        f.push(("x-long", "y".repeat(100)));
        block.extend(p.server.block(&fields(&f)));
        p.send(RESP, &frame(HEADERS, END_HEADERS | END_STREAM, s, &block));
    }
    let codes: Vec<u16> = p.out.iter().map(|x| x.response.status).collect();
    assert_eq!(codes, [201, 202, 201]);
    assert_eq!(p.conn.counters.h2_hpack_errors, 0);
    // A DATA frame above 16 KiB passes now that the client allowed 32 KiB frames.
    let r = p.request(7, "/big", true);
    p.send(REQ, &r);
    let head = p.response(7, 200, false);
    p.send(
        RESP,
        &[head, frame(DATA, END_STREAM, 7, &vec![b'z'; 20000])].concat(),
    );
    assert_eq!(p.out[3].response.sizes.body, 20000);
    assert_eq!(p.conn.counters.h2_framing_lost, 0);
}

#[test]
fn gap_inside_data_is_counted_and_the_exchange_kept() {
    let mut p = Peers::new();
    let mut f = get("/upload");
    f[0].1 = "PUT".into();
    let block = p.client.block(&fields(&f));
    let mut piece = frame(HEADERS, END_HEADERS, 1, &block);
    let data = frame(DATA, END_STREAM, 1, &vec![b'u'; 10000]);
    piece.extend_from_slice(&data);
    // The kernel copied 4096 bytes of the write: the rest of the DATA payload is unseen.
    p.send_cut(REQ, &piece, 4096);
    let head = p.response(1, 201, true);
    p.send(RESP, &head);
    assert_eq!(p.out.len(), 1);
    let r = &p.out[0].request;
    assert_eq!(
        (r.sizes.body, r.sizes.body_wire),
        (10000, data.len() as u64)
    );
    assert!(r.incomplete_copy);
    assert_eq!(p.conn.counters.h2_framing_lost, 0);
}

#[test]
fn gap_over_frame_headers_resyncs_flags_and_counts() {
    let mut p = Peers::new();
    for s in [1, 3] {
        let r = p.request(s, &format!("/r{s}"), true);
        p.send(REQ, &r);
    }
    // Stream 1's head and the start of its body, then uncopied bytes that hold the rest of
    // the body, the next DATA frame (with END_STREAM) and stream 3's head.
    let head1 = p.response(1, 401, false);
    let body1 = frame(DATA, 0, 1, &vec![b'x'; 3000]);
    let end1 = frame(DATA, END_STREAM, 1, &vec![b'x'; 3000]);
    let head3 = p.response(3, 404, true);
    let write = [head1, body1, end1, head3].concat();
    p.send_cut(RESP, &write, 100);
    assert_eq!(p.out.len(), 1, "the response under way is closed out");
    assert!(p.out[0].response.incomplete);
    assert_eq!(p.out[0].response.status, 401);
    assert_eq!(p.out[0].response.sizes.body, 3000);
    // The next write starts with a frame: read again, with a table out of step. The server's
    // next response refers to what it indexed before: unknown, not guessed.
    let r = p.request(5, "/r5", true);
    p.send(REQ, &r);
    let head5 = p.response(5, 401, true);
    p.send(RESP, &head5);
    assert_eq!(p.out.len(), 2);
    let x = &p.out[1];
    assert_eq!(x.request.target.value, "/r5");
    assert_eq!(
        x.response.status, 0,
        "':status: 401' was indexed before the gap"
    );
    assert!(x.response.unknown_fields > 0);
    let c = p.conn.counters;
    assert_eq!(c.h2_framing_lost, 1);
    assert!(c.h2_unknown_references > 0);
    // Stream 3 waits: its answer was in the gap.
    assert_eq!(p.conn.pending(), 1);
    let mut out = Vec::new();
    p.conn.on_close(999, &mut out);
    assert_eq!(p.conn.counters.unanswered, 1);
}

#[test]
fn a_hole_closes_out_and_both_sides_resync() {
    let mut p = Peers::new();
    let post = {
        let mut f = get("/slow");
        f[0].1 = "POST".into();
        let block = p.client.block(&fields(&f));
        frame(HEADERS, END_HEADERS, 1, &block)
    };
    p.send(REQ, &[post, frame(DATA, 0, 1, b"part")].concat());
    let head = p.response(1, 200, false);
    p.send(RESP, &head);
    p.conn.on_lost();
    // After the hole: pieces that do not start with frames are skipped.
    p.send(RESP, b"tail of some DATA payload");
    assert_eq!(p.out.len(), 1);
    assert!(p.out[0].response.incomplete);
    assert!(p.out[0].request.incomplete_copy);
    let r = p.request(3, "/after", true);
    p.send(REQ, &r);
    let h = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &p.server.plain(&[(":status", "204")]),
    );
    p.send(RESP, &h);
    assert_eq!(p.out.len(), 2);
    assert_eq!(p.out[1].response.status, 204);
    let c = p.conn.counters;
    assert_eq!(
        (c.capture_holes, c.h2_framing_lost, c.skipped_pieces),
        (1, 2, 1)
    );
}

#[test]
fn responses_to_unseen_requests_reach_the_status_rules() {
    let mut p = Peers::new();
    // Stream 1's request went by in a hole; its 401 comes after.
    p.conn.on_lost();
    let resp = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &p.server.plain(&[(":status", "401")]),
    );
    p.send(RESP, &resp);
    let mut unpaired = Vec::new();
    p.conn.take_unpaired(&mut unpaired);
    assert_eq!(unpaired.len(), 1);
    assert_eq!(unpaired[0].status, 401);
    assert!(p.out.is_empty());
}

#[test]
fn stream_and_block_caps_bite_and_are_counted() {
    let mut p = Peers::new();
    let n = super::MAX_STREAMS as u32 + 10;
    for i in 0..n {
        let r = p.request(2 * i + 1, "/q", true);
        p.send(REQ, &r);
        assert!(p.conn.held_bytes() <= HttpConn::MAX_HELD);
    }
    assert_eq!(p.conn.pending(), super::MAX_STREAMS);
    assert_eq!(p.conn.counters.h2_streams_over_cap, 10);
    // The oldest were dropped: their answers reach the status rules only.
    let r = p.response(1, 429, true);
    p.send(RESP, &r);
    let mut unpaired = Vec::new();
    p.conn.take_unpaired(&mut unpaired);
    assert_eq!(unpaired[0].status, 429);
    // A header block over the cap is skipped; the table is then out of step.
    let huge = p.client.plain(&[("x-big", &"b".repeat(super::MAX_BLOCK))]);
    let s = 2 * n + 1;
    p.send(REQ, &frame(HEADERS, END_HEADERS | END_STREAM, s, &huge));
    assert_eq!(p.conn.counters.h2_header_blocks_over_cap, 1);
    assert!(p.conn.held_bytes() <= HttpConn::MAX_HELD);
    // The next request's :authority, :path and user-agent were indexed before: unknown; its
    // :method and :scheme are static. It is reported with what is known.
    let r = p.request(s + 2, "/q", true);
    p.send(REQ, &r);
    assert_eq!(p.conn.counters.h2_unknown_references, 3);
    let h = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        s + 2,
        &p.server.plain(&[(":status", "200")]),
    );
    p.send(RESP, &h);
    let x = p.out.last().unwrap();
    assert_eq!(
        (
            x.request.method.value.as_str(),
            x.request.target.value.as_str()
        ),
        ("GET", "")
    );
    assert_eq!((x.request.unknown_fields, x.response.status), (3, 200));
    assert!(x.request.host.is_none() && x.request.user_agent.is_none());
}

#[test]
fn frames_cut_at_every_byte_give_the_same_exchanges() {
    let mut p = Peers::new();
    let mut req = Vec::new();
    let mut resp = Vec::new();
    for s in [1u32, 3, 5] {
        req.extend(p.request(s, &format!("/item/{s}"), s != 3));
        if s == 3 {
            req.extend(frame(DATA, END_STREAM, 3, b"x=1&y=2"));
        }
        resp.extend(p.response(s, 200 + s as u16, false));
        resp.extend(frame(DATA, END_STREAM, s, b"ok"));
        // Frames of no stream's message in between.
        req.extend(frame(PRIORITY, 0, s + 10, &[0, 0, 0, 0, 7]));
        req.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]));
        resp.extend(frame(PING, 0, 0, &[1; 8]));
    }
    let (start_c, start_s) = (client_start(), server_start());
    let whole = {
        let mut c = HttpConn::new();
        feed(
            &mut c,
            &[
                (REQ, [start_c.clone(), req.clone()].concat()),
                (RESP, [start_s.clone(), resp.clone()].concat()),
            ],
        )
    };
    assert_eq!(whole.len(), 3);
    let c_all = [start_c, req].concat();
    let s_all = [start_s, resp].concat();
    for cut in 1..c_all.len().max(s_all.len()) {
        let mut c = HttpConn::new();
        let split = |b: &[u8], side| {
            let k = cut.min(b.len());
            vec![(side, b[..k].to_vec()), (side, b[k..].to_vec())]
        };
        let mut pieces = split(&c_all, REQ);
        pieces.extend(split(&s_all, RESP));
        pieces.retain(|(_, b)| !b.is_empty());
        let got = feed(&mut c, &pieces);
        let key = |x: &Exchange| {
            (
                x.request.target.value.clone(),
                x.response.status,
                x.request.sizes,
                x.response.sizes,
            )
        };
        assert_eq!(
            got.iter().map(key).collect::<Vec<_>>(),
            whole.iter().map(key).collect::<Vec<_>>(),
            "cut {cut}"
        );
    }
}

#[test]
fn malformed_frames_are_read_without_panics() {
    let mut p = Peers::new();
    let block = p.client.plain(&fields(&get("/m")));
    let frames = [
        // Priority fields announced, payload too short for them.
        frame(HEADERS, PRIORITY_FLAG | END_HEADERS, 1, &[0, 0, 0]),
        // Padding longer than the payload.
        frame(HEADERS, PADDED | END_HEADERS | END_STREAM, 3, &[200, 0x82]),
        frame(DATA, PADDED, 3, &[9, 1, 2]),
        // CONTINUATION with no block under way, then a block interrupted by DATA.
        frame(CONTINUATION, END_HEADERS, 5, &block),
        frame(HEADERS, 0, 7, &block),
        frame(DATA, END_STREAM, 7, b"x"),
        // Frames of an extension type are skipped.
        frame(0x0c, 0, 0, b"origin"),
    ];
    p.send(REQ, &frames.concat());
    let r = p.request(9, "/after", true);
    p.send(REQ, &r);
    let h = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        9,
        &p.server.plain(&[(":status", "200")]),
    );
    p.send(RESP, &h);
    assert_eq!(p.out.last().map(|x| x.response.status), Some(200));
    let c = p.conn.counters;
    assert_eq!((c.h2_unknown_frames, c.h2_framing_lost), (1, 0));
    assert!(c.h2_hpack_errors >= 2);
    assert!(p.conn.held_bytes() <= HttpConn::MAX_HELD);
}
