//! Real peers' bytes (recorded by `testdata/relay.py`): nginx 1.22 answering nghttp, h2load and
//! curl over h2c, and a Python grpcio server answering a grpcio client.

use super::tests_build::{feed, load};
use crate::http::{Exchange, HttpConn, Side};

fn run(name: &str) -> (HttpConn, Vec<Exchange>) {
    let mut c = HttpConn::new();
    let mut out = feed(&mut c, &load(name));
    c.on_close(1_000_000, &mut out);
    (c, out)
}

fn summary(out: &[Exchange]) -> Vec<(String, String, u16)> {
    out.iter()
        .map(|x| {
            (
                x.request.method.value.clone(),
                x.request.target.value.clone(),
                x.response.status,
            )
        })
        .collect()
}

#[test]
fn dump() {
    for name in [
        "nghttp-six.rec",
        "grpc.rec",
        "curl-post.rec",
        "h2load-1.rec",
        "nghttp-big.rec",
        "nghttp-post.rec",
    ] {
        let (c, out) = run(name);
        eprintln!("{name}: {:?}\n{:?}", summary(&out), c.counters);
        for x in &out {
            eprintln!(
                "  {:?} {:?} {:?} {:?}",
                x.request.sizes, x.response.sizes, x.request.credential, x.grpc
            );
        }
    }
}

#[test]
fn placeholder_side() {
    let _ = Side::Request;
}
