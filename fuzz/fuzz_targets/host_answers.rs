//! The pipeline driven by a hostile host as well as hostile traffic: process names and
//! executable paths of any bytes and length, socket addresses of every family (Unix paths and
//! abstract names of any bytes), answers that change between lookups, through detection
//! (credentials fingerprinted, trusted proxies) and both sink formats. Nothing may panic, and
//! every JSON line must parse back.
#![no_main]

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use observer::addr::{Endpoints, SockAddr};
use observer::capture::{Meta, encode};
use observer::conn::host::{Host, ProcessInfo, process_info, unix_addr};
use observer::detect::identity::Fingerprinter;
use observer::event::Clock;
use observer::http::TrustedProxies;
use observer::pipeline::Pipeline;
use observer::sink::integrity::Chain;
use observer::sink::{Format, Sink};
use observer_common::Direction;

/// Answers cut from the fuzz input, taken in turn, so each lookup may see another one.
struct Hostile {
    answers: Vec<Vec<u8>>,
    next: usize,
}

impl Hostile {
    fn take(&mut self) -> Vec<u8> {
        if self.answers.is_empty() {
            return Vec::new();
        }
        self.next += 1;
        self.answers[self.next % self.answers.len()].clone()
    }

    fn addr(&mut self) -> Option<SockAddr> {
        let a = self.take();
        let (&kind, rest) = a.split_first()?;
        let port = u16::from_le_bytes([*rest.first().unwrap_or(&0), *rest.get(1).unwrap_or(&0)]);
        let mut b = [0u8; 16];
        for (d, s) in b.iter_mut().zip(rest.iter().skip(2)) {
            *d = *s;
        }
        Some(match kind % 5 {
            0 => SockAddr::Inet(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                port,
            ))),
            1 => SockAddr::Inet(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(b),
                port,
                0,
                0,
            ))),
            2 => unix_addr(rest, false),
            3 => unix_addr(rest, true),
            _ => SockAddr::UnixUnnamed,
        })
    }
}

impl Host for Hostile {
    fn endpoints(&mut self, _tgid: u32, _fd: i32) -> Option<Endpoints> {
        let local = self.addr();
        let peer = self.addr();
        Some(Endpoints { local, peer })
    }

    fn process(&mut self, _tgid: u32) -> ProcessInfo {
        let comm = self.take();
        let exe = self.take();
        process_info(Some(&comm), (!exe.is_empty()).then_some(&exe[..]))
    }
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    // The input: host answers separated by 0xFE 0xFE, then 0xFF 0xFF, then the traffic.
    let (host_part, traffic) = match data.windows(2).position(|w| w == [0xff, 0xff]) {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (&data[..data.len() / 2], &data[data.len() / 2..]),
    };
    let answers = host_part
        .split(|&b| b == 0xfe)
        .map(|a| a.to_vec())
        .take(64)
        .collect();
    let mut proxies = TrustedProxies::default();
    let _ = proxies.add("127.0.0.0/8");
    let _ = proxies.add("unix");
    let mut p = Pipeline::new(Hostile { answers, next: 0 }, Clock::with_offset(0), "fuzz".into())
        .with_fingerprinter(Fingerprinter::with_key(b"a fuzz key of sixteen+ bytes"))
        .with_trusted_proxies(proxies);
    let mut out = Vec::new();
    let mut rest = traffic;
    let mut ts = 0;
    while let Some((&ctl, tail)) = rest.split_first() {
        ts += 1_000_000;
        let fd = (ctl & 0x3) as i32 + 3;
        let meta = Meta { ts_ns: ts, tgid: 7 + (ctl as u32 & 0x4), tid: 7, fd };
        let len = ((ctl >> 3) as usize * 29).min(tail.len());
        let (piece, next) = tail.split_at(len);
        let rec = match ctl >> 6 {
            0 => encode::conn(&meta, 3, &[]),
            1 => encode::data(&meta, Direction::Ingress, piece.len() as u64, piece),
            2 => encode::data(&meta, Direction::Egress, piece.len() as u64, piece),
            _ => encode::close(&meta),
        };
        p.handle_raw(&rec, &mut out);
        rest = next;
    }
    let json = Buf::default();
    let mut sink = Sink::new(Box::new(json.clone()), Chain::new("fuzz", None));
    let pretty = Buf::default();
    let mut pretty_sink =
        Sink::new(Box::new(pretty.clone()), Chain::new("fuzz", None)).with_format(Format::Pretty);
    for ev in out {
        let _ = pretty_sink.emit(ev.clone());
        let _ = sink.emit(ev);
    }
    let _ = sink.flush();
    let _ = pretty_sink.flush();
    let text = String::from_utf8(json.0.lock().unwrap().clone()).expect("JSON lines are UTF-8");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("every line parses back");
        assert!(v.is_object());
    }
    let pretty = String::from_utf8(pretty.0.lock().unwrap().clone()).expect("pretty is UTF-8");
    // Terminal control characters from names and paths never reach a pretty line.
    assert!(
        pretty
            .lines()
            .all(|l| !l.chars().any(|c| c.is_control() && c != '\t'))
    );
});
