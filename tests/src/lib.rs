//! Helpers for observer's privileged integration tests: real servers started as their own
//! processes, the real observer binary, real clients. Failures panic with context.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Panics unless running as root: these tests load eBPF programs. They never skip silently.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "observer's integration tests load eBPF programs and must run as root: \
         run `sudo cargo xtask test` (CI runs as root)"
    );
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// The observer binary under test: $OBSERVER_BIN, else target/release/observer.
pub fn observer_bin() -> PathBuf {
    let bin = std::env::var_os("OBSERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/observer"));
    assert!(
        bin.is_file(),
        "observer binary {} not found: run the tests with `cargo xtask test`, which builds it",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

fn wait_for_port(addr: &str, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {addr} within 20 s");
}

/// A server process the test owns; killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub name: &'static str,
    /// It speaks HTTPS.
    pub tls: bool,
    _dir: Option<TempDir>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{}", self.port, path)
    }

    /// The sample API of tests/servers/api.py speaking HTTPS with `cert`.
    pub fn api_tls(cert: &Cert) -> Self {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(workspace_root().join("tests/servers/api.py"))
            .arg(port.to_string())
            .env("TLS_CERT", &cert.cert)
            .env("TLS_KEY", &cert.key)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting python3 tests/servers/api.py");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "api.py (TLS)");
        Self {
            child,
            port,
            name: "api.py (TLS)",
            tls: true,
            _dir: None,
        }
    }

    /// tests/servers/https.js on Node.js, whose OpenSSL is linked in statically.
    pub fn node_https(cert: &Cert) -> Self {
        let port = free_port();
        let mut child = Command::new("node")
            .arg(workspace_root().join("tests/servers/https.js"))
            .arg(port.to_string())
            .arg(&cert.cert)
            .arg(&cert.key)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting node tests/servers/https.js (apt-get install nodejs)");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "node https.js");
        Self {
            child,
            port,
            name: "node https.js",
            tls: true,
            _dir: None,
        }
    }

    /// tests/servers/static_tls.c, built here with OpenSSL linked in statically and stripped.
    pub fn static_tls(cert: &Cert) -> Self {
        let dir = TempDir::new("static-tls");
        let bin = dir.path.join("static_tls");
        let built = Command::new("gcc")
            .args(["-O1", "-static", "-o"])
            .arg(&bin)
            .arg(workspace_root().join("tests/servers/static_tls.c"))
            .args(["-lssl", "-lcrypto", "-lpthread"])
            .stderr(Stdio::null())
            .status()
            .expect("running gcc (apt-get install gcc libssl-dev)");
        assert!(
            built.success(),
            "building static_tls.c failed (needs libssl-dev)"
        );
        assert!(Command::new("strip").arg(&bin).status().unwrap().success());
        let port = free_port();
        let mut child = Command::new(&bin)
            .arg(port.to_string())
            .arg(&cert.cert)
            .arg(&cert.key)
            .spawn()
            .expect("starting static_tls");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "static_tls");
        Self {
            child,
            port,
            name: "static_tls",
            tls: true,
            _dir: Some(dir),
        }
    }

    /// The sample API of tests/servers/api.py (HTTP/1.1, keep-alive) on 127.0.0.1.
    pub fn api() -> Self {
        Self::api_on("127.0.0.1")
    }

    /// The sample API bound to `ip` (IPv4 or IPv6).
    pub fn api_on(ip: &str) -> Self {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(workspace_root().join("tests/servers/api.py"))
            .arg(port.to_string())
            .arg(ip)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting python3 tests/servers/api.py");
        let addr = if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        };
        wait_for_port(&addr, &mut child, "api.py");
        Self {
            child,
            port,
            name: "api.py",
            tls: false,
            _dir: None,
        }
    }

    /// The sample API on a Unix-domain socket at `path`.
    pub fn api_unix(path: &Path) -> Self {
        let mut child = Command::new("python3")
            .arg(workspace_root().join("tests/servers/api.py"))
            .arg(format!("unix:{}", path.display()))
            .stdout(Stdio::null())
            .spawn()
            .expect("starting python3 tests/servers/api.py");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(path).is_err() {
            assert!(
                Instant::now() < deadline,
                "api.py did not listen on {path:?}"
            );
            if let Ok(Some(s)) = child.try_wait() {
                panic!("api.py exited with {s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port: 0,
            name: "api.py (unix)",
            tls: false,
            _dir: None,
        }
    }

    /// The sample API, started by a shell that first moves itself into `cgroup_dir`.
    pub fn api_in_cgroup(cgroup_dir: &Path) -> Self {
        let port = free_port();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}/cgroup.procs' && exec python3 '{}' {port}",
                cgroup_dir.display(),
                workspace_root().join("tests/servers/api.py").display()
            ))
            .stdout(Stdio::null())
            .spawn()
            .expect("starting api.py in a cgroup");
        wait_for_port(
            &format!("127.0.0.1:{port}"),
            &mut child,
            "api.py in a cgroup",
        );
        Self {
            child,
            port,
            name: "api.py (cgroup)",
            tls: false,
            _dir: None,
        }
    }

    /// gunicorn serving tests/servers/wsgi_app.py with `workers` sync workers.
    pub fn gunicorn(workers: u32) -> Self {
        let port = free_port();
        let mut child = Command::new("python3")
            .args(["-m", "gunicorn", "--workers", &workers.to_string()])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .arg("--chdir")
            .arg(workspace_root().join("tests/servers"))
            .arg("wsgi_app:app")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting gunicorn (python3 -m pip install gunicorn)");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "gunicorn");
        Self {
            child,
            port,
            name: "gunicorn",
            tls: false,
            _dir: None,
        }
    }

    /// nginx (Debian's package) on 127.0.0.1 with a config of the test's own: one worker,
    /// sendfile, static files from `files`, `/json` answered by nginx itself.
    pub fn nginx(files: &[(&str, &[u8])]) -> Self {
        Self::nginx_with(files, None)
    }

    /// nginx serving HTTPS with `cert`.
    pub fn nginx_tls(files: &[(&str, &[u8])], cert: &Cert) -> Self {
        Self::nginx_with(files, Some(cert))
    }

    fn nginx_with(files: &[(&str, &[u8])], cert: Option<&Cert>) -> Self {
        let dir = TempDir::new("nginx");
        let www = dir.path.join("www");
        std::fs::create_dir_all(&www).expect("nginx www");
        for (name, content) in files {
            std::fs::write(www.join(name), content).expect("writing a served file");
        }
        let port = free_port();
        let d = dir.path.display();
        let conf = format!(
            "daemon off; master_process on; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; keepalive_requests 1000000; if_modified_since before;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{ listen 127.0.0.1:{port}{tls}; root {www};\n\
                 location = /json {{ default_type application/json; return 200 '{{\"ok\":true}}'; }}\n\
                 location = /nothing {{ return 204; }}\n\
                 location = /upload {{ client_max_body_size 10m; return 201; }}\n\
               }}\n\
             }}\n",
            www = www.display(),
            tls = match cert {
                Some(c) => format!(
                    " ssl; ssl_certificate {}; ssl_certificate_key {}",
                    c.cert.display(),
                    c.key.display()
                ),
                None => String::new(),
            }
        );
        let conf_path = dir.path.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let mut child = Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&dir.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx (apt-get install nginx)");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "nginx");
        Self {
            child,
            port,
            name: "nginx",
            tls: cert.is_some(),
            _dir: Some(dir),
        }
    }

    /// Current child processes of the server.
    pub fn children(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    /// `python3 -m http.server` serving `files` from a fresh directory.
    pub fn python_http(files: &[(&str, &[u8])]) -> Self {
        let dir = TempDir::new("www");
        for (name, content) in files {
            std::fs::write(dir.path.join(name), content).expect("writing a served file");
        }
        let port = free_port();
        let mut child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(&dir.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3 -m http.server");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "http.server");
        Self {
            child,
            port,
            name: "http.server",
            tls: false,
            _dir: Some(dir),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: masters (nginx, gunicorn) then stop their workers too.
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Child processes of `pid` now, from /proc/*/stat.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out.sort_unstable();
    out
}

/// Waits until `f` holds, or panics with `what`.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cgroup the test makes below the cgroup2 mount; removed on drop.
pub struct Cgroup {
    pub path: PathBuf,
    /// The path relative to the cgroup2 mount.
    pub relative: String,
}

impl Cgroup {
    pub fn new(tag: &str) -> Self {
        let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
        let mount = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
            })
            .expect("a cgroup2 mount in /proc/mounts");
        let relative = format!("observer-test-{}-{tag}", std::process::id());
        let path = mount.join(&relative);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).expect("creating a test cgroup");
        Self { path, relative }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Its processes are gone by now (servers are dropped first); retry while they exit.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A raw HTTP/1.1 client on one TCP connection.
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Self { stream }
    }

    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local addr").port()
    }

    /// Sends `request` as is and reads one Content-Length response; returns (status, bytes).
    pub fn exchange(&mut self, request: &[u8]) -> (u16, usize) {
        use std::io::{Read, Write};
        self.stream.write_all(request).expect("sending");
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            let n = self
                .stream
                .read(&mut byte)
                .expect("reading a response head");
            assert!(n == 1, "connection closed mid-head");
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_string();
        let status: u16 = head[9..12].parse().expect("status code");
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).expect("reading a body");
        (status, buf.len() + len)
    }
}

pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("observer-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

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

/// A self-signed certificate for 127.0.0.1 and localhost, made with openssl.
pub struct Cert {
    _dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    pub fn new() -> Self {
        let dir = TempDir::new("cert");
        let (cert, key) = (dir.path.join("cert.pem"), dir.path.join("key.pem"));
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running openssl (apt-get install openssl)");
        assert!(ok.success(), "openssl could not make a certificate");
        Self {
            _dir: dir,
            cert,
            key,
        }
    }
}

impl Default for Cert {
    fn default() -> Self {
        Self::new()
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

impl Observer {
    /// Starts `observer run ARGS` and waits for its `sys_startup` event (programs attached).
    /// Unless ARGS name one, the run gets a fingerprint key of its own (`key_file()`).
    pub fn start(args: &[String]) -> Self {
        let key_dir = TempDir::new("key");
        let mut cmd = Command::new(observer_bin());
        cmd.arg("run").args(args);
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
                if std::fs::read_to_string(path).is_ok_and(|t| t.contains("\"sys_startup\"")) {
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

/// One curl process making one transfer per `(options, path)` on `server`, in order, over one
/// keep-alive connection (HTTPS with the test's self-signed certificate accepted).
pub fn curl_paths(server: &Server, reqs: &[(&[&str], &str)]) -> Vec<Transfer> {
    let urls: Vec<String> = reqs.iter().map(|(_, p)| server.url(p)).collect();
    let args: Vec<Vec<&str>> = reqs
        .iter()
        .zip(&urls)
        .map(|((opts, _), url)| {
            let mut a: Vec<&str> = if server.tls { vec!["-k"] } else { Vec::new() };
            a.extend_from_slice(opts);
            a.push(url);
            a
        })
        .collect();
    let refs: Vec<&[&str]> = args.iter().map(|a| a.as_slice()).collect();
    curl_many(&refs)
}

/// Every line of an output file, each checked to be one JSON object matching the schema.
pub fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("reading an output file");
    text.lines()
        .map(|l| {
            let v = serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", path.display()));
            assert_schema(&v, l);
            v
        })
        .collect()
}

/// Panics unless `event` matches docs/events.schema.json.
pub fn assert_schema(event: &Value, line: &str) {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let v = VALIDATOR.get_or_init(|| {
        let text = std::fs::read_to_string(workspace_root().join("docs/events.schema.json"))
            .expect("docs/events.schema.json");
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("a valid JSON Schema")
    });
    let errors: Vec<String> = v.iter_errors(event).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "event does not match docs/events.schema.json: {errors:?}\n{line}"
    );
}

/// What curl reported for one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub status: u16,
    /// curl's size_request: the head, plus the body when curl sent it with the head.
    pub request_size: u64,
    pub upload_bytes: u64,
    /// Response head bytes plus body bytes.
    pub response_bytes: u64,
    pub download_bytes: u64,
    pub local_port: u16,
}

const CURL_FORMAT: &str =
    "%{http_code} %{size_request} %{size_upload} %{size_header} %{size_download} %{local_port}\\n";

/// Runs one curl process making one transfer per element of `transfers` (each: options then a
/// URL), in order, over one connection where the server allows keep-alive.
pub fn curl_many(transfers: &[&[&str]]) -> Vec<Transfer> {
    let mut cmd = Command::new("curl");
    for (i, t) in transfers.iter().enumerate() {
        if i > 0 {
            cmd.arg("--next");
        }
        cmd.args(["-s", "-o", "/dev/null", "-w", CURL_FORMAT])
            .args(*t);
    }
    let out = cmd.output().expect("running curl");
    assert!(
        out.status.success(),
        "curl {transfers:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Transfer> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .map(|x| x.parse().expect("curl -w number"))
                .collect();
            Transfer {
                status: f[0] as u16,
                request_size: f[1],
                upload_bytes: f[2],
                response_bytes: f[3] + f[4],
                download_bytes: f[4],
                local_port: f[5] as u16,
            }
        })
        .collect();
    assert_eq!(got.len(), transfers.len(), "curl reported every transfer");
    got
}

/// Runs curl for one transfer.
pub fn curl(args: &[&str]) -> Transfer {
    curl_many(&[args]).remove(0)
}
