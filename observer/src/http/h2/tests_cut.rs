//! Header blocks the kernel's copy cut: the stream is still one exchange, its fields unknown.

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
