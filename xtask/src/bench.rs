//! `cargo xtask bench`: observer's overhead on a real server, its completeness, its own cost and
//! the parser's speed, measured side by side in one run and reported as ratios to the baseline
//! of the same run. Writes bench/results.md.
//!
//! Conditions, interleaved round by round so that drift on a shared machine hits all alike:
//! B0 nginx alone; T1 observer running but targeting another (idle) process: the cost of the
//! kernel-side filter; T2 observer on nginx: full capture; C1 tcpdump writing the port's
//! packets to a file; C2 nginx writing its own JSON access log; S0 nginx serving HTTPS alone;
//! S2 observer on the HTTPS nginx (plaintext from the OpenSSL probes); H0 nginx serving HTTP/2
//! over TLS to h2load alone, H2 observer on it; G0 a Go net/http server serving HTTPS alone, G2
//! observer on it (plaintext from the Go crypto/tls probes). Then a fixed-rate run
//! (about 10,000 requests/s, well below saturation) for latency: B0, T1, T2.

//!
//! [`load`] starts the servers, the load and observer; [`kernel`] reads the BPF run-time
//! statistics; [`report`] writes the results. This file runs the rounds.

mod kernel;
mod load;
mod report;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{Proc, build, setup, step, workspace_root};
use kernel::{BpfStats, bpf_stats};
use load::{
    Serve, Wrk, certificate, free_port, go_https, h2load, nginx, read_ns, start_observer,
    start_observer_with, tree_cpu, usage, wrk, wrk_paced,
};
use report::parser_throughput;

const ROUNDS: usize = 3;
const SECONDS: u64 = 3;
const CONNECTIONS: u32 = 16;
const PATHS: &[(&str, &str)] = &[
    ("/json", "small JSON"),
    ("/1k.bin", "1 KiB"),
    ("/64k.bin", "64 KiB"),
];
const CONDITIONS: &[&str] = &[
    "B0", "T1", "T2", "C1", "C2", "S0", "S2", "H0", "H2", "G0", "G2",
];
/// Concurrent streams per connection in the HTTP/2 conditions (h2load `-m`).
const H2_STREAMS: u32 = 10;
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

#[derive(Default)]
struct ObserverCost {
    cpu_s: f64,
    exchanges: u64,
    requests: u64,
    peak_rss_kib: u64,
    losses: u64,
}

/// What the rounds measured, for the report.
#[derive(Default)]
struct Results {
    /// (condition, path) → runs.
    results: BTreeMap<(String, String), Vec<Wrk>>,
    costs: BTreeMap<(String, String), ObserverCost>,
    /// (condition, program) → (run time ns, runs).
    kernel: BTreeMap<(String, String), (u64, u64)>,
    /// Fixed rate: condition → runs.
    paced: BTreeMap<String, Vec<Wrk>>,
    /// Syscall hook → ns per read, by round.
    syscall_ns: BTreeMap<&'static str, Vec<f64>>,
    /// Criterion's throughputs, GB/s.
    parser: BTreeMap<String, f64>,
    /// B0, by path: nginx's own CPU seconds (master and worker) and the requests wrk made.
    nginx_cpu: BTreeMap<String, (f64, u64)>,
}

/// The servers and the idle process the rounds run against.
struct Servers {
    port: u16,
    log_port: u16,
    tls_port: u16,
    h2_port: u16,
    // Dropped (stopped) in this order.
    plain: Proc,
    /// Serves C2 on `log_port`; only kept running.
    _logged: Proc,
    idle: Proc,
    tls: Proc,
    /// nginx serving HTTP/2 over TLS (H0, H2).
    h2: Proc,
    go_port: u16,
    /// The Go HTTPS server (G0, G2).
    go: Proc,
}

pub fn bench() -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("the benchmark loads eBPF programs: run `sudo cargo xtask bench`");
    }
    setup::build_tools()?;
    setup::test_tools()?;
    setup::apt_install(&[
        "tcpdump",
        "bpftool",
        "util-linux",
        "openssl",
        "nghttp2-client",
    ])?;
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
    let h2_port = free_port()?;
    let plain = nginx(&dir, port, false, Serve::Http)?;
    let logged = nginx(&dir, log_port, true, Serve::Http)?;
    let tls = nginx(&dir, tls_port, false, Serve::Https)?;
    let h2 = nginx(&dir, h2_port, false, Serve::Https2)?;
    let go_port = free_port()?;
    let go = go_https(&dir, go_port)?;
    let idle = Proc(Command::new("sleep").arg("3600").spawn()?);
    // Run-time statistics cost every program run two clock reads, so the rounds that measure
    // throughput run without them; one extra round of the observer conditions measures the
    // kernel side. The host's setting is put back at the end.
    let stats = BpfStats::off()?;

    let servers = Servers {
        port,
        log_port,
        tls_port,
        h2_port,
        plain,
        _logged: logged,
        idle,
        tls,
        h2,
        go_port,
        go,
    };
    let mut r = Results::default();
    throughput_rounds(&bin, &dir, &servers, &stats, &mut r)?;
    stats.set(false)?;
    paced_rounds(&bin, &dir, &servers, &mut r)?;
    syscall_rounds(&bin, &dir, &servers, &mut r)?;
    drop(servers);
    r.parser = parser_throughput()?;
    report::write(r, started)
}

