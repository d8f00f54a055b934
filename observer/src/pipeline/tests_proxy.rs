//! Clients behind trusted proxies through the whole pipeline, on generated streams: who the
//! events name in `client.*` and `source.*`, and whom the rules count.

use super::*;
use crate::capture::{Meta, decode, encode};
use crate::conn::host::NoHost;
use observer_common::Direction;
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddrV4};

struct Feed {
    p: Pipeline<NoHost>,
    out: Vec<Event>,
    fd: i32,
    ts: u64,
}

impl Feed {
    fn new(proxies: &[&str]) -> Self {
        let mut t = TrustedProxies::default();
        for v in proxies {
            t.add(v).unwrap();
        }
        let p = Pipeline::new(NoHost, Clock::with_offset(0), "run".into())
            .with_fingerprinter(Fingerprinter::with_key(b"a test key of sixteen+ bytes"))
            .with_trusted_proxies(t);
        Self {
            p,
            out: Vec::new(),
            fd: 10,
            ts: 1,
        }
    }

    fn meta(&mut self) -> Meta {
        self.ts += 1_000;
        Meta {
            ts_ns: self.ts,
            tgid: 42,
            tid: 43,
            fd: self.fd,
        }
    }

    fn rec(&mut self, r: Vec<u8>) {
        self.p.handle(&decode(&r).unwrap(), &mut self.out);
    }

    /// One exchange on a new connection from `peer`: `headers` in the request, `status` back.
    fn exchange(&mut self, peer: [u8; 4], headers: &str, status: u16) {
        let addr = SocketAddrV4::new(Ipv4Addr::from(peer), 40000 + self.fd as u16 + 1);
        self.exchange_from(&encode::sockaddr_in(addr), headers, status);
    }

    /// As [`Feed::exchange`], from a peer given as a raw `sockaddr`.
    fn exchange_from(&mut self, sockaddr: &[u8], headers: &str, status: u16) {
        let req = format!("GET /account HTTP/1.1\r\nHost: api\r\n{headers}\r\n");
        self.connection(sockaddr, req.as_bytes(), req.len(), status);
    }

    /// A request of 6 KiB of which only the first 4 KiB were copied (nothing of it can be
    /// parsed), answered `status`, on a new connection from `peer`.
    fn unparsed(&mut self, peer: [u8; 4], status: u16) {
        let req = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(6000));
        self.copied_from(peer, &req, status);
    }

    /// `req` on a new connection from `peer`, only its first 4 KiB copied, answered `status`.
    fn copied_from(&mut self, peer: [u8; 4], req: &str, status: u16) {
        let addr = SocketAddrV4::new(Ipv4Addr::from(peer), 40000 + self.fd as u16 + 1);
        let copied = &req.as_bytes()[..req.len().min(4096)];
        self.connection(&encode::sockaddr_in(addr), copied, req.len(), status);
    }

    /// One connection: accepted from `sockaddr`, a request of `total` bytes of which `copied`
    /// reached the ring, a bodiless `status` back, closed.
    fn connection(&mut self, sockaddr: &[u8], copied: &[u8], total: usize, status: u16) {
        self.fd += 1;
        let m = self.meta();
        self.rec(encode::conn(&m, 3, sockaddr));
        let m = self.meta();
        self.rec(encode::data(&m, Direction::Ingress, total as u64, copied));
        let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
        let m = self.meta();
        self.rec(encode::data(
            &m,
            Direction::Egress,
            resp.len() as u64,
            resp.as_bytes(),
        ));
        let m = self.meta();
        self.rec(encode::close(&m));
    }

    fn events(&self) -> Vec<Value> {
        self.out
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }

    fn exchanges(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e.get("http").is_some())
            .collect()
    }

    fn alerts(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"]["kind"] == "alert")
            .collect()
    }
}

#[test]
fn a_trusted_proxy_names_the_client_and_stays_the_source() {
    let mut f = Feed::new(&["127.0.0.1"]);
    f.exchange(
        [127, 0, 0, 1],
        "X-Forwarded-For: 10.9.9.9, 198.51.100.7\r\n",
        200,
    );
    let e = &f.exchanges()[0];
    assert_eq!(e["client"]["ip"], "198.51.100.7");
    assert!(
        e["client"].get("port").is_none(),
        "X-Forwarded-For gave no port"
    );
    assert_eq!(e["source"]["ip"], "127.0.0.1");
    assert_eq!(e["source"]["port"], 40011);
    assert_eq!(e["observer"]["forwarded"]["header"], "x-forwarded-for");
    assert_eq!(e["observer"]["forwarded"]["hops"], 1);
    assert!(e["observer"]["forwarded"].get("stopped").is_none());
}

