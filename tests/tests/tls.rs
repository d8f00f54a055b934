//! HTTPS through the OpenSSL probes: nginx and Python (libssl), Node.js (OpenSSL linked in and
//! exported, driven through memory buffers), curl as a client; the same events as plaintext.
//! A target whose TLS cannot be hooked is reported, never silently missed.

use std::process::Command;

use observer_tests::{
    Cert, Cgroup, Observer, Recording, Server, Transfer, curl_paths as transfers, require_root,
};
use serde_json::Value;

fn field<'a>(e: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(e, |v, k| &v[k])
}

/// Checks each exchange against what curl saw of the same transfer.
fn assert_matches_curl(ex: &[&Value], sent: &[Transfer], server: &Server, tls: bool) {
    assert_eq!(ex.len(), sent.len());
    for (e, t) in ex.iter().zip(sent) {
        assert_eq!(field(e, "http.response.status_code"), t.status, "{e}");
        assert_eq!(field(e, "http.response.bytes"), t.response_bytes, "{e}");
        // curl's size_request counts the body only when it went out with the head.
        let req = field(e, "http.request.bytes").as_u64().unwrap();
        assert!(
            req == t.request_size || req == t.request_size + t.upload_bytes,
            "request bytes {req}, curl {t:?}"
        );
        assert_eq!(field(e, "http.request.body.bytes"), t.upload_bytes, "{e}");
        assert_eq!(field(e, "source.ip"), "127.0.0.1");
        assert_eq!(field(e, "source.port"), t.local_port, "{e}");
        assert_eq!(field(e, "destination.port"), server.port, "{e}");
        assert_eq!(field(e, "observer.role"), "server");
        assert_eq!(e.get("tls").is_some(), tls, "{e}");
        if tls {
            assert_eq!(field(e, "tls.established"), true);
        }
    }
    // Keep-alive: one connection for all of them.
    let conns: Vec<&Value> = ex
        .iter()
        .map(|e| field(e, "observer.connection_id"))
        .collect();
    assert!(conns.windows(2).all(|w| w[0] == w[1]), "{conns:?}");
}

const WRONG: &[&str] = &["-u", "alice:wrong"];
const BEARER: &[&str] = &["-H", "Authorization: Bearer demo-token"];
const LOGIN: &[&str] = &["-d", "{\"user\":\"alice\",\"password\":\"nope\"}"];

#[test]
fn python_https_exchanges_equal_their_plaintext_twins() {
    require_root();
    let cert = Cert::new();
    let plain = Server::api();
    let https = Server::api_tls(&cert);
    let obs = Observer::for_pids(&[plain.pid(), https.pid()]);
    let reqs: &[(&[&str], &str)] = &[
        (&[], "/health"),
        (WRONG, "/api/items?token=s3cr3t"),
        (BEARER, "/api/items"),
        (LOGIN, "/login"),
    ];
    let sent_plain = transfers(&plain, reqs);
    let sent_tls = transfers(&https, reqs);
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    f.assert_no_secrets(&["s3cr3t", "demo-token", "nope", "YWxpY2U6d3Jvbmc"]);
    let ex = f.exchanges();
    let of = |port: u16| -> Vec<&Value> {
        ex.iter()
            .copied()
            .filter(|e| field(e, "destination.port") == port)
            .collect()
    };
    let (p, t) = (of(plain.port), of(https.port));
    assert_eq!(t.len(), 4, "{}", f.lines.join("\n"));
    assert_matches_curl(&p, &sent_plain, &plain, false);
    assert_matches_curl(&t, &sent_tls, &https, true);
    // Twins: everything but the connection's own details is the same.
    for (a, b) in p.iter().zip(&t) {
        for key in [
            "event.action",
            "event.outcome",
            "http.request.method",
            "http.request.bytes",
            "http.request.body.bytes",
            "http.response.status_code",
            "http.response.body.bytes",
            "url.path",
            "url.query",
            "user_agent.original",
            "observer.credential.type",
            "observer.credential.fingerprint",
            "process.name",
        ] {
            assert_eq!(field(a, key), field(b, key), "{key}:\n{a}\n{b}");
        }
    }
    assert!(
        f.stderr.contains("hooked OpenSSL"),
        "the hook is logged: {}",
        f.stderr
    );
}

#[test]
fn brute_force_over_tls_raises_the_alert() {
    require_root();
    let cert = Cert::new();
    let https = Server::api_tls(&cert);
    let obs = Observer::for_pids(&[https.pid()]);
    let reqs: Vec<(&[&str], &str)> = (0..6).map(|_| (LOGIN, "/login")).collect();
    let sent = transfers(&https, &reqs);
    assert!(sent.iter().all(|t| t.status == 401));
    let f = obs.stop();
    let alerts = f.alerts("brute_force");
    assert_eq!(alerts.len(), 1, "{}", f.lines.join("\n"));
    assert_eq!(field(alerts[0], "source.ip"), "127.0.0.1");
    assert_eq!(field(alerts[0], "observer.alert.count"), 5);
}