/// Saturating load, every condition and body, interleaved round by round; then one round of
/// the observer conditions with BPF run-time statistics on, for the kernel side.
fn throughput_rounds(
    bin: &Path,
    dir: &Path,
    servers: &Servers,
    stats: &BpfStats,
    r: &mut Results,
) -> anyhow::Result<()> {
    let Servers {
        port,
        log_port,
        tls_port,
        h2_port,
        plain,
        tls,
        idle,
        h2,
        go_port,
        go,
        ..
    } = servers;
    let Results {
        results,
        costs,
        kernel,
        nginx_cpu,
        ..
    } = r;
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
                    "H0" | "H2" => format!("https://127.0.0.1:{h2_port}{path}"),
                    "G0" | "G2" => format!("https://127.0.0.1:{go_port}{path}"),
                    _ => format!("http://127.0.0.1:{port}{path}"),
                };
                let w = match *cond {
                    "T1" | "T2" | "S2" | "H2" | "G2" => {
                        let target = match *cond {
                            "T1" => idle.0.id(),
                            "T2" => plain.0.id(),
                            "S2" => tls.0.id(),
                            "G2" => go.0.id(),
                            _ => h2.0.id(),
                        };
                        let before = bpf_stats();
                        let obs = start_observer(bin, dir, target)?;
                        // Loading and verifying the programs is start-up cost, not per exchange.
                        let (cpu0, _) = usage(obs.proc.0.id());
                        let w = if *cond == "H2" {
                            h2load(&url)?
                        } else {
                            wrk(&url)?
                        };
                        // Let it catch up, then read its cost before it exits.
                        std::thread::sleep(Duration::from_millis(300));
                        let after = bpf_stats();
                        for (name, (t, c)) in after.iter().filter(|_| stats_round) {
                            let (t0, c0) = before.get(name).copied().unwrap_or((0, 0));
                            // Programs are found by name: the previous run's, still being
                            // unloaded when `before` was read, can make a figure go down.
                            if c > &c0 && t >= &t0 {
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
                    "B0" => {
                        // What nginx itself spends per request: the yardstick for observer's
                        // CPU per exchange, which does not move with the host's speed.
                        let cpu0 = tree_cpu(plain.0.id());
                        let w = wrk(&url)?;
                        let cpu = tree_cpu(plain.0.id()) - cpu0;
                        if !stats_round {
                            let e = nginx_cpu.entry(path.to_string()).or_insert((0.0, 0));
                            e.0 += cpu;
                            e.1 += w.requests;
                        }
                        w
                    }
                    "H0" => h2load(&url)?,
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
    Ok(())
}

/// Fixed rate, for latency without saturation.
fn paced_rounds(bin: &Path, dir: &Path, servers: &Servers, r: &mut Results) -> anyhow::Result<()> {
    let Servers {
        port, plain, idle, ..
    } = servers;
    let Results { costs, paced, .. } = r;
    let script = dir.join("paced.lua");
    std::fs::write(&script, format!("function delay() return {PACE_MS} end\n"))?;
    for round in 1..=ROUNDS {
        for cond in ["B0", "T1", "T2"] {
            step(&format!("fixed rate, round {round}/{ROUNDS}: {cond}"));
            let url = format!("http://127.0.0.1:{port}/json");
            let obs = match cond {
                "T1" => Some(start_observer(bin, dir, idle.0.id())?),
                "T2" => Some(start_observer(bin, dir, plain.0.id())?),
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
    Ok(())
}

/// What observer costs every other process: one syscall it hooks, made by a process it
/// does not target, with each way of hooking syscalls.
fn syscall_rounds(
    bin: &Path,
    dir: &Path,
    servers: &Servers,
    r: &mut Results,
) -> anyhow::Result<()> {
    let idle = &servers.idle;
    let syscall_ns = &mut r.syscall_ns;
    for round in 1..=ROUNDS {
        for (cond, hook) in SYSCALL_CONDITIONS {
            step(&format!("syscall cost, round {round}/{ROUNDS}: {cond}"));
            let obs = match hook {
                Some(h) => Some(start_observer_with(
                    bin,
                    dir,
                    idle.0.id(),
                    &["--syscall-hook", h],
                )?),
                None => None,
            };
            syscall_ns.entry(cond).or_default().push(read_ns()?);
            drop(obs);
        }
    }
    Ok(())
}
