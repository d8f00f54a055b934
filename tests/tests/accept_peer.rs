//! The client's address of connections accepted with no address buffer (Node.js: libuv calls
//! `accept4(fd, NULL, NULL, ...)`), read from the kernel's socket at the accept. One-request
//! connections to a server that answers at once are closed before observer handles their
//! records, so asking the process for the socket then finds nothing: every exchange must
//! still name the client that sent it. Clients are curl bound to distinct loopback addresses
//! (all of 127/8 is local on Linux), each asking for a path that names its address, so every
//! exchange is checked against the address its own client used, under both syscall hooks.

use std::collections::BTreeMap;

use observer_tests::client::curl_many;
use observer_tests::{Finished, Observer, Server, require_root};
use serde_json::Value;

const CLIENTS: u32 = 40;

/// Source address of each exchange, by the path its client asked for.
fn sources(f: &Finished) -> BTreeMap<String, Option<String>> {
    f.exchanges()
        .iter()
        .map(|e| {
            (
                e["url"]["path"].as_str().unwrap_or("?").to_string(),
                e["source"]["ip"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn capture_report(f: &Finished) -> &Value {
    let startup = f
        .events
        .iter()
        .find(|e| e["event"]["action"] == "sys_startup")
        .expect("a sys_startup event");
    &startup["observer"]["capture"]
}

/// `CLIENTS` one-request connections to `server` (at `host`), the i-th from 127.0.`net`.i,
/// asking for /from/127.0.`net`.i; observer runs with `hook`.
fn one_request_each(server: &Server, host: &str, net: u32, hook: &str) -> Finished {
    let args = [
        "--pid".to_string(),
        server.pid().to_string(),
        "--syscall-hook".to_string(),
        hook.to_string(),
    ];
    let obs = Observer::start(&args);
    let addrs: Vec<String> = (1..=CLIENTS).map(|i| format!("127.0.{net}.{i}")).collect();
    let urls: Vec<String> = addrs
        .iter()
        .map(|a| format!("http://{host}:{}/from/{a}", server.port))
        .collect();
    // One curl process, one connection per transfer: each binds another address, and the
    // server closes after its answer.
    let argv: Vec<[&str; 3]> = addrs
        .iter()
        .zip(&urls)
        .map(|(a, u)| ["--interface", a.as_str(), u.as_str()])
        .collect();
    let argv: Vec<&[&str]> = argv.iter().map(|a| &a[..]).collect();
    for t in curl_many(&argv) {
        assert_eq!(t.status, 200, "curl: {t:?}");
    }
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    f
}

fn assert_every_source_is_its_client(f: &Finished, net: u32, hook: &str) {
    let seen = sources(f);
    let wrong: Vec<_> = seen
        .iter()
        .filter(|(path, ip)| path.strip_prefix("/from/") != ip.as_deref())
        .collect();
    assert_eq!(seen.len(), CLIENTS as usize, "{}", f.lines.join("\n"));
    assert!(
        wrong.is_empty(),
        "{hook}: {} of {CLIENTS} exchanges without their client's address: {wrong:?}",
        wrong.len()
    );
    assert!(
        seen.keys()
            .all(|p| p.starts_with(&format!("/from/127.0.{net}.")))
    );
    let capture = capture_report(f);
    assert_eq!(capture["accept_addresses"], "kernel_socket", "{capture}");
}

#[test]
fn every_one_request_connection_to_node_names_its_client() {
    require_root();
    let server = Server::node_http("127.0.0.1");
    for (net, hook) in [(30, "raw"), (31, "tracepoints")] {
        let f = one_request_each(&server, "127.0.0.1", net, hook);
        assert_every_source_is_its_client(&f, net, hook);
        // The local end comes from the same socket: the address the client dialled.
        for e in f.exchanges() {
            assert_eq!(e["destination"]["ip"], "127.0.0.1", "{e}");
            assert_eq!(e["destination"]["port"], server.port, "{e}");
        }
    }
}

#[test]
fn ipv4_clients_of_a_dual_stack_node_server_are_reported_as_ipv4() {
    require_root();
    // Listening on :: the kernel keeps an IPv4 client as ::ffff:127.0.32.x.
    let server = Server::node_http("::");
    let f = one_request_each(&server, "127.0.0.1", 32, "auto");
    assert_every_source_is_its_client(&f, 32, "auto");
    for e in f.exchanges() {
        assert_eq!(e["destination"]["ip"], "127.0.0.1", "{e}");
    }
    // And an IPv6 client as itself.
    let obs = Observer::for_pids(&[server.pid()]);
    let url = format!("http://[::1]:{}/from/v6", server.port);
    let t = curl_many(&[&["-g", url.as_str()][..]]);
    assert_eq!(t[0].status, 200, "{:?}", t[0]);
    let f = obs.stop();
    let seen = sources(&f);
    assert_eq!(
        seen.get("/from/v6"),
        Some(&Some("::1".to_string())),
        "{}",
        f.lines.join("\n")
    );
}

#[test]
fn without_btf_the_capture_report_says_the_peer_is_looked_up_late() {
    require_root();
    let server = Server::node_http("127.0.0.1");
    let args = ["--pid".to_string(), server.pid().to_string()];
    let obs = Observer::start_with_env(&args, &[("OBSERVER_REFUSE_FEATURES", "btf")]);
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let capture = capture_report(&f);
    let how = capture["accept_addresses"].as_str().unwrap_or_default();
    assert!(
        how.starts_with("late_lookup (refused by OBSERVER_REFUSE_FEATURES"),
        "{capture}"
    );
    let fallbacks = capture["fallbacks"].to_string();
    assert!(
        fallbacks.contains("no BTF path to a socket's addresses"),
        "{capture}"
    );
}
