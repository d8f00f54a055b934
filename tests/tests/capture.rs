//! End to end through the kernel: real servers, the real observer binary on their PID, real curl.

use observer_tests::{Observer, Server, Transfer, curl, curl_many, require_root};
use serde_json::Value;

/// Checks one exchange event against what curl saw.
fn assert_exchange(e: &Value, method: &str, path: &str, t: &Transfer, server: &Server) {
    let ctx = || format!("{method} {path}: {e}");
    assert_eq!(e["http"]["request"]["method"], method, "{}", ctx());
    assert_eq!(e["url"]["path"], path, "{}", ctx());
    assert_eq!(e["http"]["response"]["status_code"], t.status, "{}", ctx());
    assert_eq!(
        e["http"]["response"]["bytes"],
        t.response_bytes,
        "response bytes: {}",
        ctx()
    );
    assert_eq!(
        e["http"]["response"]["body"]["bytes"],
        t.download_bytes,
        "response body bytes: {}",
        ctx()
    );
    assert_eq!(
        e["http"]["request"]["body"]["bytes"],
        t.upload_bytes,
        "request body bytes: {}",
        ctx()
    );
    // curl counts a small body in size_request when it went out with the head, a large one not.
    let req = e["http"]["request"]["bytes"].as_u64().unwrap();
    assert!(
        req == t.request_size || req == t.request_size + t.upload_bytes,
        "request bytes {req} vs curl's {t:?}: {}",
        ctx()
    );
    assert_eq!(e["observer"]["role"], "server", "{}", ctx());
    assert_eq!(e["process"]["pid"], server.pid(), "{}", ctx());
    assert_eq!(e["source"]["ip"], "127.0.0.1", "{}", ctx());
    assert_eq!(e["source"]["port"], t.local_port, "client port: {}", ctx());
    assert_eq!(e["destination"]["ip"], "127.0.0.1", "{}", ctx());
    assert_eq!(e["destination"]["port"], server.port, "{}", ctx());
    assert!(e["event"]["duration"].as_u64().unwrap() > 0, "{}", ctx());
    assert!(
        e["@timestamp"].as_str().unwrap().ends_with('Z'),
        "{}",
        ctx()
    );
}

fn assert_lifecycle(f: &observer_tests::Finished) {
    assert!(
        f.status.success(),
        "observer exits 0 on a signal: {:?} {}",
        f.status,
        f.stderr
    );
    assert_eq!(f.events.first().unwrap()["event"]["action"], "sys_startup");
    assert_eq!(f.events.last().unwrap()["event"]["action"], "sys_shutdown");
    let seqs: Vec<u64> = f
        .events
        .iter()
        .map(|e| e["event"]["sequence"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=f.events.len() as u64).collect();
    assert_eq!(seqs, expected, "event.sequence is gap-free");
}

/// Stops observer and checks that it reported exactly one matching exchange per request sent.
fn stop_and_check(
    obs: Observer,
    sent: &[(&str, &str, Transfer)],
    server: &Server,
) -> observer_tests::Finished {
    let f = obs.stop();
    assert_lifecycle(&f);
    let ex = f.exchanges();
    assert_eq!(
        ex.len(),
        sent.len(),
        "one exchange per request; got:\n{}",
        f.lines.join("\n")
    );
    for (e, (method, path, t)) in ex.iter().zip(sent) {
        assert_exchange(e, method, path, t, server);
    }
    f
}

#[test]
fn python_http_server_new_connections() {
    require_root();
    let page = b"<h1>hello from observer's test</h1>\n".repeat(40);
    let server = Server::python_http(&[("index.html", &page), ("small.txt", b"ok\n")]);
    let obs = Observer::for_pids(&[server.pid()]);

    let mut sent = Vec::new();
    for _ in 0..3 {
        sent.push(("GET", "/index.html", curl(&[&server.url("/index.html")])));
    }
    sent.push(("GET", "/small.txt", curl(&[&server.url("/small.txt?x=1")])));
    sent.push(("GET", "/missing", curl(&[&server.url("/missing")])));
    // http.server does not implement POST: a 501 with a body, after reading our body.
    sent.push((
        "POST",
        "/upload",
        curl(&[
            "--data-binary",
            "name=value&other=thing",
            &server.url("/upload"),
        ]),
    ));
    sent.push((
        "HEAD",
        "/index.html",
        curl(&["-I", &server.url("/index.html")]),
    ));

    let f = stop_and_check(obs, &sent, &server);
    let ex = f.exchanges();
    assert_eq!(ex[1]["http"]["response"]["status_code"], 200);
    assert_eq!(ex[4]["event"]["outcome"], "failure");
    // Every request came on its own connection (HTTP/1.0 server).
    let mut ids: Vec<u64> = ex
        .iter()
        .map(|e| e["observer"]["connection_id"].as_u64().unwrap())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), sent.len());
}

