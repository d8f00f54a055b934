//! Least privilege: observer run by a user who is not root, holding only the capabilities the
//! README lists, captures a real server's exchanges (the server is root's, so /proc and
//! pidfd_getfd need CAP_SYS_PTRACE); without any one of them it exits non-zero naming it.

use observer_tests::unprivileged::{FileObserver, owned_dir, setpriv};
use observer_tests::{Server, curl, observer_bin, require_root};

/// `nobody`: a user with no rights of its own on the host.
const UID: u32 = 65534;
const GID: u32 = 65534;
/// The set for a plaintext-and-TLS run on a host whose tracefs is mounted root-only (0700),
/// targeting another user's server (README, "Privileges").
const CAPS: &[&str] = &["bpf", "perfmon", "sys_ptrace", "dac_read_search"];

fn run_as(caps: &[&str], pid: u32, dir: &std::path::Path) -> Result<FileObserver, (i32, String)> {
    let output = dir.join("events.json");
    let mut cmd = setpriv(UID, GID, caps);
    cmd.env("NO_COLOR", "1")
        .arg(observer_bin())
        .args(["run", "--pid", &pid.to_string(), "--output"])
        .arg(&output)
        .arg("--key-file")
        .arg(dir.join("secret.key"));
    FileObserver::start(cmd, &output)
}

#[test]
fn the_documented_capabilities_suffice_for_a_user_who_is_not_root() {
    require_root();
    let server = Server::python_http(&[("index.html", b"hello\n")]);
    let dir = owned_dir("least-privilege", UID, GID);
    let obs = run_as(CAPS, server.pid(), &dir.path)
        .unwrap_or_else(|(code, err)| panic!("observer exited {code} at start: {err}"));
    for path in ["/index.html", "/missing"] {
        curl(&[&server.url(path)]);
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (events, stderr) = obs.stop();
    let exchanges: Vec<_> = events
        .iter()
        .filter(|e| e["event"]["kind"] == "event" && e.get("http").is_some())
        .collect();
    let statuses: Vec<u64> = exchanges
        .iter()
        .map(|e| e["http"]["response"]["status_code"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 404], "both exchanges, in order: {events:?}");
    // The socket it listened on before observer started was adopted (pidfd_getfd, /proc of
    // root's process), and the executable read: CAP_SYS_PTRACE at work.
    assert_eq!(exchanges[0]["process"]["pid"], server.pid());
    assert!(
        exchanges[0]["process"]["executable"]
            .as_str()
            .is_some_and(|e| e.contains("python")),
        "{:?}",
        exchanges[0]["process"]
    );
    assert!(
        stderr.contains("keeps only [CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE]"),
        "it says what it kept after attaching: {stderr}"
    );
    assert!(
        stderr.contains("CAP_DAC_READ_SEARCH for reading tracepoint"),
        "{stderr}"
    );
    // The output is the unprivileged user's.
    let meta = std::fs::metadata(dir.path.join("events.json")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), UID);
}

#[test]
fn without_any_one_capability_it_exits_naming_it() {
    require_root();
    let server = Server::python_http(&[("index.html", b"hello\n")]);
    for missing in CAPS {
        let dir = owned_dir("least-privilege-missing", UID, GID);
        let fewer: Vec<&str> = CAPS.iter().copied().filter(|c| c != missing).collect();
        match run_as(&fewer, server.pid(), &dir.path) {
            Ok(_) => panic!("observer started without {missing}"),
            Err((code, err)) => {
                let name = format!("lacks CAP_{}", missing.to_ascii_uppercase());
                assert_ne!(code, 0);
                assert!(err.contains(&name), "without {missing}, exit {code}: {err}");
                assert!(err.contains("needed for"), "{err}");
            }
        }
    }
}
