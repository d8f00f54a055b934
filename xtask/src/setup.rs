//! Installs what building and testing observer needs, on a fresh machine of the supported kind
//! (Debian with rustup). Every step checks first, so running it again costs a few probes.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::{run, step};

/// The LLVM bpf-linker is built against (Debian's packages).
const LLVM: &str = "22";
/// Verified to build with this machine's stable toolchain.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "clang-22"];

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> String {
    cmd.stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn deb_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .contains("install ok installed")
}

static APT_UPDATED: std::sync::Once = std::sync::Once::new();

/// Installs Debian packages that are missing.
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !deb_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "Debian packages {} are missing and installing them needs root: run `sudo apt-get \
             install -y {}` or run this command as root",
            missing.join(" "),
            missing.join(" ")
        );
    }
    apt_update_once()?;
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
    .with_context(|| format!("installing {} failed", missing.join(" ")))
}

/// Nightly rust-src and bpf-linker: what building the eBPF programs takes.
pub fn build_tools() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]));
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        step("installing the nightly Rust toolchain (eBPF programs need -Z build-std)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        step("adding rust-src to the nightly toolchain");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if !components.lines().any(|l| l.starts_with("clippy")) {
        step("adding clippy to the nightly toolchain (lints the eBPF crate)");
        run(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", "nightly"]))?;
    }
    if !succeeds(Command::new("bpf-linker").arg("--version")) {
        apt_install(LLVM_PACKAGES)?;
        step(&format!(
            "building bpf-linker against Debian's LLVM {LLVM} (about 2 minutes, once)"
        ));
        let prefix = format!("/usr/lib/llvm-{LLVM}");
        run(Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .env(format!("LLVM_SYS_{LLVM}1_PREFIX"), &prefix)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM}"),
            ]))
        .context(
            "installing bpf-linker failed; it needs Debian's llvm-22-dev and libpolly-22-dev",
        )?;
    }
    Ok(())
}

