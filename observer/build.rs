//! Builds the eBPF programs (observer-ebpf) for the BPF target and leaves the object in OUT_DIR,
//! where `capture` embeds it, so the one `observer` binary is all a host needs.
//!
//! aya-build relays every line of the inner cargo build as a `cargo:warning`, ~40 lines per
//! build that read like trouble. So the build runs in a second copy of this script whose output
//! is read here: cargo's instructions pass through, the progress lines become one line, and
//! everything is shown when the build fails or the compiler had something to say.
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

/// Set in the copy that runs the build itself.
const INNER: &str = "OBSERVER_EBPF_BUILD_INNER";

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join("observer");
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // Lint and doc runs need no object; an empty one makes the binary refuse to start
        // with a clear message instead of failing to compile.
        if !object.exists() {
            fs::write(&object, b"").context("writing the placeholder eBPF object")?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    if env::var_os(INNER).is_some() {
        return build_ebpf();
    }
    let started = Instant::now();
    let me = env::current_exe().context("the build script's own path")?;
    let out = Command::new(me)
        .env(INNER, "1")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running the eBPF build")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut relayed: Vec<&str> = Vec::new();
    let mut stdout = std::io::stdout().lock();
    for line in text.lines() {
        match line.strip_prefix("cargo:warning=") {
            Some(w) => relayed.push(w),
            None => writeln!(stdout, "{line}")?,
        }
    }
    let log = out_dir.join("ebpf-build.log");
    let _ = fs::write(&log, relayed.join("\n"));
    let diagnostics = relayed.iter().any(|l| !progress(l));
    if !out.status.success() || diagnostics {
        for l in &relayed {
            writeln!(stdout, "cargo:warning={l}")?;
        }
    }
    if !out.status.success() {
        return Err(anyhow!(
            "building the eBPF programs failed (output above, also in {}); `cargo xtask test` \
             or `cargo xtask run` installs the nightly rust-src component and bpf-linker they \
             need",
            log.display()
        ));
    }
    writeln!(
        stdout,
        "cargo:warning=eBPF programs built in {:.0} s (observer-ebpf, nightly; its output is in {})",
        started.elapsed().as_secs_f64(),
        log.display()
    )?;
    Ok(())
}

/// A line of cargo's own progress, not a diagnostic.
fn progress(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty()
        || [
            "Compiling ",
            "Finished ",
            "Building ",
            "Fresh ",
            "Blocking ",
            "Updating ",
            "Locking ",
            "Downloaded ",
            "Downloading ",
            "Adding ",
        ]
        .iter()
        .any(|p| t.starts_with(p))
}

fn build_ebpf() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "observer-ebpf")
        .ok_or_else(|| anyhow!("package observer-ebpf not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
