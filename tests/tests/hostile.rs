//! What a hostile target can do to observer through what the host reports about it: names and
//! paths it chose itself. observer keeps running, reports the target's exchanges and says no
//! more of the names than it can carry.

use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use observer_tests::{Finished, Observer, Server, TempDir, curl, observer_bin, require_root};

/// A target whose executable lies under ~1,400 bytes of directory names that are not UTF-8
/// (anyone can create such directories): observer once panicked cutting the decoded path.
#[test]
fn executable_path_of_invalid_utf8() {
    require_root();
    let dir = TempDir::new("hostile-exe");
    // Six components of bytes that never start a character (NAME_MAX is 255); each becomes a
    // 3-byte replacement character when decoded, so the decoded path passes 4,096 bytes (the
    // cap on what observer keeps of it). A leading letter shifts the layout until that cap falls
    // inside a replacement character, where cutting the decoded text would panic.
    let mut lead = 0;
    let copy = loop {
        let mut path = dir.path.join("x".repeat(lead));
        for _ in 0..6 {
            path.push(std::ffi::OsStr::from_bytes(&[0xff; 240]));
        }
        let copy = path.join(std::ffi::OsStr::from_bytes(b"py\xff\xfethon"));
        let decoded = String::from_utf8_lossy(copy.as_os_str().as_bytes()).into_owned();
        if decoded.len() > 4096 && !decoded.is_char_boundary(4096) {
            break copy;
        }
        lead += 1;
    };
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(python_binary(), &copy).unwrap();
    assert!(copy.as_os_str().len() > 1400);

    let server = Server::api_run_by(&copy, "127.0.0.1");
    let obs = Observer::for_pids(&[server.pid()]);
    for i in 0..5 {
        assert_eq!(curl(&[&server.url(&format!("/health?n={i}"))]).status, 200);
    }
    let f = obs.stop();
    assert!(f.status.success(), "observer failed: {}", f.stderr);
    assert!(
        f.events
            .iter()
            .any(|l| l["event"]["action"] == "sys_shutdown"),
        "no sys_shutdown line: {}",
        f.stderr
    );
    let ex = f.exchanges();
    assert_eq!(ex.len(), 5, "exchanges of the hostile target: {}", f.stderr);
    for e in &ex {
        let exe = e["process"]["executable"]
            .as_str()
            .expect("process.executable is a string");
        assert!(exe.contains('\u{fffd}'), "not marked as undecodable: {exe}");
        assert!(
            exe.len() <= 3 * 4096,
            "unbounded executable path: {} bytes",
            exe.len()
        );
    }
}

/// The real interpreter behind `python3` (a copy of a symlink would copy its target anyway,
/// but the name in /proc/PID/exe must be the copy's).
fn python_binary() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, os; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("python3");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A link planted where observer is told to write (`--output`, `--record`): observer, running
/// as root, refuses it with a message naming it, and the file it points at is untouched.
#[test]
fn links_at_output_and_record_are_refused() {
    require_root();
    let dir = TempDir::new("hostile-link");
    let precious = dir.path.join("shadow");
    std::fs::write(&precious, b"root:x:0:0\n").unwrap();
    let server = Server::api();
    for flag in ["--output", "--record"] {
        let link = dir.path.join(format!("planted{flag}"));
        std::os::unix::fs::symlink(&precious, &link).unwrap();
        let out = std::process::Command::new(observer_bin())
            .args(["run", "--pid", &server.pid().to_string()])
            .arg("--key-file")
            .arg(dir.path.join("secret.key"))
            .arg("--state-file")
            .arg(dir.path.join("integrity.state"))
            .arg(flag)
            .arg(&link)
            .output()
            .expect("running observer");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} through a link was accepted");
        assert!(
            stderr.contains("symbolic link") && stderr.contains(&*link.to_string_lossy()),
            "{flag}: the message does not name the link: {stderr}"
        );
        assert_eq!(std::fs::read(&precious).unwrap(), b"root:x:0:0\n");
    }
}

