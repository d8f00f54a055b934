//! Sequences of well-formed records around arbitrary traffic bytes through the whole userspace
//! pipeline: every event is exactly one line of valid JSON, whatever the traffic held.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::capture::{Meta, encode};
use observer::event::Clock;
use observer::conn::host::NoHost;
use observer::pipeline::Pipeline;
use observer_common::{Direction, Syscall};

fuzz_target!(|data: &[u8]| {
    let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "fuzz".into());
    let mut out = Vec::new();
    let mut rest = data;
    let mut ts = 0;
    while let Some((&ctl, tail)) = rest.split_first() {
        ts += 1;
        let fd = (ctl & 0x3) as i32 + 3;
        let meta = Meta { ts_ns: ts, tgid: 7, tid: 7, fd };
        let len = ((ctl >> 2) as usize * 13).min(tail.len());
        let (piece, next) = tail.split_at(len);
        let mut rec = match ctl >> 6 {
            0 => encode::conn(&meta, 3, &encode::sockaddr_in("127.0.0.1:1".parse().unwrap())),
            1 => encode::data(&meta, Direction::Ingress, piece.len() as u64, piece),
            2 => encode::data(&meta, Direction::Egress, piece.len() as u64, piece),
            _ => encode::close(&meta),
        };
        // Data records: sometimes TLS plaintext, sometimes after a capture hole.
        if matches!(ctl >> 6, 1 | 2) && piece.len() % 3 == 1 {
            let tls = if ctl >> 6 == 1 { Syscall::SslRead } else { Syscall::SslWrite };
            rec[24 + 16..24 + 20].copy_from_slice(&(tls as u32).to_ne_bytes());
        }
        if matches!(ctl >> 6, 1 | 2) && piece.len() % 5 == 2 {
            rec[24 + 20..24 + 24].copy_from_slice(&1u32.to_ne_bytes());
        }
        p.handle_raw(&rec, &mut out);
        rest = next;
    }
    for ev in &out {
        let line = serde_json::to_string(ev).unwrap();
        assert!(!line.contains('\n'));
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(back.is_object());
    }
});
