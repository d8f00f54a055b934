//! Trusted proxies and forwarding headers: CIDR blocks, both headers' syntax, and the client a
//! chain names, on hand-written and generated values.

use super::*;

fn trusted(list: &[&str]) -> TrustedProxies {
    let mut t = TrustedProxies::default();
    for v in list {
        t.add(v).unwrap();
    }
    t
}

fn headers(xff: &[&str], fwd: &[&str]) -> ForwardedHeaders {
    let mut h = ForwardedHeaders::default();
    for v in xff {
        h.note("X-Forwarded-For", v.as_bytes());
    }
    for v in fwd {
        h.note("forwarded", v.as_bytes());
    }
    h
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The client's address (and port) the headers name behind `proxies`, or what stopped them.
fn client(h: &ForwardedHeaders, proxies: &[&str]) -> (Option<String>, Option<Stop>) {
    let r = resolve(h, &trusted(proxies)).expect("a forwarding header");
    let c = r.client.map(|c| match c {
        ClientId::Addr { ip, port: None } => ip.to_string(),
        ClientId::Addr { ip, port: Some(p) } => format!("{ip} port {p}"),
        ClientId::Obfuscated(id) => id,
    });
    (c, r.stop)
}

fn named(s: &str) -> (Option<String>, Option<Stop>) {
    (Some(s.to_string()), None)
}

#[test]
fn cidr_blocks_and_bare_addresses() {
    let c: Cidr = "10.1.2.3/8".parse().unwrap();
    assert_eq!(c.to_string(), "10.0.0.0/8", "host bits are cleared");
    assert!(c.contains(ip("10.255.0.1")));
    assert!(!c.contains(ip("11.0.0.1")));
    assert!(
        c.contains(ip("::ffff:10.9.9.9")),
        "IPv4-mapped IPv6 is IPv4"
    );
    let one: Cidr = "127.0.0.1".parse().unwrap();
    assert_eq!(one.to_string(), "127.0.0.1/32");
    assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
    let v6: Cidr = "fd00::/8".parse().unwrap();
    assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
    assert!(!v6.contains(ip("10.0.0.1")));
    let host6: Cidr = "::1".parse().unwrap();
    assert_eq!(host6.to_string(), "::1/128");
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::1")));
    let all6: Cidr = "::/0".parse().unwrap();
    assert!(all6.contains(ip("2001:db8::1")));
    assert_eq!(
        " 192.0.2.0/24 ".parse::<Cidr>().unwrap().to_string(),
        "192.0.2.0/24"
    );
}

#[test]
fn bad_cidrs_are_named_in_the_error() {
    for bad in [
        "",
        "/8",
        "10.0.0.0/",
        "10.0.0/8",
        "10.0.0.0/x",
        "10.0.0.0/-1",
        "localhost",
        "10.0.0.0/8/8",
        "fe80::1%eth0",
        "10.0.0.0/0008",
    ] {
        let e = bad.parse::<Cidr>().unwrap_err();
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
    }
    assert_eq!(
        "10.0.0.0/33".parse::<Cidr>().unwrap_err(),
        CidrError::Prefix {
            value: "10.0.0.0/33".into(),
            prefix: 33,
            max: 32
        }
    );
    assert!(
        "::/129"
            .parse::<Cidr>()
            .unwrap_err()
            .to_string()
            .contains("128 bits")
    );
    let mut t = TrustedProxies::default();
    t.add("unix").unwrap();
    assert!(t.unix && t.blocks.is_empty() && !t.is_empty());
}

#[test]
fn x_forwarded_for_right_most_untrusted() {
    let p = ["127.0.0.1", "10.0.0.0/8"];
    assert_eq!(
        client(&headers(&["203.0.113.7"], &[]), &p),
        named("203.0.113.7")
    );
    // A forged left part changes nothing: the proxies' hops are read from the right.
    let h = headers(&["10.9.9.9, 198.51.100.2, 10.0.0.5"], &[]);
    assert_eq!(client(&h, &p), named("198.51.100.2"));
    // Several headers are one list, in order.
    let h = headers(&["10.9.9.9", "198.51.100.2", "10.1.1.1"], &[]);
    assert_eq!(client(&h, &p), named("198.51.100.2"));
    let h = headers(&["2001:db8::7, ::1"], &[]);
    assert_eq!(client(&h, &["::1"]), named("2001:db8::7"));
    let h = headers(&["[2001:db8::7]:4711", "192.0.2.1:80"], &[]);
    assert_eq!(client(&h, &["192.0.2.1"]), named("2001:db8::7 port 4711"));
    let h = headers(&["::ffff:192.0.2.9"], &[]);
    assert_eq!(client(&h, &[]), named("192.0.2.9"), "IPv4-mapped as IPv4");
    // Empty list elements are allowed and skipped.
    let h = headers(&[" , 192.0.2.3 ,, ", ""], &[]);
    assert_eq!(client(&h, &[]), named("192.0.2.3"));
}

#[test]
fn every_hop_trusted_names_the_left_most() {
    let h = headers(&["10.0.0.9, 10.0.0.8"], &[]);
    let (c, stop) = client(&h, &["10.0.0.0/8"]);
    assert_eq!(c.as_deref(), Some("10.0.0.9"));
    assert_eq!(stop, Some(Stop::AllTrusted));
    let r = resolve(&h, &trusted(&["10.0.0.0/8"])).unwrap();
    assert_eq!((r.header, r.hops), (Header::XForwardedFor, 2));
}

#[test]
fn a_non_address_stops_the_chain_at_the_trusted_hop_before_it() {
    let p = ["10.0.0.0/8"];
    for bad in [
        "bogus",
        "300.1.1.1",
        "\"192.0.2.1\"",
        "192.0.2.1:99999",
        "[::1",
        "_hidden",
    ] {
        let h = headers(&[&format!("198.51.100.1, {bad}, 10.0.0.2")], &[]);
        assert_eq!(
            client(&h, &p),
            (Some("10.0.0.2".into()), Some(Stop::Malformed)),
            "{bad}"
        );
    }
    let h = headers(&["198.51.100.1, unknown, 10.0.0.2"], &[]);
    assert_eq!(
        client(&h, &p),
        (Some("10.0.0.2".into()), Some(Stop::Unknown))
    );
    // Nothing usable at all: the client is the peer, and the stop says why.
    assert_eq!(
        client(&headers(&["garbage"], &[]), &p),
        (None, Some(Stop::Malformed))
    );
    // Past the right-most untrusted address nothing is read, garbage or not.
    let h = headers(&["garbage, 198.51.100.1, 10.0.0.2"], &[]);
    assert_eq!(client(&h, &p), named("198.51.100.1"));
}

#[test]
fn forwarded_elements_quotes_ports_and_obfuscated_names() {
    let p = ["127.0.0.1", "::1"];
    let one = |v: &str| client(&headers(&[], &[v]), &p);
    assert_eq!(
        one("for=192.0.2.60;proto=http;by=203.0.113.43"),
        named("192.0.2.60")
    );
    assert_eq!(
        one("For=\"[2001:db8:cafe::17]:4711\""),
        named("2001:db8:cafe::17 port 4711")
    );
    assert_eq!(
        one("for=\"[2001:db8:cafe::17]\""),
        named("2001:db8:cafe::17")
    );
    assert_eq!(
        one("for=\"192.0.2.43:47011\""),
        named("192.0.2.43 port 47011")
    );
    assert_eq!(one("for=\"192.0.2.43:_port\""), named("192.0.2.43"));
    assert_eq!(one("for=\"[2001:db8::1]:_p\""), named("2001:db8::1"));
    assert_eq!(one("for=_hidden, for=127.0.0.1"), named("_hidden"));
    assert_eq!(one("for=\"_SEVKISEK:_x\""), named("_SEVKISEK"));
    // Several elements and headers, right-most first; a comma inside quotes splits nothing.
    assert_eq!(
        one("for=192.0.2.43, for=\"[2001:db8:cafe::17]\";by=\"x,y\", for=127.0.0.1"),
        named("2001:db8:cafe::17")
    );
    let h = headers(&[], &["for=198.51.100.17", "for=127.0.0.1;proto=https"]);
    assert_eq!(client(&h, &p), named("198.51.100.17"));
    // Escapes inside quoted strings.
    assert_eq!(one("for=\"\\192.0.2.5\""), named("192.0.2.5"));
    assert_eq!(
        one("for=198.51.100.1;by=\"a\\\"b\", for=127.0.0.1"),
        named("198.51.100.1")
    );
    // Unknown, no `for`, and malformed elements stop the chain.
    assert_eq!(
        one("for=unknown, for=127.0.0.1"),
        (Some("127.0.0.1".into()), Some(Stop::Unknown))
    );
    assert_eq!(one("proto=https;by=_x"), (None, Some(Stop::Unknown)));
    for bad in [
        "for=2001:db8::1", // IPv6 must be bracketed (and quoted)
        "for=\"[2001:db8::1]",
        "for=\"192.0.2.1", // unterminated: swallows what follows
        "for=192.0.2.1;for=192.0.2.2",
        "for",
        "for=\"_bad name\"",
        "for=_",
        "for=\"[::1]:http\"",
        "for=a\"b",
    ] {
        assert_eq!(one(bad), (None, Some(Stop::Malformed)), "{bad}");
    }
    // An unterminated quote cannot hide the trusted proxy's own element behind a forged one.
    let h = headers(&[], &["for=\"10.9.9.9, for=127.0.0.1"]);
    assert_eq!(client(&h, &p).0, None);
}

#[test]
fn x_forwarded_for_wins_over_forwarded() {
    let h = headers(&["198.51.100.1"], &["for=192.0.2.1"]);
    let r = resolve(&h, &trusted(&[])).unwrap();
    assert_eq!(r.header, Header::XForwardedFor);
    assert_eq!(
        r.client,
        Some(ClientId::Addr {
            ip: ip("198.51.100.1"),
            port: None
        })
    );
    assert_eq!(resolve(&ForwardedHeaders::default(), &trusted(&[])), None);
    assert_eq!(resolve(&headers(&[" , ,"], &[]), &trusted(&[])), None);
    let h = headers(&[], &["for=192.0.2.1"]);
    assert_eq!(
        resolve(&h, &trusted(&[])).unwrap().header,
        Header::Forwarded
    );
}

#[test]
fn long_chains_are_bounded_and_read_from_their_right_end() {
    // A huge forged left part: the kept tail still holds the proxy's hop and the client.
    let forged = "10.9.9.9, ".repeat(10_000);
    let h = headers(&[&format!("{forged}198.51.100.4, 127.0.0.1")], &[]);
    assert!(h.x_forwarded_for.bytes.len() <= MAX_FORWARDED);
    assert!(h.x_forwarded_for.cut);
    assert_eq!(client(&h, &["127.0.0.1"]), named("198.51.100.4"));
    // Many headers, each appended: still bounded.
    let mut h = ForwardedHeaders::default();
    for _ in 0..10_000 {
        h.note("x-forwarded-for", b"127.0.0.1");
    }
    assert!(h.x_forwarded_for.bytes.len() <= MAX_FORWARDED);
    let (c, stop) = client(&h, &["127.0.0.1"]);
    assert_eq!(
        (c.as_deref(), stop),
        (Some("127.0.0.1"), Some(Stop::TooLong))
    );
    // More trusted hops than observer reads.
    let chain = vec!["10.0.0.1"; MAX_HOPS + 5].join(", ");
    let h = headers(&[&chain], &[]);
    let r = resolve(&h, &trusted(&["10.0.0.0/8"])).unwrap();
    assert_eq!((r.hops, r.stop), (MAX_HOPS, Some(Stop::TooLong)));
    // Exactly MAX_HOPS trusted hops: all read, none left.
    let chain = vec!["10.0.0.1"; MAX_HOPS].join(", ");
    let r = resolve(&headers(&[&chain], &[]), &trusted(&["10.0.0.0/8"])).unwrap();
    assert_eq!(r.stop, Some(Stop::AllTrusted));
    // A cut Forwarded chain whose fragment would be reached: too long, never a forged name.
    let forged = format!("for=\"{}", "x".repeat(5000));
    let h = headers(&[], &[&forged, "for=127.0.0.1"]);
    assert!(h.forwarded.bytes.len() <= MAX_FORWARDED);
    assert_eq!(
        client(&h, &["127.0.0.1"]),
        (Some("127.0.0.1".into()), Some(Stop::TooLong))
    );
}

/// A small deterministic generator (xorshift), so the test needs no seed handling.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn arbitrary_bytes_never_panic_and_stay_bounded() {
    let alphabet = b"0123456789abcdef:.[]\"\\,;= _-forFORunknown\t\xff\x00";
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let proxies = trusted(&["0.0.0.0/1", "::/1"]);
    let mut resolved = 0;
    for _ in 0..20_000 {
        let len = (g.next() % 300) as usize;
        let v: Vec<u8> = (0..len)
            .map(|_| alphabet[(g.next() % alphabet.len() as u64) as usize])
            .collect();
        let mut h = ForwardedHeaders::default();
        h.note("x-forwarded-for", &v);
        h.note("forwarded", &v);
        if let Some(r) = resolve(&h, &proxies) {
            assert!(r.hops <= MAX_HOPS);
            resolved += 1;
        }
        let mut f = ForwardedHeaders::default();
        f.note("forwarded", &v);
        if let Some(r) = resolve(&f, &proxies) {
            assert!(r.hops <= MAX_HOPS);
        }
    }
    assert!(resolved > 10_000, "{resolved}");
}

#[test]
fn only_requests_with_forwarding_headers_keep_anything() {
    let plain: [(&str, &[u8]); 2] = [("Host", b"api"), ("X-Forwarded-Host", b"evil")];
    assert_eq!(ForwardedHeaders::from_headers(plain.into_iter()), None);
    let both: [(&str, &[u8]); 3] = [
        ("x-forwarded-FOR", b"192.0.2.1"),
        ("Host", b"api"),
        ("FORWARDED", b"for=192.0.2.2"),
    ];
    let h = ForwardedHeaders::from_headers(both.into_iter()).unwrap();
    assert_eq!(h.x_forwarded_for.bytes, b"192.0.2.1");
    assert_eq!(h.forwarded.bytes, b"for=192.0.2.2");
}
