//! Reassembly of whole exchanges from pieces cut anywhere, garbage included.

use super::*;

fn feed_all(conn: &mut H1Conn, pieces: &[(Side, &[u8])]) -> Vec<Exchange> {
    let mut out = Vec::new();
    for (i, (side, b)) in pieces.iter().enumerate() {
        conn.on_data(*side, b, b.len() as u64, i as u64 * 10, &mut out);
    }
    out
}

const REQ: &[u8] = b"GET /users?id=1 HTTP/1.1\r\nHost: api\r\nUser-Agent: curl/8\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn a_capture_hole_never_pairs_a_response_with_the_wrong_request() {
    let mut c = H1Conn::new();
    let mut out = Vec::new();
    // The response to /a was lost: /b's request comes after the hole.
    c.on_data(Side::Request, b"GET /a HTTP/1.1\r\n\r\n", 18, 1, &mut out);
    c.on_lost();
    c.on_data(Side::Request, b"GET /b HTTP/1.1\r\n\r\n", 18, 2, &mut out);
    let resp_b = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    c.on_data(Side::Response, resp_b, resp_b.len() as u64, 3, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request.target.value, "/b");
    assert_eq!(out[0].response.status, 404);
    // The request for /c was lost: its response, after the hole, is nobody's.
    c.on_lost();
    c.on_data(Side::Response, RESP, RESP.len() as u64, 4, &mut out);
    c.on_data(Side::Request, REQ, REQ.len() as u64, 5, &mut out);
    c.on_data(Side::Response, RESP, RESP.len() as u64, 6, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].request.target.value, "/users?id=1");
    assert_eq!(c.counters.capture_holes, 2);
    assert_eq!(c.counters.dropped_at_holes, 1);
    assert_eq!(c.counters.orphan_responses, 1);
}

#[test]
fn simple_exchange() {
    let mut c = H1Conn::new();
    let out = feed_all(&mut c, &[(Side::Request, REQ), (Side::Response, RESP)]);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.request.method.value, "GET");
    assert_eq!(e.request.target.value, "/users?id=1");
    assert_eq!(e.request.user_agent.as_ref().unwrap().value, "curl/8");
    assert_eq!(e.request.sizes.total(), REQ.len() as u64);
    assert_eq!(e.response.status, 200);
    assert_eq!(e.response.sizes.total(), RESP.len() as u64);
    assert_eq!(e.response.sizes.body, 5);
    assert_eq!(e.duration_ns(), 10);
}

#[test]
fn keep_alive_and_post_body_split_anywhere() {
    let post = b"POST /login HTTP/1.1\r\nContent-Length: 11\r\n\r\nuser=alice!";
    let resp401 = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
    let mut stream_req = Vec::new();
    stream_req.extend_from_slice(REQ);
    stream_req.extend_from_slice(post);
    for cut in 1..stream_req.len() {
        let mut c = H1Conn::new();
        let (a, b) = stream_req.split_at(cut);
        let mut out = Vec::new();
        c.on_data(Side::Request, a, a.len() as u64, 0, &mut out);
        c.on_data(Side::Request, b, b.len() as u64, 1, &mut out);
        c.on_data(Side::Response, RESP, RESP.len() as u64, 2, &mut out);
        c.on_data(Side::Response, resp401, resp401.len() as u64, 3, &mut out);
        assert_eq!(out.len(), 2, "cut at {cut}");
        assert_eq!(out[1].request.method.value, "POST");
        assert_eq!(out[1].request.sizes.body, 11);
        assert_eq!(out[1].response.status, 401);
    }
}

#[test]
fn uncopied_body_bytes_keep_framing() {
    let mut c = H1Conn::new();
    let mut out = Vec::new();
    c.on_data(Side::Request, REQ, REQ.len() as u64, 0, &mut out);
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n";
    let mut piece = head.to_vec();
    piece.extend_from_slice(&[b'x'; 100]);
    // The kernel copied the head and 100 body bytes of a 10,000-byte body in one write.
    c.on_data(
        Side::Response,
        &piece,
        (head.len() + 10000) as u64,
        5,
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response.sizes.body, 10000);
    // The next exchange still parses.
    let out2 = feed_all(&mut c, &[(Side::Request, REQ), (Side::Response, RESP)]);
    assert_eq!(out2.len(), 1);
}