#[test]
fn untrusted_peers_headers_change_nothing() {
    for proxies in [&["127.0.0.1"][..], &[]] {
        let mut f = Feed::new(proxies);
        f.exchange(
            [192, 0, 2, 50],
            "X-Forwarded-For: 10.9.9.9\r\nForwarded: for=10.9.9.8\r\n",
            200,
        );
        let e = &f.exchanges()[0];
        assert_eq!(e["client"], e["source"], "{proxies:?}");
        assert_eq!(e["client"]["ip"], "192.0.2.50");
        assert!(e["observer"].get("forwarded").is_none());
    }
    // A trusted peer that forwards nothing is its own client.
    let mut f = Feed::new(&["127.0.0.1"]);
    f.exchange([127, 0, 0, 1], "", 200);
    let e = &f.exchanges()[0];
    assert_eq!(e["client"], e["source"]);
    assert!(e["observer"].get("forwarded").is_none());
}

#[test]
fn a_chain_that_names_no_one_leaves_the_peer_and_says_why() {
    let mut f = Feed::new(&["127.0.0.0/8"]);
    f.exchange([127, 0, 0, 1], "Forwarded: for=unknown\r\n", 200);
    f.exchange([127, 0, 0, 1], "X-Forwarded-For: not-an-address\r\n", 200);
    f.exchange([127, 0, 0, 1], "X-Forwarded-For: 127.0.0.9\r\n", 200);
    f.exchange([127, 0, 0, 1], "Forwarded: for=_hidden7\r\n", 200);
    let x = f.exchanges();
    assert_eq!(x[0]["client"]["ip"], "127.0.0.1");
    assert_eq!(x[0]["observer"]["forwarded"]["stopped"], "unknown");
    assert_eq!(x[0]["observer"]["forwarded"]["header"], "forwarded");
    assert_eq!(x[1]["client"]["ip"], "127.0.0.1");
    assert_eq!(x[1]["observer"]["forwarded"]["stopped"], "malformed");
    assert_eq!(x[2]["client"]["ip"], "127.0.0.9");
    assert_eq!(x[2]["observer"]["forwarded"]["stopped"], "all_trusted");
    assert_eq!(x[3]["client"]["address"], "_hidden7");
    assert!(x[3]["client"].get("ip").is_none());
}

#[test]
fn rules_count_per_client_and_alerts_name_it() {
    let mut f = Feed::new(&["127.0.0.1"]);
    // Three failures from each of two bystanders, five from the attacker, all through the
    // proxy: one source, three clients.
    for i in 0..3 {
        f.exchange([127, 0, 0, 1], "X-Forwarded-For: 198.51.100.1\r\n", 401);
        f.exchange([127, 0, 0, 1], "X-Forwarded-For: 198.51.100.2\r\n", 401);
        let forged = format!("X-Forwarded-For: 10.9.9.{i}, 203.0.113.66\r\n");
        f.exchange([127, 0, 0, 1], &forged, 401);
    }
    for _ in 0..2 {
        f.exchange([127, 0, 0, 1], "X-Forwarded-For: 203.0.113.66\r\n", 401);
    }
    let alerts = f.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a["rule"]["name"], "brute_force");
    assert_eq!(a["client"]["ip"], "203.0.113.66");
    assert_eq!(a["source"]["ip"], "203.0.113.66");
    assert_eq!(a["observer"]["alert"]["key"]["field"], "client.ip");
    assert_eq!(a["observer"]["alert"]["key"]["value"], "203.0.113.66");
    assert_eq!(a["observer"]["alert"]["count"], 5);
    // Without the proxy trusted, the same traffic is one source of eleven failures.
    let mut f = Feed::new(&[]);
    for _ in 0..5 {
        f.exchange([127, 0, 0, 1], "X-Forwarded-For: 198.51.100.1\r\n", 401);
    }
    let alerts = f.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["client"]["ip"], "127.0.0.1");
}

