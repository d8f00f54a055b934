//! HTTP/2 through the kernel path and the TLS probes: Debian's nginx (`listen ... ssl http2`,
//! and h2c) with curl and h2load as clients, Node.js's `http2` module over its own OpenSSL and in
//! cleartext. Each stream is one exchange with the same fields as HTTP/1.1; a connection opened
//! before observer started is followed from its next streams without inventing what HPACK's
//! dynamic table held before.

use std::process::Command;

use observer_tests::{
    Cert, Finished, H2JoinClient, NGINX_H2_PRIVATE, NGINX_H2_USER, Observer, Recording, Server,
    Transfer, curl_many, fingerprint, nghttp, require_root,
};
use serde_json::Value;

/// The flag an exchange carries when some of its fields could not be known (a header block
/// that refers to a dynamic-table entry made before observer joined the connection).
const INCOMPLETE: &str = "observer.incomplete";

/// The name every curl request here gives as `:authority` (resolved to 127.0.0.1).
const DOMAIN: &str = "api.test";

const WRONG_1: &str = "alice:wrong-7a1";
const WRONG_2: &str = "alice:wrong-7a2";
const WRONG_3: &str = "bob:wrong-7a3";
const BEARER: &str = "h2-token-3c9d";

fn field<'a>(e: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(e, |v, k| &v[k])
}

