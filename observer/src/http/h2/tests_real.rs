//! Real peers' bytes (recorded by `testdata/relay.py`): nginx 1.22 answering nghttp 1.52,
//! h2load and curl 7.88 over h2c by prior knowledge, a Python grpcio 1.85 server answering a
//! grpcio client, and curl's `Upgrade: h2c` answered by python-h2 4.4
//! (`testdata/h2c_upgrade_server.py`).

use super::tests_build::{feed, load};
use crate::http::{CredentialKind, Exchange, HttpConn, HttpCounters, Side, Version};

fn run_pieces(pieces: &[(Side, Vec<u8>)]) -> (HttpConn, Vec<Exchange>) {
    let mut c = HttpConn::new();
    let mut out = feed(&mut c, pieces);
    c.on_close(1_000_000, &mut out);
    (c, out)
}

fn run(name: &str) -> (HttpConn, Vec<Exchange>) {
    run_pieces(&load(name))
}

fn summary(out: &[Exchange]) -> Vec<(&str, &str, u16)> {
    out.iter()
        .map(|x| {
            (
                x.request.method.value.as_str(),
                x.request.target.value.as_str(),
                x.response.status,
            )
        })
        .collect()
}

/// Nothing lost, nothing unknown.
fn clean(c: &HttpCounters) {
    assert_eq!(
        c.h2_framing_lost + c.h2_hpack_errors + c.h2_unknown_references,
        0
    );
    assert_eq!(c.skipped_pieces + c.orphan_responses + c.unanswered, 0);
}

#[test]
fn nghttp_six_requests_three_denied() {
    let (c, out) = run("nghttp-six.rec");
    assert_eq!(
        summary(&out),
        [
            ("GET", "/", 200),
            ("GET", "/private", 401),
            ("GET", "/index.html", 200),
            ("GET", "/private?token=REDACTED", 401),
            ("GET", "/gone", 404),
            ("GET", "/login", 401),
        ]
    );
    clean(&c.counters);
    assert_eq!(c.counters.h2_goaways, 1);
    for x in &out {
        assert_eq!(x.request.version, Version::Http2);
        assert_eq!(x.request.host.as_ref().unwrap().value, "127.0.0.1:18081");
        assert!(
            x.request
                .user_agent
                .as_ref()
                .unwrap()
                .value
                .starts_with("nghttp2/")
        );
        // Authorization wins over the session cookie, as in HTTP/1.x.
        let cred = x.request.credential.as_ref().unwrap();
        assert_eq!(
            (cred.kind, cred.secret()),
            (CredentialKind::Bearer, &b"tok-abc"[..])
        );
    }
    // nghttp indexes: the first request's head is the largest.
    let heads: Vec<u64> = out.iter().map(|x| x.request.sizes.head).collect();
    assert_eq!(heads, [74, 54, 47, 62, 52, 53]);
    let bodies: Vec<(u64, u64)> = out
        .iter()
        .map(|x| (x.response.sizes.body, x.response.sizes.body_wire))
        .collect();
    assert_eq!(
        bodies,
        [(6, 15), (3, 12), (6, 15), (3, 12), (153, 162), (16, 25)]
    );
}

#[test]
fn login_bodies_over_h2_from_curl_and_nghttp() {
    for (name, ua) in [
        ("curl-post.rec", "curl/7.88.1"),
        ("nghttp-post.rec", "nghttp2/1.52.0"),
    ] {
        let (c, out) = run(name);
        assert_eq!(summary(&out), [("POST", "/login", 401)], "{name}");
        let r = &out[0].request;
        assert_eq!(r.user_agent.as_ref().unwrap().value, ua);
        assert_eq!(r.login.user.as_ref().unwrap().bytes(), b"alice");
        assert_eq!(r.login.secret.as_ref().unwrap().bytes(), b"hunter2");
        assert_eq!((r.sizes.body, r.sizes.body_wire), (31, 40));
        assert_eq!(out[0].response.sizes.body, 16);
        // nginx resets the stream once it has answered.
        assert_eq!(c.counters.h2_rst_streams, 1);
        clean(&c.counters);
    }
}

#[test]
fn h2load_two_connections_twenty_requests() {
    let mut total = 0;
    for name in ["h2load-1.rec", "h2load-2.rec"] {
        let (c, out) = run(name);
        assert_eq!(out.len(), 10, "{name}");
        assert!(
            out.iter()
                .all(|x| x.response.status == 200 && x.response.sizes.body == 6)
        );
        assert!(out.iter().all(|x| x.request.target.value == "/index.html"));
        clean(&c.counters);
        total += out.len();
    }
    assert_eq!(total, 20);
}