#[test]
fn distinct_sources_are_distinct_clients() {
    let mut f = Feed::new(&["127.0.0.1"]);
    for i in 1..=5 {
        let h =
            format!("Authorization: Bearer stolen-token\r\nX-Forwarded-For: 198.51.100.{i}\r\n");
        f.exchange([127, 0, 0, 1], &h, 401);
    }
    let db: Vec<Value> = f
        .alerts()
        .into_iter()
        .filter(|a| a["rule"]["name"] == "distributed_brute_force")
        .collect();
    assert_eq!(db.len(), 1, "{:#?}", f.alerts());
    assert_eq!(db[0]["observer"]["alert"]["distinct"], "client.ip");
}

#[test]
fn unix_socket_peers_are_trusted_only_when_asked() {
    // An unnamed AF_UNIX peer, as a proxy connecting to a backend's socket path is.
    let unix = 1u16.to_ne_bytes().to_vec();
    let h = "X-Forwarded-For: 198.51.100.9\r\n";
    let mut f = Feed::new(&["unix"]);
    f.exchange_from(&unix, h, 200);
    f.exchange([127, 0, 0, 1], h, 200);
    let x = f.exchanges();
    assert_eq!(x[0]["source"]["address"], "unix:unnamed");
    assert_eq!(x[0]["client"]["ip"], "198.51.100.9");
    assert_eq!(
        x[1]["client"]["ip"], "127.0.0.1",
        "only Unix peers are trusted"
    );
    let mut f = Feed::new(&["127.0.0.1"]);
    f.exchange_from(&unix, h, 200);
    let x = f.exchanges();
    assert_eq!(x[0]["client"], x[0]["source"]);
}

#[test]
fn unparsed_requests_through_a_trusted_proxy_never_count_against_it() {
    // Behind the proxy the client of an unparsed request is unknown: no per-client rule.
    let mut f = Feed::new(&["127.0.0.1"]);
    for _ in 0..6 {
        f.unparsed([127, 0, 0, 1], 401);
    }
    assert!(f.alerts().is_empty(), "{:?}", f.alerts());
    // From an untrusted peer the same responses are that peer's brute force.
    let mut f = Feed::new(&["127.0.0.1"]);
    for _ in 0..5 {
        f.unparsed([10, 0, 0, 5], 401);
    }
    let alerts = f.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["client"]["ip"], "10.0.0.5");
}

#[test]
fn a_chain_that_names_no_one_never_counts_against_the_proxy() {
    // A client's unterminated quote swallows the proxy's own element: the chain names no one,
    // so the failures count for the service only.
    let mut f = Feed::new(&["127.0.0.1"]);
    for _ in 0..6 {
        f.exchange(
            [127, 0, 0, 1],
            "Forwarded: for=1.1.1.1;a=\"x, for=203.0.113.5\r\n",
            401,
        );
    }
    let bf: Vec<Value> = f
        .alerts()
        .into_iter()
        .filter(|a| a["rule"]["name"] == "brute_force")
        .collect();
    assert!(bf.is_empty(), "{bf:?}");
}

#[test]
fn a_forwarding_header_in_a_head_cut_by_the_copy_is_not_believed() {
    let mut f = Feed::new(&["127.0.0.1"]);
    for _ in 0..5 {
        // The forged line first, then a cookie long enough that the proxy's own line at the
        // end of the head is past what the kernel copied.
        let req = format!(
            "GET /account HTTP/1.1\r\nHost: api\r\nX-Forwarded-For: 6.6.6.6\r\nCookie: c={}\r\n\
             X-Forwarded-For: 203.0.113.7\r\n\r\n",
            "x".repeat(5000)
        );
        f.copied_from([127, 0, 0, 1], &req, 401);
    }
    let text = f
        .events()
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !text.contains("6.6.6.6"),
        "the forgery named a client: {text}"
    );
    let ex = f.exchanges();
    assert_eq!(ex.len(), 5, "{text}");
    assert!(
        ex.iter()
            .all(|e| e["observer"]["forwarded"]["stopped"] == "truncated"),
        "{text}"
    );
    assert!(f.alerts().is_empty(), "{text}");
}