/// Hundreds of idle connections to `--metrics` (anyone who can reach the port can open them):
/// the ring is drained as before, every exchange is reported, and scrapes work again once they
/// are gone.
#[test]
fn idle_metrics_connections_never_hold_up_capture() {
    require_root();
    let server = Server::api();
    let port = observer_tests::free_port();
    let obs = Observer::start(&[
        "--pid".into(),
        server.pid().to_string(),
        "--metrics".into(),
        format!("127.0.0.1:{port}"),
    ]);
    let idle: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(
        idle.len() >= 100,
        "only {} idle connections opened",
        idle.len()
    );
    let paths: Vec<String> = (0..200).map(|i| format!("/health?i={i}")).collect();
    let reqs: Vec<(&[&str], &str)> = paths.iter().map(|p| (&[][..], p.as_str())).collect();
    let done = observer_tests::curl_paths(&server, &reqs);
    assert!(done.iter().all(|t| t.status == 200));
    drop(idle);
    let url = format!("http://127.0.0.1:{port}/metrics");
    observer_tests::wait_until("a scrape once the idle connections are gone", || {
        let out = std::process::Command::new("curl")
            .args(["-s", "-m", "2", &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("observer_exchanges 200\n")
    });
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(f.exchanges().len(), 200, "every exchange reported");
    let last = f.events.last().unwrap();
    assert_eq!(last["event"]["action"], "sys_shutdown");
    let losses = &last["observer"]["stats"]["kernel_losses"];
    assert!(
        losses
            .as_object()
            .is_some_and(|m| m.values().all(|v| v == 0)),
        "kernel losses: {losses}"
    );
}

/// The run ended well, with one `sys_monitor_disabled` naming `server` and a reason that
/// says `what`, and one warning saying it too.
fn one_report<'a>(f: &'a Finished, server: &Server, what: &str) -> &'a serde_json::Value {
    assert!(f.status.success(), "{}", f.stderr);
    let blind: Vec<_> = f
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "sys_monitor_disabled")
        .collect();
    assert_eq!(blind.len(), 1, "one report: {}", f.lines.join("\n"));
    assert_eq!(blind[0]["process"]["pid"], server.pid());
    let reason = blind[0]["observer"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(what), "{}", blind[0]);
    assert!(f.stderr.contains(what), "one warning: {}", f.stderr);
    blind[0]
}

/// A server whose bytes all move through io_uring: observer cannot see them, and says so once
/// with `sys_monitor_disabled` naming the process, rather than staying silent.
#[test]
fn an_io_uring_server_is_reported_as_unseen() {
    require_root();
    let server = Server::uring();
    let obs = Observer::for_pids(&[server.pid()]);
    for i in 0..3 {
        assert_eq!(curl(&[&server.url(&format!("/x?i={i}"))]).status, 200);
    }
    let f = obs.stop();
    let blind = one_report(&f, &server, "io_uring");
    assert_eq!(blind["process"]["name"], "uring_server");
    // What it could not see is not made up either.
    assert!(f.exchanges().is_empty(), "{}", f.lines.join("\n"));
}

/// A server that reads its requests with splice(2), socket to pipe: the bytes never pass
/// through memory observer can copy. It counts them, says once which process does it and how
/// (`sys_monitor_disabled`, and a warning), and makes up no request it did not see.
#[test]
fn a_splicing_server_is_reported_as_partly_unseen() {
    require_root();
    let server = Server::splice();
    let obs = Observer::for_pids(&[server.pid()]);
    for i in 0..3 {
        assert_eq!(curl(&[&server.url(&format!("/spliced?i={i}"))]).status, 200);
    }
    let f = obs.stop();
    one_report(&f, &server, "splice");
    assert!(
        f.exchanges().iter().all(|e| e["url"]["path"] != "/spliced"),
        "a request observer never saw is not reported: {}",
        f.lines.join("\n")
    );
}

/// A target that makes a 32-bit syscall from 64-bit code (`int $0x80`, number 3: read there,
/// close in the 64-bit table) on each connection: observer must not take it for a close and
/// stop watching the socket. Every exchange after it is reported.
#[test]
fn a_32_bit_syscall_cannot_pass_for_a_close() {
    require_root();
    let server = Server::compat();
    let obs = Observer::for_pids(&[server.pid()]);
    for i in 0..3 {
        assert_eq!(curl(&[&server.url(&format!("/compat?i={i}"))]).status, 200);
    }
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let seen = f
        .exchanges()
        .iter()
        .filter(|e| e["url"]["path"] == "/compat" && e["http"]["response"]["status_code"] == 200)
        .count();
    assert_eq!(seen, 3, "{}", f.lines.join("\n"));
}
