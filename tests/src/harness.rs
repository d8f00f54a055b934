//! The observer harness: the real binary started on targets, its stdout lines collected, how
//! it ended; recordings made with `run --record`; `observer verify` on a log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{TempDir, assert_schema, observer_bin};

/// A recording (`run --record`) and the fingerprint key it was made with, in a directory of
/// its own.
pub struct Recording {
    pub dir: TempDir,
    pub rec: PathBuf,
    pub key: PathBuf,
}

impl Recording {
    pub fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let (rec, key) = (dir.path.join("capture.rec"), dir.path.join("secret.key"));
        Self { dir, rec, key }
    }

    /// observer's arguments to capture `pid` into this recording.
    pub fn run_args(&self, pid: u32) -> Vec<String> {
        vec![
            "--pid".into(),
            pid.to_string(),
            "--record".into(),
            self.rec.display().to_string(),
            "--key-file".into(),
            self.key.display().to_string(),
        ]
    }

    /// Panics unless `observer replay` of the recording (run through `wrapper`, such as
    /// setpriv, when one is given) prints the events of the live run: all of them, in order,
    /// but sys_shutdown, whose counters describe the run that prints it.
    pub fn assert_replay_matches(&self, wrapper: &[&str], live: &Finished) {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(observer_bin());
                c
            }
            None => Command::new(observer_bin()),
        };
        let out = cmd
            .arg("replay")
            .arg(&self.rec)
            .arg("--key-file")
            .arg(&self.key)
            .output()
            .expect("running observer replay");
        assert!(
            out.status.success(),
            "replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let replayed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let not_shutdown = |e: &&Value| e["event"]["action"] != "sys_shutdown";
        let a: Vec<&Value> = live.events.iter().filter(not_shutdown).collect();
        let b: Vec<&Value> = replayed.iter().filter(not_shutdown).collect();
        assert_eq!(a.len(), b.len(), "same number of events");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "same event");
        }
    }
}

/// A running observer whose stdout lines are collected.
pub struct Observer {
    pub child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    /// Holds the fingerprint key the run uses, unless the test named one.
    pub key_dir: TempDir,
    /// Lines are for people (`--format pretty`), not JSON.
    pretty: bool,
}

/// What observer printed and how it ended.
pub struct Finished {
    pub events: Vec<Value>,
    pub lines: Vec<String>,
    pub stderr: String,
    pub status: std::process::ExitStatus,
}

impl Finished {
    /// Alert events of `rule`, in output order.
    pub fn alerts(&self, rule: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["event"]["kind"] == "alert" && e["rule"]["name"] == rule)
            .collect()
    }

    /// Every alert, in output order.
    pub fn all_alerts(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["event"]["kind"] == "alert")
            .collect()
    }

    /// Panics if any output line holds one of `secrets`.
    pub fn assert_no_secrets(&self, secrets: &[&str]) {
        for line in &self.lines {
            for s in secrets {
                assert!(
                    !line.contains(s),
                    "secret {s:?} leaked into the output: {line}"
                );
            }
        }
    }

    /// HTTP exchange events, in output order.
    pub fn exchanges(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["event"]["kind"] == "event" && e.get("http").is_some())
            .collect()
    }
}

/// Panics if a run meant for the per-syscall tracepoints (`OBSERVER_TEST_SYSCALL_HOOK`) says in
/// `sys_startup` that it hooked something else: the second pass must test what it names.
fn check_hook(hook: Option<&str>, args: &[String], startup: &str) {
    if hook != Some("tracepoints") || args.iter().any(|a| a == "--syscall-hook") {
        return;
    }
    if !startup.contains("\"syscall_hook\":\"syscall_tracepoints\"")
        && startup.contains("\"syscall_hook\"")
    {
        panic!("OBSERVER_TEST_SYSCALL_HOOK=tracepoints, but sys_startup says: {startup}");
    }
}

