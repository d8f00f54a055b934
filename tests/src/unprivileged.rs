//! observer started as a user who is not root, holding only chosen capabilities (setpriv), with
//! its events in a file that user owns; for the least-privilege and package tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{TempDir, read_events};

/// `setpriv` switched to `uid`/`gid` with `caps` (names like `bpf`, `sys_ptrace`) as its only
/// capabilities: inheritable, ambient and bounding set alike, so nothing else can be regained.
pub fn setpriv(uid: u32, gid: u32, caps: &[&str]) -> Command {
    let list: String = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={list}"))
        .arg(format!("--ambient-caps={list}"))
        .arg(format!("--bounding-set={list}"));
    cmd
}

/// A directory owned by `uid`/`gid` (mode 0700), for a run's key, state and output.
pub fn owned_dir(tag: &str, uid: u32, gid: u32) -> TempDir {
    let dir = TempDir::new(tag);
    std::os::unix::fs::chown(&dir.path, Some(uid), Some(gid)).expect("chown of a test dir");
    dir
}

/// A running observer whose events go to a file.
pub struct FileObserver {
    pub child: Child,
    pub output: PathBuf,
}

impl FileObserver {
    /// Spawns `cmd` (an observer run writing to `output`) and waits for its `sys_startup` line;
    /// `Err` holds its exit status and standard error when it exits first.
    pub fn start(mut cmd: Command, output: &Path) -> Result<Self, (i32, String)> {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting observer");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::fs::read_to_string(output).is_ok_and(|t| t.contains("\"sys_startup\"")) {
                return Ok(Self {
                    child,
                    output: output.to_path_buf(),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err((status.code().unwrap_or(-1), err));
            }
            assert!(Instant::now() < deadline, "observer did not start in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with SIGINT; its events and standard error, panicking unless it exited 0.
    pub fn stop(mut self) -> (Vec<Value>, String) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("waiting for observer") {
                break s;
            }
            assert!(Instant::now() < deadline, "observer did not stop in 30 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert!(status.success(), "observer exited with {status}: {err}");
        (read_events(&self.output), err)
    }
}

impl Drop for FileObserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
