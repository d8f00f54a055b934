//! `cargo xtask bench`: observer's overhead on a real server, its completeness, its own cost and
//! the parser's speed, measured side by side in one run and reported as ratios to the baseline
//! of the same run. Writes bench/results.md.
//!
//! Conditions, interleaved round by round so that drift on a shared machine hits all alike:
//! B0 nginx alone; T1 observer running but targeting another (idle) process: the cost of the
//! kernel-side filter; T2 observer on nginx: full capture; C1 tcpdump writing the port's
//! packets to a file; C2 nginx writing its own JSON access log; S0 nginx serving HTTPS alone;
//! S2 observer on the HTTPS nginx (plaintext from the OpenSSL probes). Then a fixed-rate run
//! (about 10,000 requests/s, well below saturation) for latency: B0, T1, T2.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{Proc, build, setup, step, workspace_root};

const ROUNDS: usize = 3;
const SECONDS: u64 = 3;
const CONNECTIONS: u32 = 16;
const PATHS: &[(&str, &str)] = &[
    ("/json", "small JSON"),
    ("/1k.bin", "1 KiB"),
    ("/64k.bin", "64 KiB"),
];
const CONDITIONS: &[&str] = &["B0", "T1", "T2", "C1", "C2", "S0", "S2"];
/// The per-syscall cost: no observer, then observer (targeting an idle process) with each
/// `--syscall-hook`.
const SYSCALL_CONDITIONS: &[(&str, Option<&str>)] = &[
    ("none", None),
    ("raw sys_enter/sys_exit", Some("raw")),
    ("one tracepoint per syscall", Some("tracepoints")),
];
const SYSCALL_CALLS: u32 = 1_000_000;
/// Fixed rate: each of these connections waits this long between requests.
const PACED_CONNECTIONS: u32 = 10;
const PACE_MS: u32 = 1;
const PACED_SECONDS: u64 = 5;

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16) -> anyhow::Result<()> {
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
fn certificate(dir: &Path) -> anyhow::Result<()> {
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

/// nginx with one worker pinned to CPU 0; with `access_log` it writes a JSON line per request;
/// with `tls` it serves HTTPS (certificate from `certificate`).
fn nginx(dir: &Path, port: u16, access_log: bool, tls: bool) -> anyhow::Result<Proc> {
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
        ssl = if tls {
            format!(" ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem")
        } else {
            String::new()
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
struct Wrk {
    requests: u64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

fn micros(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1e3,
        "s" => v * 1e6,
        _ => return None,
    })
}

fn wrk(url: &str) -> anyhow::Result<Wrk> {
    wrk_with(url, CONNECTIONS, SECONDS, None)
}

/// wrk at a fixed pace: every connection waits `PACE_MS` between requests.
fn wrk_paced(url: &str, script: &Path) -> anyhow::Result<Wrk> {
    wrk_with(url, PACED_CONNECTIONS, PACED_SECONDS, Some(script))
}

fn wrk_with(
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

/// A running observer and where its events go.
struct Observer {
    proc: Proc,
    events: PathBuf,
}

fn start_observer(bin: &Path, dir: &Path, pid: u32) -> anyhow::Result<Observer> {
    start_observer_with(bin, dir, pid, &[])
}

fn start_observer_with(
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
fn read_ns() -> anyhow::Result<f64> {
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
fn usage(pid: u32) -> (f64, u64) {
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

/// `kernel.bpf_stats_enabled`, switched for the benchmark and put back as it was when dropped.
struct BpfStats {
    was: String,
}

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn off() -> anyhow::Result<Self> {
        let was = std::fs::read_to_string(Self::PATH)
            .with_context(|| format!("reading {}", Self::PATH))?;
        let s = Self {
            was: was.trim().to_string(),
        };
        s.set(false)?;
        Ok(s)
    }

    fn set(&self, on: bool) -> anyhow::Result<()> {
        std::fs::write(Self::PATH, if on { "1" } else { "0" })
            .with_context(|| format!("writing {}", Self::PATH))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.was);
    }
}

/// Per-program BPF run time so far: name → (run_time_ns, run_cnt).
fn bpf_stats() -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(o) = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
    else {
        return out;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) else {
        return out;
    };
    for p in v.as_array().into_iter().flatten() {
        let (Some(name), Some(t), Some(c)) = (
            p["name"].as_str(),
            p["run_time_ns"].as_u64(),
            p["run_cnt"].as_u64(),
        ) else {
            continue;
        };
        let e = out.entry(name.to_string()).or_insert((0, 0));
        e.0 += t;
        e.1 += c;
    }
    out
}

#[derive(Default)]
struct ObserverCost {
    cpu_s: f64,
    exchanges: u64,
    requests: u64,
    peak_rss_kib: u64,
    losses: u64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Criterion's throughput of the `http` benchmarks, in GB/s, by name.
fn parser_throughput() -> anyhow::Result<BTreeMap<String, f64>> {
    step("criterion: HTTP parser throughput");
    let out = Command::new("cargo")
        .current_dir(workspace_root())
        .env("AYA_BUILD_SKIP", "1")
        .args([
            "bench",
            "-p",
            "observer",
            "--bench",
            "http",
            "--",
            "--warm-up-time",
            "1",
        ])
        .args(["--measurement-time", "3", "--noplot"])
        .output()
        .context("cargo bench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found = criterion_throughputs(&text);
    if !found.contains_key("heads") || !found.contains_key("httparse_only") {
        bail!("no throughput for http/heads and http/httparse_only in criterion's output: {text}");
    }
    Ok(found)
}

/// Each `http/NAME` benchmark's median throughput in criterion's output, in GB/s.
fn criterion_throughputs(text: &str) -> BTreeMap<String, f64> {
    let mut found = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        // "http/heads   time: [...]" names the benchmark whose "thrpt: [...]" line follows.
        if let Some(rest) = line.strip_prefix("http/") {
            current = rest.split_whitespace().next().map(str::to_string);
        } else if let Some(rest) = line.trim().strip_prefix("thrpt:") {
            let f: Vec<&str> = rest
                .trim_matches(|c| c == ' ' || c == '[' || c == ']')
                .split_whitespace()
                .collect();
            if let (Some(name), true) = (current.take(), f.len() >= 4) {
                let v: f64 = f[2].parse().unwrap_or(0.0);
                let scale = match f[3] {
                    "GiB/s" => 1.073_741_824,
                    "MiB/s" => 1.048_576e-3,
                    "KiB/s" => 1.024e-6,
                    _ => 0.0,
                };
                found.insert(name, v * scale);
            }
        }
    }
    found
}

pub fn bench() -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("the benchmark loads eBPF programs: run `sudo cargo xtask bench`");
    }
    setup::build_tools()?;
    setup::test_tools()?;
    setup::apt_install(&["tcpdump", "bpftool", "util-linux", "openssl"])?;
    let bin = build()?;
    let started = Instant::now();
    let dir = workspace_root().join("target/bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www"))?;
    std::fs::write(dir.join("www/1k.bin"), vec![b'k'; 1024])?;
    std::fs::write(dir.join("www/64k.bin"), vec![b'x'; 64 * 1024])?;
    let port = free_port()?;
    let log_port = free_port()?;
    let tls_port = free_port()?;
    certificate(&dir)?;
    let plain = nginx(&dir, port, false, false)?;
    let logged = nginx(&dir, log_port, true, false)?;
    let tls = nginx(&dir, tls_port, false, true)?;
    let idle = Proc(Command::new("sleep").arg("3600").spawn()?);
    // Run-time statistics cost every program run two clock reads, so the rounds that measure
    // throughput run without them; one extra round of the observer conditions measures the
    // kernel side. The host's setting is put back at the end.
    let stats = BpfStats::off()?;

    // results[(condition, path)] = runs
    let mut results: BTreeMap<(String, String), Vec<Wrk>> = BTreeMap::new();
    let mut costs: BTreeMap<(String, String), ObserverCost> = BTreeMap::new();
    let mut kernel: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for round in 1..=ROUNDS + 1 {
        let stats_round = round > ROUNDS;
        stats.set(stats_round)?;
        for (path, _) in PATHS {
            for cond in CONDITIONS {
                if stats_round && !matches!(*cond, "T1" | "T2" | "S2") {
                    continue;
                }
                step(&if stats_round {
                    format!("kernel cost (BPF run-time statistics): {cond} {path}")
                } else {
                    format!("round {round}/{ROUNDS}: {cond} {path}")
                });
                let url = match *cond {
                    "C2" => format!("http://127.0.0.1:{log_port}{path}"),
                    "S0" | "S2" => format!("https://127.0.0.1:{tls_port}{path}"),
                    _ => format!("http://127.0.0.1:{port}{path}"),
                };
                let w = match *cond {
                    "T1" | "T2" | "S2" => {
                        let target = match *cond {
                            "T1" => idle.0.id(),
                            "T2" => plain.0.id(),
                            _ => tls.0.id(),
                        };
                        let before = bpf_stats();
                        let obs = start_observer(&bin, &dir, target)?;
                        // Loading and verifying the programs is start-up cost, not per exchange.
                        let (cpu0, _) = usage(obs.proc.0.id());
                        let w = wrk(&url)?;
                        // Let it catch up, then read its cost before it exits.
                        std::thread::sleep(Duration::from_millis(300));
                        let after = bpf_stats();
                        for (name, (t, c)) in after.iter().filter(|_| stats_round) {
                            let (t0, c0) = before.get(name).copied().unwrap_or((0, 0));
                            if c > &c0 {
                                let e = kernel
                                    .entry((cond.to_string(), name.clone()))
                                    .or_insert((0, 0));
                                e.0 += t - t0;
                                e.1 += c - c0;
                            }
                        }
                        let (cpu1, rss) = usage(obs.proc.0.id());
                        let cpu = cpu1 - cpu0;
                        let events = obs.events.clone();
                        drop(obs.proc);
                        if *cond != "T1" && !stats_round {
                            let c = costs
                                .entry((cond.to_string(), path.to_string()))
                                .or_default();
                            c.cpu_s += cpu;
                            c.requests += w.requests;
                            c.peak_rss_kib = c.peak_rss_kib.max(rss);
                            let f = std::fs::File::open(&events)?;
                            for line in BufReader::new(f).lines() {
                                let line = line?;
                                if line.contains("\"http\":") {
                                    c.exchanges += 1;
                                } else if line.contains("\"action\":\"loss\"") {
                                    let v: serde_json::Value = serde_json::from_str(&line)?;
                                    for (_, n) in v["observer"]["loss"]["kernel"]
                                        .as_object()
                                        .into_iter()
                                        .flatten()
                                    {
                                        c.losses += n.as_u64().unwrap_or(0);
                                    }
                                }
                            }
                        }
                        w
                    }
                    "C1" => {
                        let pcap = dir.join("capture.pcap");
                        let tcpdump = Proc(
                            Command::new("tcpdump")
                                .args(["-i", "lo", "-s", "0", "-B", "16384", "-w"])
                                .arg(&pcap)
                                .args(["tcp", "port", &port.to_string()])
                                .stdout(Stdio::null())
                                .stderr(Stdio::null())
                                .spawn()
                                .context("starting tcpdump")?,
                        );
                        std::thread::sleep(Duration::from_millis(500));
                        let w = wrk(&url)?;
                        drop(tcpdump);
                        let _ = std::fs::remove_file(&pcap);
                        w
                    }
                    _ => wrk(&url)?,
                };
                if stats_round {
                    continue;
                }
                results
                    .entry((cond.to_string(), path.to_string()))
                    .or_default()
                    .push(w);
            }
        }
    }
    stats.set(false)?;
    // Fixed rate, for latency without saturation.
    let script = dir.join("paced.lua");
    std::fs::write(&script, format!("function delay() return {PACE_MS} end\n"))?;
    let mut paced: BTreeMap<String, Vec<Wrk>> = BTreeMap::new();
    for round in 1..=ROUNDS {
        for cond in ["B0", "T1", "T2"] {
            step(&format!("fixed rate, round {round}/{ROUNDS}: {cond}"));
            let url = format!("http://127.0.0.1:{port}/json");
            let obs = match cond {
                "T1" => Some(start_observer(&bin, &dir, idle.0.id())?),
                "T2" => Some(start_observer(&bin, &dir, plain.0.id())?),
                _ => None,
            };
            let cpu0 = obs.as_ref().map_or(0.0, |o| usage(o.proc.0.id()).0);
            let w = wrk_paced(&url, &script)?;
            if let Some(o) = obs {
                std::thread::sleep(Duration::from_millis(300));
                let (cpu1, rss) = usage(o.proc.0.id());
                let cpu = cpu1 - cpu0;
                let events = o.events.clone();
                drop(o.proc);
                if cond == "T2" {
                    let c = costs
                        .entry(("T2 fixed rate".to_string(), "/json".to_string()))
                        .or_default();
                    c.cpu_s += cpu;
                    c.peak_rss_kib = c.peak_rss_kib.max(rss);
                    c.requests += w.requests;
                    let text = std::fs::read_to_string(&events)?;
                    c.exchanges += text.lines().filter(|l| l.contains("\"http\":")).count() as u64;
                }
            }
            paced.entry(cond.to_string()).or_default().push(w);
        }
    }
    // What observer costs every other process: one syscall it hooks, made by a process it
    // does not target, with each way of hooking syscalls.
    let mut syscall_ns: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 1..=ROUNDS {
        for (cond, hook) in SYSCALL_CONDITIONS {
            step(&format!("syscall cost, round {round}/{ROUNDS}: {cond}"));
            let obs = match hook {
                Some(h) => Some(start_observer_with(
                    &bin,
                    &dir,
                    idle.0.id(),
                    &["--syscall-hook", h],
                )?),
                None => None,
            };
            syscall_ns.entry(cond).or_default().push(read_ns()?);
            drop(obs);
        }
    }
    drop((plain, logged, idle, tls));
    let parser = parser_throughput()?;

    // The report.
    let mut md = String::new();
    let date = String::from_utf8_lossy(
        &Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()?
            .stdout,
    )
    .trim()
    .to_string();
    let kernel_name = String::from_utf8_lossy(&Command::new("uname").arg("-r").output()?.stdout)
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    writeln!(md, "# observer benchmark\n")?;
    writeln!(
        md,
        "{date}; Linux {kernel_name}, {cpus} CPUs. nginx (Debian, 1 worker on CPU 0) on loopback; \
         wrk -t1 -c{CONNECTIONS} -d{SECONDS}s on CPU 1; {ROUNDS} interleaved rounds, medians. \
         Ratios are to B0 of the same run.\n"
    )?;
    writeln!(
        md,
        "B0 nginx alone · T1 observer targeting an idle process (filter cost) · T2 observer on nginx · C1 tcpdump to a file · C2 nginx JSON access_log · S0 nginx serving HTTPS alone · S2 observer on the HTTPS nginx (`--tls targets`). S rows are ratios to S0.\n"
    )?;
    writeln!(
        md,
        "| body | condition | req/s | req/s ÷ B0 | p50 µs | p50 ÷ B0 | p99 µs | p99 ÷ B0 |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|")?;
    for (path, label) in PATHS {
        let get = |c: &str, f: fn(&Wrk) -> f64| {
            median(
                &mut results[&(c.to_string(), path.to_string())]
                    .iter()
                    .map(f)
                    .collect::<Vec<_>>(),
            )
        };
        for cond in CONDITIONS {
            let base = if cond.starts_with('S') { "S0" } else { "B0" };
            let (b_rps, b_p50, b_p99) = (
                get(base, |w| w.rps),
                get(base, |w| w.p50_us),
                get(base, |w| w.p99_us),
            );
            let (rps, p50, p99) = (
                get(cond, |w| w.rps),
                get(cond, |w| w.p50_us),
                get(cond, |w| w.p99_us),
            );
            writeln!(
                md,
                "| {label} | {cond} | {rps:.0} | {:.3} | {p50:.0} | {:.2} | {p99:.0} | {:.2} |",
                rps / b_rps,
                p50 / b_p50,
                p99 / b_p99
            )?;
        }
    }
    writeln!(
        md,
        "\n## Fixed rate\n\nwrk -t1 -c{PACED_CONNECTIONS}, each connection waiting {PACE_MS} ms \
         between requests, {PACED_SECONDS} s, small JSON; {ROUNDS} interleaved rounds, medians.\n"
    )?;
    writeln!(
        md,
        "| condition | req/s | p50 µs | p50 ÷ B0 | p99 µs | p99 ÷ B0 |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    let pget =
        |c: &str, f: fn(&Wrk) -> f64| median(&mut paced[c].iter().map(f).collect::<Vec<_>>());
    for cond in ["B0", "T1", "T2"] {
        writeln!(
            md,
            "| {cond} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} |",
            pget(cond, |w| w.rps),
            pget(cond, |w| w.p50_us),
            pget(cond, |w| w.p50_us) / pget("B0", |w| w.p50_us),
            pget(cond, |w| w.p99_us),
            pget(cond, |w| w.p99_us) / pget("B0", |w| w.p99_us),
        )?;
    }
    writeln!(md, "\n## observer itself\n")?;
    writeln!(
        md,
        "| condition | body | requests (wrk) | exchanges reported | completeness | kernel losses | CPU µs per exchange | peak RSS MiB |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|")?;
    for ((cond, path), c) in &costs {
        let label = PATHS
            .iter()
            .find(|(p, _)| p == path)
            .map_or(path.as_str(), |(_, l)| l);
        {
            let cpu = if c.cpu_s > 0.0 {
                format!("{:.2}", c.cpu_s * 1e6 / c.exchanges.max(1) as f64)
            } else {
                "–".into()
            };
            writeln!(
                md,
                "| {cond} | {label} | {} | {} | {:.4} | {} | {cpu} | {:.1} |",
                c.requests,
                c.exchanges,
                c.exchanges as f64 / c.requests.max(1) as f64,
                c.losses,
                c.peak_rss_kib as f64 / 1024.0
            )?;
        }
    }
    writeln!(
        md,
        "\n## Kernel side: ns per run of each program (BPF run-time statistics)\n\n\
         Measured in a round of its own after the throughput rounds, with statistics on only \
         then; runs are that round's, all bodies together.\n"
    )?;
    writeln!(
        md,
        "| program | T1 (filter only) ns/run | T2 (capturing nginx) ns/run | T2 runs | S2 (HTTPS nginx) ns/run | S2 runs |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    let names: std::collections::BTreeSet<&String> = kernel.keys().map(|(_, n)| n).collect();
    for name in names {
        let per = |c: &str| {
            kernel
                .get(&(c.to_string(), name.clone()))
                .map(|(t, n)| format!("{:.0}", *t as f64 / (*n).max(1) as f64))
                .unwrap_or_else(|| "–".into())
        };
        let runs = |c: &str| {
            kernel
                .get(&(c.to_string(), name.clone()))
                .map(|x| x.1)
                .unwrap_or(0)
        };
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} |",
            per("T1"),
            per("T2"),
            runs("T2"),
            per("S2"),
            runs("S2")
        )?;
    }
    writeln!(
        md,
        "\n## Cost to every other process\n\nA process observer does not target reads 1 byte \
         from /dev/null {SYSCALL_CALLS} times (a syscall observer hooks); ns per call, medians \
         of {ROUNDS} interleaved rounds.\n"
    )?;
    writeln!(md, "| syscall hook | ns per read | added ns | ÷ none |")?;
    writeln!(md, "|---|---:|---:|---:|")?;
    let none = median(
        syscall_ns
            .get_mut("none")
            .map(|v| &mut v[..])
            .unwrap_or(&mut []),
    );
    for (cond, _) in SYSCALL_CONDITIONS {
        let ns = median(
            syscall_ns
                .get_mut(cond)
                .map(|v| &mut v[..])
                .unwrap_or(&mut []),
        );
        writeln!(
            md,
            "| {cond} | {ns:.0} | {:.0} | {:.2} |",
            ns - none,
            ns / none
        )?;
    }
    let (heads, floor) = (parser["heads"], parser["httparse_only"]);
    writeln!(
        md,
        "\n## Parser\n\nHTTP/1.1 heads through reassembly (criterion): {heads:.2} GB/s; \
         httparse alone on the same heads, nothing kept: {floor:.2} GB/s (reassembly runs at \
         {:.2} of it).\n",
        heads / floor
    )?;
    writeln!(md, "Whole run: {:.0} s.", started.elapsed().as_secs_f64())?;
    let out = workspace_root().join("bench/results.md");
    std::fs::create_dir_all(out.parent().expect("bench/"))?;
    std::fs::write(&out, &md)?;
    println!("{md}");
    step(&format!("written to {}", out.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criterion_throughputs_by_benchmark() {
        let text = "Benchmarking http/heads: Analyzing
http/heads              time:   [860.45 µs 878.20 µs 899.07 µs]
                        thrpt:  [665.08 MiB/s 680.89 MiB/s 694.93 MiB/s]
                 change:
                        time:   [-18.834% -15.544% -12.176%] (p = 0.00 < 0.05)
                        thrpt:  [+13.864% +18.405% +23.204%]
Benchmarking http/httparse_only: Analyzing
http/httparse_only      time:   [391.88 µs 404.21 µs 418.85 µs]
                        thrpt:  [1.3942 GiB/s 1.4447 GiB/s 1.4901 GiB/s]
";
        let t = criterion_throughputs(text);
        assert_eq!(t.len(), 2);
        assert!((t["heads"] - 0.714).abs() < 0.001, "{t:?}");
        assert!((t["httparse_only"] - 1.551).abs() < 0.001, "{t:?}");
    }
}