fn b64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One curl process over one HTTP/2 connection to `server` (ALPN h2 over TLS, prior knowledge
/// in cleartext), one transfer per `(options, path)`, every URL naming [`DOMAIN`].
fn curl_h2(server: &Server, reqs: &[(&[&str], &str)]) -> Vec<Transfer> {
    let resolve = format!("{DOMAIN}:{}:127.0.0.1", server.port);
    let scheme = if server.tls { "https" } else { "http" };
    let urls: Vec<String> = reqs
        .iter()
        .map(|(_, p)| format!("{scheme}://{DOMAIN}:{}{p}", server.port))
        .collect();
    let version = if server.tls {
        "--http2"
    } else {
        "--http2-prior-knowledge"
    };
    let args: Vec<Vec<&str>> = reqs
        .iter()
        .zip(&urls)
        .map(|((opts, _), url)| {
            let mut a = vec![version, "-k", "--resolve", &resolve];
            a.extend_from_slice(opts);
            a.push(url);
            a
        })
        .collect();
    let refs: Vec<&[&str]> = args.iter().map(|a| a.as_slice()).collect();
    let sent = curl_many(&refs);
    // One connection: curl reused it for every transfer.
    assert!(
        sent.windows(2).all(|w| w[0].local_port == w[1].local_port),
        "{sent:?}"
    );
    sent
}

/// What one request of a test was meant to be and be answered with.
struct Want {
    method: &'static str,
    path: &'static str,
    status: u16,
    action: &'static str,
    /// `(observer.credential.type, fingerprint)`.
    credential: Option<(&'static str, String)>,
}

/// Checks each exchange against what curl sent and saw, and what it was meant to be.
fn assert_h2_exchanges(ex: &[&Value], sent: &[Transfer], want: &[Want], server: &Server) {
    assert_eq!(ex.len(), want.len());
    for ((e, t), w) in ex.iter().zip(sent).zip(want) {
        assert_eq!(field(e, "http.version"), "2", "{e}");
        assert_eq!(field(e, "http.request.method"), w.method, "{e}");
        assert_eq!(field(e, "url.path"), w.path, "{e}");
        assert_eq!(field(e, "url.domain"), DOMAIN, "from :authority: {e}");
        assert_eq!(t.status, w.status, "the server answered as meant: {t:?}");
        assert_eq!(field(e, "http.response.status_code"), w.status, "{e}");
        assert_eq!(field(e, "event.action"), w.action, "{e}");
        // Bodies exactly; the stream's frame bytes, frame headers included, at least one
        // 9-byte frame header more than the body.
        let body = field(e, "http.response.body.bytes").as_u64();
        assert_eq!(body, Some(t.download_bytes), "response body: {e}");
        let req_body = field(e, "http.request.body.bytes").as_u64();
        assert_eq!(req_body, Some(t.upload_bytes), "request body: {e}");
        let resp = field(e, "http.response.bytes").as_u64().unwrap_or(0);
        assert!(resp >= t.download_bytes + 9, "response bytes {resp}: {e}");
        let req = field(e, "http.request.bytes").as_u64().unwrap_or(0);
        assert!(req >= t.upload_bytes + 9, "request bytes {req}: {e}");
        assert_eq!(field(e, "source.ip"), "127.0.0.1");
        assert_eq!(field(e, "source.port"), t.local_port, "{e}");
        assert_eq!(field(e, "destination.port"), server.port, "{e}");
        assert_eq!(field(e, "observer.role"), "server", "{e}");
        assert_eq!(e.get("tls").is_some(), server.tls, "{e}");
        if server.tls {
            assert_eq!(field(e, "tls.established"), true, "{e}");
        }
        let ua = field(e, "user_agent.original").as_str().unwrap_or("");
        assert!(ua.starts_with("curl/"), "user agent: {e}");
        match &w.credential {
            Some((kind, fp)) => {
                assert_eq!(field(e, "observer.credential.type"), *kind, "{e}");
                assert_eq!(
                    field(e, "observer.credential.fingerprint"),
                    fp.as_str(),
                    "{e}"
                );
            }
            None => assert!(field(e, "observer.credential").is_null(), "{e}"),
        }
        assert!(field(e, INCOMPLETE).is_null(), "{e}");
    }
    let conns: Vec<&Value> = ex
        .iter()
        .map(|e| field(e, "observer.connection_id"))
        .collect();
    assert!(conns.windows(2).all(|w| w[0] == w[1]), "{conns:?}");
}

fn actions(f: &Finished, action: &str) -> usize {
    f.exchanges()
        .iter()
        .filter(|e| field(e, "event.action") == action)
        .count()
}

#[test]
fn nginx_h2_over_tls_six_requests_on_one_connection() {
    require_root();
    let cert = Cert::new();
    let nginx = Server::nginx_h2(&cert);
    // Recorded too: the replay of an HTTP/2 capture must give the live run's events.
    let rec = Recording::new("h2-replay");
    let obs = Observer::start(&rec.run_args(nginx.pid()));
    let key = rec.key.clone();
    let bearer = format!("Authorization: Bearer {BEARER}");
    let item = "{\"name\":\"widget\",\"count\":3}";
    let reqs: &[(&[&str], &str)] = &[
        (&["-u", NGINX_H2_USER], "/private/data.json"),
        (&["-u", WRONG_1], "/private/data.json"),
        (&["-H", &bearer, "-d", item], "/items"),
        (&["-u", WRONG_2], "/private/data.json"),
        (&[], "/admin"),
        (&["-u", WRONG_3], "/private/data.json"),
    ];
    let sent = curl_h2(&nginx, reqs);
    let basic = |s: &str| Some(("basic", fingerprint(&key, Some("basic"), s)));
    let want = [
        Want {
            method: "GET",
            path: "/private/data.json",
            status: 200,
            action: "http_request",
            credential: basic(NGINX_H2_USER),
        },
        Want {
            method: "GET",
            path: "/private/data.json",
            status: 401,
            action: "authn_login_fail",
            credential: basic(WRONG_1),
        },
        Want {
            method: "POST",
            path: "/items",
            status: 200,
            action: "http_request",
            credential: Some((
                "bearer",
                fingerprint(&key, None, &format!("Bearer {BEARER}\n")),
            )),
        },
        Want {
            method: "GET",
            path: "/private/data.json",
            status: 401,
            action: "authn_login_fail",
            credential: basic(WRONG_2),
        },
        Want {
            method: "GET",
            path: "/admin",
            status: 403,
            action: "authz_fail",
            credential: None,
        },
        Want {
            method: "GET",
            path: "/private/data.json",
            status: 401,
            action: "authn_login_fail",
            credential: basic(WRONG_3),
        },
    ];
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let ex = f.exchanges();
    assert_eq!(ex.len(), 6, "{}\n{}", f.lines.join("\n"), f.stderr);
    assert_h2_exchanges(&ex, &sent, &want, &nginx);
    assert_eq!(actions(&f, "authn_login_fail"), 3);
    assert!(ex.iter().all(|e| field(e, "process.name") == "nginx"));
    assert_eq!(sent[0].download_bytes, NGINX_H2_PRIVATE.len() as u64);
    assert_eq!(sent[2].upload_bytes, item.len() as u64);
    f.assert_no_secrets(&[
        BEARER,
        "wonderland",
        &b64(NGINX_H2_USER),
        "wrong-7a",
        &b64(WRONG_1),
        &b64(WRONG_2),
        &b64(WRONG_3),
    ]);
    rec.assert_replay_matches(&[], &f);
}

#[test]
fn h2load_ten_thousand_requests_all_reported_without_loss() {
    require_root();
    let cert = Cert::new();
    let nginx = Server::nginx_h2(&cert);
    let obs = Observer::for_pids(&[nginx.pid()]);
    let out = Command::new("h2load")
        .args(["-n", "10000", "-c", "4", "-m", "10"])
        .arg(nginx.url("/json"))
        .output()
        .expect("running h2load (apt-get install nghttp2-client)");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "h2load: {report}");
    assert!(
        report.contains("10000 succeeded, 0 failed") && report.contains("10000 2xx"),
        "h2load: {report}"
    );
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let losses: Vec<&Value> = f
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "loss")
        .collect();
    assert!(losses.is_empty(), "loss lines: {losses:?}");
    let last = f.events.last().expect("some output");
    assert_eq!(last["event"]["action"], "sys_shutdown", "{last}");
    let kernel = &last["observer"]["stats"]["kernel_losses"];
    assert!(
        kernel
            .as_object()
            .is_some_and(|m| m.values().all(|v| v == 0)),
        "kernel losses: {kernel}"
    );
    let ex = f.exchanges();
    assert_eq!(ex.len(), 10_000, "every stream reported: {}", f.stderr);
    for e in &ex {
        assert_eq!(field(e, "http.version"), "2", "{e}");
        assert_eq!(field(e, "url.path"), "/json", "{e}");
        assert_eq!(field(e, "http.response.status_code"), 200, "{e}");
        assert_eq!(field(e, "http.response.body.bytes"), 11, "{e}");
        assert_eq!(field(e, "tls.established"), true, "{e}");
    }
    let mut conns: Vec<String> = ex
        .iter()
        .map(|e| field(e, "observer.connection_id").to_string())
        .collect();
    conns.sort_unstable();
    conns.dedup();
    assert_eq!(conns.len(), 4, "h2load's four connections: {conns:?}");
}

