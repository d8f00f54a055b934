//! Behind a reverse proxy, through the kernel path: Debian's nginx (`proxy_pass`, appending the
//! peer to `X-Forwarded-For`) in front of the Flask form login of tests/servers/flask_login.py,
//! observer on the backend's PID only, clients on distinct loopback addresses
//! (`curl --interface 127.0.0.N`). With nginx trusted the events and alerts name each real
//! client and a forged `X-Forwarded-For` names no one; untrusted, the headers change nothing.

use std::collections::BTreeMap;

use observer_tests::{Observer, Recording, Server, curl, observer_bin, require_root};
use serde_json::Value;

/// A failed login from `from`, through `server`, with `extra` curl options.
fn failed_login(server: &Server, from: &str, i: usize, extra: &[&str]) {
    let body = format!("username=alice&password=guess{i}");
    let mut args = vec!["--interface", from, "-d", &body];
    args.extend_from_slice(extra);
    let url = server.url("/login");
    args.push(&url);
    assert_eq!(curl(&args).status, 400, "a failed login from {from}");
}

fn ip<'a>(e: &'a Value, end: &str) -> &'a str {
    e[end]["ip"].as_str().unwrap_or("-")
}

/// Exchanges per `client.ip`.
fn per_client(exchanges: &[&Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in exchanges {
        *m.entry(ip(e, "client").to_string()).or_default() += 1;
    }
    m
}

fn observe(backend: &Server, extra: &[&str]) -> Observer {
    let mut args = vec!["--pid".to_string(), backend.pid().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Observer::start(&args)
}

#[test]
fn a_trusted_nginx_names_each_real_client() {
    require_root();
    let backend = Server::flask_login();
    let proxy = Server::nginx_proxy(backend.port);
    let rec = Recording::new("proxy");
    let mut args = rec.run_args(backend.pid());
    args.extend(["--trusted-proxy".to_string(), "127.0.0.1".to_string()]);
    let obs = Observer::start(&args);
    // The attacker: six wrong passwords. Two bystanders: two typos and a page each. A forger:
    // two failures claiming to be 10.9.9.9.
    for i in 0..6 {
        failed_login(&proxy, "127.0.0.10", i, &[]);
    }
    for from in ["127.0.0.11", "127.0.0.12"] {
        failed_login(&proxy, from, 0, &[]);
        failed_login(&proxy, from, 1, &[]);
        assert_eq!(curl(&["--interface", from, &proxy.url("/")]).status, 200);
    }
    for i in 0..2 {
        failed_login(
            &proxy,
            "127.0.0.13",
            i,
            &["-H", "X-Forwarded-For: 10.9.9.9"],
        );
    }
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);

    let x = f.exchanges();
    assert_eq!(x.len(), 14, "{}", f.lines.join("\n"));
    // source.* is the network peer, nginx; client.* the address each request came from.
    assert!(x.iter().all(|e| ip(e, "source") == "127.0.0.1"));
    assert!(
        x.iter()
            .all(|e| e["observer"]["forwarded"]["header"] == "x-forwarded-for")
    );
    let clients = per_client(&x);
    let want: BTreeMap<String, usize> = [
        ("127.0.0.10", 6),
        ("127.0.0.11", 3),
        ("127.0.0.12", 3),
        ("127.0.0.13", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(clients, want);
    // The forger's header is left of what nginx appended: it named no one.
    assert!(!f.lines.iter().any(|l| l.contains("10.9.9.9")));
    let forged: Vec<&&Value> = x
        .iter()
        .filter(|e| ip(e, "client") == "127.0.0.13")
        .collect();
    assert!(
        forged
            .iter()
            .all(|e| e["observer"]["forwarded"]["hops"] == 1)
    );

    // One brute force, naming the attacker; the bystanders' and the forger's few failures
    // raise nothing.
    let bf = f.alerts("brute_force");
    assert_eq!(bf.len(), 1, "{}", f.lines.join("\n"));
    assert_eq!(bf[0]["client"]["ip"], "127.0.0.10");
    assert_eq!(bf[0]["observer"]["alert"]["key"]["field"], "client.ip");
    assert_eq!(bf[0]["observer"]["alert"]["key"]["value"], "127.0.0.10");
    assert_eq!(bf[0]["observer"]["alert"]["count"], 5);
    let alerts = f.all_alerts();
    assert!(
        alerts.iter().all(|a| ip(a, "client") == "127.0.0.10"),
        "{alerts:#?}"
    );
    f.assert_no_secrets(&["guess", "alice"]);

    // Replayed with the same proxy trusted, the recording names the same clients and raises
    // the same alert; replayed without it, every exchange is nginx's.
    let live: Vec<&Value> = f.events.iter().filter(|e| is_traffic(e)).collect();
    let replayed = replay(&rec, &["--trusted-proxy", "127.0.0.1"]);
    assert_eq!(replayed.iter().collect::<Vec<_>>(), live);
    let untrusted = replay(&rec, &[]);
    let untrusted_x: Vec<&Value> = untrusted
        .iter()
        .filter(|e| e.get("http").is_some())
        .collect();
    assert_eq!(untrusted_x.len(), 14);
    assert!(untrusted_x.iter().all(|e| ip(e, "client") == "127.0.0.1"));
}

/// Exchanges and alerts: what a replay must reproduce.
fn is_traffic(e: &Value) -> bool {
    e.get("http").is_some() || e["event"]["kind"] == "alert"
}

/// `observer replay` of `rec` with `extra` arguments: its exchanges and alerts.
fn replay(rec: &Recording, extra: &[&str]) -> Vec<Value> {
    let out = std::process::Command::new(observer_bin())
        .arg("replay")
        .arg(&rec.rec)
        .arg("--key-file")
        .arg(&rec.key)
        .args(extra)
        .output()
        .expect("running observer replay");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("replay prints JSON"))
        .filter(is_traffic)
        .collect()
}

#[test]
fn untrusted_the_forwarding_headers_change_nothing() {
    require_root();
    let backend = Server::flask_login();
    let proxy = Server::nginx_proxy(backend.port);
    let obs = observe(&backend, &[]);
    // Through nginx, untrusted: every request is nginx's, whatever the header says.
    failed_login(
        &proxy,
        "127.0.0.20",
        0,
        &["-H", "X-Forwarded-For: 10.9.9.9"],
    );
    failed_login(&proxy, "127.0.0.21", 1, &[]);
    // Straight to the backend, a forged header and a forged Forwarded.
    failed_login(
        &backend,
        "127.0.0.22",
        2,
        &[
            "-H",
            "X-Forwarded-For: 10.9.9.9",
            "-H",
            "Forwarded: for=10.9.9.8",
        ],
    );
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let x = f.exchanges();
    assert_eq!(x.len(), 3, "{}", f.lines.join("\n"));
    for e in &x {
        assert_eq!(e["client"], e["source"], "the client is the peer: {e}");
        assert!(e["observer"].get("forwarded").is_none());
    }
    let clients: Vec<&str> = x.iter().map(|e| ip(e, "client")).collect();
    assert_eq!(clients, ["127.0.0.1", "127.0.0.1", "127.0.0.22"]);
    assert!(!f.lines.iter().any(|l| l.contains("10.9.9.")));
}

#[test]
fn a_direct_request_from_an_untrusted_peer_keeps_its_address() {
    require_root();
    let backend = Server::flask_login();
    let obs = observe(&backend, &["--trusted-proxy", "127.0.0.1"]);
    // nginx is trusted, this peer is not: its forged header is not believed, and the brute
    // force is its own.
    for i in 0..5 {
        failed_login(
            &backend,
            "127.0.0.30",
            i,
            &["-H", &format!("X-Forwarded-For: 10.9.9.{i}")],
        );
    }
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let x = f.exchanges();
    assert_eq!(x.len(), 5, "{}", f.lines.join("\n"));
    assert!(
        x.iter()
            .all(|e| ip(e, "client") == "127.0.0.30" && ip(e, "source") == "127.0.0.30")
    );
    let bf = f.alerts("brute_force");
    assert_eq!(bf.len(), 1, "{}", f.lines.join("\n"));
    assert_eq!(bf[0]["client"]["ip"], "127.0.0.30");
    assert!(!f.lines.iter().any(|l| l.contains("10.9.9.")));
}
