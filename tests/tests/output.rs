//! Output a SIEM can trust: a file sink with rotation, the hash chain and `observer verify`,
//! and an orderly stop when the reader goes away.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use observer_tests::{Observer, Server, TempDir, curl, require_root};

fn verify(paths: &[PathBuf], key: Option<&Path>) -> (bool, String) {
    observer_tests::verify_log(paths, key)
}

fn rotated(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..10)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", path.display())))
        .filter(|p| p.exists())
        .collect();
    files.push(path.to_path_buf());
    files
}

/// Every line of `files`, in order, as one list.
fn all_lines(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn tamper(files: &[PathBuf], f: impl FnOnce(&mut Vec<String>)) -> Vec<PathBuf> {
    // Works on a copy: all lines of all files in one.
    let dir = files[0].parent().unwrap().join("tampered");
    let _ = std::fs::create_dir_all(&dir);
    let mut lines = all_lines(files);
    f(&mut lines);
    let out = dir.join(format!("log-{}", lines.len()));
    std::fs::write(&out, lines.join("\n") + "\n").unwrap();
    vec![out]
}

#[test]
fn rotated_keyed_log_verifies_and_every_tampering_is_named() {
    require_root();
    let dir = TempDir::new("out");
    let log = dir.path.join("events.jsonl");
    let key = dir.path.join("integrity.key");
    std::fs::write(&key, b"a key kept away from the log host").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = Server::api();
    let obs = Observer::start(&[
        "--pid".into(),
        server.pid().to_string(),
        "--output".into(),
        log.display().to_string(),
        "--rotate-size".into(),
        "4096".into(),
        "--rotate-keep".into(),
        "9".into(),
        "--integrity-key".into(),
        key.display().to_string(),
    ]);
    for i in 0..30 {
        curl(&[&server.url(&format!("/health?i={i}"))]);
    }
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let files = rotated(&log);
    assert!(files.len() >= 3, "rotated: {files:?}");
    let mut lines = 0;
    for p in &files {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{p:?}");
        assert!(m.len() <= 4096, "{p:?} is {} bytes", m.len());
        lines += std::fs::read_to_string(p).unwrap().lines().count();
    }
    // Each file after the first starts with a checkpoint of the chain.
    let checkpoints = files.len() - 1;
    assert_eq!(
        lines,
        32 + checkpoints,
        "startup, 30 exchanges, shutdown, a checkpoint per rotated file: nothing lost across \
         rotations"
    );

    let (ok, out) = verify(&files, Some(&key));
    assert!(ok, "intact log: {out}");
    assert!(
        out.contains(&format!("{} lines", 32 + checkpoints)),
        "{out}"
    );
    // Without the key, or with files out of order, it does not verify.
    assert!(!verify(&files, None).0);
    let mut swapped = files.clone();
    swapped.swap(0, 1);
    assert!(!verify(&swapped, Some(&key)).0);
    // Retention that removed the oldest file (a change of behaviour: this failed before
    // checkpoints): the kept files verify from their first checkpoint, and say so.
    let (ok, out) = verify(&files[1..], Some(&key));
    assert!(ok, "oldest file removed: {out}");
    assert!(
        out.contains("kept history begins at") && out.contains("checkpoint"),
        "{out}"
    );
    // A file in the middle missing does not.
    let mut holed = files.clone();
    holed.remove(1);
    let (ok, out) = verify(&holed, Some(&key));
    assert!(!ok && out.contains("missing or out of order"), "{out}");

    // Edits at the first two consecutive exchanges from line 11 on (checkpoints, which carry
    // no path, are passed over).
    let all = all_lines(&files);
    let at = (10..all.len() - 1)
        .find(|&i| all[i].contains("/health") && all[i + 1].contains("/health"))
        .unwrap();
    let line = at + 1;
    type Edit = Box<dyn FnOnce(&mut Vec<String>)>;
    let cases: Vec<(&str, usize, Edit)> = vec![
        (
            "deleted",
            line,
            Box::new(move |l: &mut Vec<String>| {
                l.remove(at);
            }),
        ),
        (
            "inserted",
            line,
            Box::new(move |l: &mut Vec<String>| {
                let copy = l[4].clone();
                l.insert(at, copy);
            }),
        ),
        (
            "reordered",
            line,
            Box::new(move |l: &mut Vec<String>| l.swap(at, at + 1)),
        ),
        (
            "modified",
            line,
            Box::new(move |l: &mut Vec<String>| {
                l[at] = l[at].replace("/health", "/hacked");
            }),
        ),
        (
            "tail cut at a line boundary",
            all.len() - 1,
            Box::new(|l: &mut Vec<String>| {
                l.pop();
            }),
        ),
    ];
    for (what, line, edit) in cases {
        let t = tamper(&files, edit);
        let (ok, out) = verify(&t, Some(&key));
        assert!(!ok, "{what} not detected");
        assert!(out.contains(&format!(":{line}:")), "{what}: {out}");
    }
    // Truncated: the last line cut in the middle.
    let t = tamper(&files, |_| {});
    let text = std::fs::read_to_string(&t[0]).unwrap();
    std::fs::write(&t[0], &text[..text.len() - 20]).unwrap();
    let (ok, out) = verify(&t, Some(&key));
    assert!(!ok && out.contains("truncated"), "{out}");
}

#[test]
fn closed_stdout_stops_observer_cleanly() {
    require_root();
    let server = Server::api();
    let dir = TempDir::new("epipe");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' run --pid {} --key-file '{}/k' | head -1",
            observer_tests::observer_bin().display(),
            server.pid(),
            dir.path.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // head exits after the first line (sys_startup); observer notices at its next write.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "observer kept running after its reader left"
        );
        if n < 50 {
            curl(&[&server.url("/health")]);
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(status.success(), "pipeline status {status:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.contains("sys_startup"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("output closed by its reader"), "{stderr}");
    assert!(
        Command::new("pgrep")
            .args(["-f", &format!("run --pid {}", server.pid())])
            .output()
            .unwrap()
            .stdout
            .is_empty(),
        "observer is gone"
    );
}

#[test]
fn heartbeats_report_counters_and_resource_use() {
    require_root();
    let server = Server::api();
    let obs = Observer::start(&[
        "--pid".into(),
        server.pid().to_string(),
        "--heartbeat-seconds".into(),
        "1".into(),
    ]);
    for _ in 0..3 {
        curl(&[&server.url("/health")]);
    }
    std::thread::sleep(Duration::from_millis(2500));
    let f = obs.stop();
    let beats: Vec<&serde_json::Value> = f
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "heartbeat")
        .collect();
    assert!(beats.len() >= 2, "{}", f.lines.join("\n"));
    let last = &beats.last().unwrap()["observer"]["metrics"];
    assert_eq!(last["exchanges"], 3);
    assert!(last["process"]["rss_kib"].as_u64().unwrap() > 1000);
    assert!(
        last["process"]["peak_rss_kib"].as_u64().unwrap() < 50 * 1024,
        "under 50 MiB"
    );
    assert_eq!(beats[0]["event"]["kind"], "metric");
}

#[test]
fn pretty_format_for_people() {
    require_root();
    let server = Server::api();
    let obs = Observer::start(&[
        "--pid".into(),
        server.pid().to_string(),
        "--format".into(),
        "pretty".into(),
    ]);
    let t = curl(&["-u", "alice:wrong", &server.url("/api/items?token=s3cret")]);
    let f = obs.stop();
    assert!(f.status.success());
    assert_eq!(f.lines.len(), 3, "{}", f.lines.join("\n"));
    let line = &f.lines[1];
    assert!(
        line.contains(&format!(
            "127.0.0.1:{} → 127.0.0.1:{}",
            t.local_port, server.port
        )),
        "{line}"
    );
    assert!(
        line.contains("GET /api/items?token=REDACTED 401 authn_login_fail"),
        "{line}"
    );
    assert!(!line.contains("s3cret") && !line.contains("wrong"));
    assert!(f.lines[2].contains("sys_shutdown"));
}

#[test]
fn prometheus_metrics_are_served() {
    require_root();
    let server = Server::api();
    let port = observer_tests::free_port();
    let obs = Observer::start(&[
        "--pid".into(),
        server.pid().to_string(),
        "--metrics".into(),
        format!("127.0.0.1:{port}"),
    ]);
    for _ in 0..3 {
        curl(&[&server.url("/health")]);
    }
    let url = format!("http://127.0.0.1:{port}/metrics");
    let scrape = || {
        let out = Command::new("curl").args(["-s", &url]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    observer_tests::wait_until("the metrics page counts 3 exchanges", || {
        scrape().contains("\nobserver_exchanges 3\n")
    });
    let page = scrape();
    for name in [
        "observer_connections_open ",
        "observer_process_rss_kib ",
        "observer_process_sink_queue_depth ",
        "observer_process_sink_written ",
        "observer_process_kernel_losses_total_ring_full 0",
    ] {
        assert!(page.contains(name), "{name} missing:\n{page}");
    }
    // Every sample line is `name value`; comments are TYPE lines.
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            assert!(rest.ends_with(" gauge"), "{line}");
        } else {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            value.parse::<f64>().unwrap();
        }
    }
    let wrong = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/other"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&wrong.stdout), "404");
    let f = obs.stop();
    assert!(f.status.success());
    // The scrapes are not traffic of the target.
    assert_eq!(f.exchanges().len(), 3);
}

fn observer_cmd(args: &[&str]) -> (bool, String) {
    let out = Command::new(observer_tests::observer_bin())
        .args(args)
        .output()
        .expect("running observer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn runs_after_restarts_continue_one_chain_and_seal_after_seal_init() {
    require_root();
    let dir = TempDir::new("runs");
    let log = dir.path.join("events.jsonl");
    let key = dir.path.join("secret.key");
    let state = dir.path.join("integrity.state");
    let server = Server::api();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--pid".into(),
            server.pid().to_string(),
            "--output".into(),
            log.display().to_string(),
            "--key-file".into(),
            key.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // The first run on a fresh host: no state yet, a new chain, and the state file made.
    for i in 0..2 {
        let obs = Observer::start(&args(&[]));
        curl(&[&server.url(&format!("/health?run={i}"))]);
        let f = obs.stop();
        assert!(f.status.success(), "{}", f.stderr);
        if i == 0 {
            assert!(f.stderr.contains("starts a new chain"), "{}", f.stderr);
        }
    }
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&log).unwrap();
    let startups: Vec<&str> = text.lines().filter(|l| l.contains("sys_startup")).collect();
    assert!(startups[0].contains("\"new_chain\""), "{}", startups[0]);
    assert!(startups[1].contains("\"checkpoint\""), "{}", startups[1]);
    let (ok, out) = observer_cmd(&["verify", log.to_str().unwrap()]);
    assert!(ok && out.contains("2 runs"), "{out}");

    // Sealing from the next run on.
    let vk = dir.path.join("verify.key");
    let (ok, out) = observer_cmd(&[
        "seal-init",
        "--state-file",
        state.to_str().unwrap(),
        "--verify-key-out",
        vk.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let obs = Observer::start(&args(&["--heartbeat-seconds", "1"]));
    curl(&[&server.url("/health?run=sealed")]);
    std::thread::sleep(Duration::from_millis(1500));
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.lines().last().unwrap();
    assert!(last.contains("\"seal\":{\"epoch\":0,"), "{last}");
    assert!(!text.contains(std::fs::read_to_string(&vk).unwrap().trim()));
    let hb = text
        .lines()
        .rfind(|l| l.contains("\"heartbeat\""))
        .expect("a heartbeat");
    let hb: serde_json::Value = serde_json::from_str(hb).unwrap();
    let head = hb["observer"]["head"]["chain"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(hb["observer"]["head"]["epoch"], 0);
    let (ok, out) = observer_cmd(&[
        "verify",
        log.to_str().unwrap(),
        "--verify-key",
        vk.to_str().unwrap(),
        "--expect-head",
        &head,
    ]);
    assert!(ok && out.contains("3 runs"), "{out}");
    assert!(out.contains("unsealed: they are dated before"), "{out}");

    // A corrupt state file stops observer at start with a clear error.
    std::fs::write(&state, "{\"version\":1,\"head\":").unwrap();
    let out = Command::new(observer_tests::observer_bin())
        .args(["run"])
        .args(args(&[]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is corrupt"), "{err}");
}

#[test]
fn a_killed_run_and_its_restart_verify_without_accept_restart() {
    require_root();
    let dir = TempDir::new("killed");
    let log = dir.path.join("events.jsonl");
    let key = dir.path.join("secret.key");
    let server = Server::api();
    let args: Vec<String> = vec![
        "--pid".into(),
        server.pid().to_string(),
        "--output".into(),
        log.display().to_string(),
        "--key-file".into(),
        key.display().to_string(),
    ];
    let obs = Observer::start(&args);
    std::thread::sleep(Duration::from_millis(1200));
    for i in 0..5 {
        curl(&[&server.url(&format!("/health?killed={i}"))]);
    }
    // Written (flushed per batch) but not yet in the state file (saved once a second).
    std::thread::sleep(Duration::from_millis(100));
    let f = obs.stop_with(rustix::process::Signal::KILL);
    assert!(!f.status.success());
    let obs = Observer::start(&args);
    curl(&[&server.url("/health?after=1")]);
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let (ok, out) = observer_cmd(&["verify", log.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("2 runs") && out.contains("stopped abruptly"),
        "{out}"
    );
}
