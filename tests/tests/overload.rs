//! When observer cannot keep up: a full kernel ring buffer, a full disk, an output that stops
//! reading. The target is never held up, and every request is either reported or accounted for
//! by a loss report; the log still verifies.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use observer_tests::{
    Observer, Server, TempDir, assert_schema, curl, curl_paths, read_events, require_root,
};
use serde_json::Value;

fn verify(paths: &[PathBuf]) -> (bool, String) {
    observer_tests::verify_log(paths, None)
}

fn signal(child: &std::process::Child, sig: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_child(child), sig).unwrap();
}

/// Sum of `observer.loss.<stage>.<cause>` over loss lines.
fn lost(events: &[Value], stage: &str, cause: &str) -> u64 {
    events
        .iter()
        .filter(|e| e["event"]["action"] == "loss")
        .filter_map(|e| e["observer"]["loss"][stage][cause].as_u64())
        .sum()
}

fn shutdown_stats(events: &[Value]) -> &Value {
    let last = events.last().expect("some output");
    assert_eq!(last["event"]["action"], "sys_shutdown", "{last}");
    &last["observer"]["stats"]
}

/// One curl process, `n` transfers over one connection; all must succeed.
fn requests(server: &Server, path: &str, n: usize) {
    let paths: Vec<String> = (0..n).map(|i| format!("{path}{i}")).collect();
    let reqs: Vec<(&[&str], &str)> = paths.iter().map(|p| (&[][..], p.as_str())).collect();
    let done = curl_paths(server, &reqs);
    assert_eq!(done.len(), n);
    assert!(
        done.iter().all(|t| t.status == 200),
        "the server answered every request"
    );
}

#[test]
fn ring_buffer_overflow_is_accounted_for_and_never_mispairs() {
    require_root();
    let server = Server::nginx(&[]);
    let obs = Observer::start(&[
        "--pid".into(),
        server.pid().to_string(),
        "--ring-buffer-size".into(),
        "65536".into(),
    ]);
    let dir = TempDir::new("burst");
    let script = dir.path.join("burst.lua");
    // Alternating paths with different statuses: a response paired with the wrong request
    // after a hole would show as /json with 204 or /nothing with 200.
    std::fs::write(
        &script,
        "local sent, got = 0, 0\n\
         request = function()\n\
           sent = sent + 1\n\
           if sent % 2 == 0 then return wrk.format(nil, '/json') end\n\
           return wrk.format(nil, '/nothing')\n\
         end\n\
         response = function(status, headers, body)\n\
           got = got + 1\n\
           if got >= 50000 then wrk.thread:stop() end\n\
         end\n",
    )
    .unwrap();
    let wrk = Command::new("wrk")
        .args(["-t2", "-c2", "-d4s", "-s"])
        .arg(&script)
        .arg(server.url("/"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("running wrk");
    // Frozen mid-burst, observer drains nothing: the 64 KiB ring fills within a few hundred
    // records and the kernel side must drop (and count) the rest without holding nginx up.
    // The same connections go on after the thaw, so the holes are inside their streams: the
    // burst is bounded by wrk's duration, far past the thaw, rather than by a count a fast
    // machine reaches while observer is still frozen.
    std::thread::sleep(Duration::from_millis(200));
    signal(&obs.child, rustix::process::Signal::STOP);
    std::thread::sleep(Duration::from_millis(300));
    signal(&obs.child, rustix::process::Signal::CONT);
    let out = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let sent: u64 = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("wrk output: {report}"));
    // wrk waits out its duration even when its threads stop early: a short one, and the count
    // it reports is what the accounting uses.
    assert!(sent >= 2000, "wrk: {report}");
    // Afterwards, at a pace the ring holds, everything is reported again.
    std::thread::sleep(Duration::from_millis(1500));
    let after = 20;
    requests(&server, "/json?after=", after);
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);

    let ex = f.exchanges();
    for e in &ex {
        let path = e["url"]["path"].as_str().unwrap();
        let status = e["http"]["response"]["status_code"].as_u64().unwrap();
        assert!(
            (path == "/json" && status == 200) || (path == "/nothing" && status == 204),
            "a response paired with the wrong request: {e}"
        );
    }
    let later = ex
        .iter()
        .filter(|e| {
            e["url"]["query"]
                .as_str()
                .is_some_and(|q| q.starts_with("after="))
        })
        .count();
    assert_eq!(later, after, "every request after the burst is reported");
    let burst = ex.len() as u64 - later as u64;
    let ring_full = lost(&f.events, "kernel", "ring_full");
    let stats = shutdown_stats(&f.events);
    assert_eq!(
        ring_full,
        stats["kernel_losses"]["ring_full"].as_u64().unwrap(),
        "every kernel loss was reported in a loss line"
    );
    assert!(ring_full > 0, "the ring overflowed: {stats}");
    assert!(burst < sent, "{burst} of {sent} reported");
    // Each lost record belongs to at most one exchange; exchanges the output queue could not
    // take (a busy host) are counted in loss lines too.
    let queue_full = lost(&f.events, "sink", "queue_full");
    assert!(
        burst + ring_full + queue_full >= sent,
        "exchanges {burst} + lost records {ring_full} + dropped at the queue {queue_full} \
         account for {sent} requests; {stats}"
    );
    assert!(
        stats["http"]["capture_holes"].as_u64().unwrap() > 0,
        "the holes were noticed: {stats}"
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: TempDir,
    mount: PathBuf,
}

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = TempDir::new("tmpfs");
        let mount = dir.path.join("fs");
        std::fs::create_dir_all(&mount).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&mount)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs at {}", mount.display());
        Self { dir, mount }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = &self.dir;
    }
}

