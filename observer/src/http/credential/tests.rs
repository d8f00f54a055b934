use std::borrow::Cow;

use super::*;

fn headers<'a>(h: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a str, &'a [u8])> + Clone {
    h.iter().map(|(n, v)| (*n, v.as_bytes()))
}

fn raw(kind: CredentialKind, secret: &[u8]) -> Option<RawCredential> {
    Some(RawCredential::new(kind, secret))
}

#[test]
fn every_carrier_yields_the_secret_itself() {
    let n = CredentialNames::default();
    let key = "sk_live_4f9a";
    let from = |target: &str, h: &[(&str, &str)]| n.extract(target, headers(h)).unwrap();
    let carried = [
        from("/v1/items", &[("X-Api-Key", key)]),
        from("/v1/items", &[("Authorization", &format!("Bearer {key}"))]),
        from(&format!("/v1/items?api_key={key}"), &[]),
        from(
            "/v1/items",
            &[("Cookie", &format!("theme=dark; session={key}"))],
        ),
    ];
    let kinds: Vec<CredentialKind> = carried.iter().map(|c| c.kind).collect();
    use CredentialKind::*;
    assert_eq!(kinds, [ApiKey, Bearer, Query, Cookie]);
    assert!(carried.iter().all(|c| c.secret() == key.as_bytes()));
    // Basic's secret stays the decoded `user:password`.
    let basic = from("/", &[("Authorization", "Basic YWxpY2U6d29uZGVybGFuZA==")]);
    assert_eq!(basic, RawCredential::new(Basic, b"alice:wonderland"));
}

#[test]
fn the_explicit_carriers_win_in_order() {
    let n = CredentialNames::default();
    let all = [
        ("Cookie", "session=c"),
        ("X-API-Key", "h"),
        ("Authorization", "Bearer b"),
    ];
    let x = |target: &str, h: &[(&str, &str)]| n.extract(target, headers(h));
    assert_eq!(x("/?token=q", &all), raw(CredentialKind::Bearer, b"b"));
    assert_eq!(x("/?token=q", &all[..2]), raw(CredentialKind::ApiKey, b"h"));
    assert_eq!(x("/?token=q", &all[..1]), raw(CredentialKind::Query, b"q"));
    assert_eq!(x("/?theme=q", &all[..1]), raw(CredentialKind::Cookie, b"c"));
    assert_eq!(
        x("/", &[("Cookie", "theme=dark; SESSIONID=s3")]),
        raw(CredentialKind::Cookie, b"s3")
    );
    // Empty carriers carry nothing: the next one is read.
    let empty = [
        ("Authorization", "Bearer "),
        ("X-API-Key", "  "),
        ("Cookie", "session="),
    ];
    assert_eq!(
        x("/?api_key=&key=q", &empty),
        raw(CredentialKind::Query, b"q")
    );
    assert_eq!(x("/?api_key=", &empty), None);
    // Within a carrier, the first occurrence with a value wins.
    let two = [("X-API-Key", ""), ("x-api-key", " k1 "), ("Api-Key", "k2")];
    assert_eq!(x("/", &two), raw(CredentialKind::ApiKey, b"k1"));
    assert!(x("/", &[("Cookie", "theme=dark")]).is_none());
    assert!(x("/", &[]).is_none());
}

#[test]
fn query_parameters_are_decoded_as_servers_decode_them() {
    let n = CredentialNames::default();
    let q = |target: &str| n.query_credential(target).map(|c| c.secret().to_vec());
    assert_eq!(q("/x?api_key=a%2Bb%2F%3D"), Some(b"a+b/=".to_vec()));
    assert_eq!(q("/x?token=a+b"), Some(b"a b".to_vec()));
    // Names: percent-decoded, any case, `_` and `-` ignored.
    for name in [
        "api%5Fkey",
        "API-KEY",
        "ApiKey",
        "access_token",
        "accessToken",
        "Key",
    ] {
        assert_eq!(q(&format!("/x?{name}=v")), Some(b"v".to_vec()), "{name}");
    }
    // Repeated parameters: the first with a value wins.
    assert_eq!(q("/x?key=one&key=two"), Some(b"one".to_vec()));
    assert_eq!(q("/x?key=&key=two&token=three"), Some(b"two".to_vec()));
    // No value, no credential; other parameters and passwords are not credentials.
    for target in [
        "/x",
        "/x?",
        "/x?key",
        "/x?key=",
        "/x?&&=&",
        "/x?password=p&pwd=q&user=alice",
        "/x?monkey=v&keys=v",
        "/x#?key=frag",
        "/x?a=1#key=frag",
    ] {
        assert_eq!(q(target), None, "{target}");
    }
    // Malformed escapes stay as sent; absolute form and fragments are handled.
    assert_eq!(q("/x?key=%zz%4"), Some(b"%zz%4".to_vec()));
    assert_eq!(q("http://api.example/v1?token=t#f"), Some(b"t".to_vec()));
    assert_eq!(q("/x?a=%3F&key==v?"), Some(b"=v?".to_vec()));
}

