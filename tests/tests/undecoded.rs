//! Traffic observer does not decode is never silent: a target's connections that carry
//! another protocol (here RESP, between Debian's redis-server and redis-cli) and a target's
//! UDP sockets (HTTP/3 over QUIC, aioquic from PyPI) are each reported once with
//! `sys_monitor_disabled` and a warning naming what they look like, counted per process, and
//! no exchange is made up from them.

use std::io::Write;
use std::process::{Command, Stdio};

use observer_tests::{Cert, Finished, Observer, Server, free_port, require_root, workspace_root};
use serde_json::Value;

/// The run's `sys_monitor_disabled` events for `pid`.
fn reports(f: &Finished, pid: u32) -> Vec<&Value> {
    f.events
        .iter()
        .filter(|e| e["event"]["action"] == "sys_monitor_disabled" && e["process"]["pid"] == pid)
        .collect()
}

fn redis_cli(port: u16, input: &str) -> String {
    let mut child = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running redis-cli (apt-get install redis-server: cargo xtask setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "redis-cli failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_redis_server_is_reported_once_as_speaking_resp() {
    require_root();
    let server = Server::redis();
    let obs = Observer::for_pids(&[server.pid()]);
    // Three short connections, and one long one of twenty commands.
    for i in 0..3 {
        assert_eq!(redis_cli(server.port, &format!("SET k{i} v{i}\n")), "OK\n");
    }
    let many: String = (0..20).map(|i| format!("GET k{}\n", i % 3)).collect();
    assert_eq!(redis_cli(server.port, &many).lines().count(), 20);
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    assert!(f.exchanges().is_empty(), "{}", f.lines.join("\n"));
    let found = reports(&f, server.pid());
    assert_eq!(found.len(), 1, "one report: {}", f.lines.join("\n"));
    let reason = found[0]["observer"]["reason"].as_str().unwrap();
    assert!(reason.contains("Redis (RESP)"), "{reason}");
    assert_eq!(found[0]["process"]["name"], "redis-server");
    assert!(f.stderr.contains("Redis (RESP)"), "a warning: {}", f.stderr);
    let last = f.events.last().unwrap();
    assert_eq!(last["event"]["action"], "sys_shutdown");
    let undecoded = &last["observer"]["stats"]["undecoded"];
    assert_eq!(undecoded[0]["pid"], server.pid(), "{undecoded}");
    assert_eq!(undecoded[0]["protocol"], "Redis (RESP)", "{undecoded}");
    assert_eq!(undecoded[0]["connections"], 4, "{undecoded}");
}

#[test]
fn an_http3_server_on_udp_is_reported_with_its_port() {
    require_root();
    let cert = Cert::new();
    let port = free_port();
    let script = workspace_root().join("tests/servers/h3.py");
    let mut server = Command::new("python3")
        .arg(&script)
        .args(["server", &port.to_string()])
        .arg(&cert.cert)
        .arg(&cert.key)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting tests/servers/h3.py (pip install aioquic: cargo xtask setup)");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready", "h3.py server did not start");
    let obs = Observer::for_pids(&[server.id()]);
    let mut client = Command::new("python3")
        .arg(&script)
        .args(["client", &port.to_string(), "/a", "/b", "/c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = client.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200\n200\n200\n");
    let f = obs.stop();
    let _ = server.kill();
    let _ = server.wait();
    assert!(f.status.success(), "{}", f.stderr);
    assert!(f.exchanges().is_empty(), "{}", f.lines.join("\n"));
    let found = reports(&f, server.id());
    assert_eq!(found.len(), 1, "one report: {}", f.lines.join("\n"));
    let reason = found[0]["observer"]["reason"].as_str().unwrap();
    assert!(reason.contains("UDP"), "{reason}");
    assert!(reason.contains("HTTP/3"), "{reason}");
    assert!(reason.contains(&port.to_string()), "{reason}");
}
