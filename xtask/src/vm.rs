//! Boots Debian 12's own kernel packages under QEMU with the host's root file system, runs a
//! bash script in the guest as root and brings back its output and exit status: the kernel
//! matrix observer is checked against (6.1, 6.1 PREEMPT_RT, 6.12 LTS).
//!
//! How: the kernel package is fetched with `apt-get download` and unpacked with `dpkg-deb -x`
//! into `target/kernels/<package>/`, which gives `boot/vmlinuz-<release>` and
//! `lib/modules/<release>/`. virtme-ng (`vng --run <vmlinuz>`) finds the modules by walking up
//! from the image to the directory holding `lib/modules`, puts the virtio and 9p ones in its
//! initramfs, and mounts the host's `/` read-only over 9p, with tmpfs overlays on `/tmp`, `/etc`,
//! `/var`... so the guest can write there without touching the host. It also mounts cgroup2,
//! tracefs and debugfs. Nested KVM hangs on this kind of machine, so QEMU emulates the CPU (TCG,
//! `-cpu max`): the guest kernel reaches the script 6 to 14 s after it starts, and a run
//! takes about 10 s more than that plus the script itself.
//!
//! virtme-ng's virtio-serial channel for the script's output is not found without udev, so it
//! falls back to the serial console, where kernel messages mix in. The script's stdout, stderr
//! and exit status therefore go to files in a host directory shared read-write with the guest
//! (`target/vm/<kernel>/`), and the console is kept only as a log for when a boot fails.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{setup, step, workspace_root};

mod packages;

pub use packages::{KERNELS, Kernel, KernelImage, fetch, kernel};

/// The guest's size: the machine has 2 cores; TCG uses one host thread per vCPU.
const GUEST_CPUS: &str = "2";
const GUEST_MEMORY: &str = "2G";

/// What a script run in the guest left.
pub struct GuestOutput {
    pub stdout: String,
    pub stderr: String,
    /// The script's exit status, as bash reported it in the guest (128+N for signal N).
    pub status: i32,
    /// The host directory shared read-write with the guest; the script sees it as `$VM_SHARED`
    /// (same path) and can leave result files there.
    pub shared: PathBuf,
    /// QEMU's serial console: boot messages, kernel warnings, virtme-ng's init.
    pub console: PathBuf,
    /// From starting QEMU to its exit.
    pub elapsed: Duration,
    /// The guest's uptime when the script started: the boot time.
    pub boot: Option<Duration>,
}

/// Boots `image` with the host's file system (read-only, writable overlays on /tmp, /etc, /var,
/// /home...), runs `script` there with bash as root from the workspace root, and returns its
/// output and status. Fails if the guest does not report a status, e.g. a kernel panic, and
/// kills QEMU if the whole run takes longer than `timeout`. Runs on the same kernel are
/// serialized (they share `target/vm/<kernel>/`).
pub fn run_in_guest(
    image: &KernelImage,
    script: &str,
    timeout: Duration,
) -> anyhow::Result<GuestOutput> {
    setup::vm_tools()?;
    let vm_dir = workspace_root().join("target/vm");
    fs::create_dir_all(&vm_dir)?;
    let lock = File::create(vm_dir.join(format!("{}.lock", image.kernel.name)))?;
    lock.lock()
        .context("cannot lock the kernel's shared directory")?;
    let shared = vm_dir.join(image.kernel.name);
    let mut attempt = 1;
    loop {
        match boot_once(image, script, timeout, &shared)? {
            Boot::Ran(out) => return Ok(out),
            Boot::NoScript(why) if attempt < BOOT_ATTEMPTS => {
                // A guest that never reached the script failed in the emulator, not in what
                // the script checks: under multi-threaded TCG a vCPU can run stale code while
                // the kernel patches its text at boot (an "Oops: int3" in early initcalls).
                // Booting again gives the kernel a fair run; the failed console is kept.
                let kept = shared
                    .with_file_name(format!("{}-boot{attempt}-console.log", image.kernel.name));
                let _ = fs::copy(shared.join("console.log"), &kept);
                let why = why.lines().next().unwrap_or_default();
                step(&format!(
                    "the {} guest failed before the script started ({why}); booting again \
                     ({} of {BOOT_ATTEMPTS}), the failed console is kept in {}",
                    image.kernel.name,
                    attempt + 1,
                    kept.display()
                ));
                attempt += 1;
            }
            Boot::NoScript(why) => bail!(
                "the {} guest failed before the script started, {BOOT_ATTEMPTS} boots in a row: {why}",
                image.kernel.name
            ),
        }
    }
}

