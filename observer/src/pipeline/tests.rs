//! The pipeline on encoded records: addresses, roles, filters, losses, reused fds.

use super::*;
use crate::capture::{Meta, decode, encode};
use crate::conn::host::NoHost;
use observer_common::Direction;
use std::net::{Ipv4Addr, SocketAddrV4};

fn meta(fd: i32, ts: u64) -> Meta {
    Meta {
        ts_ns: ts,
        tgid: 42,
        tid: 43,
        fd,
    }
}

/// A data record whose bytes were all copied.
fn data(m: Meta, d: Direction, bytes: &[u8]) -> Vec<u8> {
    encode::data(&m, d, bytes.len() as u64, bytes)
}

fn run(records: &[Vec<u8>]) -> Vec<serde_json::Value> {
    let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "run".into());
    let mut out = Vec::new();
    for r in records {
        p.handle(&decode(r).unwrap(), &mut out);
    }
    out.iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

#[test]
fn userspace_caps_that_bite_are_reported_as_losses_once() {
    let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "run".into());
    let mut out = Vec::new();
    let peer = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
    let mut feed = |p: &mut Pipeline<NoHost>, rec: Vec<u8>| {
        p.handle(&decode(&rec).unwrap(), &mut out);
    };
    feed(
        &mut p,
        encode::conn(&meta(7, 1), 3, &encode::sockaddr_in(peer)),
    );
    feed(&mut p, data(meta(7, 2), Direction::Ingress, b"GET /"));
    let filler = vec![b'a'; 4000];
    for i in 0..10 {
        feed(&mut p, data(meta(7, 3 + i), Direction::Ingress, &filler));
    }
    let mut out = Vec::new();
    p.maintain(100, &[], &mut out);
    p.maintain(200, &[], &mut out);
    let losses: Vec<serde_json::Value> = out
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .filter(|e| e["event"]["action"] == "loss")
        .collect();
    assert_eq!(losses.len(), 1, "{losses:?}");
    assert_eq!(
        losses[0]["observer"]["loss"]["userspace"]["heads_too_long"],
        1
    );
    assert_eq!(
        p.stats()["http"]["heads_too_long"],
        1,
        "open connections count"
    );
}

#[test]
fn accepted_connection_yields_server_exchange_with_addresses() {
    let peer = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
    let events = run(&[
        encode::conn(&meta(7, 1), 3, &encode::sockaddr_in(peer)),
        data(
            meta(7, 2),
            Direction::Ingress,
            b"POST /login?password=hunter2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        ),
        data(
            meta(7, 5),
            Direction::Egress,
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
        ),
        encode::close(&meta(7, 6)),
    ]);
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["event"]["action"], "authn_login_fail");
    assert_eq!(e["http"]["request"]["method"], "POST");
    assert_eq!(e["http"]["response"]["status_code"], 401);
    assert_eq!(e["url"]["path"], "/login");
    assert_eq!(e["url"]["query"], "password=REDACTED");
    assert_eq!(e["source"]["ip"], "127.0.0.1");
    assert_eq!(e["source"]["port"], 40000);
    assert_eq!(e["observer"]["role"], "server");
    assert_eq!(e["process"]["pid"], 42);
    assert_eq!(e["event"]["duration"], 3);
    assert!(!e.to_string().contains("hunter2"));
}

#[test]
fn the_pipeline_redacts_with_the_user_formats_it_is_given() {
    use crate::event::{Redactor, SecretPatterns};
    let peer = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
    let records = [
        encode::conn(&meta(7, 1), 3, &encode::sockaddr_in(peer)),
        data(
            meta(7, 2),
            Direction::Ingress,
            b"GET /keys/acme_live_0123456789abcdef?q=acme_live_fedcba9876543210 HTTP/1.1\r\n\r\n",
        ),
        data(
            meta(7, 3),
            Direction::Egress,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
    ];
    let patterns = SecretPatterns::new(vec!["acme_live_[0-9a-f]{16}".into()]).unwrap();
    let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "run".into())
        .with_redaction(Redactor::new(patterns));
    let mut out = Vec::new();
    for r in &records {
        p.handle(&decode(r).unwrap(), &mut out);
    }
    let e = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(e["url"]["path"], "/keys/REDACTED");
    assert_eq!(e["url"]["query"], "q=REDACTED");
    // Without them, the built-in formats do not know these keys.
    let e = &run(&records)[0];
    assert_eq!(e["url"]["path"], "/keys/acme_live_0123456789abcdef");
}

#[test]
fn preexisting_connection_role_is_inferred() {
    let events = run(&[
        // Middle of an old response first: skipped.
        data(meta(9, 1), Direction::Egress, b"older"),
        data(meta(9, 2), Direction::Egress, b"GET /x HTTP/1.1\r\n\r\n"),
        data(
            meta(9, 3),
            Direction::Ingress,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
    ]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["observer"]["role"], "client");
}

#[test]
fn port_filter_keeps_only_named_ports() {
    let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "run".into()).with_ports(vec![8080]);
    let mut out = Vec::new();
    let to = |port| encode::sockaddr_in(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let req = b"GET / HTTP/1.1\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    for (fd, port) in [(5, 9090), (6, 8080)] {
        // The target is a client connecting to `port`.
        let recs = [
            encode::conn(&meta(fd, 1), -1, &to(port)),
            data(meta(fd, 2), Direction::Egress, req),
            data(meta(fd, 3), Direction::Ingress, resp),
        ];
        for r in &recs {
            p.handle(&decode(r).unwrap(), &mut out);
        }
    }
    assert_eq!(out.len(), 1);
    let e = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(e["destination"]["port"], 8080);
    assert_eq!(p.take_untracked(), vec![ConnKey { tgid: 42, fd: 5 }]);
}

