//! Arbitrary pieces of bytes, on either side, with arbitrary uncopied tails: reassembly never
//! panics and never holds more than its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::http::{HttpConn, MAX_PENDING, MAX_STREAMS, Side};

fuzz_target!(|data: &[u8]| {
    let mut conn = HttpConn::new();
    let mut out = Vec::new();
    let mut rest = data;
    // Each piece: a control byte (side, length class, gap), then the bytes.
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = ((ctl & 0x3f) as usize * 7).min(tail.len());
        let (piece, next) = tail.split_at(len);
        let side = if ctl & 0x80 != 0 { Side::Response } else { Side::Request };
        let gap = if ctl & 0x40 != 0 { (ctl as u64) * 97 } else { 0 };
        conn.on_data(side, piece, piece.len() as u64 + gap, 0, &mut out);
        assert!(conn.held_bytes() <= HttpConn::MAX_HELD);
        // Arbitrary bytes may start HTTP/2, whose open streams are the requests waiting.
        assert!(conn.pending() <= MAX_PENDING.max(MAX_STREAMS));
        rest = next;
    }
    conn.on_close(1, &mut out);
    for x in &out {
        assert!(x.request.sizes.total() >= x.request.sizes.head);
    }
});
