//! The Debian package: `cargo xtask package` builds it; installed with dpkg it puts the binary,
//! the unit and a commented config in place, creates the service user and its directories with
//! their owners and modes; the unit verifies; the installed binary, run as the unit runs it
//! (its user, its capabilities, no new privileges, its config with a target set), captures a
//! real server; `dpkg --purge` leaves nothing behind.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use observer_tests::unprivileged::FileObserver;
use observer_tests::{Server, curl, read_events, require_root, workspace_root};

const UNIT: &str = "/lib/systemd/system/observer.service";
const CONFIG: &str = "/etc/observer/observer.toml";
const EVENTS: &str = "/var/log/observer/events.jsonl";

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn id_of(flag: &str) -> u32 {
    sh(Command::new("id").args([flag, "observer"]))
        .trim()
        .parse()
        .unwrap()
}

/// Panics unless `path` has this mode, owner and group.
fn assert_owned(path: &str, mode: u32, user: &str, group: &str) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let owner = sh(Command::new("stat").args(["-c", "%U:%G", path]));
    assert_eq!(
        m.mode() & 0o7777,
        mode,
        "{path} mode {:o}",
        m.mode() & 0o7777
    );
    assert_eq!(owner.trim(), format!("{user}:{group}"), "{path}");
}

/// A `Key=value` of the installed unit.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{UNIT} has no {key}="))
        .trim()
        .to_string()
}

fn purge() {
    let _ = Command::new("dpkg").args(["--purge", "observer"]).output();
}

/// Purges the package when the test ends, passed or not, and puts back the directories that
/// observers run by hand (other tests, as root) had left, which purge removes.
struct Installed(Vec<(PathBuf, PathBuf)>);

impl Installed {
    fn set_aside() -> Self {
        let mut moved = Vec::new();
        for dir in ["/var/lib/observer", "/var/log/observer"] {
            let dir = PathBuf::from(dir);
            let aside = dir.with_extension(format!("before-test-{}", std::process::id()));
            if dir.exists() {
                std::fs::rename(&dir, &aside).expect("setting a directory aside");
                moved.push((dir, aside));
            }
        }
        Self(moved)
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        purge();
        for (dir, aside) in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
            let _ = std::fs::rename(aside, dir);
        }
    }
}

fn build_package() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = sh(Command::new(cargo).current_dir(workspace_root()).args([
        "run",
        "--quiet",
        "--package",
        "xtask",
        "--",
        "package",
    ]));
    let deb = PathBuf::from(out.lines().last().expect("xtask package prints the path"));
    assert!(deb.is_file(), "{}", deb.display());
    assert!(deb.extension().is_some_and(|e| e == "deb"));
    deb
}

#[test]
fn the_package_installs_runs_as_its_unit_and_purges_cleanly() {
    require_root();
    purge();
    let deb = build_package();
    let _installed = Installed::set_aside();
    // A key and state left by an observer run by hand as root: installing gives them to the
    // service user, which then continues that chain.
    std::fs::create_dir_all("/var/lib/observer").unwrap();
    std::fs::write("/var/lib/observer/integrity.state.lock", b"").unwrap();
    sh(Command::new("dpkg").arg("-i").arg(&deb));
    assert_owned(
        "/var/lib/observer/integrity.state.lock",
        0o644,
        "observer",
        "observer",
    );

    // Files, owners and modes.
    assert_owned("/usr/bin/observer", 0o755, "root", "root");
    assert_owned(UNIT, 0o644, "root", "root");
    assert_owned("/etc/observer", 0o750, "root", "observer");
    assert_owned(CONFIG, 0o640, "root", "observer");
    assert_owned("/var/lib/observer", 0o700, "observer", "observer");
    assert_owned("/var/log/observer", 0o750, "observer", "observer");
    let passwd = sh(Command::new("getent").args(["passwd", "observer"]));
    assert!(
        passwd.trim_end().ends_with(":/usr/sbin/nologin"),
        "{passwd}"
    );
    let (uid, gid) = (id_of("-u"), id_of("-g"));
    assert!(uid < 1000, "a system user: {uid}");
    let conffiles = sh(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "observer"]));
    assert!(conffiles.contains(CONFIG), "{conffiles}");

    // The unit as systemd reads it.
    sh(Command::new("systemd-analyze").args(["verify", UNIT]));
    let unit = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/observer /var/log/observer",
        "Restart=on-failure",
    ] {
        assert!(unit.lines().any(|l| l == line), "{UNIT} lacks {line}");
    }
    assert_eq!(unit_value(&unit, "User"), "observer");

    // Targets are set in the config alone: the unit's command line has none.
    let server = Server::python_http(&[("index.html", b"packaged\n")]);
    let config = std::fs::read_to_string(CONFIG).unwrap();
    assert!(config.contains("# pids = [1234]"), "{config}");
    let config = config.replace("# pids = [1234]", &format!("pids = [{}]", server.pid()));
    std::fs::write(CONFIG, config).unwrap();
    let exec: Vec<String> = unit_value(&unit, "ExecStart")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(!exec.iter().any(|a| a == "--pid" || a == "--cgroup"));
    let caps: Vec<String> = unit_value(&unit, "AmbientCapabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    let caps = format!("-all,{}", caps.join(","));
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--init-groups")
        .arg("--no-new-privs")
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set={caps}"))
        .args(&exec)
        .current_dir("/");
    let obs = FileObserver::start(cmd, Path::new(EVENTS)).unwrap_or_else(|(code, err)| {
        let ls = Command::new("ls")
            .args(["-lna", "/var/lib/observer", "/var/log/observer"])
            .output();
        let ls = ls.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        panic!("the installed observer (uid {uid}, gid {gid}) exited {code}: {err}\n{ls:?}")
    });
    assert_eq!(curl(&[&server.url("/index.html")]).status, 200);
    assert_eq!(curl(&[&server.url("/absent")]).status, 404);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (_, stderr) = obs.stop();
    let events = read_events(Path::new(EVENTS));
    let statuses: Vec<u64> = events
        .iter()
        .filter_map(|e| e["http"]["response"]["status_code"].as_u64())
        .collect();
    assert_eq!(statuses, [200, 404], "{stderr}");
    assert!(
        stderr.contains("keeps only [CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE]"),
        "{stderr}"
    );
    // What the service wrote is its own, where the unit lets it write.
    assert_owned(EVENTS, 0o600, "observer", "observer");
    assert_owned(
        "/var/lib/observer/secret.key",
        0o600,
        "observer",
        "observer",
    );
    assert!(Path::new("/var/lib/observer/integrity.state").is_file());

    // Purge: nothing of it is left, the user neither.
    purge();
    for p in [
        "/usr/bin/observer",
        UNIT,
        CONFIG,
        "/etc/observer",
        "/var/lib/observer",
        "/var/log/observer",
    ] {
        assert!(!Path::new(p).exists(), "{p} left after purge");
    }
    assert!(
        !Command::new("getent")
            .args(["passwd", "observer"])
            .status()
            .unwrap()
            .success(),
        "the observer user is left after purge"
    );
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "observer"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.is_empty() || status.contains("not-installed"),
        "dpkg still knows observer: {status}"
    );
}
