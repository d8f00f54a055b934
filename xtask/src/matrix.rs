//! The kernel matrix: the smoke suite (`tests/kernel/smoke.py`) with the release binary on the
//! host's kernel and, through [`crate::vm`], on each Debian kernel of [`vm::KERNELS`], with the
//! results in one table. A kernel that cannot boot or an item that fails fails the matrix.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{step, vm, workspace_root};

/// A guest run takes ~70 s under TCG; this is for a machine several times slower.
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);

/// One smoke item: its name, whether it passed, and what it saw.
type Item = (String, bool, String);

/// A kernel's `uname -r` and its items, or why the suite did not run there.
type Parsed = Result<(String, Vec<Item>), String>;

/// One kernel's outcome: the smoke items, or why it did not run.
struct Column {
    name: String,
    release: String,
    items: Result<Vec<Item>, String>,
    seconds: f64,
}

fn parse(name: &str, stdout: &str) -> Parsed {
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("SMOKE-RESULT "))
        .ok_or_else(|| format!("{name}: the smoke suite printed no result line"))?;
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("{name}: unreadable result: {e}"))?;
    let release = v["kernel"].as_str().unwrap_or("?").to_string();
    let items = v["results"]
        .as_array()
        .ok_or_else(|| format!("{name}: result without items"))?
        .iter()
        .map(|r| {
            (
                r["item"].as_str().unwrap_or("?").to_string(),
                r["ok"].as_bool().unwrap_or(false),
                r["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    Ok((release, items))
}

/// The suite's own lines (one per item), without the machine-readable result line.
fn print_items(stdout: &str) {
    for line in stdout.lines().filter(|l| !l.starts_with("SMOKE-RESULT ")) {
        println!("  {line}");
    }
}

fn smoke_script(bin: &Path, work: &str) -> String {
    let root = workspace_root();
    format!(
        "python3 '{}' '{}' '{work}'",
        root.join("tests/kernel/smoke.py").display(),
        bin.display()
    )
}

fn host(bin: &Path) -> Column {
    step("kernel matrix: the smoke suite on the host's kernel");
    let started = Instant::now();
    let work = std::env::temp_dir().join(format!("observer-smoke-{}", std::process::id()));
    let out = Command::new("bash")
        .arg("-c")
        .arg(smoke_script(bin, &work.display().to_string()))
        .current_dir(workspace_root())
        .output();
    let _ = std::fs::remove_dir_all(&work);
    let items = match out {
        Err(e) => Err(format!("cannot start the smoke suite: {e}")),
        Ok(o) => {
            print_items(&String::from_utf8_lossy(&o.stdout));
            parse("host", &String::from_utf8_lossy(&o.stdout))
        }
    };
    column("host".into(), items, started)
}

fn column(name: String, parsed: Parsed, started: Instant) -> Column {
    let (release, items) = match parsed {
        Ok((r, i)) => (r, Ok(i)),
        Err(e) => ("?".into(), Err(e)),
    };
    Column {
        name,
        release,
        items,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn guest(kernel: &'static vm::Kernel, bin: &Path) -> Column {
    step(&format!(
        "kernel matrix: the smoke suite on Debian's {}",
        kernel.name
    ));
    let started = Instant::now();
    let parsed = vm::fetch(kernel)
        .and_then(|image| vm::run_in_guest(&image, &smoke_script(bin, "/tmp/smoke"), GUEST_TIMEOUT))
        .map_err(|e| format!("{}: {e:#}", kernel.name))
        .and_then(|out| {
            print_items(&out.stdout);
            if !out.stderr.trim().is_empty() {
                eprint!("{}", out.stderr);
            }
            parse(kernel.name, &out.stdout).map_err(|e| {
                format!(
                    "{e} (exit status {}; console {})",
                    out.status,
                    out.console.display()
                )
            })
        });
    column(kernel.name.to_string(), parsed, started)
}

/// Failures known and not yet fixed: (kernel, item, what is wrong). Such a cell reads "known
/// bug" and does not fail the matrix; once it passes, it does, so the entry is removed when
/// the bug is fixed rather than left to hide a regression.
const KNOWN: &[(&str, &str, &str)] = &[(
    "6.1-rt",
    "blocked_accept[fallback]",
    "with per-syscall tracepoints on PREEMPT_RT, the connection an accept blocked since before \
     observer attached returns with is lost, silently (no loss counted)",
)];

fn known(kernel: &str, item: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|(k, i, _)| *k == kernel && *i == item)
        .map(|(_, _, why)| *why)
}

/// Prints the table: one row per smoke item, one column per kernel.
fn table(columns: &[Column]) -> String {
    let mut rows: BTreeMap<usize, String> = BTreeMap::new();
    let mut cells: BTreeMap<(String, usize), &'static str> = BTreeMap::new();
    for (c, col) in columns.iter().enumerate() {
        if let Ok(items) = &col.items {
            for (i, (name, ok, _)) in items.iter().enumerate() {
                rows.entry(i).or_insert_with(|| name.clone());
                let cell = match (ok, known(&col.name, name).is_some()) {
                    (true, false) => "pass",
                    (false, false) => "FAIL",
                    (false, true) => "known bug",
                    (true, true) => "FIXED: update KNOWN",
                };
                cells.insert((name.clone(), c), cell);
            }
        }
    }
    let width = rows.values().map(String::len).max().unwrap_or(4).max(24);
    let mut out = format!("{:width$}", "item");
    for col in columns {
        out += &format!(" | {:>22}", col.name);
    }
    out += &format!("\n{:width$}", "kernel (uname -r)");
    for col in columns {
        let r: String = col.release.chars().take(22).collect();
        out += &format!(" | {r:>22}");
    }
    out += &format!("\n{}", "-".repeat(width + 25 * columns.len()));
    for name in rows.values() {
        out += &format!("\n{name:width$}");
        for (c, col) in columns.iter().enumerate() {
            let cell = match &col.items {
                Err(_) => "did not run",
                Ok(_) => cells.get(&(name.clone(), c)).copied().unwrap_or("missing"),
            };
            out += &format!(" | {cell:>22}");
        }
    }
    out += &format!("\n{:width$}", "seconds");
    for col in columns {
        out += &format!(" | {:>22.0}", col.seconds);
    }
    out
}

/// Runs the matrix; fails when any kernel did not run or any item failed.
pub fn run(bin: &Path) -> anyhow::Result<()> {
    // Before any kernel package is unpacked: that runs depmod, from kmod, which a fresh
    // machine may lack.
    crate::setup::vm_tools()?;
    let mut columns = vec![host(bin)];
    for k in vm::KERNELS {
        columns.push(guest(k, bin));
    }
    let t = table(&columns);
    println!("\nKernel matrix (tests/kernel/smoke.py, the release binary):\n{t}\n");
    let mut problems = Vec::new();
    for col in &columns {
        match &col.items {
            Err(e) => problems.push(e.clone()),
            Ok(items) => {
                if items.is_empty() {
                    problems.push(format!("{}: no smoke item ran", col.name));
                }
                for (name, ok, detail) in items {
                    match (ok, known(&col.name, name)) {
                        (false, None) => {
                            problems.push(format!("{} on {}: {detail}", name, col.name))
                        }
                        (false, Some(why)) => {
                            println!("known bug, {name} on {}: {why} ({detail})", col.name)
                        }
                        (true, Some(_)) => problems.push(format!(
                            "{name} on {} passes now: remove it from KNOWN in \
                             xtask/src/matrix.rs",
                            col.name
                        )),
                        (true, None) => {}
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!("the kernel matrix failed:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// `cargo xtask kernels`: builds observer (or takes the binary `OBSERVER_BIN` names) and runs
/// the matrix alone.
pub fn command() -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("the kernel matrix loads eBPF programs and boots VMs: run it as root");
    }
    let bin = match std::env::var_os("OBSERVER_BIN") {
        Some(b) => std::path::PathBuf::from(b),
        None => crate::build().context("building observer for the kernel matrix")?,
    };
    run(&bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_failures_and_kernels_that_did_not_run() {
        let ok = r#"SMOKE-RESULT {"kernel":"6.1.0-57-amd64","results":[{"item":"a","ok":true,"detail":""},{"item":"b","ok":false,"detail":"x"}]}"#;
        let (release, items) = parse("6.1", &format!("noise\n{ok}\n")).unwrap();
        assert_eq!(release, "6.1.0-57-amd64");
        assert_eq!(items.len(), 2);
        assert!(parse("6.12", "no result here").is_err());
        let columns = vec![
            Column {
                name: "6.1".into(),
                release,
                items: Ok(items),
                seconds: 60.0,
            },
            Column {
                name: "6.12".into(),
                release: "?".into(),
                items: Err("boot failed".into()),
                seconds: 1.0,
            },
        ];
        let t = table(&columns);
        assert!(t.contains("pass"), "{t}");
        assert!(t.contains("FAIL"), "{t}");
        assert!(t.contains("did not run"), "{t}");
    }
}