#[test]
fn nginx_https_with_keep_alive() {
    require_root();
    let cert = Cert::new();
    let page = vec![b'x'; 20_000];
    let nginx = Server::nginx_tls(&[("page.html", &page)], &cert);
    let obs = Observer::start(&[
        "--pid".into(),
        nginx.pid().to_string(),
        "--heartbeat-seconds".into(),
        "1".into(),
    ]);
    let sent = transfers(
        &nginx,
        &[(&[], "/json"), (&[], "/page.html"), (&[], "/missing")],
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let f = obs.stop();
    // The ciphertext under those exchanges was counted, not parsed: at least the 20 KB page.
    let ciphertext = f
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "heartbeat")
        .filter_map(|e| e["observer"]["metrics"]["process"]["tls_ciphertext_bytes"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(ciphertext > 20_000, "TLS bytes counted: {ciphertext}");
    let ex = f.exchanges();
    assert_eq!(ex.len(), 3, "{}", f.lines.join("\n"));
    assert_eq!(
        sent.iter().map(|t| t.status).collect::<Vec<_>>(),
        [200, 200, 404]
    );
    assert_matches_curl(&ex, &sent, &nginx, true);
    assert_eq!(field(ex[1], "http.response.body.bytes"), 20_000);
    assert_eq!(field(ex[0], "process.name"), "nginx");
}

/// `--tls targets` hooks OpenSSL in the targets' own address spaces (nginx's master and its
/// worker, found as it forks): their exchanges are all seen, and curl, which calls the same
/// libssl without being a target, reports nothing.
#[test]
fn nginx_https_hooked_in_its_own_processes_alone() {
    require_root();
    let cert = Cert::new();
    let nginx = Server::nginx_tls(&[("page.html", b"hello")], &cert);
    let obs = Observer::start(&[
        "--pid".into(),
        nginx.pid().to_string(),
        "--tls".into(),
        "targets".into(),
    ]);
    let sent = transfers(
        &nginx,
        &[(&[], "/json"), (&[], "/page.html"), (&[], "/nope")],
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    assert!(
        f.stderr.contains("hooked OpenSSL in one target"),
        "hooked per process: {}",
        f.stderr
    );
    let ex = f.exchanges();
    assert_eq!(ex.len(), 3, "{}", f.lines.join("\n"));
    assert_matches_curl(&ex, &sent, &nginx, true);
    assert!(ex.iter().all(|e| field(e, "process.name") == "nginx"));
}

#[test]
fn node_https_through_its_own_openssl() {
    require_root();
    let cert = Cert::new();
    let node = Server::node_https(&cert);
    let obs = Observer::for_pids(&[node.pid()]);
    let sent = transfers(
        &node,
        &[(&[], "/health"), (WRONG, "/login"), (&[], "/nothing")],
    );
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(ex.len(), 3, "{}\n{}", f.lines.join("\n"), f.stderr);
    assert_eq!(
        sent.iter().map(|t| t.status).collect::<Vec<_>>(),
        [200, 401, 404]
    );
    assert_matches_curl(&ex, &sent, &node, true);
    assert_eq!(field(ex[1], "event.action"), "authn_login_fail");
    assert!(
        f.stderr.contains("node"),
        "the executable itself is hooked: {}",
        f.stderr
    );
}

#[test]
fn curl_as_a_targeted_https_client() {
    require_root();
    let cert = Cert::new();
    let https = Server::api_tls(&cert);
    let cg = Cgroup::new("tls-client");
    let obs = Observer::start(&["--cgroup".into(), cg.relative.clone()]);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}/cgroup.procs' && exec curl -sk -o /dev/null -o /dev/null \
             -w '%{{http_code}} %{{local_port}}\\n' '{}' '{}'",
            cg.path.display(),
            https.url("/health"),
            https.url("/admin"),
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let ports: Vec<u64> = text
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 2, "curl: {text}");
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(ex.len(), 2, "{}\n{}", f.lines.join("\n"), f.stderr);
    for (e, (status, port)) in ex.iter().zip([(200, ports[0]), (403, ports[1])]) {
        assert_eq!(field(e, "observer.role"), "client");
        assert_eq!(field(e, "process.name"), "curl");
        assert_eq!(field(e, "http.response.status_code"), status);
        assert_eq!(field(e, "source.port"), port, "{e}");
        assert_eq!(field(e, "destination.port"), https.port);
        assert_eq!(field(e, "tls.established"), true);
    }
}

#[test]
fn a_target_whose_tls_cannot_be_hooked_is_reported() {
    require_root();
    let cert = Cert::new();
    let server = Server::static_tls(&cert);
    let recording = Recording::new("blind");
    let obs = Observer::start(&recording.run_args(server.pid()));
    let sent = transfers(&server, &[(&[], "/a"), (&[], "/b")]);
    assert!(sent.iter().all(|t| t.status == 200));
    let f = obs.stop();
    let blind: Vec<&Value> = f
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "sys_monitor_disabled")
        .collect();
    assert_eq!(blind.len(), 1, "{}", f.lines.join("\n"));
    assert_eq!(field(blind[0], "process.pid"), server.pid());
    let reason = field(blind[0], "observer.reason").as_str().unwrap();
    assert!(reason.contains("statically"), "{reason}");
    assert!(f.stderr.contains("not visible"), "{}", f.stderr);
    // Its ciphertext is never taken for HTTP.
    assert!(f.exchanges().is_empty(), "{}", f.lines.join("\n"));
    // A replay of the recording says the same.
    recording.assert_replay_matches(&[], &f);
}
