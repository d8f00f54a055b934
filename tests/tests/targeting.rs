//! Targeting as users run APIs: process trees, cgroups, busy servers, IPv6, Unix sockets, ports.

use observer_tests::{
    Cgroup, Observer, RawClient, Server, TempDir, children_of, curl, require_root, wait_until,
};
use serde_json::Value;

fn pids_of(exchanges: &[&Value]) -> Vec<u64> {
    let mut p: Vec<u64> = exchanges
        .iter()
        .map(|e| e["process"]["pid"].as_u64().unwrap())
        .collect();
    p.sort_unstable();
    p.dedup();
    p
}

#[test]
fn gunicorn_workers_followed_from_the_master_pid() {
    require_root();
    let server = Server::gunicorn(2);
    wait_until("two gunicorn workers", || server.children().len() == 2);
    let first_workers = server.children();
    let obs = Observer::for_pids(&[server.pid()]);

    for i in 0..30 {
        let t = curl(&[&server.url(&format!("/hello/{i}"))]);
        assert_eq!(t.status, 200);
    }
    // New workers, forked after observer started: one more on TTIN, and replacements for the
    // first two when they are killed.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(server.pid() as i32).unwrap(),
        rustix::process::Signal::TTIN,
    )
    .unwrap();
    wait_until("a third worker", || server.children().len() == 3);
    for &w in &first_workers {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(w as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
    }
    wait_until("replacement workers", || {
        let now = server.children();
        now.len() == 3 && first_workers.iter().all(|w| !now.contains(w))
    });
    let later_workers = server.children();
    for i in 0..30 {
        let t = curl(&[&server.url(&format!("/later/{i}"))]);
        assert_eq!(t.status, 200);
    }

    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let ex = f.exchanges();
    assert_eq!(
        ex.len(),
        60,
        "every request reported:\n{}",
        f.lines.join("\n")
    );
    let (before, after): (Vec<&Value>, Vec<&Value>) = ex
        .iter()
        .partition(|e| e["url"]["path"].as_str().unwrap().starts_with("/hello/"));
    assert_eq!(before.len(), 30);
    // Attributed to the worker that served it, never to the master.
    let served_before = pids_of(&before);
    assert!(
        served_before
            .iter()
            .all(|p| first_workers.contains(&(*p as u32))),
        "{served_before:?} vs workers {first_workers:?}"
    );
    assert_eq!(
        served_before.len(),
        2,
        "both workers served some of 30 requests"
    );
    let served_after = pids_of(&after);
    assert!(
        served_after
            .iter()
            .all(|p| later_workers.contains(&(*p as u32))),
        "{served_after:?} vs forked-later workers {later_workers:?}"
    );
}

#[test]
fn cgroup_target_includes_processes_started_later() {
    require_root();
    let cg = Cgroup::new("later");
    // Relative to the cgroup2 mount, as a user would write a service's cgroup.
    let obs = Observer::start(&["--cgroup".into(), cg.relative.clone()]);
    let inside = Server::api_in_cgroup(&cg.path);
    let outside = Server::api();
    let mut sent = Vec::new();
    for path in ["/health", "/admin", "/error"] {
        sent.push(curl(&[&inside.url(path)]));
        curl(&[&outside.url(path)]);
    }
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let ex = f.exchanges();
    assert_eq!(
        ex.len(),
        3,
        "only the server inside: {}",
        f.lines.join("\n")
    );
    for (e, t) in ex.iter().zip(&sent) {
        assert_eq!(e["destination"]["port"], inside.port);
        assert_eq!(e["source"]["port"], t.local_port);
        assert_eq!(e["http"]["response"]["status_code"], t.status);
        assert_eq!(e["process"]["pid"], inside.pid());
    }
    drop(inside);
}

