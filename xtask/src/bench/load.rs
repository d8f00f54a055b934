//! Load generation and the processes under test: free ports, nginx (plain, logged, HTTPS,
//! HTTP/2 over TLS), wrk (saturating or at a fixed rate), h2load, observer started on a target, the per-syscall probe,
//! and a process's CPU time and peak RSS.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::{CONNECTIONS, H2_STREAMS, PACED_CONNECTIONS, PACED_SECONDS, SECONDS, SYSCALL_CALLS};
use crate::Proc;

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(super) fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A self-signed certificate for the HTTPS conditions.
pub(super) fn certificate(dir: &Path) -> anyhow::Result<()> {
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running openssl")?;
    if !ok.success() {
        bail!("openssl could not make a certificate");
    }
    Ok(())
}

/// What an nginx of the bench serves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Serve {
    Http,
    /// HTTPS (certificate from `certificate`), HTTP/1.1.
    Https,
    /// HTTPS with HTTP/2 offered by ALPN.
    Https2,
}

/// tests/servers/go/server (net/http, Go's crypto/tls) built with the Go toolchain, serving
/// HTTPS (HTTP/1.1, as wrk speaks) and the files of `dir`/www, on CPU 0 with one OS thread
/// running Go code, like nginx's one worker.
pub(super) fn go_https(dir: &Path, port: u16) -> anyhow::Result<Proc> {
    let bin = dir.join("go-server");
    let src = crate::workspace_root().join("tests/servers/go");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("./server")
        .current_dir(&src)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .status()
        .context("running go (cargo xtask setup installs golang-go)")?;
    if !built.success() {
        bail!("building tests/servers/go/server failed");
    }
    let p = Proc(
        Command::new("taskset")
            .args(["-c", "0"])
            .arg(&bin)
            .arg(port.to_string())
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .env("GODEBUG", "http2server=0")
            .env("GOMAXPROCS", "1")
            .env("WWW", dir.join("www"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the Go HTTPS server")?,
    );
    wait_port(port)?;
    Ok(p)
}

/// nginx with one worker pinned to CPU 0; with `access_log` it writes a JSON line per request.
pub(super) fn nginx(dir: &Path, port: u16, access_log: bool, serve: Serve) -> anyhow::Result<Proc> {
    let d = dir.display();
    let log = if access_log {
        format!(
            "log_format json escape=json '{{\"time\":\"$time_iso8601\",\"remote\":\"$remote_addr\",\
             \"method\":\"$request_method\",\"uri\":\"$request_uri\",\"status\":$status,\
             \"bytes\":$body_bytes_sent,\"duration\":$request_time,\"ua\":\"$http_user_agent\"}}';\n\
             access_log {d}/access.log json;"
        )
    } else {
        "access_log off;".into()
    };
    let conf = format!(
        "daemon off; master_process on; worker_processes 1; worker_cpu_affinity 01;\n\
         pid {d}/nginx-{port}.pid; error_log {d}/error-{port}.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ {log}\n sendfile on; keepalive_requests 100000000;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
           uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           server {{ listen 127.0.0.1:{port}{ssl}; root {d}/www;\n\
             location = /json {{ default_type application/json; return 200 '{{\"ok\":true}}'; }} }} }}\n",
        // Debian's nginx 1.22 takes `http2` on the listen line (`http2 on;` came in 1.25).
        ssl = match serve {
            Serve::Http => String::new(),
            Serve::Https => {
                format!(" ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem")
            }
            Serve::Https2 =>
                format!(" ssl http2; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem"),
        }
    );
    let path = dir.join(format!("nginx-{port}.conf"));
    std::fs::write(&path, conf)?;
    let child = Command::new("taskset")
        .args(["-c", "0", "nginx", "-c"])
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    wait_port(port)?;
    Ok(Proc(child))
}

#[derive(Clone, Debug, Default)]
pub(super) struct Wrk {
    pub(super) requests: u64,
    pub(super) rps: f64,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
}

pub(super) fn micros(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1e3,
        "s" => v * 1e6,
        _ => return None,
    })
}

pub(super) fn wrk(url: &str) -> anyhow::Result<Wrk> {
    wrk_with(url, CONNECTIONS, SECONDS, None)
}

/// wrk at a fixed pace: every connection waits `PACE_MS` between requests.
pub(super) fn wrk_paced(url: &str, script: &Path) -> anyhow::Result<Wrk> {
    wrk_with(url, PACED_CONNECTIONS, PACED_SECONDS, Some(script))
}