#[test]
fn request_head_longer_than_the_copy_is_reported_truncated() {
    let mut c = H1Conn::new();
    let mut out = Vec::new();
    let mut head =
        b"GET /big HTTP/1.1\r\nUser-Agent: t\r\nAuthorization: Bearer tok\r\nX-Pad: ".to_vec();
    head.extend(std::iter::repeat_n(b'p', 6000));
    head.extend_from_slice(b"\r\n\r\n");
    // The kernel copied 4096 bytes of the write.
    c.on_data(Side::Request, &head[..4096], head.len() as u64, 1, &mut out);
    c.on_data(Side::Response, RESP, RESP.len() as u64, 2, &mut out);
    assert_eq!(out.len(), 1);
    let r = &out[0].request;
    assert!(r.head_truncated);
    assert_eq!(r.target.value, "/big");
    assert_eq!(r.sizes.head, head.len() as u64);
    assert!(r.credential.is_some());
    // The connection goes on.
    let out2 = feed_all(&mut c, &[(Side::Request, REQ), (Side::Response, RESP)]);
    assert_eq!(out2.len(), 1);
}

#[test]
fn non_http_is_skipped_without_exchanges() {
    let mut c = H1Conn::new();
    let tls = [0x16u8, 3, 1, 0, 0x50, 1, 0, 0];
    let out = feed_all(
        &mut c,
        &[
            (Side::Request, &tls),
            (Side::Response, b"\x16\x03\x03garbage"),
            (Side::Request, b"\0\0\0\x08PGSQL"),
        ],
    );
    assert!(out.is_empty());
    assert!(c.counters.skipped_pieces >= 3);
}

#[test]
fn head_and_204_have_no_body() {
    let mut c = H1Conn::new();
    let out = feed_all(
        &mut c,
        &[
            (Side::Request, b"HEAD / HTTP/1.1\r\n\r\n"),
            (
                Side::Response,
                b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n",
            ),
            (Side::Request, b"DELETE /x HTTP/1.1\r\n\r\n"),
            (Side::Response, b"HTTP/1.1 204 No Content\r\n\r\n"),
        ],
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].response.sizes.body, 0);
    assert_eq!(out[1].response.status, 204);
}

#[test]
fn chunked_response_with_trailers() {
    let mut c = H1Conn::new();
    let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n";
    for cut in 1..body.len() {
        let mut c2 = H1Conn::new();
        let (a, b) = body.split_at(cut);
        let out = feed_all(
            &mut c2,
            &[
                (Side::Request, REQ),
                (Side::Response, a),
                (Side::Response, b),
            ],
        );
        assert_eq!(out.len(), 1, "cut {cut}");
        assert_eq!(out[0].response.sizes.body, 11);
        assert_eq!(out[0].response.sizes.total(), body.len() as u64);
    }
    let out = feed_all(&mut c, &[(Side::Request, REQ), (Side::Response, body)]);
    assert_eq!(out.len(), 1);
}

#[test]
fn body_until_close() {
    let mut c = H1Conn::new();
    let mut out = feed_all(
        &mut c,
        &[
            (Side::Request, b"GET / HTTP/1.0\r\n\r\n"),
            (Side::Response, b"HTTP/1.0 200 OK\r\n\r\nsome"),
            (Side::Response, b" more"),
        ],
    );
    assert!(out.is_empty());
    c.on_close(99, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response.sizes.body, 9);
}

#[test]
fn response_cut_by_close_is_reported_incomplete() {
    let mut c = H1Conn::new();
    let mut out = feed_all(
        &mut c,
        &[
            (Side::Request, REQ),
            (
                Side::Response,
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
            ),
        ],
    );
    assert!(out.is_empty());
    c.on_close(50, &mut out);
    assert_eq!(out.len(), 1);
    assert!(out[0].response.incomplete);
    assert_eq!(out[0].response.sizes.body, 7);
    assert_eq!(c.counters.unanswered, 0);
}

#[test]
fn continue_then_final_response() {
    let mut c = H1Conn::new();
    let out = feed_all(
        &mut c,
        &[
            (
                Side::Request,
                b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            ),
            (Side::Response, b"HTTP/1.1 100 Continue\r\n\r\n"),
            (Side::Request, b"abc"),
            (
                Side::Response,
                b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            ),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response.status, 201);
}

#[test]
fn pipelined_requests_pair_in_order() {
    let mut c = H1Conn::new();
    let reqs = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    let resps = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nb";
    let out = feed_all(&mut c, &[(Side::Request, reqs), (Side::Response, resps)]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].request.target.value, "/a");
    assert_eq!(out[1].request.target.value, "/b");
    assert_eq!(out[1].response.status, 404);
}

