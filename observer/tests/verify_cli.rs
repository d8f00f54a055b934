//! `observer seal-init` and `observer verify` as a user runs them, without privileges: logs are
//! written through the library's sink with the host state seal-init made, then checked by the
//! binary. Every failure exits 1 with a clear message; bad arguments exit 2.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use observer::event::{Event, heartbeat_event, lifecycle_event};
use observer::sink::Sink;
use observer::sink::integrity::{Chain, Start};
use observer::sink::state::HostState;

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("observer-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn observer(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_observer"))
        .args(args)
        .output()
        .expect("running observer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn ev(action: &'static str, seq: u64, run: &str) -> Event {
    let now = observer::event::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128,
    );
    let mut e = if action == "heartbeat" {
        heartbeat_event(now, run, serde_json::json!({}))
    } else {
        lifecycle_event(action, now, run, vec![], None)
    };
    e.meta_mut().sequence = seq;
    e
}

/// One run of `n` lines appended to `log`, chained from (and sealed with) the state file, as
/// `observer run` does. Returns the chain value of the heartbeat's head.
fn write_run(log: &Path, state: &Path, run: &str, n: u64, shutdown: bool) -> String {
    let st = open_state(state);
    let start = match &st.head {
        Some(h) => Start::Continue(h.clone()),
        None => Start::New("no state file".into()),
    };
    let mut sink = Sink::file(log, None, Chain::start(run, None, start))
        .unwrap()
        .with_state(st);
    for i in 1..=n {
        let action = match i {
            1 => "sys_startup",
            x if x == n && shutdown => "sys_shutdown",
            2 => "heartbeat",
            _ => "sys_monitor",
        };
        sink.emit(ev(action, i, run)).unwrap();
    }
    sink.sync().unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    let hb = text
        .lines()
        .rev()
        .find(|l| l.contains("\"heartbeat\""))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(hb).unwrap();
    v["observer"]["head"]["chain"].as_str().unwrap().to_string()
}

