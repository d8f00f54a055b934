//! Userspace cost per exchange, by stage, on the records a keep-alive small-JSON exchange
//! makes (the bench's T2 load): records → events (connection table, HTTP reassembly,
//! detection, the event's fields), events → sealed JSON lines (serialisation, the chain's
//! hash), and both. What `cargo xtask bench` reports as observer CPU per exchange is these
//! plus reading the ring and the writer thread's hand-over and writes.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use observer::capture::{Meta, decode, encode};
use observer::conn::host::NoHost;
use observer::event::{Clock, Event};
use observer::pipeline::Pipeline;
use observer::sink::Sink;
use observer::sink::integrity::{Chain, Start};
use observer_common::Direction;
use std::net::{Ipv4Addr, SocketAddrV4};

const EXCHANGES: usize = 1000;
const REQUEST: &[u8] = b"GET /json HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 03 Dec 2026 \
14:21:07 GMT\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\
Connection: keep-alive\r\n\r\n{\"ok\":true}";

/// An accepted connection, then EXCHANGES request/response pairs on it, one syscall each.
fn records() -> Vec<Vec<u8>> {
    let meta = |ts: u64| Meta {
        ts_ns: ts,
        tgid: 4242,
        tid: 4242,
        fd: 7,
    };
    let peer = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 43030);
    let mut out = vec![encode::conn(&meta(1), 3, &encode::sockaddr_in(peer))];
    for i in 0..EXCHANGES as u64 {
        let ts = 10 + i * 10_000;
        let d = |dir, b: &[u8], t| encode::data(&meta(t), dir, b.len() as u64, b);
        out.push(d(Direction::Ingress, REQUEST, ts));
        out.push(d(Direction::Egress, RESPONSE, ts + 5_000));
    }
    out
}

fn pipeline() -> Pipeline<NoHost> {
    Pipeline::new(
        NoHost,
        Clock::with_offset(1_700_000_000_000_000_000),
        "run".into(),
    )
}

fn events(records: &[Vec<u8>]) -> Vec<Event> {
    let mut p = pipeline();
    let mut out = Vec::with_capacity(EXCHANGES + 4);
    for r in records {
        p.handle(&decode(r).unwrap(), &mut out);
    }
    out
}

fn sink() -> Sink {
    let chain = Chain::start("run", None, Start::New("bench".into()));
    Sink::new(Box::new(std::io::sink()), chain)
}

fn bench(c: &mut Criterion) {
    let recs = records();
    let evs = events(&recs);
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, Event::Exchange(_)))
            .count(),
        EXCHANGES
    );
    let mut g = c.benchmark_group("per_exchange");
    g.throughput(Throughput::Elements(EXCHANGES as u64));
    g.bench_function("records_to_events", |b| b.iter(|| events(&recs)));
    g.bench_function("events_to_lines", |b| {
        b.iter_batched(
            || (evs.clone(), sink()),
            |(evs, mut s)| {
                for e in evs {
                    s.emit(e).unwrap();
                }
                s.flush().unwrap();
                s
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("records_to_lines", |b| {
        b.iter_batched(
            sink,
            |mut s| {
                for e in events(&recs) {
                    s.emit(e).unwrap();
                }
                s.flush().unwrap();
                s
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