#[test]
fn upgrade_stops_parsing() {
    let mut c = H1Conn::new();
    let out = feed_all(
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
            (Side::Request, b"GET /not-http HTTP/1.1\r\n\r\n"),
            (Side::Response, RESP),
        ],
    );
    assert_eq!(out.len(), 1);
    assert!(c.is_tunnel());
}

#[test]
fn mid_stream_start_resyncs_cleanly() {
    let mut c = H1Conn::new();
    // Observer attached in the middle of a response body.
    let out = feed_all(
        &mut c,
        &[
            (Side::Response, b"tail of an old body"),
            (Side::Request, REQ),
            (Side::Response, RESP),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response.status, 200);
}

#[test]
fn bad_content_length_is_not_guessed() {
    let mut c = H1Conn::new();
    let out = feed_all(
        &mut c,
        &[
            (
                Side::Request,
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcde",
            ),
            (Side::Response, RESP),
        ],
    );
    assert!(out.is_empty());
    assert!(c.counters.resyncs >= 1);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    struct Spec {
        method: &'static str,
        req_body: usize,
        req_chunked: bool,
        status: u16,
        resp_body: usize,
        resp_chunked: bool,
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD"]),
            0usize..3000,
            any::<bool>(),
            prop::sample::select(vec![200u16, 201, 204, 301, 400, 401, 403, 404, 500]),
            0usize..5000,
            any::<bool>(),
        )
            .prop_map(
                |(method, req_body, req_chunked, status, resp_body, resp_chunked)| Spec {
                    method,
                    req_body: if method == "GET" || method == "HEAD" {
                        0
                    } else {
                        req_body
                    },
                    req_chunked,
                    status,
                    resp_body: if method == "HEAD" || status == 204 {
                        0
                    } else {
                        resp_body
                    },
                    resp_chunked,
                },
            )
    }

    fn body(out: &mut Vec<u8>, len: usize, chunked: bool) {
        if chunked {
            let mut left = len;
            while left > 0 {
                let n = left.min(777);
                out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                out.extend(std::iter::repeat_n(b'z', n));
                out.extend_from_slice(b"\r\n");
                left -= n;
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend(std::iter::repeat_n(b'z', len));
        }
    }

    fn streams(specs: &[Spec]) -> (Vec<u8>, Vec<u8>) {
        let (mut req, mut resp) = (Vec::new(), Vec::new());
        for (i, s) in specs.iter().enumerate() {
            let framing = |chunked: bool, len: usize| {
                if chunked {
                    "Transfer-Encoding: chunked\r\n".to_string()
                } else {
                    format!("Content-Length: {len}\r\n")
                }
            };
            let rc = s.req_chunked && s.req_body > 0;
            req.extend_from_slice(
                format!(
                    "{} /r/{i} HTTP/1.1\r\nHost: h\r\n{}\r\n",
                    s.method,
                    framing(rc, s.req_body)
                )
                .as_bytes(),
            );
            body(&mut req, s.req_body, rc);
            let pc = s.resp_chunked && s.status != 204 && s.method != "HEAD";
            let len_header = if s.status == 204 {
                String::new()
            } else {
                framing(pc, s.resp_body)
            };
            resp.extend_from_slice(
                format!("HTTP/1.1 {} X\r\n{len_header}\r\n", s.status).as_bytes(),
            );
            body(&mut resp, s.resp_body, pc);
        }
        (req, resp)
    }

    fn feed(stream: &[u8], cuts: &[usize], side: Side, c: &mut H1Conn, out: &mut Vec<Exchange>) {
        let mut points: Vec<usize> = cuts.iter().map(|x| x % (stream.len() + 1)).collect();
        points.sort_unstable();
        let mut last = 0;
        for p in points.into_iter().chain([stream.len()]) {
            if p > last {
                c.on_data(side, &stream[last..p], (p - last) as u64, 0, out);
                last = p;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// However the streams are cut into syscalls, the same exchanges come out.
        #[test]
        fn cuts_do_not_change_exchanges(
            specs in prop::collection::vec(spec(), 1..8),
            req_cuts in prop::collection::vec(any::<usize>(), 0..40),
            resp_cuts in prop::collection::vec(any::<usize>(), 0..40),
        ) {
            let (req, resp) = streams(&specs);
            let mut whole = H1Conn::new();
            let mut expected = Vec::new();
            whole.on_data(Side::Request, &req, req.len() as u64, 0, &mut expected);
            whole.on_data(Side::Response, &resp, resp.len() as u64, 0, &mut expected);
            prop_assert_eq!(expected.len(), specs.len());
            for (x, s) in expected.iter().zip(&specs) {
                prop_assert_eq!(x.request.method.value.as_str(), s.method);
                prop_assert_eq!(x.request.sizes.body, s.req_body as u64);
                prop_assert_eq!(x.response.status, s.status);
                prop_assert_eq!(x.response.sizes.body, s.resp_body as u64);
            }
            let mut cut = H1Conn::new();
            let mut got = Vec::new();
            feed(&req, &req_cuts, Side::Request, &mut cut, &mut got);
            feed(&resp, &resp_cuts, Side::Response, &mut cut, &mut got);
            prop_assert_eq!(got, expected);
        }

        /// Arbitrary bytes never panic and never grow memory past its bound.
        #[test]
        fn garbage_is_bounded(pieces in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..600), 0u64..5000), 0..60)) {
            let mut c = H1Conn::new();
            let mut out = Vec::new();
            for (req, bytes, extra) in pieces {
                let side = if req { Side::Request } else { Side::Response };
                c.on_data(side, &bytes, bytes.len() as u64 + extra, 0, &mut out);
                prop_assert!(c.held_bytes() <= H1Conn::MAX_HELD);
                prop_assert!(c.pending() <= MAX_PENDING);
            }
        }
    }
}