/// How many times a guest that dies before the script starts is booted.
const BOOT_ATTEMPTS: u32 = 3;

/// A guest that has not reached the script by then is hung in its boot (they reach it in 6 to
/// 14 s, up to a minute on a loaded host).
const BOOT_DEADLINE: Duration = Duration::from_secs(150);

/// One boot's end: the script ran (whatever its status), or the guest never reached it.
enum Boot {
    Ran(GuestOutput),
    NoScript(String),
}

fn boot_once(
    image: &KernelImage,
    script: &str,
    timeout: Duration,
    shared: &Path,
) -> anyhow::Result<Boot> {
    if shared.exists() {
        fs::remove_dir_all(shared)?;
    }
    fs::create_dir_all(shared)?;
    fs::write(shared.join("script.sh"), script)?;
    let wrapper = shared.join("run.sh");
    fs::write(&wrapper, wrapper_script(shared))?;
    let console_path = shared.join("console.log");
    let console = File::create(&console_path)?;

    let vng = vng_path();
    let mut cmd = Command::new(&vng.0);
    cmd.env("PATH", &vng.1)
        .arg("--run")
        .arg(&image.vmlinuz)
        .args([
            // No virtiofsd here: don't wait for one to start.
            "--force-9p",
            // TCG; virtme-ng then passes `-machine q35 -cpu max`.
            "--disable-kvm",
            "--cpus",
            GUEST_CPUS,
            "--memory",
            GUEST_MEMORY,
            "--user",
            "root",
            "--verbose",
        ])
        .arg("--rwdir")
        .arg(shared)
        .arg("--cwd")
        .arg(workspace_root())
        .arg("--exec")
        .arg(format!("bash {}", quote(&wrapper.to_string_lossy())))
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    step(&format!(
        "booting {} ({}, Debian {}) under QEMU without KVM, {GUEST_CPUS} vCPUs, {GUEST_MEMORY} of memory",
        image.kernel.name, image.release, image.package_version
    ));
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", vng.0.display()))?;
    let mut guard = Tree(Some(child));
    let exit = loop {
        let child = guard
            .0
            .as_mut()
            .expect("the child is there until it is waited for");
        if let Some(status) = child.try_wait()? {
            guard.0 = None;
            break status;
        }
        let reached_script = shared.join("started").exists();
        if !reached_script && started.elapsed() > BOOT_DEADLINE.min(timeout) {
            drop(guard);
            return Ok(Boot::NoScript(format!(
                "no script within {} s; console {}:\n{}",
                BOOT_DEADLINE.min(timeout).as_secs(),
                console_path.display(),
                tail(&console_path, 30)
            )));
        }
        if started.elapsed() > timeout {
            drop(guard);
            bail!(
                "the {} guest did not finish within {} s; QEMU was killed. Console ({}):\n{}",
                image.kernel.name,
                timeout.as_secs(),
                console_path.display(),
                tail(&console_path, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    let status = fs::read_to_string(shared.join("status"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let started_script = shared.join("started").exists();
    let Some(status) = status else {
        if !started_script {
            return Ok(Boot::NoScript(format!(
                "{exit} after {:.0} s; console {}:\n{}",
                elapsed.as_secs_f64(),
                console_path.display(),
                tail(&console_path, 40)
            )));
        }
        bail!(
            "the {} guest stopped ({exit}, after {:.0} s) without reporting the script's status: \
             boot failure, kernel panic or a script that powered the guest off. Console ({}):\n{}",
            image.kernel.name,
            elapsed.as_secs_f64(),
            console_path.display(),
            tail(&console_path, 40)
        );
    };
    let boot = fs::read_to_string(shared.join("started"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    let read = |name: &str| {
        fs::read(shared.join(name))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    Ok(Boot::Ran(GuestOutput {
        stdout: read("stdout"),
        stderr: read("stderr"),
        status,
        shared: shared.to_path_buf(),
        console: console_path,
        elapsed,
        boot,
    }))
}

/// What virtme-ng's init runs: sets up what the guest lacks, runs the script with its output in
/// the shared directory, and writes the status there last (through a rename, so a status file
/// is always whole).
fn wrapper_script(shared: &Path) -> String {
    let d = quote(&shared.to_string_lossy());
    let mut s = String::new();
    let _ = write!(
        s,
        r#"# Runs as root in the guest, started by virtme-ng's init.
d={d}
cat /proc/uptime > "$d/started"
ip link set lo up 2>/dev/null
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null
export VM_SHARED="$d"
bash "$d/script.sh" </dev/null >"$d/stdout" 2>"$d/stderr"
echo $? > "$d/status.part"
mv "$d/status.part" "$d/status"
sync
"#
    );
    s
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `vng` that pip installed for `python3`, with its scripts directory first on PATH
/// (vng starts `virtme-run` through the shell).
fn vng_path() -> (PathBuf, std::ffi::OsString) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| d.join("vng").is_file());
    match scripts {
        Some(dir) => {
            let mut dirs = vec![dir.clone()];
            dirs.extend(std::env::split_paths(&path));
            (dir.join("vng"), std::env::join_paths(dirs).unwrap_or(path))
        }
        None => (PathBuf::from("vng"), path),
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// vng and what it started (a shell, virtme-run, which execs QEMU): killed together when
/// dropped while still running.
struct Tree(Option<std::process::Child>);

impl Drop for Tree {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        let pids = descendants(child.id());
        for sig in [rustix::process::Signal::TERM, rustix::process::Signal::KILL] {
            for &pid in &pids {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, sig);
                }
            }
            if sig == rustix::process::Signal::TERM {
                std::thread::sleep(Duration::from_secs(2));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `pid` and every process below it, from the parent ids in /proc/*/stat.
fn descendants(pid: u32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut found = vec![pid as i32];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for &(p, pp) in &parent_of {
            if pp == parent && !found.contains(&p) {
                found.push(p);
            }
        }
        i += 1;
    }
    found
}

/// `cargo xtask vm --kernel K -- command...`: boots each chosen kernel, runs the command, prints
/// its output, and returns the exit status to leave with (the first non-zero one).
pub fn vm_command(kernel_name: &str, timeout: Duration, command: &[String]) -> anyhow::Result<i32> {
    setup::vm_tools()?;
    let kernels: Vec<&'static Kernel> = if kernel_name == "all" {
        KERNELS.iter().collect()
    } else {
        vec![kernel(kernel_name)?]
    };
    // One argument is a script as it stands; several are a command whose words are quoted.
    let script = match command {
        [one] => one.clone(),
        words => words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "),
    };
    let mut result = 0;
    for k in kernels {
        let out = fetch(k).and_then(|image| Ok((run_in_guest(&image, &script, timeout)?, image)));
        let (out, image) = match out {
            Ok(o) => o,
            Err(e) => {
                step(&format!("{}: {e:#}", k.name));
                if result == 0 {
                    result = 1;
                }
                continue;
            }
        };
        print!("{}", out.stdout);
        eprint!("{}", out.stderr);
        step(&format!(
            "{}: {} {} (uname -r {}; modules {}): exit status {}; boot {}, whole run {:.1} s; \
             console {}, files in {}",
            k.name,
            image.package,
            image.package_version,
            image.release,
            image.modules.display(),
            out.status,
            out.boot
                .map(|b| format!("{:.1} s", b.as_secs_f64()))
                .unwrap_or_else(|| "?".into()),
            out.elapsed.as_secs_f64(),
            out.console.display(),
            out.shared.display()
        ));
        if result == 0 {
            result = out.status;
        }
    }
    Ok(result)
}