#[test]
fn nghttp_large_body_and_the_kernel_copy_limit() {
    let (c, out) = run("nghttp-big.rec");
    assert_eq!(
        summary(&out),
        [("GET", "/big.txt", 200), ("GET", "/index.html", 200)]
    );
    assert_eq!(out[0].response.sizes.body, 40527);
    clean(&c.counters);
    // The kernel copies at most 4 KiB of each read: what follows in a piece is unseen. DATA
    // bytes inside it are counted; frame headers inside it lose framing until a piece starts
    // with frames again. Nothing is invented: every exchange reported is one of the above.
    let cut: Vec<(Side, Vec<u8>, u64)> = load("nghttp-big.rec")
        .into_iter()
        .map(|(s, b)| {
            let n = b.len() as u64;
            (s, b[..b.len().min(4096)].to_vec(), n)
        })
        .collect();
    let mut conn = HttpConn::new();
    let mut got = Vec::new();
    for (i, (side, b, n)) in cut.iter().enumerate() {
        conn.on_data(*side, b, *n, i as u64, &mut got);
    }
    conn.on_close(99, &mut got);
    // The 40 KiB write: its first DATA frame (8 KiB) is counted whole, the next frame header
    // is unseen, and the response is closed out. The next write is read again.
    assert_eq!(summary(&got), summary(&out));
    assert!(got[0].response.incomplete && !got[1].response.incomplete);
    assert_eq!(
        (got[0].response.sizes.body, got[1].response.sizes.body),
        (8192, 6)
    );
    assert_eq!(conn.counters.h2_framing_lost, 1);
    assert!(conn.held_bytes() <= HttpConn::MAX_HELD);
}

#[test]
fn grpcio_unary_streaming_and_trailers_only() {
    let (c, out) = run("grpc.rec");
    clean(&c.counters);
    let calls: Vec<(&str, Option<u32>, u32, u32)> = out
        .iter()
        .map(|x| {
            let g = x.grpc.as_ref().unwrap();
            (g.method.value.as_str(), g.status, g.requests, g.responses)
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("SayHello", Some(0), 1, 1),
            ("SayHello", Some(0), 1, 1),
            ("Stream", Some(0), 1, 3),
            ("Secret", Some(16), 1, 0),
        ]
    );
    for x in &out {
        let g = x.grpc.as_ref().unwrap();
        assert_eq!(g.service.value, "demo.Greeter");
        assert_eq!(x.response.status, 200);
        let cred = x.request.credential.as_ref().unwrap();
        assert_eq!(cred.secret(), b"grpc-tok");
    }
    let g = out[3].grpc.as_ref().unwrap();
    assert_eq!(g.message.as_ref().unwrap().value, "bad token");
    assert_eq!(out[3].response.sizes.body, 0);
    assert_eq!(out[2].response.sizes.body, 48);
}

#[test]
fn grpcio_joined_mid_way_reports_what_is_known() {
    let pieces = load("grpc.rec");
    // Observer starts with the second call's request (the 9th recv): what grpcio indexed in
    // the first call is unknown, the static and literal fields decode.
    let start = pieces
        .iter()
        .position(|(s, b)| *s == Side::Request && b.len() == 91)
        .unwrap();
    let (c, out) = run_pieces(&pieces[start..]);
    assert!(c.is_h2());
    assert_eq!(
        summary(&out),
        [
            ("POST", "", 200),
            ("POST", "/demo.Greeter/Stream", 200),
            ("POST", "/demo.Greeter/Secret", 200),
        ]
    );
    // grpcio refers to five or six request fields it indexed before (the third and fourth calls'
    // new :path literals are indexed, but not referred to again), and to the response
    // fields and trailers it indexed in the first call.
    let unknown: Vec<(u16, u16)> = out
        .iter()
        .map(|x| (x.request.unknown_fields, x.response.unknown_fields))
        .collect();
    assert_eq!(unknown, [(6, 3), (5, 3), (5, 1)]);
    // The second call's content-type was an indexed entry from before: not taken for gRPC.
    assert!(out[0].grpc.is_none());
    assert_eq!(out[0].response.sizes.body, 14);
    assert!(c.counters.h2_unknown_references > 0);
    assert_eq!(c.counters.h2_hpack_errors, 0);
}

#[test]
fn every_split_of_a_real_conversation_gives_the_same_exchanges() {
    let pieces = load("grpc.rec");
    let (_, whole) = run_pieces(&pieces);
    let stream = |side: Side| -> Vec<u8> {
        pieces
            .iter()
            .filter(|(s, _)| *s == side)
            .flat_map(|(_, b)| b.clone())
            .collect()
    };
    let (c, s) = (stream(Side::Request), stream(Side::Response));
    // Requests first, then responses, each direction cut in two at every byte.
    for cut in 1..c.len().max(s.len()) {
        let mut p = Vec::new();
        for (side, b) in [(Side::Request, &c), (Side::Response, &s)] {
            let k = cut.min(b.len());
            p.push((side, b[..k].to_vec()));
            p.push((side, b[k..].to_vec()));
        }
        p.retain(|(_, b)| !b.is_empty());
        let (_, got) = run_pieces(&p);
        let key = |x: &Exchange| {
            (
                x.request.target.clone(),
                x.response.status,
                x.grpc.clone(),
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
fn curl_upgrades_to_h2c_and_is_answered_on_stream_1() {
    let (c, out) = run("h2c-upgrade.rec");
    assert!(c.is_h2());
    assert_eq!(summary(&out), [("GET", "/private/report", 401)]);
    let x = &out[0];
    assert_eq!(
        (x.request.version, x.response.version),
        (Version::Http11, Version::Http2)
    );
    assert_eq!(x.request.user_agent.as_ref().unwrap().value, "curl/7.88.1");
    assert_eq!(x.request.sizes.head, 186);
    // The 101's head and stream 1's HEADERS frame.
    assert_eq!(x.response.sizes.head, 71 + 25);
    assert_eq!(x.response.sizes.body, 7);
    clean(&c.counters);
}