#[test]
fn non_http_connections_are_dropped_after_a_few_pieces() {
    let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "run".into());
    let mut out = Vec::new();
    let recs: Vec<Vec<u8>> = std::iter::once(encode::conn(&meta(5, 1), 3, &[]))
        .chain((0..20).map(|i| {
            data(
                meta(5, i + 2),
                Direction::Ingress,
                b"\x16\x03\x01\x02\x00tls",
            )
        }))
        .collect();
    for r in &recs {
        p.handle(&decode(r).unwrap(), &mut out);
    }
    // No exchange; one report naming what it looks like.
    assert_eq!(out.len(), 1);
    let e = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(e["event"]["action"], "sys_monitor_disabled");
    assert_eq!(e["process"]["pid"], 42);
    let reason = e["observer"]["reason"].as_str().unwrap();
    assert!(reason.contains("looks like TLS"), "{reason}");
    assert_eq!(p.take_untracked(), vec![ConnKey { tgid: 42, fd: 5 }]);
    assert_eq!(p.counters.non_http_connections, 1);
    assert_eq!(p.stats()["undecoded"][0]["protocol"], "TLS");
}

#[test]
fn a_short_connection_of_a_known_protocol_is_reported_at_its_close_once() {
    let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "run".into());
    let mut out = Vec::new();
    for fd in [5, 6] {
        let recs = [
            encode::conn(&meta(fd, 1), 3, &[]),
            data(meta(fd, 2), Direction::Ingress, b"*1\r\n$4\r\nPING\r\n"),
            data(meta(fd, 3), Direction::Egress, b"+PONG\r\n"),
            encode::close(&meta(fd, 4)),
        ];
        for r in &recs {
            p.handle(&decode(r).unwrap(), &mut out);
        }
    }
    assert_eq!(out.len(), 1, "{out:?}");
    let e = serde_json::to_value(&out[0]).unwrap();
    let reason = e["observer"]["reason"].as_str().unwrap();
    assert!(reason.contains("Redis"), "{reason}");
    assert_eq!(p.stats()["undecoded"][0]["connections"], 2);
    // Bytes that are merely not HTTP, on a short connection, are not worth a report.
    let recs = [
        encode::conn(&meta(7, 5), 3, &[]),
        data(meta(7, 6), Direction::Ingress, b"hello\r\n"),
        encode::close(&meta(7, 7)),
    ];
    for r in &recs {
        p.handle(&decode(r).unwrap(), &mut out);
    }
    assert_eq!(out.len(), 1, "{out:?}");
}

#[test]
fn process_exit_forgets_its_connections() {
    let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "run".into());
    let mut out = Vec::new();
    let recs = [
        encode::conn(&meta(5, 1), 3, &[]),
        encode::process(&meta(-1, 2), ProcChange::Exit, 42),
    ];
    for r in &recs {
        p.handle(&decode(r).unwrap(), &mut out);
    }
    assert_eq!(p.stats()["connections"]["open"], 0);
}

#[test]
fn reused_fd_does_not_mix_connections() {
    let peer = encode::sockaddr_in(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));
    let events = run(&[
        encode::conn(&meta(5, 1), 3, &peer),
        data(meta(5, 2), Direction::Ingress, b"GET /a HTTP/1.1\r\n\r\n"),
        // close lost; the fd is accepted again
        encode::conn(&meta(5, 3), 3, &peer),
        data(
            meta(5, 4),
            Direction::Egress,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
    ]);
    assert!(
        events.is_empty(),
        "a response on a new connection pairs with nothing"
    );
}

/// The kernel's running count of a socket's lost records: a connection first seen mid-way
/// starts from the count as it stands (its first exchange is whole), and a later record with a
/// higher count follows a hole, so the exchange across it is not made up.
#[test]
fn socket_loss_counts_mark_holes_from_where_a_connection_was_first_seen() {
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let rec = |ts: u64, d: Direction, b: &[u8], losses: u32| {
        encode::data_after_losses(&meta(9, ts), d, b.len() as u64, b, losses)
    };
    let events = run(&[
        // Adopted through its traffic, after the kernel already lost 3 of its records.
        rec(1, Direction::Ingress, req, 3),
        rec(2, Direction::Egress, resp, 3),
        // Another request, then a record lost before its answer.
        rec(3, Direction::Ingress, req, 3),
        rec(4, Direction::Egress, resp, 4),
        // After the hole, a whole exchange again.
        rec(5, Direction::Ingress, req, 4),
        rec(6, Direction::Egress, resp, 4),
    ]);
    let exchanges: Vec<_> = events.iter().filter(|e| e.get("http").is_some()).collect();
    assert_eq!(exchanges.len(), 2, "{events:#?}");
}

#[test]
fn data_records_are_cut_to_their_valid_bytes() {
    let mut rec = data(meta(3, 1), Direction::Ingress, b"GET / HTTP/1.1\r\n\r\n");
    let valid = rec.len();
    // The kernel's record is longer than what it copied: other traffic sits behind it.
    rec.extend_from_slice(b"Authorization: Bearer someone-elses");
    assert_eq!(crate::capture::trimmed(&rec).len(), valid);
    // A record whose length says more than it holds is left for the decoder to refuse.
    let mut short = data(meta(3, 1), Direction::Ingress, b"abc");
    short.truncate(short.len() - 1);
    assert_eq!(crate::capture::trimmed(&short).len(), short.len());
    assert!(decode(&short).is_err());
    // Other kinds pass whole.
    let close = encode::close(&meta(3, 2));
    assert_eq!(crate::capture::trimmed(&close), &close[..]);
}
