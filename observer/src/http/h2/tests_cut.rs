//! When a stream is one exchange: a header block the kernel's copy cut (its fields unknown),
//! an answer that comes before the request's end.

use super::tests::{Peers, REQ, RESP};
use super::tests_build::*;

/// A server writes a response as many iovecs and the kernel copies the first ones only: the
/// response's header block is cut. The request was seen whole, so the exchange is reported,
/// its status not known (0, flagged), never dropped and never guessed.
#[test]
fn a_response_head_cut_by_the_copy_is_reported_with_its_status_unknown() {
    let mut p = Peers::new();
    let r = p.request(1, "/cut", true);
    p.send(REQ, &r);
    let head = p.response(1, 401, false);
    let body = frame(DATA, END_STREAM, 1, b"denied");
    let write = [head.clone(), body].concat();
    // Only the frame header and one byte of the block were copied.
    p.send_cut(RESP, &write, 10);
    let mut out = std::mem::take(&mut p.out);
    p.conn.on_close(1_000, &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    let x = &out[0];
    assert_eq!(x.request.target.value, "/cut");
    assert_eq!(x.response.status, 0);
    assert!(x.response.unknown_fields > 0);
    assert_eq!(p.conn.counters.h2_header_blocks_lost, 1);
    // The next exchange on the connection is read again (its status from the static table
    // or a literal; anything the lost block indexed is unknown).
    let r = p.request(3, "/next", true);
    p.send(REQ, &r);
    let head = p.response(3, 200, true);
    p.send(RESP, &head);
    assert_eq!(p.out.len(), 1);
    assert_eq!(p.out[0].request.target.value, "/next");
    assert_eq!(p.out[0].response.status, 200);
}

/// nginx's `return` answers a POST before reading its body: the exchange waits for the
/// client's end of the stream, so the body is counted, and a reset after the whole answer
/// leaves the answer complete.
#[test]
fn an_answer_before_the_request_body_waits_for_the_body() {
    let mut p = Peers::new();
    let r = p.request(1, "/items", false);
    p.send(REQ, &r);
    let head = p.response(1, 200, true);
    p.send(RESP, &head);
    assert!(p.out.is_empty(), "the request is still open");
    p.send(REQ, &frame(DATA, END_STREAM, 1, b"{\"n\":1}"));
    assert_eq!(p.out.len(), 1);
    assert_eq!(p.out[0].request.sizes.body, 7);
    assert!(!p.out[0].response.incomplete);
    // Answered, then reset by the server (RST_STREAM NO_ERROR) before the body came.
    let r = p.request(3, "/items", false);
    p.send(REQ, &r);
    let head = p.response(3, 201, true);
    p.send(RESP, &head);
    p.send(RESP, &frame(RST_STREAM, 0, 3, &[0, 0, 0, 0]));
    // The body the client sent before the reset reached it still counts.
    assert_eq!(p.out.len(), 1);
    p.send(REQ, &frame(DATA, END_STREAM, 3, b"{}"));
    assert_eq!(p.out.len(), 2);
    assert_eq!(p.out[1].response.status, 201);
    assert_eq!(p.out[1].request.sizes.body, 2);
    assert!(!p.out[1].response.incomplete);
    // Reset before the client sent anything more: reported when it opens its next stream.
    let r = p.request(5, "/items", false);
    p.send(REQ, &r);
    let head = p.response(5, 202, true);
    p.send(RESP, &head);
    p.send(RESP, &frame(RST_STREAM, 0, 5, &[0, 0, 0, 0]));
    let r = p.request(7, "/next", true);
    p.send(REQ, &r);
    assert_eq!(p.out.len(), 3);
    assert_eq!(p.out[2].response.status, 202);
}
