//! `cargo xtask demo`: the whole thing in one command. Starts the sample API, points observer at
//! its PID, sends it a short mix of requests with curl, then credential stuffing spread over 25
//! loopback source addresses (one attempt each, as through a proxy pool), and shows what
//! observer reported.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{Proc, build, setup, step, workspace_root};

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process(pid, sig);
}

pub fn demo() -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("the demo loads eBPF programs: run `sudo cargo xtask demo`");
    }
    setup::test_tools()?;
    let bin = build()?;

    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    step(&format!(
        "starting the sample API (tests/servers/api.py) on 127.0.0.1:{port}"
    ));
    let mut api = Proc(
        Command::new("python3")
            .arg(workspace_root().join("tests/servers/api.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .context("starting python3")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || api.0.try_wait()?.is_some() {
            bail!("the sample API did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let api_pid = api.0.id();

    step(&format!("starting observer run --pid {api_pid}"));
    // A key of the demo's own, so the demo leaves the host's fingerprint key alone.
    let key = std::env::temp_dir().join(format!("observer-demo-{}.key", std::process::id()));
    let mut observer = Proc(
        Command::new(&bin)
            .args(["run", "--pid", &api_pid.to_string(), "--key-file"])
            .arg(&key)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting observer")?,
    );
    let mut lines = BufReader::new(observer.0.stdout.take().context("observer stdout")?).lines();
    let mut events: Vec<Value> = Vec::new();
    for line in lines.by_ref() {
        let line = line?;
        let started = line.contains("\"sys_startup\"");
        events.push(serde_json::from_str(&line)?);
        if started {
            break;
        }
    }

    let base = format!("http://127.0.0.1:{port}");
    let requests: &[(&str, &[&str])] = &[
        ("health check", &["/health"]),
        (
            "login, wrong password",
            &["-d", r#"{"user":"alice","password":"guess"}"#, "/login"],
        ),
        (
            "login, wrong password again",
            &["-d", r#"{"user":"alice","password":"letmein"}"#, "/login"],
        ),
        (
            "login, right password",
            &[
                "-d",
                r#"{"user":"alice","password":"wonderland"}"#,
                "/login",
            ],
        ),
        (
            "items with a bearer token",
            &[
                "-H",
                "Authorization: Bearer demo-token",
                "/api/items?page=1",
            ],
        ),
        ("items without credentials", &["/api/items"]),
        (
            "an API key in the query string",
            &["/api/items?api_key=sk-live-123"],
        ),
        ("admin area", &["/admin"]),
        ("a bug", &["/error"]),
        ("a typo", &["/helth"]),
        (
            "attack: guessing alice's password",
            &["-u", "alice:123456", "/api/items"],
        ),
        ("attack: guessing", &["-u", "alice:password", "/api/items"]),
        ("attack: guessing", &["-u", "alice:qwerty", "/api/items"]),
        ("attack: guessing", &["-u", "alice:letmein", "/api/items"]),
        ("attack: guessing", &["-u", "alice:dragon", "/api/items"]),
        ("attack: guessing", &["-u", "alice:monkey", "/api/items"]),
        ("outage: the API fails", &["/error"]),
        ("outage", &["/error"]),
        ("outage", &["/error"]),
        ("outage", &["/error"]),
        ("outage", &["/error"]),
    ];
    step("sending requests with curl");
    for (what, args) in requests {
        let (url, opts) = args.split_last().expect("a path");
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(opts)
            .arg(format!("{base}{url}"))
            .output()
            .context("running curl")?;
        eprintln!(
            "    {:<34} {} -> {}",
            what,
            url,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // Stuffing through a pool of addresses: one attempt per source, so no per-source rule can
    // see it; the service-wide rule does.
    const POOL: usize = 25;
    step(&format!(
        "credential stuffing: {POOL} accounts, one attempt each from 127.0.50.1..{POOL}"
    ));
    let mut stuffing_statuses = Vec::new();
    for i in 1..=POOL {
        let body = format!(r#"{{"user":"shopper{i:02}@example.org","password":"Leaked-{i:02}"}}"#);
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--interface", &format!("127.0.50.{i}"), "-d", &body])
            .arg(format!("{base}/login"))
            .output()
            .context("running curl")?;
        stuffing_statuses.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    eprintln!("    statuses: {}", stuffing_statuses.join(" "));

    step("stopping observer (SIGINT)");
    signal(&observer.0, rustix::process::Signal::INT);
    for line in lines {
        events.push(serde_json::from_str(&line?)?);
    }
    let status = observer.0.wait()?;
    drop(api);
    let _ = std::fs::remove_file(&key);

    step("what observer reported (one JSON line per event; a summary of each here)");
    println!(
        "{:>4}  {:<16} {:<7} {:<6} {:<22} {:>6}  {:<21} query",
        "seq", "action", "outcome", "method", "path", "status", "source"
    );
    for e in &events {
        let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_default();
        let source = match (e["source"]["ip"].as_str(), e["source"]["port"].as_u64()) {
            (Some(ip), Some(port)) => format!("{ip}:{port}"),
            _ => String::new(),
        };
        if e["event"]["kind"] == "alert" {
            let a = &e["observer"]["alert"];
            println!(
                "{:>4}  {:<16} ALERT   {} on {}={}: {} in {} s (threshold {})",
                e["event"]["sequence"].to_string(),
                s(&e["event"]["action"]),
                s(&e["rule"]["name"]),
                s(&a["key"]["field"]),
                s(&a["key"]["value"]),
                a["count"],
                a["window_seconds"],
                a["threshold"],
            );
            continue;
        }
        println!(
            "{:>4}  {:<16} {:<7} {:<6} {:<22} {:>6}  {:<21} {}",
            e["event"]["sequence"].to_string(),
            s(&e["event"]["action"]),
            s(&e["event"]["outcome"]),
            s(&e["http"]["request"]["method"]),
            s(&e["url"]["path"]),
            e["http"]["response"]["status_code"]
                .as_u64()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            source,
            s(&e["url"]["query"]),
        );
    }
    if let Some(fail) = events
        .iter()
        .find(|e| e["event"]["action"] == "authn_login_fail")
    {
        step("one event in full (the first failed login)");
        println!("{}", serde_json::to_string_pretty(fail)?);
    }
    if !status.success() {
        bail!("observer exited with {status}");
    }
    if let Some(alert) = events.iter().find(|e| e["event"]["kind"] == "alert") {
        step("an alert in full");
        println!("{}", serde_json::to_string_pretty(alert)?);
    }
    let exchanges = events.iter().filter(|e| e.get("http").is_some()).count();
    let alerts = events
        .iter()
        .filter(|e| e["event"]["kind"] == "alert")
        .count();
    let sent = requests.len() + POOL;
    step(&format!(
        "{exchanges} exchanges reported for {sent} requests sent; {alerts} alerts"
    ));
    if exchanges != sent {
        bail!("observer missed exchanges");
    }
    let Some(wide) = events
        .iter()
        .find(|e| e["rule"]["name"] == "distributed_credential_stuffing")
    else {
        bail!("the stuffing spread over {POOL} sources raised no distributed_credential_stuffing");
    };
    step("the stuffing spread over sources, as the service-wide rule reports it");
    println!("{}", serde_json::to_string_pretty(wide)?);
    Ok(())
}