#[test]
fn api_keep_alive_and_fresh_connections() {
    let f = api_exchanges(&[]);
    // The suite's second pass (OBSERVER_TEST_SYSCALL_HOOK=tracepoints) names the fallback.
    let (hooked, why) = match std::env::var("OBSERVER_TEST_SYSCALL_HOOK").as_deref() {
        Ok("tracepoints") => ("one tracepoint each", "the second pass"),
        _ => (
            "the raw tracepoints",
            "x86_64 hooks syscalls through sys_enter/sys_exit",
        ),
    };
    assert!(
        f.stderr.contains(&format!("syscalls hooked by {hooked}")),
        "{why}: {}",
        f.stderr
    );
}

/// The fallback for hosts where the raw tracepoints cannot be used gives the same exchanges.
#[test]
fn per_syscall_tracepoints_see_the_same_exchanges() {
    let f = api_exchanges(&["--syscall-hook", "tracepoints"]);
    assert!(
        f.stderr.contains("syscalls hooked by one tracepoint each"),
        "{}",
        f.stderr
    );
}

/// Keep-alive and fresh connections to the API server, checked exchange by exchange; `extra`
/// are further observer arguments.
fn api_exchanges(extra: &[&str]) -> observer_tests::Finished {
    require_root();
    let server = Server::api();
    let mut args = vec!["--pid".to_string(), server.pid().to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let obs = Observer::start(&args);

    let login_bad = r#"{"user":"alice","password":"guess"}"#;
    let login_ok = r#"{"user":"alice","password":"wonderland"}"#;
    let health = server.url("/health");
    let login = server.url("/login");
    let items = server.url("/api/items");
    let error = server.url("/error");
    // One curl process, one keep-alive connection, five exchanges.
    let keep_alive = curl_many(&[
        &[health.as_str()],
        &["-d", login_bad, login.as_str()],
        &["-d", login_ok, login.as_str()],
        &["-H", "Authorization: Bearer demo-token", items.as_str()],
        &[error.as_str()],
    ]);
    let mut sent: Vec<(&str, &str, Transfer)> = vec![
        ("GET", "/health", keep_alive[0].clone()),
        ("POST", "/login", keep_alive[1].clone()),
        ("POST", "/login", keep_alive[2].clone()),
        ("GET", "/api/items", keep_alive[3].clone()),
        ("GET", "/error", keep_alive[4].clone()),
    ];
    // Fresh connections.
    sent.push(("GET", "/api/items", curl(&[items.as_str()])));
    sent.push((
        "POST",
        "/api/items",
        curl(&["-u", "alice:wonderland", "-d", "item=4", items.as_str()]),
    ));
    sent.push(("GET", "/admin", curl(&[&server.url("/admin")])));

    let f = stop_and_check(obs, &sent, &server);
    let ex = f.exchanges();
    let statuses: Vec<u64> = ex
        .iter()
        .map(|e| e["http"]["response"]["status_code"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200, 401, 200, 200, 500, 401, 201, 403]);
    let actions: Vec<&str> = ex
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions[1], "authn_login_fail");
    assert_eq!(actions[7], "authz_fail");
    // The first five shared one connection; the rest had one each.
    let ids: Vec<u64> = ex
        .iter()
        .map(|e| e["observer"]["connection_id"].as_u64().unwrap())
        .collect();
    assert!(
        ids[..5].iter().all(|&i| i == ids[0]),
        "keep-alive ids {ids:?}"
    );
    assert!(
        ids[5] != ids[0] && ids[6] != ids[5] && ids[7] != ids[6],
        "{ids:?}"
    );
    // Secrets the requests carried never appear.
    f.assert_no_secrets(&["wonderland", "demo-token", "YWxpY2U6d29uZGVybGFuZA=="]);
    f
}

#[test]
fn untargeted_process_produces_no_event() {
    require_root();
    let watched = Server::api();
    let other = Server::api();
    let obs = Observer::for_pids(&[watched.pid()]);
    for _ in 0..5 {
        curl(&[&other.url("/health")]);
        curl(&[&other.url("/error")]);
    }
    let t = curl(&[&watched.url("/health")]);
    let f = obs.stop();
    assert_lifecycle(&f);
    let ex = f.exchanges();
    assert_eq!(
        ex.len(),
        1,
        "only the watched server: {}",
        f.lines.join("\n")
    );
    assert_exchange(ex[0], "GET", "/health", &t, &watched);
    for line in &f.lines {
        assert!(
            !line.contains(&format!("\"port\":{}", other.port)),
            "traffic of an untargeted process leaked: {line}"
        );
    }
}

#[test]
fn sigterm_flushes_and_exits_zero() {
    require_root();
    let server = Server::api();
    let obs = Observer::for_pids(&[server.pid()]);
    let t = curl(&[&server.url("/health")]);
    let f = obs.stop_with(rustix::process::Signal::TERM);
    assert_lifecycle(&f);
    assert_eq!(f.exchanges().len(), 1);
    assert_exchange(f.exchanges()[0], "GET", "/health", &t, &server);
}

#[test]
fn bad_targets_are_refused_before_attaching() {
    require_root();
    let out = std::process::Command::new(observer_tests::observer_bin())
        .args(["run", "--pid", "4000000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no process with PID 4000000"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn not_root_is_a_one_line_error() {
    require_root();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(observer_tests::observer_bin())
        .args(["run", "--pid", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // Not root and no capabilities: the first one the run needs is named.
    assert!(err.contains("lacks CAP_BPF"), "{err}");
}
