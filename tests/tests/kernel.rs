//! What observer does where the kernel lacks something: each feature refused on purpose
//! (`OBSERVER_REFUSE_FEATURES`, as on a kernel without it) takes its fallback, says so in
//! `sys_startup`, and still captures; what observer cannot do without stops it with a message
//! that names the kernel and the missing feature. The same paths run for real on older
//! kernels in the kernel matrix (`tests/kernel/smoke.py`).

use std::process::{Command, Stdio};
use std::time::Duration;

use observer_tests::{Observer, Server, curl, observer_bin, require_root};
use serde_json::Value;

fn startup_capture(f: &observer_tests::Finished) -> Value {
    let startup = f
        .events
        .iter()
        .find(|e| e["event"]["action"] == "sys_startup")
        .expect("a sys_startup line");
    startup["observer"]["capture"].clone()
}

fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// Runs observer on `server` with `refused` features, `args` and three requests; returns what
/// it wrote.
fn run_refusing(server: &Server, refused: &str, args: &[&str]) -> observer_tests::Finished {
    let mut all = vec!["--pid".to_string(), server.pid().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let obs = Observer::start_with_env(&all, &[("OBSERVER_REFUSE_FEATURES", refused)]);
    for path in ["/health", "/nothing-here", "/health"] {
        curl(&[&server.url(path)]);
    }
    let f = obs.stop();
    assert!(f.status.success(), "{:?}: {}", f.status, f.stderr);
    f
}

#[test]
fn refused_raw_tracepoints_fall_back_to_syscall_tracepoints_and_say_so() {
    require_root();
    let server = Server::api();
    // `auto` named, so the suite's tracepoints pass does not choose the hook itself.
    let f = run_refusing(&server, "raw_tracepoint", &["--syscall-hook", "auto"]);
    let cap = startup_capture(&f);
    assert_eq!(cap["syscall_hook"], "syscall_tracepoints", "{cap}");
    assert_eq!(
        cap["refused"],
        serde_json::json!(["raw_tracepoint"]),
        "{cap}"
    );
    let fallbacks = cap["fallbacks"].as_array().expect("fallbacks listed");
    assert!(
        fallbacks.iter().any(|f| f
            .as_str()
            .unwrap()
            .contains("syscall tracepoints instead of raw")),
        "{cap}"
    );
    assert!(
        f.stderr
            .contains("hooking each syscall's tracepoint instead"),
        "{}",
        f.stderr
    );
    let paths: Vec<&str> = f
        .exchanges()
        .iter()
        .map(|e| e["url"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/health", "/nothing-here", "/health"]);
}

#[test]
fn the_default_run_reports_its_hooks_without_fallbacks_on_this_kernel() {
    require_root();
    let server = Server::api();
    let f = run_refusing(&server, "", &[]);
    let cap = startup_capture(&f);
    assert_eq!(cap["kernel"], kernel_release(), "{cap}");
    assert!(cap.get("refused").is_none(), "{cap}");
    assert_eq!(cap["cgroup_targets"], "kernel", "{cap}");
    assert_eq!(cap["tls"], "uprobes", "{cap}");
    if std::env::var("OBSERVER_TEST_SYSCALL_HOOK").is_err() {
        // This host (6.18) has everything: raw tracepoints and group_dead.
        assert_eq!(cap["syscall_hook"], "raw_tracepoints", "{cap}");
        assert_eq!(
            cap["process_exit"], "sched_process_exit.group_dead",
            "{cap}"
        );
        assert!(cap.get("fallbacks").is_none(), "{cap}");
    }
    assert_eq!(f.exchanges().len(), 3);
}

/// Forks short-lived children (each `sleep` a process of its own) while observer watches.
fn run_forking_shell(refused: &str) -> observer_tests::Finished {
    let dir = std::env::temp_dir().join(format!("observer-fork-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    assert!(
        Command::new("mkfifo").arg(&go).status().unwrap().success(),
        "mkfifo"
    );
    // `read` from a FIFO waits without forking, so the only forks are the three sleeps.
    let mut shell = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "read line < '{}'; for i in 1 2 3; do /bin/sleep 0.1; done; exec sleep 60",
            go.display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .expect("starting bash");
    let obs = Observer::start_with_env(
        &["--pid".into(), shell.id().to_string()],
        &[("OBSERVER_REFUSE_FEATURES", refused)],
    );
    std::fs::write(&go, b"go\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let f = obs.stop();
    let _ = shell.kill();
    let _ = shell.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(f.status.success(), "{:?}: {}", f.status, f.stderr);
    f
}

fn processes(f: &observer_tests::Finished) -> Value {
    let shutdown = f.events.last().expect("lines");
    assert_eq!(shutdown["event"]["action"], "sys_shutdown");
    shutdown["observer"]["stats"]["processes"].clone()
}

#[test]
fn without_group_dead_a_process_exit_is_told_from_btf_or_the_leader() {
    require_root();
    // Before 6.16 the exit record has no group_dead: the live-thread count from BTF stands in.
    let f = run_forking_shell("group_dead");
    let cap = startup_capture(&f);
    assert_eq!(cap["process_exit"], "signal_struct.live (BTF)", "{cap}");
    let p = processes(&f);
    assert_eq!(p["forked"], 3, "three sleeps forked: {p}");
    assert_eq!(p["exited"], 3, "and each exited: {p}");
    // Without BTF either, the thread group leader's exit stands for the process's.
    let f = run_forking_shell("group_dead,btf");
    let cap = startup_capture(&f);
    assert!(
        cap["process_exit"]
            .as_str()
            .unwrap()
            .starts_with("thread group leader"),
        "{cap}"
    );
    assert!(f.stderr.contains("BTF cannot stand in"), "{}", f.stderr);
    let p = processes(&f);
    assert_eq!(p["forked"], 3, "{p}");
    assert_eq!(p["exited"], 3, "{p}");
}

/// Runs `observer run` that must fail at start; returns its exit status and stderr.
fn failing_start(args: &[&str], refused: &str) -> (i32, String) {
    let out = Command::new(observer_bin())
        .arg("run")
        .args(args)
        .env("OBSERVER_REFUSE_FEATURES", refused)
        .stdout(Stdio::null())
        .output()
        .expect("running observer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_kernel_without_ring_buffers_is_refused_by_name() {
    require_root();
    let (code, stderr) = failing_start(&["--pid", &std::process::id().to_string()], "ringbuf");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("has no BPF ring buffer"), "{stderr}");
    assert!(stderr.contains("BPF_MAP_TYPE_RINGBUF"), "{stderr}");
    assert!(stderr.contains("5.8"), "{stderr}");
    assert!(stderr.contains(&kernel_release()), "{stderr}");
    // observer is root here: the message must not send the user after privileges.
    assert!(!stderr.contains("as root"), "{stderr}");
}

#[test]
fn a_demanded_raw_hook_that_the_kernel_lacks_is_an_error_naming_it() {
    require_root();
    let (code, stderr) = failing_start(
        &[
            "--pid",
            &std::process::id().to_string(),
            "--syscall-hook",
            "raw",
        ],
        "raw_tracepoint",
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--syscall-hook raw was asked for, but raw tracepoints cannot be used"),
        "{stderr}"
    );
    assert!(stderr.contains("--syscall-hook tracepoints"), "{stderr}");
    assert!(!stderr.contains("as root"), "{stderr}");
}
