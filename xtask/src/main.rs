//! Build, run, test and demo automation for observer. Each command first installs what it lacks
//! on a fresh machine, idempotently, with a line of progress for each step.

mod bench;
mod demo;
mod layout;
mod matrix;
mod setup;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "observer's build, run, test and demo automation"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain pieces and test tools observer needs (idempotent).
    Setup,
    /// Build the observer binary (release, eBPF programs embedded).
    Build,
    /// Build and run observer as root; arguments after `--` go to observer
    /// (`run` is implied when they start with an option).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every check and test: fmt, layout, clippy, unit tests, privileged integration tests
    /// (with both syscall hooks), and the kernel matrix.
    Test {
        /// Only run integration tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// For contributors without root: formatting, layout, clippy and every unprivileged
        /// test only; the privileged integration tests and the kernel matrix are not run.
        #[arg(long, conflicts_with = "filter")]
        unprivileged: bool,
    },
    /// Build the Debian package (cargo-deb): the binary, observer.service, the default config
    /// in /etc/observer and the scripts that create its user and directories. Prints its path.
    Package,
    /// Check the layout alone: imports down the pipeline, no cycle, no file over 600 lines
    /// (part of `test`).
    Layout,
    /// Start a sample API, observe it, send it some traffic and show the events.
    Demo,
    /// Measure overhead, completeness and parser speed; writes bench/results.md (needs root).
    Bench,
    /// Fuzz the parsers (cargo-fuzz, nightly) for a bounded time per target.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (http_reassembly, http2_reassembly, capture_decode, pipeline_events,
        /// host_answers).
        #[arg(long)]
        target: Option<String>,
    },
    /// Run the kernel smoke suite on the host and on Debian's 6.1, 6.1-rt and 6.12 in QEMU,
    /// and print the table (part of `test`).
    Kernels,
    /// Boot a Debian 12 kernel (6.1, 6.1-rt, 6.12, or all) in QEMU with the host's file system
    /// and run a bash command there as root; exits with its status.
    Vm {
        /// 6.1, 6.1-rt, 6.12 or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Seconds before QEMU is killed, per kernel.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// One argument is a bash script; several are a command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

const FUZZ_TARGETS: &[&str] = &[
    "http_reassembly",
    "http2_reassembly",
    "capture_decode",
    "pipeline_events",
    "host_answers",
];

fn fuzz(seconds: u64, target: Option<String>) -> anyhow::Result<()> {
    setup::build_tools()?;
    setup::cargo_fuzz()?;
    let targets: Vec<String> = match target {
        Some(t) if FUZZ_TARGETS.contains(&t.as_str()) => vec![t],
        Some(t) => bail!(
            "unknown fuzz target {t}; known: {}",
            FUZZ_TARGETS.join(", ")
        ),
        None => FUZZ_TARGETS.iter().map(|t| t.to_string()).collect(),
    };
    for t in targets {
        step(&format!("fuzzing {t} for {seconds} s"));
        run(Command::new("rustup")
            .env("AYA_BUILD_SKIP", "1")
            .args(["run", "nightly", "cargo", "fuzz", "run", &t, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .args([
                "-rss_limit_mb=2048",
                "-max_len=65536",
                "-print_final_stats=1",
            ]))?;
    }
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing with its name when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// A child process that is stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn step(msg: &str) {
    eprintln!("==> {msg}");
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub fn observer_bin() -> PathBuf {
    workspace_root().join("target/release/observer")
}

pub fn build() -> anyhow::Result<PathBuf> {
    setup::build_tools()?;
    step("building observer (release, with its eBPF programs)");
    run(cargo().args(["build", "--release", "--package", "observer"]))?;
    Ok(observer_bin())
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn main() {
    if let Err(e) = dispatch(Cli::parse().command) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Setup => {
            setup::build_tools()?;
            setup::test_tools()?;
        }
        Cmd::Build => {
            build()?;
        }
        Cmd::Run { mut args } => {
            let bin = build()?;
            if args.first().is_none_or(|a| a.starts_with('-')) {
                args.insert(0, "run".into());
            }
            let mut cmd = if is_root() {
                Command::new(&bin)
            } else {
                step("observer needs root: running it through sudo");
                let mut c = Command::new("sudo");
                c.arg(&bin);
                c
            };
            step(&format!("running {} {}", bin.display(), args.join(" ")));
            let status = cmd.args(&args).status().context("cannot start observer")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test {
            filter,
            unprivileged,
        } => {
            if unprivileged {
                test_unprivileged()?;
            } else {
                test(filter)?;
            }
        }
        Cmd::Package => {
            let deb = package()?;
            println!("{}", deb.display());
        }
        Cmd::Layout => layout::check(&workspace_root())?,
        Cmd::Demo => demo::demo()?,
        Cmd::Bench => bench::bench()?,
        Cmd::Fuzz { seconds, target } => fuzz(seconds, target)?,
        Cmd::Kernels => matrix::command()?,
        Cmd::Vm {
            kernel,
            timeout,
            command,
        } => std::process::exit(vm::vm_command(
            &kernel,
            Duration::from_secs(timeout),
            &command,
        )?),
    }
    Ok(())
}

/// Builds the release binary and the .deb from it; returns the .deb's path.
pub fn package() -> anyhow::Result<PathBuf> {
    setup::cargo_deb()?;
    build()?;
    let out = workspace_root().join("target/debian");
    step("packaging observer (cargo deb)");
    let shown = "cargo deb --package observer --no-build";
    let made = cargo()
        .current_dir(workspace_root())
        .args(["deb", "--package", "observer", "--no-build", "--output"])
        .arg(&out)
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !made.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&made.stderr));
    }
    let path = String::from_utf8_lossy(&made.stdout).trim().to_string();
    let deb = PathBuf::from(path.lines().last().unwrap_or_default());
    if !deb.is_file() {
        bail!("{shown} printed no package path (it printed {path:?})");
    }
    step(&format!("package: {}", deb.display()));
    Ok(deb)
}

/// The checks and tests that need no root: formatting, layout, clippy (userspace; the eBPF
/// crate's lint needs only nightly and runs too) and the unit tests.
fn test_unprivileged() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    setup::build_tools()?;
    step("cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--check"]))?;
    step("layout: imports down the pipeline, no cycles, no file over 600 lines");
    layout::check(&workspace_root())?;
    clippy()?;
    unit_tests()?;
    step(&format!(
        "unprivileged checks and tests passed in {:.0} s; the privileged integration tests \
         and the kernel matrix were NOT run (they need root: `sudo cargo xtask test`)",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Clippy on the userspace crates and, with nightly, on the eBPF crate; warnings are errors.
fn clippy() -> anyhow::Result<()> {
    // Lint and unit-test runs need no eBPF object; skipping it saves a nightly build per profile.
    step("clippy: userspace crates (warnings are errors)");
    run(cargo().env("AYA_BUILD_SKIP", "1").args([
        "clippy",
        "--workspace",
        "--exclude",
        "observer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("clippy: eBPF crate, nightly (warnings are errors)");
    run(Command::new("rustup").args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "--package",
        "observer-ebpf",
        "--",
        "-D",
        "warnings",
        "-C",
        "panic=abort",
        "-Zpanic_abort_tests",
    ]))
}

/// The unit tests of every crate but the eBPF one and the privileged integration tests.
fn unit_tests() -> anyhow::Result<()> {
    step("unit tests");
    run(cargo().env("AYA_BUILD_SKIP", "1").args([
        "test",
        "--workspace",
        "--exclude",
        "observer-ebpf",
        "--exclude",
        "observer-tests",
    ]))
}

fn test(filter: Option<String>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    setup::build_tools()?;
    setup::test_tools()?;
    if !is_root() {
        bail!(
            "the integration tests load eBPF programs and need root; run `sudo cargo xtask test` \
             (CI runs as root)"
        );
    }
    step("cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--check"]))?;
    step("layout: imports down the pipeline, no cycles, no file over 600 lines");
    layout::check(&workspace_root())?;
    clippy()?;
    unit_tests()?;
    let bin = build()?;
    // Once with the default hook (the raw sys_enter/sys_exit tracepoints on x86_64), once with
    // the per-syscall tracepoints older or other kernels fall back to.
    for hook in [None, Some("tracepoints")] {
        step(&format!(
            "privileged integration tests (real servers, real kernel path), syscall hook: {}",
            hook.unwrap_or("auto")
        ));
        let mut cmd = cargo();
        cmd.env("OBSERVER_BIN", &bin)
            .args(["test", "--release", "--package", "observer-tests", "--"])
            .arg("--test-threads=1");
        if let Some(h) = hook {
            cmd.env("OBSERVER_TEST_SYSCALL_HOOK", h);
        }
        if let Some(f) = &filter {
            cmd.arg(f);
        }
        run(&mut cmd)?;
    }
    if filter.is_some() {
        step("kernel matrix left out: --filter runs only the integration tests it names");
    } else {
        matrix::run(&bin)?;
    }
    step(&format!(
        "all checks and tests passed in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
