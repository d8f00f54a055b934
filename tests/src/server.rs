//! Servers the tests own, each its own process killed on drop: the sample APIs, nginx and the
//! like; the cgroups they run in; their child processes; a self-signed certificate.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TempDir, free_port, wait_for_port, workspace_root};

mod compat;
mod express;
mod grpc;
mod h2;
mod keyed;
mod node;
mod proxy;
mod redis;
mod splice;
mod tables;
mod uring;

pub use grpc::{GRPC_GOOD_AUTHORIZATION, GRPC_SERVICE, GrpcCall, GrpcOutcome, grpc_calls};
pub use h2::{H2JoinClient, H2Reply, NGINX_H2_PRIVATE, NGINX_H2_USER, nghttp};
pub use tables::{SocketForker, running_as};

/// A server process the test owns; killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub name: &'static str,
    /// It speaks HTTPS.
    pub tls: bool,
    pub(crate) _dir: Option<TempDir>,
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
        Self::api_run_by(Path::new("python3"), ip)
    }

    /// The sample API run by the Python interpreter at `python` (a copy somewhere hostile).
    pub fn api_run_by(python: &Path, ip: &str) -> Self {
        let port = free_port();
        let mut child = Command::new(python)
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

    /// gunicorn serving the Flask form login of tests/servers/flask_login.py, one worker.
    pub fn flask_login() -> Self {
        let port = free_port();
        let mut child = Command::new("python3")
            .args(["-m", "gunicorn", "--workers", "1"])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .arg("--chdir")
            .arg(workspace_root().join("tests/servers"))
            .arg("flask_login:app")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting gunicorn with Flask (python3 -m pip install gunicorn flask)");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "flask_login");
        Self {
            child,
            port,
            name: "flask_login",
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
        Self::start_nginx(dir, &conf, port, "nginx", cert.is_some())
    }

    /// nginx on the configuration `conf`, with `dir` as its prefix (kept for its life).
    pub(crate) fn start_nginx(
        dir: TempDir,
        conf: &str,
        port: u16,
        name: &'static str,
        tls: bool,
    ) -> Self {
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
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, name);
        Self {
            child,
            port,
            name,
            tls,
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