#[test]
fn brute_force_over_cleartext_http2_raises_the_alert() {
    require_root();
    // h2c, prior knowledge: the kernel path without the TLS probes.
    let nginx = Server::nginx_h2c();
    let obs = Observer::for_pids(&[nginx.pid()]);
    // Two connections (one nghttp process each), four attempts at once on each: the count is
    // the source's, not the connection's, and streams interleave.
    let wrong = ["alice:guess-one", "alice:guess-two"];
    let paths: Vec<String> = (0..8)
        .map(|i| format!("/private/data.json?try={i}"))
        .collect();
    for (password, tries) in wrong.iter().zip(paths.chunks(4)) {
        let auth = format!("authorization: Basic {}", b64(password));
        let tries: Vec<&str> = tries.iter().map(String::as_str).collect();
        assert_eq!(nghttp(&nginx, &[&auth], &tries), [401; 4]);
    }
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let ex = f.exchanges();
    assert_eq!(ex.len(), 8, "{}\n{}", f.lines.join("\n"), f.stderr);
    assert!(ex.iter().all(|e| field(e, "http.version") == "2"));
    assert!(ex.iter().all(|e| e.get("tls").is_none()));
    assert!(
        ex.iter()
            .all(|e| field(e, "url.path") == "/private/data.json")
    );
    let mut tries: Vec<&str> = ex
        .iter()
        .filter_map(|e| field(e, "url.query").as_str())
        .collect();
    tries.sort_unstable();
    assert_eq!(
        tries,
        (0..8).map(|i| format!("try={i}")).collect::<Vec<_>>()
    );
    let mut conns: Vec<String> = ex
        .iter()
        .map(|e| field(e, "observer.connection_id").to_string())
        .collect();
    conns.sort_unstable();
    conns.dedup();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert_eq!(actions(&f, "authn_login_fail"), 8);
    let bf = f.alerts("brute_force");
    assert_eq!(
        bf.len(),
        1,
        "one alert, the rest suppressed:\n{}",
        f.lines.join("\n")
    );
    assert_eq!(field(bf[0], "event.action"), "authn_login_fail_max");
    assert_eq!(field(bf[0], "source.ip"), "127.0.0.1");
    assert_eq!(field(bf[0], "observer.alert.count"), 5);
    f.assert_no_secrets(&[&b64(wrong[0]), &b64(wrong[1]), "guess-"]);
}

