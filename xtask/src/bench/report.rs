//! The report: medians of the rounds as ratios to the baseline of the same run, observer's own
//! cost, the kernel side per program, the cost to other processes and the parser's speed,
//! written to bench/results.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

use super::load::Wrk;
use super::{
    CONDITIONS, CONNECTIONS, H2_STREAMS, PACE_MS, PACED_CONNECTIONS, PACED_SECONDS, PATHS, ROUNDS,
    Results, SECONDS, SYSCALL_CALLS, SYSCALL_CONDITIONS,
};
use crate::{step, workspace_root};

pub(super) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Criterion's throughput of the `http` benchmarks, in GB/s, by name.
pub(super) fn parser_throughput() -> anyhow::Result<BTreeMap<String, f64>> {
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
pub(super) fn criterion_throughputs(text: &str) -> BTreeMap<String, f64> {
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

/// Writes bench/results.md from the rounds' results and prints it.
pub(super) fn write(r: Results, started: Instant) -> anyhow::Result<()> {
    let Results {
        results,
        costs,
        kernel,
        paced,
        mut syscall_ns,
        parser,
        nginx_cpu,
    } = r;
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
        "B0 nginx alone · T1 observer targeting an idle process (filter cost) · T2 observer on nginx · C1 tcpdump to a file · C2 nginx JSON access_log · S0 nginx serving HTTPS alone · S2 observer on the HTTPS nginx (`--tls targets`) · H0 nginx serving HTTP/2 over TLS to h2load (-c{CONNECTIONS} -m{H2_STREAMS}, same CPU and duration) · H2 observer on it · G0 a Go net/http server serving HTTPS alone (GOMAXPROCS=1 on CPU 0) · G2 observer on it (Go crypto/tls probes). S rows are ratios to S0, H rows to H0, G rows to G0 (h2load gives no percentiles: their p50 and p99 read 0).\n"
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
            let base = match cond.as_bytes()[0] {
                b'S' => "S0",
                b'H' => "H0",
                b'G' => "G0",
                _ => "B0",
            };
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
            // h2load reports no percentiles.
            let ratio = |v: f64, b: f64| {
                if b > 0.0 {
                    format!("{:.2}", v / b)
                } else {
                    "–".to_string()
                }
            };
            writeln!(
                md,
                "| {label} | {cond} | {rps:.0} | {:.3} | {p50:.0} | {} | {p99:.0} | {} |",
                rps / b_rps,
                ratio(p50, b_p50),
                ratio(p99, b_p99)
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
        "| condition | body | requests (wrk) | exchanges reported | completeness | kernel losses | CPU µs per exchange | ÷ nginx CPU per request (B0) | peak RSS MiB |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for ((cond, path), c) in &costs {
        let label = PATHS
            .iter()
            .find(|(p, _)| p == path)
            .map_or(path.as_str(), |(_, l)| l);
        {
            let per_exchange = c.cpu_s * 1e6 / c.exchanges.max(1) as f64;
            let cpu = if c.cpu_s > 0.0 {
                format!("{per_exchange:.2}")
            } else {
                "–".into()
            };
            // HTTPS rows compare with plain nginx too: the yardstick is one, B0's.
            let ratio = match nginx_cpu.get(path) {
                Some(&(s, n)) if s > 0.0 && n > 0 && c.cpu_s > 0.0 => {
                    format!("{:.2}", per_exchange / (s * 1e6 / n as f64))
                }
                _ => "–".into(),
            };
            writeln!(
                md,
                "| {cond} | {label} | {} | {} | {:.4} | {} | {cpu} | {ratio} | {:.1} |",
                c.requests,
                c.exchanges,
                c.exchanges as f64 / c.requests.max(1) as f64,
                c.losses,
                c.peak_rss_kib as f64 / 1024.0
            )?;
        }
    }
    let nginx: Vec<String> = PATHS
        .iter()
        .filter_map(|(path, label)| {
            let &(s, n) = nginx_cpu.get(*path)?;
            (n > 0).then(|| format!("{label} {:.2} µs", s * 1e6 / n as f64))
        })
        .collect();
    if !nginx.is_empty() {
        writeln!(
            md,
            "\nnginx's own CPU per request in B0 (master and worker, from /proc): {}.",
            nginx.join(", ")
        )?;
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
