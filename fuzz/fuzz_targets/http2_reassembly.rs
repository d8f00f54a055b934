//! Arbitrary HTTP/2 conversations: pieces on either side with uncopied tails, records lost in
//! between, after a preface, an `h2c` upgrade or nothing (a connection joined mid-way).
//! Reassembly never panics and never holds more than its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::http::{HttpConn, MAX_PENDING, MAX_STREAMS, Side};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n";
const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut conn = HttpConn::new();
    let mut out = Vec::new();
    match mode % 3 {
        0 => conn.on_data(Side::Request, PREFACE, PREFACE.len() as u64, 0, &mut out),
        1 => {
            conn.on_data(Side::Request, UPGRADE, UPGRADE.len() as u64, 0, &mut out);
            conn.on_data(Side::Response, SWITCHING, SWITCHING.len() as u64, 0, &mut out);
        }
        _ => {}
    }
    // Each piece: a control byte (side, a gap, a hole before it), a 2-byte length, the bytes,
    // and the gap's 2-byte length when there is one.
    let mut ts = 1;
    while let [ctl, a, b, tail @ ..] = rest {
        let len = (u16::from_le_bytes([*a, *b]) as usize).min(tail.len());
        let (piece, mut next) = tail.split_at(len);
        let side = if ctl & 0x80 != 0 { Side::Response } else { Side::Request };
        let mut gap = 0u64;
        if ctl & 0x40 != 0
            && let [g0, g1, after @ ..] = next
        {
            gap = u64::from(u16::from_le_bytes([*g0, *g1]));
            next = after;
        }
        if ctl & 0x20 != 0 {
            conn.on_lost();
        }
        conn.on_data(side, piece, piece.len() as u64 + gap, ts, &mut out);
        ts += 1;
        assert!(conn.held_bytes() <= HttpConn::MAX_HELD);
        assert!(conn.pending() <= MAX_PENDING.max(MAX_STREAMS));
        let mut unpaired = Vec::new();
        conn.take_unpaired(&mut unpaired);
        out.clear();
        rest = next;
    }
    conn.on_close(ts, &mut out);
    for x in &out {
        assert!(x.request.sizes.total() >= x.request.sizes.head);
        assert!(x.response.end_ns >= x.response.start_ns || x.response.start_ns == 0);
    }
});