/// cargo-fuzz, for `cargo xtask fuzz`.
pub fn cargo_fuzz() -> anyhow::Result<()> {
    if !succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        step("installing cargo-fuzz (once)");
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// cargo-deb, for `cargo xtask package`.
pub fn cargo_deb() -> anyhow::Result<()> {
    if !succeeds(Command::new("cargo").args(["deb", "--version"])) {
        step("installing cargo-deb from crates.io (once)");
        run(Command::new("cargo").args(["install", "cargo-deb", "--locked"]))?;
    }
    Ok(())
}

/// The real servers and clients the integration tests drive.
pub fn test_tools() -> anyhow::Result<()> {
    // (command, Debian package that provides it)
    let tools = [
        ("curl", "curl"),
        ("python3", "python3"),
        ("setpriv", "util-linux"),
        ("pgrep", "procps"),
        ("nginx", "nginx"),
        ("wrk", "wrk"),
        // HTTPS tests: certificates, a Node.js server, a static OpenSSL server built with gcc.
        ("openssl", "openssl"),
        ("node", "nodejs"),
        ("gcc", "gcc"),
        // Login attacks: hydra's http-post-form against a Flask form login.
        ("hydra", "hydra"),
        // HTTP/2 load (h2load) against nginx.
        ("h2load", "nghttp2-client"),
        // A non-HTTP target (RESP) for the undecoded-protocol tests.
        ("redis-server", "redis-server"),
        // Go TLS tests: HTTPS servers and a client built from tests/servers/go.
        ("go", "golang-go"),
    ];
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|(cmd, _)| !on_path(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if !std::path::Path::new("/usr/include/openssl/ssl.h").exists() {
        missing.push("libssl-dev");
    }
    // The io_uring server the hostile-target tests build.
    if !std::path::Path::new("/usr/include/liburing.h").exists() {
        missing.push("liburing-dev");
    }
    apt_install(&missing)?;
    // (module, what pip installs, what for, Debian's package when pip cannot install it)
    let modules = [
        (
            "gunicorn",
            "gunicorn",
            "the process-tree and login tests run it",
            "gunicorn",
        ),
        (
            "flask",
            "flask",
            "the login tests serve a Flask form",
            "python3-flask",
        ),
        (
            "grpc",
            "grpcio==1.85.1",
            "the gRPC tests' server and client",
            "python3-grpcio",
        ),
        (
            "aioquic",
            "aioquic==1.7.2",
            "the HTTP/3 server of the undecoded-protocol tests",
            "python3-aioquic",
        ),
    ];
    for (module, spec, why, deb) in modules {
        if succeeds(Command::new("python3").args(["-c", &format!("import {module}")])) {
            continue;
        }
        step(&format!("installing {spec} from PyPI ({why})"));
        let pip = pip_install(spec);
        if pip.is_err() {
            step(&format!(
                "pip could not install {module}; trying Debian's package"
            ));
            apt_install(&[deb])?;
        }
    }
    npm_install(
        EXPRESS_LOGIN_DIR,
        EXPRESS_LOGIN,
        "the stuffing tests' Express login",
    )?;
    Ok(())
}

/// Where the stuffing tests find Express and Passport (as NODE_PATH=<dir>/node_modules).
pub const EXPRESS_LOGIN_DIR: &str = "target/npm/express-login";
/// (package, pinned version): the JSON login of tests/servers/express_login.js.
const EXPRESS_LOGIN: &[(&str, &str)] = &[
    ("express", "4.21.2"),
    ("passport", "0.7.0"),
    ("passport-local", "1.0.0"),
];

/// Installs pinned npm packages into `dir` (under the workspace) unless each is there at its
/// version already; only the npm registry is reached.
fn npm_install(dir: &str, packages: &[(&str, &str)], why: &str) -> anyhow::Result<()> {
    let root = crate::workspace_root().join(dir);
    let installed = |name: &str, version: &str| {
        std::fs::read_to_string(root.join("node_modules").join(name).join("package.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["version"] == version)
    };
    if packages.iter().all(|(n, v)| installed(n, v)) {
        return Ok(());
    }
    let specs: Vec<String> = packages.iter().map(|(n, v)| format!("{n}@{v}")).collect();
    step(&format!(
        "installing {} from npm into {dir} ({why})",
        specs.join(" ")
    ));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    run(Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--save-exact",
            "--prefix",
        ])
        .arg(&root)
        .args(&specs))
    .with_context(|| {
        format!(
            "npm could not install {}; it needs the npm registry (registry.npmjs.org) reachable",
            specs.join(" ")
        )
    })
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// `apt-get update`, at most once per run (shared with `apt_install`): kernel packages are
/// resolved against fresh lists.
pub fn apt_update_once() -> anyhow::Result<()> {
    let mut update_result = Ok(());
    APT_UPDATED.call_once(|| {
        step("apt-get update");
        update_result = run(Command::new("apt-get").args(["update", "-qq"]));
    });
    update_result
}

/// The virtme-ng release `cargo xtask vm` is verified with.
const VIRTME_NG_VERSION: &str = "1.42";

/// QEMU and virtme-ng, which boot Debian's kernel packages with the host's file system
/// (`cargo xtask vm`): virtme-ng builds its initramfs with busybox, runs depmod on unpacked
/// packages, and reads kernel versions with file.
pub fn vm_tools() -> anyhow::Result<()> {
    apt_install(&["qemu-system-x86", "kmod", "busybox-static", "file"])?;
    let installed = output(Command::new("python3").args([
        "-c",
        "from virtme_ng.version import VERSION; print(VERSION)",
    ]));
    if installed.trim() != VIRTME_NG_VERSION {
        step(&format!(
            "installing virtme-ng {VIRTME_NG_VERSION} from PyPI (boots kernels in QEMU with the \
             host's file system)"
        ));
        pip_install(&format!("virtme-ng=={VIRTME_NG_VERSION}"))?;
    }
    Ok(())
}

/// `pip install SPEC` with the machine's python3; where Debian's own python3 refuses installs
/// outside a virtualenv (PEP 668), again with --break-system-packages.
fn pip_install(spec: &str) -> anyhow::Result<()> {
    let pip = |extra: &[&str]| {
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--root-user-action=ignore",
            ])
            .args(extra)
            .arg(spec))
    };
    if pip(&[]).is_err() {
        step("pip refused; trying again with --break-system-packages");
        pip(&["--break-system-packages"])?;
    }
    Ok(())
}
