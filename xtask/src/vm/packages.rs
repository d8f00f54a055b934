//! Debian 12's kernel packages for the matrix: which meta-package names each kernel, and
//! fetching one (`apt-get download`, `dpkg-deb -x`, `depmod`) into `target/kernels/<package>/`
//! once. Owns the packages only; booting them is the parent module's.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::{setup, step, workspace_root};

/// One kernel of the matrix: a Debian 12 meta-package that names the newest kernel of a series.
pub struct Kernel {
    /// What `--kernel` takes: "6.1", "6.1-rt", "6.12".
    pub name: &'static str,
    /// The meta-package whose dependency is the versioned kernel package.
    pub meta_package: &'static str,
    /// The versioned package the meta-package must resolve to is `<prefix><abi><suffix>`, with
    /// no '-' in `<abi>` (so the generic flavour cannot resolve to the RT one, nor 6.1 to 6.12).
    package_prefix: &'static str,
    package_suffix: &'static str,
}

/// Debian 12's kernels: its own 6.1 (generic flavour, not `cloud`, which has no 9p), the same
/// 6.1 with PREEMPT_RT, and the 6.12 LTS that bookworm carries too.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "6.1",
        meta_package: "linux-image-amd64",
        package_prefix: "linux-image-6.1.0-",
        package_suffix: "-amd64",
    },
    Kernel {
        name: "6.1-rt",
        meta_package: "linux-image-rt-amd64",
        package_prefix: "linux-image-6.1.0-",
        package_suffix: "-rt-amd64",
    },
    Kernel {
        name: "6.12",
        meta_package: "linux-image-6.12-amd64",
        package_prefix: "linux-image-6.12.",
        package_suffix: "-amd64",
    },
];

pub fn kernel(name: &str) -> anyhow::Result<&'static Kernel> {
    KERNELS.iter().find(|k| k.name == name).with_context(|| {
        format!(
            "unknown kernel {name}; known: {}, all",
            KERNELS
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

impl Kernel {
    fn matches(&self, package: &str) -> bool {
        package
            .strip_prefix(self.package_prefix)
            .and_then(|rest| rest.strip_suffix(self.package_suffix))
            .is_some_and(|abi| !abi.is_empty() && !abi.contains('-'))
    }

    /// The versioned package the meta-package depends on, in the current apt lists.
    fn resolve(&self) -> anyhow::Result<String> {
        let out = Command::new("apt-cache")
            .args([
                "depends",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
                self.meta_package,
            ])
            .stderr(Stdio::inherit())
            .output()
            .context("cannot run apt-cache")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let found: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .filter(|p| self.matches(p))
            .collect();
        match found.as_slice() {
            [one] => Ok(one.to_string()),
            [] => bail!(
                "apt-cache finds no {}<abi>{} among the dependencies of {} (apt lists without \
                 Debian 12's main and security suites?):\n{text}",
                self.package_prefix,
                self.package_suffix,
                self.meta_package
            ),
            many => bail!(
                "{} depends on several kernels: {}",
                self.meta_package,
                many.join(" ")
            ),
        }
    }
}

/// A kernel package unpacked under `target/kernels/<package>/`.
pub struct KernelImage {
    pub kernel: &'static Kernel,
    /// The versioned Debian package, e.g. `linux-image-6.1.0-57-amd64`.
    pub package: String,
    /// Its Debian version, e.g. `6.1.192-3`.
    pub package_version: String,
    /// What `uname -r` says in the guest, e.g. `6.1.0-57-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

/// Written last into an unpacked package's directory: "<package version> <release>".
const COMPLETE_MARK: &str = ".observer-kernel";

pub fn kernels_dir() -> PathBuf {
    workspace_root().join("target/kernels")
}

/// Resolves the kernel's meta-package after a fresh `apt-get update` (once per run), then
/// downloads and unpacks that package unless it is unpacked already.
pub fn fetch(kernel: &'static Kernel) -> anyhow::Result<KernelImage> {
    if crate::is_root() {
        setup::apt_update_once()?;
    }
    let package = kernel.resolve()?;
    let dir = kernels_dir().join(&package);
    if let Some(image) = cached(kernel, &package, &dir) {
        return Ok(image);
    }
    let partial = kernels_dir().join(format!("{package}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    step(&format!(
        "downloading Debian's {package} for the {} kernel (about 70 MB, once)",
        kernel.name
    ));
    run_in(
        Command::new("apt-get")
            .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
            .arg(&package),
        &partial,
    )?;
    let deb = find_deb(&partial, &package)?;
    let version = String::from_utf8_lossy(
        &Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Version")
            .output()
            .context("cannot run dpkg-deb")?
            .stdout,
    )
    .trim()
    .to_string();
    step(&format!("unpacking {package} {version}"));
    run_in(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial),
        &partial,
    )?;
    fs::remove_file(&deb)?;
    let release = only_release(&partial)?;
    step(&format!("depmod for {release}"));
    run_in(
        Command::new("depmod")
            .arg("-a")
            .arg("-b")
            .arg(&partial)
            .arg(&release),
        &partial,
    )?;
    fs::write(
        partial.join(COMPLETE_MARK),
        format!("{version} {release}\n"),
    )?;
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::rename(&partial, &dir)
        .with_context(|| format!("cannot move {} to {}", partial.display(), dir.display()))?;
    cached(kernel, &package, &dir).context("the unpacked kernel is incomplete")
}

fn cached(kernel: &'static Kernel, package: &str, dir: &Path) -> Option<KernelImage> {
    let mark = fs::read_to_string(dir.join(COMPLETE_MARK)).ok()?;
    let (version, release) = mark.trim().split_once(' ')?;
    let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
    let modules = [
        dir.join("lib/modules").join(release),
        dir.join("usr/lib/modules").join(release),
    ]
    .into_iter()
    .find(|m| m.join("modules.dep").is_file())?;
    vmlinuz.is_file().then(|| KernelImage {
        kernel,
        package: package.to_string(),
        package_version: version.to_string(),
        release: release.to_string(),
        vmlinuz,
        modules,
    })
}

/// apt-get download names the file `<package>_<version>_amd64.deb`.
fn find_deb(dir: &Path, package: &str) -> anyhow::Result<PathBuf> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&format!("{package}_")) && name.ends_with(".deb") {
            return Ok(path);
        }
    }
    bail!(
        "apt-get download left no {package}_*.deb in {}",
        dir.display()
    )
}

/// Runs a command in `dir`, failing with its name when it fails.
fn run_in(cmd: &mut Command, dir: &Path) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn only_release(root: &Path) -> anyhow::Result<String> {
    for modules in [root.join("lib/modules"), root.join("usr/lib/modules")] {
        if let Ok(entries) = fs::read_dir(&modules) {
            let names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if let [one] = names.as_slice() {
                return Ok(one.clone());
            }
            bail!("{} holds {names:?}, not one release", modules.display());
        }
    }
    bail!("the package has no lib/modules/<release>")
}