#[test]
fn existing_cgroup_members_and_bad_cgroups() {
    require_root();
    let cg = Cgroup::new("existing");
    let inside = Server::api_in_cgroup(&cg.path);
    let obs = Observer::start(&["--cgroup".into(), cg.path.display().to_string()]);
    let t = curl(&[&inside.url("/health")]);
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(ex.len(), 1, "{}", f.lines.join("\n"));
    assert_eq!(ex[0]["source"]["port"], t.local_port);
    drop(inside);

    let out = std::process::Command::new(observer_tests::observer_bin())
        .args(["run", "--cgroup", "/no/such/cgroup-here"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    let out = std::process::Command::new(observer_tests::observer_bin())
        .args(["run", "--cgroup", "/proc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn keep_alive_connection_opened_before_observer() {
    require_root();
    let server = Server::api();
    let mut client = RawClient::connect(server.port);
    let req = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_eq!(client.exchange(req).0, 200);
    // The server's thread for this connection is now blocked reading the next request.
    let obs = Observer::for_pids(&[server.pid()]);
    let (s1, n1) = client.exchange(b"GET /admin HTTP/1.1\r\nHost: t\r\n\r\n");
    let body = r#"{"user":"alice","password":"nope-x"}"#;
    let post = format!(
        "POST /login HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (s2, n2) = client.exchange(post.as_bytes());
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let ex = f.exchanges();
    assert_eq!(ex.len(), 2, "{}", f.lines.join("\n"));
    assert_eq!(ex[0]["url"]["path"], "/admin");
    assert_eq!(ex[0]["http"]["response"]["status_code"], s1);
    assert_eq!(ex[0]["http"]["response"]["bytes"], n1);
    assert_eq!(ex[1]["http"]["response"]["status_code"], s2);
    assert_eq!(ex[1]["http"]["response"]["bytes"], n2);
    for e in &ex {
        assert_eq!(e["source"]["ip"], "127.0.0.1");
        assert_eq!(e["source"]["port"], client.local_port());
        assert_eq!(e["destination"]["port"], server.port);
        assert_eq!(e["observer"]["role"], "server");
    }
}

#[test]
fn ipv6_loopback_addresses() {
    require_root();
    let server = Server::api_on("::1");
    let obs = Observer::for_pids(&[server.pid()]);
    let url = format!("http://[::1]:{}/health", server.port);
    let t = curl(&["-g", &url]);
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(ex.len(), 1, "{}", f.lines.join("\n"));
    assert_eq!(ex[0]["source"]["ip"], "::1");
    assert_eq!(ex[0]["source"]["port"], t.local_port);
    assert_eq!(ex[0]["destination"]["ip"], "::1");
    assert_eq!(ex[0]["destination"]["port"], server.port);
}

#[test]
fn unix_socket_server_reports_its_path() {
    require_root();
    let dir = TempDir::new("unix");
    let path = dir.path.join("api.sock");
    let server = Server::api_unix(&path);
    let obs = Observer::for_pids(&[server.pid()]);
    let sock = path.display().to_string();
    let t1 = curl(&["--unix-socket", &sock, "http://localhost/health"]);
    let t2 = curl(&["--unix-socket", &sock, "http://localhost/admin"]);
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(ex.len(), 2, "{}", f.lines.join("\n"));
    assert_eq!(ex[0]["http"]["response"]["status_code"], t1.status);
    assert_eq!(ex[1]["http"]["response"]["status_code"], t2.status);
    for e in &ex {
        assert_eq!(e["destination"]["address"], sock.as_str(), "{e}");
        assert!(e["destination"].get("ip").is_none());
        assert_eq!(e["observer"]["role"], "server");
    }
}

#[test]
fn port_filter_keeps_exactly_what_it_names() {
    require_root();
    let a = Server::api();
    let b = Server::api();
    let obs = Observer::start(&[
        "--pid".into(),
        a.pid().to_string(),
        "--pid".into(),
        b.pid().to_string(),
        "--port".into(),
        a.port.to_string(),
    ]);
    for _ in 0..4 {
        curl(&[&a.url("/health")]);
        curl(&[&b.url("/health")]);
    }
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(ex.len(), 4, "{}", f.lines.join("\n"));
    assert!(ex.iter().all(|e| e["destination"]["port"] == a.port));
    assert_eq!(
        children_of(a.pid()).len(),
        0,
        "api.py serves from threads, not processes"
    );
}
