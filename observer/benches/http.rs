//! Parser throughput: HTTP/1.1 heads through reassembly, in bytes per second.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use observer::http::{HttpConn, Side};

fn heads() -> (Vec<u8>, Vec<u8>, usize) {
    let req = b"GET /api/v1/items?page=2&sort=name HTTP/1.1\r\nHost: api.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n\
Accept: application/json\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl\r\n\
Cookie: theme=dark; session=0123456789abcdef\r\nConnection: keep-alive\r\n\r\n";
    let resp =
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 20:00:00 GMT\r\n\
Content-Type: application/json\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\
Cache-Control: no-store\r\nX-Request-Id: 5f2b6c1e-8d3a-4b7e-9f10-2a3b4c5d6e7f\r\n\r\n";
    let n = 1000;
    (req.repeat(n), resp.repeat(n), n)
}

fn bench(c: &mut Criterion) {
    let (reqs, resps, n) = heads();
    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Bytes((reqs.len() + resps.len()) as u64));
    g.bench_function("heads", |b| {
        b.iter(|| {
            let mut conn = HttpConn::new();
            let mut out = Vec::with_capacity(n);
            // One head per syscall, as keep-alive traffic arrives.
            let (rl, sl) = (reqs.len() / n, resps.len() / n);
            for i in 0..n {
                let r = &reqs[i * rl..(i + 1) * rl];
                conn.on_data(Side::Request, r, r.len() as u64, 0, &mut out);
                let s = &resps[i * sl..(i + 1) * sl];
                conn.on_data(Side::Response, s, s.len() as u64, 1, &mut out);
            }
            assert_eq!(out.len(), n);
            out
        })
    });
    // The floor: httparse alone on the same heads, nothing kept. The ratio of the two is what
    // reassembly adds (head search, framing, the fields an event needs, the credential).
    g.bench_function("httparse_only", |b| {
        b.iter(|| {
            let (rl, sl) = (reqs.len() / n, resps.len() / n);
            let mut statuses = 0u32;
            for i in 0..n {
                let mut h = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut h);
                assert!(
                    req.parse(&reqs[i * rl..(i + 1) * rl])
                        .unwrap()
                        .is_complete()
                );
                let mut h = [httparse::EMPTY_HEADER; 32];
                let mut resp = httparse::Response::new(&mut h);
                assert!(
                    resp.parse(&resps[i * sl..(i + 1) * sl])
                        .unwrap()
                        .is_complete()
                );
                statuses += u32::from(resp.code.unwrap_or(0));
            }
            statuses
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