pub(super) fn wrk_with(
    url: &str,
    connections: u32,
    seconds: u64,
    script: Option<&Path>,
) -> anyhow::Result<Wrk> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency");
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd.arg(url).output().context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = Wrk::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [n, "requests", "in", ..] => w.requests = n.parse().unwrap_or(0),
            ["Requests/sec:", v] => w.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => w.p50_us = micros(v).unwrap_or(0.0),
            ["99%", v] => w.p99_us = micros(v).unwrap_or(0.0),
            _ => {}
        }
    }
    if w.requests == 0 {
        bail!("wrk reported no requests: {text}");
    }
    Ok(w)
}

/// h2load over TLS for [`SECONDS`], on CPU 1 as wrk is: [`CONNECTIONS`] connections, each
/// with [`H2_STREAMS`] concurrent streams. h2load reports no percentiles: p50 and p99 are
/// left 0 for these rows.
pub(super) fn h2load(url: &str) -> anyhow::Result<Wrk> {
    let out = Command::new("taskset")
        .args(["-c", "1", "h2load", "-t", "1"])
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-m{H2_STREAMS}"))
        .arg(format!("-D{SECONDS}"))
        .arg(url)
        .output()
        .context("running h2load (Debian's nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = Wrk::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            // "finished in 3.00s, 81234.56 req/s, 9.1MB/s"
            ["finished", "in", _, rps, "req/s,", ..] => w.rps = rps.parse().unwrap_or(0.0),
            // "requests: 243704 total, 243864 started, 243704 done, 243704 succeeded, ..."
            [
                "requests:",
                _,
                "total,",
                _,
                "started,",
                _,
                "done,",
                ok,
                "succeeded,",
                ..,
            ] => w.requests = ok.parse().unwrap_or(0),
            _ => {}
        }
    }
    if w.requests == 0 {
        bail!("h2load reported no successful requests: {text}");
    }
    Ok(w)
}

/// A running observer and where its events go.
pub(super) struct Observer {
    pub(super) proc: Proc,
    pub(super) events: PathBuf,
}

pub(super) fn start_observer(bin: &Path, dir: &Path, pid: u32) -> anyhow::Result<Observer> {
    start_observer_with(bin, dir, pid, &[])
}

pub(super) fn start_observer_with(
    bin: &Path,
    dir: &Path,
    pid: u32,
    extra: &[&str],
) -> anyhow::Result<Observer> {
    let events = dir.join(format!("events-{pid}.jsonl"));
    let _ = std::fs::remove_file(&events);
    // Only what the target has mapped. wrk uses the same libssl file as nginx, so in S2 its
    // own OpenSSL calls take the uprobe trap too (as any process on the host would): S2 is
    // the cost for everyone using that library, not for nginx alone.
    let child = Command::new(bin)
        .args([
            "run",
            "--tls",
            "targets",
            "--pid",
            &pid.to_string(),
            "--output",
        ])
        .arg(&events)
        .arg("--key-file")
        .arg(dir.join("bench.key"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting observer")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&events).is_ok_and(|t| t.contains("sys_startup")) {
        if Instant::now() > deadline {
            bail!("observer did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Observer {
        proc: Proc(child),
        events,
    })
}

/// Nanoseconds per 1-byte read of /dev/null, over [`SYSCALL_CALLS`] calls.
pub(super) fn read_ns() -> anyhow::Result<f64> {
    use std::io::Read as _;
    let mut f = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    let mut b = [0u8; 1];
    let t = Instant::now();
    for _ in 0..SYSCALL_CALLS {
        f.read(&mut b).context("reading /dev/null")?;
    }
    Ok(t.elapsed().as_nanos() as f64 / f64::from(SYSCALL_CALLS))
}

/// CPU seconds and peak RSS (KiB) of a process so far.
pub(super) fn usage(pid: u32) -> (f64, u64) {
    let tick = 100.0; // USER_HZ on Linux
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s[s.rfind(')')? + 1..].to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tick)
        })
        .unwrap_or(0.0);
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    (cpu, hwm)
}

/// CPU seconds so far of a process and its children (nginx's master and its worker).
pub(super) fn tree_cpu(pid: u32) -> f64 {
    let mut total = usage(pid).0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let parent = std::fs::read_to_string(format!("/proc/{child}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s[s.rfind(')')? + 1..].to_string();
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        if parent == Some(pid) {
            total += usage(child).0;
        }
    }
    total
}