impl Observer {
    /// Starts `observer run ARGS` and waits for its `sys_startup` event (programs attached).
    /// Unless ARGS name one, the run gets a fingerprint key of its own (`key_file()`).
    pub fn start(args: &[String]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// As [`Observer::start`], with these environment variables set for observer.
    pub fn start_with_env(args: &[String], env: &[(&str, &str)]) -> Self {
        let key_dir = TempDir::new("key");
        let mut cmd = Command::new(observer_bin());
        cmd.arg("run").args(args);
        cmd.envs(env.iter().copied());
        // `cargo xtask test` runs the suite once per syscall hook: this names the second.
        let hook = std::env::var("OBSERVER_TEST_SYSCALL_HOOK").ok();
        if let Some(hook) = &hook
            && !args.iter().any(|a| a == "--syscall-hook")
        {
            cmd.arg("--syscall-hook").arg(hook);
        }
        if !args.iter().any(|a| a == "--key-file") {
            cmd.arg("--key-file").arg(key_dir.path.join("secret.key"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting observer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut obs = Self {
            child,
            lines: rx,
            seen: Vec::new(),
            key_dir,
            pretty: args
                .windows(2)
                .any(|w| w[0] == "--format" && w[1] == "pretty"),
        };
        let output = args
            .iter()
            .position(|a| a == "--output")
            .and_then(|i| args.get(i + 1))
            .filter(|p| p.as_str() != "-")
            .map(PathBuf::from);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(path) = &output {
                // Events go to a file: it is ready once its first line is there.
                if let Ok(t) = std::fs::read_to_string(path)
                    && t.contains("\"sys_startup\"")
                {
                    check_hook(hook.as_deref(), args, &t);
                    return obs;
                }
                if let Ok(Some(status)) = obs.child.try_wait() {
                    panic!("observer exited before starting ({status})");
                }
                assert!(
                    Instant::now() < deadline,
                    "observer did not start within 30 s"
                );
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match obs.lines.recv_timeout(left) {
                Ok(line) => {
                    let startup = line.contains("sys_startup");
                    if startup {
                        check_hook(hook.as_deref(), args, &line);
                    }
                    obs.seen.push(line);
                    if startup {
                        return obs;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("observer did not start within 30 s"),
                Err(RecvTimeoutError::Disconnected) => {
                    let out = obs.child.wait_with_output().expect("observer output");
                    panic!(
                        "observer exited before starting ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
    }

    /// The key file this run fingerprints with (when the test did not name one).
    pub fn key_file(&self) -> PathBuf {
        self.key_dir.path.join("secret.key")
    }

    pub fn for_pids(pids: &[u32]) -> Self {
        let args: Vec<String> = pids
            .iter()
            .flat_map(|p| ["--pid".to_string(), p.to_string()])
            .collect();
        Self::start(&args)
    }

    /// Sends `signal`, waits for observer to exit and returns everything it printed. Every line
    /// must be one JSON object.
    pub fn stop_with(mut self, signal: rustix::process::Signal) -> Finished {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("signalling observer");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for observer") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "observer did not exit within 30 s of {signal:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let json_lines = if self.pretty { &[][..] } else { &self.seen[..] };
        let events: Vec<Value> = json_lines
            .iter()
            .map(|l| {
                let v = serde_json::from_str::<Value>(l).unwrap_or_else(|e| {
                    panic!("observer printed a line that is not JSON ({e}): {l}")
                });
                assert_schema(&v, l);
                v
            })
            .collect();
        Finished {
            events,
            lines: std::mem::take(&mut self.seen),
            stderr,
            status,
        }
    }

    pub fn stop(self) -> Finished {
        self.stop_with(rustix::process::Signal::INT)
    }
}

/// `observer verify PATHS`: whether the log verified, and what it printed.
pub fn verify_log(paths: &[PathBuf], key: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new(observer_bin());
    cmd.arg("verify").args(paths);
    if let Some(k) = key {
        cmd.arg("--integrity-key").arg(k);
    }
    let out = cmd.output().expect("running observer verify");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// What `observer fingerprint` prints for `input` under `key` (`kind` as its `--type`).
pub fn fingerprint(key: &Path, kind: Option<&str>, input: &str) -> String {
    match kind {
        Some(k) => fingerprint_with(key, &["--type", k], input),
        None => fingerprint_with(key, &[], input),
    }
}

/// `observer fingerprint --key-file KEY ARGS` with `input` on standard input: what it printed,
/// checked to be a fingerprint (32 hex characters).
pub fn fingerprint_with(key: &Path, args: &[&str], input: &str) -> String {
    let mut child = Command::new(observer_bin())
        .arg("fingerprint")
        .arg("--key-file")
        .arg(key)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting observer fingerprint");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("writing the secret");
    let out = child.wait_with_output().expect("observer fingerprint");
    assert!(
        out.status.success(),
        "observer fingerprint {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fp = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_string();
    assert!(
        fp.len() == 32 && fp.bytes().all(|b| b.is_ascii_hexdigit()),
        "a fingerprint is 32 hex characters: {fp:?}"
    );
    fp
}