#[test]
fn node_h2_over_its_own_openssl() {
    require_root();
    let cert = Cert::new();
    let node = Server::node_h2(Some(&cert));
    let obs = Observer::for_pids(&[node.pid()]);
    let key = obs.key_file();
    let payload = "{\"q\":\"status\"}";
    let reqs: &[(&[&str], &str)] = &[
        (&[], "/health"),
        (&["-u", WRONG_1], "/login"),
        (&["-d", payload], "/health"),
        (&[], "/admin"),
    ];
    let sent = curl_h2(&node, reqs);
    let want = [
        Want {
            method: "GET",
            path: "/health",
            status: 200,
            action: "http_request",
            credential: None,
        },
        Want {
            method: "GET",
            path: "/login",
            status: 401,
            action: "authn_login_fail",
            credential: Some(("basic", fingerprint(&key, Some("basic"), WRONG_1))),
        },
        Want {
            method: "POST",
            path: "/health",
            status: 200,
            action: "http_request",
            credential: None,
        },
        Want {
            method: "GET",
            path: "/admin",
            status: 403,
            action: "authz_fail",
            credential: None,
        },
    ];
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let ex = f.exchanges();
    assert_eq!(ex.len(), 4, "{}\n{}", f.lines.join("\n"), f.stderr);
    assert_h2_exchanges(&ex, &sent, &want, &node);
    assert!(
        ex.iter().all(|e| field(e, "process.name") == "node"),
        "{ex:?}"
    );
    assert_eq!(sent[2].upload_bytes, payload.len() as u64);
    f.assert_no_secrets(&["wrong-7a", &b64(WRONG_1)]);
}

/// A connection opened before observer: two requests made the client's HPACK encoder (nghttp2)
/// add `:authority`, `user-agent` and `x-tenant` to its dynamic table, and the server's add
/// `:status 401`; the three requests after the start refer to those entries by index (as the
/// client's frames, decoded by hand, show). Their paths (never indexed by nghttp2), methods,
/// `:status 200` (static table) and the `authorization` (sent never-indexed) are known; what an
/// index stood for is not, and must be neither guessed nor left out silently.
#[test]
fn a_connection_opened_before_observer_reports_later_streams_inventing_nothing() {
    require_root();
    let node = Server::node_h2(None);
    let first = ["/before/1", "/login"];
    let second = ["/after/1", "/login", "/after/3"];
    let mut client = H2JoinClient::start(&node, DOMAIN, &first, &second);
    let before = client.replies();
    assert_eq!(
        before.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 401]
    );
    let obs = Observer::for_pids(&[node.pid()]);
    let fp = fingerprint(
        &obs.key_file(),
        None,
        &format!("{}\n", H2JoinClient::AUTHORIZATION),
    );
    let after = client.second_phase();
    assert_eq!(
        after.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 401, 200]
    );
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let ex = f.exchanges();
    assert_eq!(
        ex.len(),
        3,
        "the streams after the start: {}\n{}",
        f.lines.join("\n"),
        f.stderr
    );
    for (e, reply) in ex.iter().zip(&after) {
        // Sent as literals: known.
        assert_eq!(field(e, "http.version"), "2", "{e}");
        assert_eq!(field(e, "url.path"), reply.path.as_str(), "{e}");
        assert_eq!(field(e, "http.request.method"), "GET", "{e}");
        assert_eq!(field(e, "observer.credential.type"), "bearer", "{e}");
        assert_eq!(
            field(e, "observer.credential.fingerprint"),
            fp.as_str(),
            "{e}"
        );
        assert_eq!(
            field(e, "http.response.body.bytes"),
            reply.body_bytes,
            "{e}"
        );
        // Referred to entries from before the join: the value sent, or nothing and the flag.
        let mut unknown = false;
        for (path, sent) in [
            ("url.domain", Value::from(DOMAIN)),
            ("user_agent.original", Value::from(H2JoinClient::USER_AGENT)),
            ("http.response.status_code", Value::from(reply.status)),
        ] {
            match field(e, path) {
                Value::Null => unknown = true,
                got => assert_eq!(got, &sent, "{path} invented: {e}"),
            }
        }
        if reply.status == 200 {
            assert_eq!(
                field(e, "http.response.status_code"),
                200,
                "static :status: {e}"
            );
        }
        assert!(
            unknown,
            ":authority was an index into the lost table, yet known: {e}"
        );
        assert_eq!(
            field(e, INCOMPLETE),
            true,
            "fields unknown, not flagged: {e}"
        );
    }
    let conns: Vec<&Value> = ex
        .iter()
        .map(|e| field(e, "observer.connection_id"))
        .collect();
    assert!(conns.windows(2).all(|w| w[0] == w[1]), "{conns:?}");
    // Nothing of the streams before the start, nor of the headers observer never reports.
    assert!(
        !f.lines.iter().any(|l| l.contains("/before/")),
        "{}",
        f.lines.join("\n")
    );
    f.assert_no_secrets(&["join-token-5b1e", H2JoinClient::TENANT]);
}