/// The state file, waiting out a lock held for an instant by someone else: the other tests of
/// this binary start processes, and a child between fork and exec still holds a copy of the
/// lock file's descriptor (close-on-exec closes it only at exec), so the lock the last run let
/// go of can look held for that instant.
fn open_state(state: &Path) -> HostState {
    let mut tries = 0;
    loop {
        match HostState::open(state) {
            Ok(st) => return st,
            Err(observer::sink::state::StateError::Locked { .. }) if tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("opening {}: {e}", state.display()),
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn seal_init_makes_a_private_state_and_a_verification_key_once() {
    let d = Dir::new("init");
    let state = d.0.join("integrity.state");
    let vk = d.0.join("verify.key");
    let (code, out) = observer(&[
        "seal-init",
        "--state-file",
        s(&state),
        "--epoch-seconds",
        "30",
        "--verify-key-out",
        s(&vk),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("observer-verify-key-v1:"), "{out}");
    assert!(out.contains("OFF this host"), "{out}");
    for f in [&state, &vk] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f:?}");
    }
    let key = std::fs::read_to_string(&vk).unwrap();
    assert!(key.trim().ends_with(":30"), "{key}");
    // The key printed is not what the host keeps... after the first epoch, and never the
    // verification key file's text.
    let st = std::fs::read_to_string(&state).unwrap();
    assert!(!st.contains(key.trim()), "{st}");
    let (code, out) = observer(&["seal-init", "--state-file", s(&state)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("already holds a sealing key"), "{out}");
    // A corrupt state file is a clear error.
    std::fs::write(&state, "{ not json").unwrap();
    let (code, out) = observer(&["seal-init", "--state-file", s(&state), "--force"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is corrupt"), "{out}");
}

#[test]
fn sealed_runs_verify_and_failures_exit_non_zero_with_a_clear_message() {
    let d = Dir::new("runs");
    let state = d.0.join("integrity.state");
    let vk = d.0.join("verify.key");
    let log = d.0.join("events.jsonl");
    let (code, out) = observer(&[
        "seal-init",
        "--state-file",
        s(&state),
        "--verify-key-out",
        s(&vk),
    ]);
    assert_eq!(code, 0, "{out}");
    let head1 = write_run(&log, &state, "r1", 5, true);
    write_run(&log, &state, "r2", 4, true);
    let head3 = write_run(&log, &state, "r3", 6, true);
    // Neither the host's sealing key nor the verification key is in the log.
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let host_key = st["seal"]["key"].as_str().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(host_key));
    let vk_hex = std::fs::read_to_string(&vk).unwrap();
    assert!(!text.contains(vk_hex.trim().split(':').nth(1).unwrap()));
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (code, out) = observer(&["verify", s(&log), "--verify-key", s(&vk)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact: 15 lines, 3 runs"), "{out}");
    assert!(out.contains("the seals of all 15 sealed lines"), "{out}");
    assert!(
        out.contains("proven up to:") && out.contains(":15 (run r3"),
        "{out}"
    );
    assert!(
        out.contains("kept history begins at:") && out.contains("new chain"),
        "{out}"
    );
    let (code, out) = observer(&["verify", s(&log)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("without --verify-key their seals were not checked"),
        "{out}"
    );

    // Heads kept elsewhere.
    let (code, out) = observer(&["verify", s(&log), "--expect-head", &head3]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let cut = d.0.join("cut.jsonl");
    std::fs::write(&cut, lines[..8].join("\n") + "\n").unwrap();
    let (code, out) = observer(&["verify", s(&cut)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("TAMPERED") && out.contains("without sys_shutdown"),
        "{out}"
    );
    assert!(out.contains("proven up to:"), "{out}");
    let (code, out) = observer(&["verify", s(&cut), "--open", "--verify-key", s(&vk)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("open: the last line is dated"), "{out}");
    assert!(out.contains("open: the last seal is of epoch"), "{out}");
    let (code, out) = observer(&["verify", s(&cut), "--open", "--expect-head", &head3]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not reach the expected head"), "{out}");
    let (code, _) = observer(&["verify", s(&cut), "--open", "--expect-head", &head1]);
    assert_eq!(code, 0);

    // A seal replaced (as by someone holding a later epoch's key or none): only the
    // verification key tells.
    let mut forged = lines.clone();
    let at = forged[6].find("\"tag\":\"").unwrap() + 7;
    let flipped = if &forged[6][at..at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    forged[6].replace_range(at..at + 1, flipped);
    let f = d.0.join("forged.jsonl");
    std::fs::write(&f, forged.join("\n") + "\n").unwrap();
    let (code, out) = observer(&["verify", s(&f), "--verify-key", s(&vk)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(":7: observer.seal does not match"), "{out}");
    let (code, out) = observer(&["verify", s(&f)]);
    assert_eq!(code, 0, "{out}");

    // A run deleted.
    let gone = d.0.join("gone.jsonl");
    std::fs::write(&gone, [&lines[..5], &lines[9..]].concat().join("\n") + "\n").unwrap();
    let (code, out) = observer(&["verify", s(&gone)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(":6: run r3 continues from"), "{out}");

    // The state file removed: the next run starts a new chain, which verify refuses after
    // earlier runs unless told to accept it.
    std::fs::remove_file(&state).unwrap();
    write_run(&log, &state, "r4", 3, true);
    let (code, out) = observer(&["verify", s(&log)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("run r4 starts a new chain"), "{out}");
    let (code, out) = observer(&["verify", s(&log), "--accept-restart"]);
    assert_eq!(code, 0, "{out}");
    // Its lines are unsealed (the sealing key went with the state), after sealed ones.
    let (code, out) = observer(&[
        "verify",
        s(&log),
        "--accept-restart",
        "--verify-key",
        s(&vk),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not sealed"), "{out}");

    // Arguments verify cannot use.
    let (code, out) = observer(&["verify", s(&log), "--expect-head", "xyz"]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = observer(&["verify", s(&log), "--verify-key", s(&log)]);
    assert_eq!(code, 2, "{out}");
}