#[test]
fn full_disk_keeps_observer_running_and_reports_what_was_not_written() {
    require_root();
    let fs = Tmpfs::new("256k");
    let filler = fs.mount.join("filler");
    // Leave room for a few dozen lines only.
    std::fs::write(&filler, vec![0u8; 200 * 1024]).unwrap();
    let log = fs.mount.join("events.jsonl");
    let server = Server::api();
    let obs = Observer::start(&[
        "--pid".into(),
        server.pid().to_string(),
        "--output".into(),
        log.display().to_string(),
    ]);
    requests(&server, "/health?before=", 150);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        obs.child.try_wait_ok(),
        "observer keeps running on a full disk"
    );
    std::fs::remove_file(&filler).unwrap();
    requests(&server, "/health?after=", 10);
    std::thread::sleep(Duration::from_millis(1500));
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    assert!(
        f.stderr.contains("keeps running"),
        "the failure is logged: {}",
        f.stderr
    );

    let (ok, out) = verify(std::slice::from_ref(&log));
    assert!(ok, "the log verifies across the unwritten stretch: {out}");
    let events = read_events(&log);
    let failed = lost(&events, "sink", "write_failed");
    assert!(failed > 0, "the disk filled up");
    let stats = shutdown_stats(&events);
    assert_eq!(stats["sink"]["write_failed"].as_u64().unwrap(), failed);
    let exchanges = |q: &str| {
        events
            .iter()
            .filter(|e| e["url"]["query"].as_str().is_some_and(|x| x.starts_with(q)))
            .count() as u64
    };
    assert_eq!(
        exchanges("after="),
        10,
        "writing works again once there is room"
    );
    // Only exchanges were made while the disk was full: each is written or counted.
    assert_eq!(exchanges("before=") + failed, 150);
    let mode = std::fs::metadata(&log).unwrap();
    assert!(mode.len() > 0);
}

trait TryWaitOk {
    fn try_wait_ok(&self) -> bool;
}

impl TryWaitOk for std::process::Child {
    /// True while the process runs.
    fn try_wait_ok(&self) -> bool {
        Path::new(&format!("/proc/{}", self.id())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.id()))
                .unwrap_or_default()
                .contains(") Z ")
    }
}

#[test]
fn stalled_output_never_holds_up_capture_and_drops_are_reported() {
    require_root();
    let dir = TempDir::new("fifo");
    let fifo = dir.path.join("events");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // A reader that reads only when told: the pipe fills, then observer's queue.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nonblock())
        .open(&fifo)
        .unwrap();
    let server = Server::api();
    let key = TempDir::new("key");
    let mut child = Command::new(observer_tests::observer_bin())
        .args([
            "run",
            "--pid",
            &server.pid().to_string(),
            "--queue-events",
            "16",
        ])
        .arg("--output")
        .arg(&fifo)
        .arg("--key-file")
        .arg(key.path.join("k"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut text = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&text).contains("sys_startup") {
        assert!(Instant::now() < deadline, "observer did not start");
        read_available(&mut reader, &mut text);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nobody reads now. 300 exchanges of ~1 KiB each overfill the 64 KiB pipe and the queue.
    let started = Instant::now();
    requests(&server, "/health?i=", 300);
    let took = started.elapsed();
    // A brute force while the queue is full of exchanges: its alert takes a reserved place.
    let url = server.url("/api/items");
    for i in 0..5 {
        assert_eq!(curl(&["-u", &format!("alice:guess-{i}"), &url]).status, 401);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "observer runs on while its output is stalled"
    );
    // Read again: observer reports what it dropped, then stops in order.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        read_available(&mut reader, &mut text);
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, rustix::process::Signal::INT);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        read_available(&mut reader, &mut text);
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "observer did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    read_available(&mut reader, &mut text);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("slower than the traffic"), "{stderr}");

    let text = String::from_utf8(text).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_schema(&v, l);
            v
        })
        .collect();
    let copy = dir.path.join("copy.jsonl");
    std::fs::write(&copy, &text).unwrap();
    let (ok, out) = verify(std::slice::from_ref(&copy));
    assert!(ok, "{out}");
    let dropped = lost(&events, "sink", "queue_full");
    assert!(dropped > 0, "the queue overflowed");
    let written = events.iter().filter(|e| e.get("http").is_some()).count() as u64;
    assert_eq!(written + dropped, 305, "every exchange written or counted");
    let alerts: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"]["kind"] == "alert")
        .collect();
    assert_eq!(
        alerts.len(),
        1,
        "the brute force alert was delivered through the full queue ({dropped} dropped)"
    );
    assert_eq!(alerts[0]["event"]["action"], "authn_login_fail_max");
    assert_eq!(
        shutdown_stats(&events)["sink"]["queue_full"]
            .as_u64()
            .unwrap(),
        dropped
    );
    eprintln!("300 requests with the output stalled took {took:?}");
}

fn libc_o_nonblock() -> i32 {
    // O_NONBLOCK on Linux (all architectures observer supports).
    0o4000
}

fn read_available(r: &mut std::fs::File, out: &mut Vec<u8>) {
    let mut buf = [0u8; 65536];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("reading the fifo: {e}"),
        }
    }
}