#[test]
fn text_is_capped_and_flagged() {
    let t = Text::from_bytes(&vec![b'a'; MAX_FIELD + 10]);
    assert_eq!(t.value.len(), MAX_FIELD);
    assert!(t.altered);
    let t = Text::from_bytes(b"/\xff\xfe");
    assert!(t.altered);
    assert!(!Text::from_bytes(b"/ok").altered);
    let long = "é".repeat(MAX_FIELD);
    assert_eq!(Text::from_checked(&long), Text::from_bytes(long.as_bytes()));
    assert_eq!(Text::from_checked("/ok"), Text::from_bytes(b"/ok"));
}

#[test]
fn responses_to_unparsed_requests_are_kept_for_the_status_rules() {
    let mut c = H1Conn::new();
    let mut out = Vec::new();
    // A request line longer than the copy, then one behind padding: neither is parsed.
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "p".repeat(5000));
    c.on_data(
        Side::Request,
        &long.as_bytes()[..4096],
        long.len() as u64,
        1,
        &mut out,
    );
    let resp = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
    c.on_data(Side::Response, resp, resp.len() as u64, 2, &mut out);
    c.on_data(
        Side::Request,
        b"\0\0\0\0GET / HTTP/1.1\r\n\r\n",
        23,
        3,
        &mut out,
    );
    let err = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
    c.on_data(Side::Response, err, err.len() as u64, 4, &mut out);
    assert!(out.is_empty());
    let mut unpaired = Vec::new();
    c.take_unpaired(&mut unpaired);
    let got: Vec<(u16, u64)> = unpaired.iter().map(|u| (u.status, u.end_ns)).collect();
    assert_eq!(got, vec![(401, 2), (502, 4)]);
    assert_eq!(c.counters.orphan_responses, 2);
    // Taken once; a parsed exchange is not among them.
    c.on_data(Side::Request, REQ, REQ.len() as u64, 5, &mut out);
    c.on_data(Side::Response, RESP, RESP.len() as u64, 6, &mut out);
    c.take_unpaired(&mut unpaired);
    assert_eq!((unpaired.len(), out.len()), (2, 1));
    // Bounded: a flood of pipelined responses with no request keeps at most MAX_UNPAIRED.
    let many = resp.repeat(MAX_UNPAIRED + 10);
    c.on_data(Side::Response, &many, many.len() as u64, 7, &mut out);
    let mut flood = Vec::new();
    c.take_unpaired(&mut flood);
    assert_eq!(flood.len(), MAX_UNPAIRED);
    assert_eq!(c.counters.unpaired_dropped, 10);
}