#[test]
fn a_huge_value_is_kept_bounded_and_exact() {
    let n = CredentialNames::default();
    // Plain bytes: the first MAX_SECRET are kept.
    let value = "k".repeat(1 << 20);
    let c = n.query_credential(&format!("/?key={value}")).unwrap();
    assert_eq!(c.len(), MAX_SECRET);
    assert_eq!(
        c,
        RawCredential::new(CredentialKind::Query, value.as_bytes())
    );
    // Escapes cut by the decoded prefix still decode exactly, whatever the alignment.
    for lead in 0..3 {
        let encoded = "a".repeat(lead) + &"%41".repeat(MAX_SECRET * 2);
        let decoded = percent_decode(encoded.as_bytes());
        let c = n.query_credential(&format!("/?key={encoded}")).unwrap();
        assert_eq!(
            c,
            RawCredential::new(CredentialKind::Query, &decoded),
            "{lead}"
        );
    }
    // Headers and Basic are bounded the same way.
    let long = format!("Bearer {}", "t".repeat(100_000));
    let c = n
        .extract("/", headers(&[("Authorization", &long)]))
        .unwrap();
    assert_eq!(c.len(), MAX_SECRET);
}

#[test]
fn credential_query_values_are_redacted_from_the_target() {
    let n = CredentialNames::default();
    let r = |t: &str| n.redact_query_credentials(t).into_owned();
    assert_eq!(
        r("/v1/items?page=2&API-Key=sk%2Dlive&token=&key&q=a+b#frag"),
        "/v1/items?page=2&API-Key=REDACTED&token=&key&q=a+b#frag"
    );
    assert_eq!(
        r("/?key=one&key=two&x_api_key=three"),
        "/?key=REDACTED&key=REDACTED&x_api_key=REDACTED"
    );
    // Nothing to hide: the target is borrowed as it was.
    for t in [
        "/v1/items",
        "/v1/items?page=2&sort=asc",
        "/?password=p",
        "/?",
    ] {
        assert!(matches!(n.redact_query_credentials(t), Cow::Borrowed(s) if s == t));
    }
    // Configured names are redacted too, as the credentials they are.
    let custom = CredentialNames {
        query_params: vec![norm(b"sig_v2")],
        ..CredentialNames::default()
    };
    assert_eq!(
        custom.redact_query_credentials("/a?SIG-V2=s&key=k"),
        "/a?SIG-V2=REDACTED&key=k"
    );
    assert_eq!(
        custom.query_credential("/a?key=k&sig_v2=s"),
        raw(CredentialKind::Query, b"s")
    );
}

#[test]
fn kinds_read_back_from_their_names() {
    use CredentialKind::*;
    for k in [Basic, Bearer, ApiKey, Query, Cookie, Other] {
        assert_eq!(CredentialKind::parse(k.as_str()), Some(k));
    }
    assert_eq!(CredentialKind::parse("header"), None);
}

#[test]
fn debug_never_shows_the_secret() {
    let raw = RawCredential::new(CredentialKind::ApiKey, b"sk-live-very-secret");
    assert!(!format!("{raw:?}").contains("secret"));
}

#[test]
fn a_parsed_request_carries_the_query_credential_and_a_redacted_target() {
    use crate::http::{HttpConn, Side};
    let names = CredentialNames {
        query_params: vec![norm(b"sig_v2"), norm(b"key")],
        ..CredentialNames::default()
    };
    let mut c = HttpConn::with_names(std::sync::Arc::new(names));
    let mut out = Vec::new();
    let req = b"GET /v1/items?page=2&Sig-V2=s%2F3cr3t&key=other HTTP/1.1\r\nHost: a\r\n\r\n";
    c.on_data(Side::Request, req, req.len() as u64, 1, &mut out);
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    c.on_data(Side::Response, resp, resp.len() as u64, 2, &mut out);
    let x = out.pop().expect("one exchange");
    assert_eq!(x.request.credential, raw(CredentialKind::Query, b"s/3cr3t"));
    assert_eq!(
        x.request.target.value,
        "/v1/items?page=2&Sig-V2=REDACTED&key=REDACTED"
    );
}
